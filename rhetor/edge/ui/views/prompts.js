/**
 * System prompts: list (all, or one component's), create, edit, make a
 * component's default, delete.
 */

import { confirmButton, field, fill, h, listOf, when } from '../dom.js';

export function promptsPanel(app) {
  const problem = h('div');
  const component = h('input', { id: 'prompt-filter', type: 'search', placeholder: 'every component' });
  const list = h('ul', { class: 'list', id: 'prompt-list' });
  const editor = h('div', { class: 'detail', id: 'prompt-editor' });
  let selected = null;

  async function refresh() {
    try {
      const prompts = await app.client.getPrompts({ component: component.value.trim() || undefined });
      fill(list, prompts.length ? prompts.map((p) => h('li', {},
        h('button', {
          type: 'button',
          class: p.id === selected ? 'item selected' : 'item',
          'data-prompt': p.id,
          onclick: () => open(p),
        }, h('strong', {}, p.name),
        h('span', { class: 'muted small' }, ` ${p.component}${p.is_default ? ' · default' : ''}`))))
        : h('li', { class: 'muted' }, 'No system prompts yet.'));
    } catch (error) {
      fill(problem, app.failed(error));
    }
  }

  function form(prompt) {
    const name = h('input', { id: 'prompt-name', value: prompt?.name ?? '', required: true });
    const owner = h('input', { id: 'prompt-component', value: prompt?.component ?? '', required: true });
    const content = h('textarea', { id: 'prompt-content', rows: 6, value: prompt?.content ?? '', required: true });
    const description = h('input', { id: 'prompt-description', value: prompt?.description ?? '' });
    const tags = h('input', { id: 'prompt-tags', value: (prompt?.tags ?? []).join(', ') });
    const isDefault = h('input', { id: 'prompt-default', type: 'checkbox', checked: Boolean(prompt?.is_default) });
    const status = h('div');
    return h('form', {
      class: 'stack',
      onsubmit: async (event) => {
        event.preventDefault();
        fill(status);
        const fields = {
          name: name.value.trim(),
          component: owner.value.trim(),
          content: content.value,
          description: description.value,
          tags: listOf(tags.value),
          isDefault: isDefault.checked,
        };
        try {
          const saved = prompt
            ? await app.client.updatePrompt(prompt.id, fields)
            : await app.client.createPrompt(fields);
          selected = saved.id;
          await refresh();
          fill(editor, h('div', { class: 'notice', role: 'status' }, prompt ? 'Saved.' : 'Created.'), form(saved));
        } catch (error) {
          fill(status, app.failed(error));
        }
      },
    },
    h('h2', {}, prompt ? `Edit ${prompt.name}` : 'New system prompt'),
    prompt ? h('p', { class: 'muted small' }, `Created ${when(prompt.created)}, updated ${when(prompt.updated)}`) : null,
    field('Name', name), field('Component', owner), field('Content', content),
    field('Description', description), field('Tags', tags, 'comma-separated'),
    h('label', { class: 'check' }, isDefault, ' The component\'s default (replaces its old default)'),
    status,
    h('div', { class: 'buttons' },
      h('button', { type: 'submit', class: 'primary', id: 'prompt-save' }, prompt ? 'Save' : 'Create prompt'),
      prompt ? confirmButton('Delete prompt', async () => {
        try {
          await app.client.deletePrompt(prompt.id);
          selected = null;
          fill(editor, h('p', { class: 'muted' }, `Deleted ${prompt.name}.`));
          await refresh();
        } catch (error) {
          fill(status, app.failed(error));
        }
      }) : null));
  }

  function open(prompt) {
    selected = prompt.id;
    fill(problem);
    for (const button of list.querySelectorAll('button.item')) {
      button.classList.toggle('selected', button.dataset.prompt === prompt.id);
    }
    fill(editor, form(prompt));
  }

  component.addEventListener('input', () => refresh());

  const element = h('div', { class: 'split' },
    h('div', { class: 'panel side' },
      h('div', { class: 'panel-head' }, h('h2', {}, 'System prompts'),
        h('button', {
          type: 'button',
          id: 'prompt-new',
          onclick: () => {
            selected = null;
            fill(editor, form(null));
          },
        }, 'New')),
      field('Component', component),
      list),
    h('div', { class: 'panel main' }, problem, editor));

  return {
    element,
    async show() {
      await refresh();
      if (!editor.firstChild) fill(editor, form(null));
    },
  };
}
