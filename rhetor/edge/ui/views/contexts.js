/**
 * The Contexts view: the stored conversations, search over their messages,
 * one conversation in full, its summary (made by a model), and deletion.
 */

import { confirmButton, count, fill, h, when } from '../dom.js';

const PAGE = 25;

export function contextsView(app) {
  const problem = h('div');
  const list = h('ul', { class: 'list', id: 'context-list' });
  const more = h('button', { type: 'button', hidden: true }, 'More');
  const query = h('input', { type: 'search', id: 'context-search', placeholder: 'Search messages' });
  const hits = h('div', { class: 'hits' });
  const detail = h('div', { class: 'detail', id: 'context-detail' },
    h('p', { class: 'muted' }, 'Choose a conversation.'));
  let offset = 0;
  let selected = null;

  function item(info) {
    return h('li', {},
      h('button', {
        type: 'button',
        class: info.id === selected ? 'item selected' : 'item',
        'data-context': info.id,
        onclick: () => open(info.id),
      },
      h('strong', {}, info.id),
      h('span', { class: 'muted small' }, ` ${count(info.message_count)} messages · ${when(info.updated)}`),
      info.summary ? h('div', { class: 'muted small clip' }, info.summary) : null));
  }

  async function load(reset) {
    if (reset) offset = 0;
    try {
      const page = await app.client.getContexts({ limit: PAGE, offset });
      if (reset) fill(list);
      if (reset && page.length === 0) list.append(h('li', { class: 'muted' }, 'No conversations are stored.'));
      list.append(...page.map(item));
      offset += page.length;
      more.hidden = page.length < PAGE;
    } catch (error) {
      fill(problem, app.failed(error));
    }
  }

  async function open(id) {
    selected = id;
    fill(problem);
    for (const button of list.querySelectorAll('button.item')) {
      button.classList.toggle('selected', button.dataset.context === id);
    }
    try {
      const context = await app.client.getContext(id);
      const info = context.info ?? {};
      const summary = h('div', { class: 'summary' },
        info.summary ? [h('strong', {}, 'Summary: '), info.summary] : null);
      fill(detail,
        h('div', { class: 'panel-head' },
          h('h2', {}, id),
          h('div', { class: 'buttons' },
            h('button', { type: 'button', onclick: () => app.go('chat', { context: id }) }, 'Continue in chat'),
            h('button', {
              type: 'button',
              onclick: async (event) => {
                event.target.disabled = true;
                fill(summary, h('span', { class: 'muted' }, 'Summarizing…'));
                try {
                  const answer = await app.client.summarizeContext(id);
                  fill(summary, h('strong', {}, 'Summary: '), answer.summary,
                    h('span', { class: 'muted small' }, ` (${answer.model}, up to message ${answer.upto})`));
                } catch (error) {
                  fill(summary, app.failed(error));
                } finally {
                  event.target.disabled = false;
                }
              },
            }, 'Summarize'),
            confirmButton('Delete', async () => {
              try {
                await app.client.deleteContext(id);
                selected = null;
                fill(detail, h('p', { class: 'muted' }, `Deleted ${id}.`));
                await Promise.all([load(true), search()]);
              } catch (error) {
                fill(problem, app.failed(error));
              }
            }))),
        h('p', { class: 'muted small' },
          `Created ${when(info.created)}, updated ${when(info.updated)}`,
          info.metadata && Object.keys(info.metadata).length ? ` · ${JSON.stringify(info.metadata)}` : ''),
        summary,
        h('ol', { class: 'transcript' }, (context.messages ?? []).map((m) =>
          h('li', { class: `message ${m.role}` },
            h('div', { class: 'muted small' }, `${m.role} · ${when(m.ts)}${m.tokens ? ` · ${m.tokens} tokens` : ''}`),
            h('div', { class: 'content' }, m.content)))));
    } catch (error) {
      fill(detail);
      fill(problem, app.failed(error));
    }
  }

  async function search(event) {
    event?.preventDefault();
    if (event) fill(problem);
    const text = query.value.trim();
    if (!text) {
      fill(hits);
      return;
    }
    try {
      const results = await app.client.searchContexts(text, { limit: 50 });
      fill(hits, results.length
        ? h('ul', { class: 'list' }, results.map((r) => h('li', {},
          h('button', { type: 'button', class: 'item', onclick: () => open(r.context_id) },
            h('strong', {}, r.context_id), h('span', { class: 'muted small' }, ` ${r.role} #${r.seq}`),
            h('div', { class: 'small clip' }, r.snippet)))))
        : h('p', { class: 'muted' }, `No message matches "${text}".`));
    } catch (error) {
      fill(problem, app.failed(error));
    }
  }

  more.addEventListener('click', () => load(false));
  app.on('contexts-changed', () => {
    if (app.current === 'contexts') load(true);
  });

  const element = h('section', { class: 'view contexts split' },
    h('div', { class: 'panel side' },
      h('form', { class: 'inline', onsubmit: search }, query, h('button', { type: 'submit' }, 'Search')),
      hits,
      h('h2', {}, 'Conversations'),
      list,
      more),
    h('div', { class: 'panel main' }, problem, detail));

  return {
    element,
    show() {
      load(true);
      if (selected) open(selected);
    },
  };
}
