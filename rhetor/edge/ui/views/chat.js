/**
 * The Chat view: one conversation, streamed over the client's WebSocket.
 *
 * As in the seeds' React example: the user's turn shows at once, the reply
 * grows chunk by chunk, and a "Thinking..." indicator shows while Rhetor
 * says it is typing (the server's typing UPDATEs, through `onTyping`). Each
 * finished reply shows its model, provider, tokens and cost. Cancel asks
 * the server to stop, down to the provider call.
 */

import { count, errorBox, field, fill, h, money } from '../dom.js';

const TASK_TYPES = ['default', 'chat', 'code', 'planning', 'reasoning'];

function newContextId() {
  const random = crypto.getRandomValues(new Uint32Array(1))[0].toString(36);
  return `console:${Date.now().toString(36)}${random}`;
}

/** "Model: m (p) · 5 in + 9 out = 14 tokens · $0.023": the reply's line of facts. */
function replyFacts(reply) {
  const usage = reply.usage ?? {};
  return h(
    'div',
    { class: 'metadata' },
    h('span', { class: 'reply-model' }, `Model: ${reply.model} (${reply.provider})`),
    ' · ',
    h('span', { class: 'reply-tokens' },
      `${count(usage.input_tokens)} in + ${count(usage.output_tokens)} out = ${count(usage.total_tokens)} tokens`),
    ' · ',
    h('span', { class: 'reply-cost' }, money(reply.cost)),
  );
}

export function chatView(app) {
  const taskType = h('input', { list: 'task-types', value: 'chat', id: 'chat-task-type' });
  const taskTypes = h('datalist', { id: 'task-types' }, TASK_TYPES.map((t) => h('option', { value: t })));
  const model = h('select', { id: 'chat-model' }, h('option', { value: '' }, 'Routed by task'));
  const component = h('input', { value: app.component, id: 'chat-component' });
  const contextId = h('input', {
    list: 'chat-contexts',
    value: newContextId(),
    id: 'chat-context',
    placeholder: 'none: nothing is stored',
  });
  const contexts = h('datalist', { id: 'chat-contexts' });
  const messages = h('div', { class: 'messages', 'aria-live': 'polite' });
  const typing = h(
    'div',
    { class: 'typing-indicator', hidden: true },
    h('span', {}, 'Thinking'),
    h('span', { class: 'dot' }, '.'),
    h('span', { class: 'dot' }, '.'),
    h('span', { class: 'dot' }, '.'),
  );
  const problem = h('div', { class: 'chat-error' });
  const input = h('textarea', {
    id: 'chat-input',
    rows: 3,
    placeholder: 'Ask a question… (Enter sends, Shift+Enter for a new line)',
  });
  const send = h('button', { type: 'submit', class: 'primary', id: 'chat-send' }, 'Send');
  const cancel = h('button', { type: 'button', id: 'chat-cancel', disabled: true }, 'Cancel');
  let stream = null;

  const busy = (running) => {
    send.disabled = running;
    cancel.disabled = !running;
  };

  const scroll = () => {
    messages.scrollTop = messages.scrollHeight;
  };

  const submit = (event) => {
    event?.preventDefault();
    const text = input.value;
    if (!text.trim() || stream) return;
    const [provider, modelName] = model.value ? model.value.split('\u0000') : [undefined, undefined];
    const request = {
      message: text,
      taskType: taskType.value.trim() || undefined,
      component: component.value.trim() || undefined,
      contextId: contextId.value.trim() || undefined,
      provider,
      model: modelName,
    };
    messages.append(h('div', { class: 'message user' }, h('div', { class: 'content' }, text)));
    input.value = '';
    fill(problem);
    const content = h('div', { class: 'content' });
    const reply = h('div', { class: 'message assistant partial' }, content);
    let shown = false;
    busy(true);
    stream = app.client.streamMessage({
      ...request,
      onTyping: (isTyping) => {
        typing.hidden = !isTyping;
        // The indicator stays below the growing reply.
        if (isTyping) messages.append(typing);
        scroll();
      },
      onChunk: (chunk) => {
        if (!shown) {
          messages.insertBefore(reply, typing.parentNode === messages ? typing : null);
          shown = true;
        }
        content.textContent += chunk;
        scroll();
      },
      onComplete: (answer) => {
        content.textContent = answer.message;
        if (!shown) messages.append(reply);
        reply.classList.remove('partial');
        reply.append(replyFacts(answer));
        if (answer.budget_warning) {
          reply.append(h('div', { class: 'warning' }, `Budget: ${answer.budget_warning}`));
        }
        if (answer.routing) {
          reply.append(h('details', { class: 'routing' }, h('summary', {}, 'Routing'), answer.routing));
        }
        app.emit('spend-changed');
        app.emit('contexts-changed');
        scroll();
      },
      onError: (error) => {
        if (shown && content.textContent) {
          reply.classList.remove('partial');
          reply.classList.add('incomplete');
          reply.append(h('div', { class: 'metadata' }, 'Incomplete: the reply stopped here.'));
        } else {
          reply.remove();
        }
        fill(problem, app.failed(error));
        scroll();
      },
    });
    stream.done
      .catch(() => {}) // onError has shown it
      .finally(() => {
        typing.hidden = true;
        stream = null;
        busy(false);
        input.focus();
      });
  };

  cancel.addEventListener('click', () => {
    stream?.cancel();
  });
  input.addEventListener('keydown', (event) => {
    if (event.key === 'Enter' && !event.shiftKey) submit(event);
  });

  const element = h(
    'section',
    { class: 'view chat' },
    h('div', { class: 'controls' },
      field('Task type', taskType), taskTypes,
      field('Model', model),
      field('Component', component),
      h('div', { class: 'field' },
        h('span', {}, 'Context'),
        h('div', { class: 'inline' }, contextId, contexts,
          h('button', { type: 'button', onclick: () => { contextId.value = newContextId(); } }, 'New'))),
    ),
    messages,
    problem,
    h('form', { class: 'composer', onsubmit: submit }, input, h('div', { class: 'buttons' }, send, cancel)),
  );

  async function refreshChoices() {
    try {
      const [providers, known] = await Promise.all([
        app.client.getProviders(),
        app.client.getContexts({ limit: 50 }),
      ]);
      const chosen = model.value;
      fill(model, h('option', { value: '' }, 'Routed by task'));
      for (const [name, info] of Object.entries(providers.providers ?? {})) {
        const why = info.available ? '' : ` (unavailable: ${info.reason || 'down'})`;
        model.append(
          h('optgroup', { label: `${name}${why}` },
            (info.models ?? []).map((m) =>
              h('option', { value: `${name}\u0000${m}`, disabled: !info.available }, m))),
        );
      }
      model.value = [...model.options].some((o) => o.value === chosen) ? chosen : '';
      fill(contexts, known.map((c) => h('option', { value: c.id })));
    } catch (error) {
      fill(problem, app.failed(error));
    }
  }

  app.on('providers-changed', refreshChoices);

  return {
    element,
    show(detail) {
      if (detail?.context) contextId.value = detail.context;
      refreshChoices();
      input.focus();
    },
  };
}
