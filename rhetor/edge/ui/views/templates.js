/**
 * Templates: list, create, edit (a content or parameter change is a new
 * version), see every version, render with variables, delete.
 */

import { confirmButton, field, fill, h, listOf, when } from '../dom.js';

function parseDefaults(text) {
  const trimmed = text.trim();
  if (!trimmed) return {};
  let value;
  try {
    value = JSON.parse(trimmed);
  } catch (error) {
    throw new Error(`Defaults must be a JSON object: ${error.message}`);
  }
  if (!value || typeof value !== 'object' || Array.isArray(value)) {
    throw new Error('Defaults must be a JSON object, such as {"environment": "unknown"}');
  }
  return value;
}

export function templatesPanel(app) {
  const problem = h('div');
  const list = h('ul', { class: 'list', id: 'template-list' });
  const editor = h('div', { class: 'detail', id: 'template-editor' });
  let selected = null;

  async function refresh() {
    try {
      const templates = await app.client.getTemplates();
      fill(list, templates.length ? templates.map((t) => h('li', {},
        h('button', {
          type: 'button',
          class: t.id === selected ? 'item selected' : 'item',
          'data-template': t.name,
          onclick: () => open(t.id),
        }, h('strong', {}, t.name),
        h('span', { class: 'muted small' }, ` v${t.current_version}${t.category ? ` · ${t.category}` : ''}`),
        t.description ? h('div', { class: 'muted small clip' }, t.description) : null)))
        : h('li', { class: 'muted' }, 'No templates yet.'));
    } catch (error) {
      fill(problem, app.failed(error));
    }
  }

  function form(template) {
    const name = h('input', { id: 'template-name', value: template?.name ?? '', required: true });
    const description = h('input', { id: 'template-description', value: template?.description ?? '' });
    const category = h('input', { id: 'template-category', value: template?.category ?? '' });
    const content = h('textarea', { id: 'template-content', rows: 6, required: true, value: template?.content ?? '' });
    const required = h('input', { id: 'template-required', value: (template?.required ?? []).join(', ') });
    const optional = h('input', { id: 'template-optional', value: (template?.optional ?? []).join(', ') });
    const defaults = h('textarea', {
      id: 'template-defaults',
      rows: 2,
      value: template && Object.keys(template.defaults ?? {}).length ? JSON.stringify(template.defaults) : '',
      placeholder: '{"environment": "unknown"}',
    });
    const status = h('div');
    return h('form', {
      class: 'stack',
      onsubmit: async (event) => {
        event.preventDefault();
        fill(status);
        try {
          const fields = {
            name: name.value.trim(),
            content: content.value,
            description: description.value,
            category: category.value.trim(),
            // An empty list: every placeholder not optional is required (the server's rule).
            required: listOf(required.value),
            optional: listOf(optional.value),
            defaults: parseDefaults(defaults.value),
          };
          const saved = template
            ? await app.client.updateTemplate(template.id, fields)
            : await app.client.createTemplate(fields);
          selected = saved.id;
          await refresh();
          await open(saved.id, template ? `Saved: version ${saved.current_version}.` : 'Created.');
        } catch (error) {
          fill(status, app.failed(error));
        }
      },
    },
    h('h2', {}, template ? `Edit ${template.name}` : 'New template'),
    field('Name', name), field('Description', description), field('Category', category),
    field('Content', content, 'Placeholders are written {name}.'),
    h('div', { class: 'row' },
      field('Required', required, 'comma-separated; empty: every placeholder not optional'),
      field('Optional', optional, 'comma-separated')),
    field('Defaults', defaults, 'a JSON object of values for optional placeholders'),
    status,
    h('div', { class: 'buttons' }, h('button', { type: 'submit', class: 'primary', id: 'template-save' },
      template ? 'Save as new version' : 'Create template')));
  }

  function renderPanel(template) {
    const inputs = new Map();
    const output = h('pre', { class: 'rendered', id: 'template-rendered' });
    const status = h('div');
    const required = (name) => (template.required.length
      ? template.required.includes(name)
      : !template.optional.includes(name));
    const rows = template.variables.map((variable) => {
      const input = h('input', {
        'data-variable': variable,
        placeholder: template.defaults?.[variable] ?? (required(variable) ? 'required' : 'optional'),
      });
      inputs.set(variable, input);
      return field(variable, input);
    });
    return h('form', {
      class: 'stack',
      onsubmit: async (event) => {
        event.preventDefault();
        fill(status);
        const variables = {};
        for (const [name, input] of inputs) if (input.value !== '') variables[name] = input.value;
        try {
          output.textContent = await app.client.renderTemplate(template.id, variables);
        } catch (error) {
          output.textContent = '';
          fill(status, app.failed(error));
        }
      },
    },
    h('h3', {}, 'Render'),
    rows.length ? rows : h('p', { class: 'muted small' }, 'This template has no placeholders.'),
    h('div', { class: 'buttons' }, h('button', { type: 'submit', id: 'template-render' }, 'Render')),
    status,
    output);
  }

  async function versionsPanel(template) {
    const shown = h('pre', { class: 'rendered' });
    const versions = await app.client.templateVersions(template.id);
    return h('div', { class: 'stack' },
      h('h3', {}, 'Versions'),
      h('ol', { class: 'versions', id: 'template-versions' }, versions.map((v) => h('li', {},
        h('button', {
          type: 'button',
          class: 'link',
          onclick: () => {
            shown.textContent = v.content;
          },
        }, `Version ${v.version}`),
        h('span', { class: 'muted small' }, ` ${when(v.created)}${v.version === template.current_version ? ' (current)' : ''}`)))),
      shown);
  }

  async function open(id, note) {
    selected = id;
    fill(problem);
    for (const button of list.querySelectorAll('button.item')) button.classList.remove('selected');
    try {
      const template = await app.client.getTemplate(id);
      list.querySelector(`button[data-template="${CSS.escape(template.name)}"]`)?.classList.add('selected');
      fill(editor,
        note ? h('div', { class: 'notice', role: 'status' }, note) : null,
        form(template),
        renderPanel(template),
        await versionsPanel(template),
        h('div', { class: 'buttons' }, confirmButton('Delete template', async () => {
          try {
            await app.client.deleteTemplate(template.id);
            selected = null;
            fill(editor, h('p', { class: 'muted' }, `Deleted ${template.name}.`));
            await refresh();
          } catch (error) {
            fill(problem, app.failed(error));
          }
        })));
    } catch (error) {
      fill(problem, app.failed(error));
    }
  }

  const element = h('div', { class: 'split' },
    h('div', { class: 'panel side' },
      h('div', { class: 'panel-head' }, h('h2', {}, 'Templates'),
        h('button', {
          type: 'button',
          id: 'template-new',
          onclick: () => {
            selected = null;
            fill(editor, form(null));
          },
        }, 'New')),
      list),
    h('div', { class: 'panel main' }, problem, editor));

  return {
    element,
    async show() {
      await refresh();
      if (selected) await open(selected);
      else if (!editor.firstChild) fill(editor, form(null));
    },
  };
}
