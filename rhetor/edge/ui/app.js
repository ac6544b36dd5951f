/**
 * The Rhetor console: start-up, the API key, and switching between views.
 *
 * How the parts fit: `tekton-llm-client/` is the JavaScript client (a copy
 * of clients/js/src, kept identical by tests/test_console.py); `dom.js`
 * builds elements and shows errors; each file in `views/` is one view,
 * made once and refreshed when shown. They all call Rhetor through
 * `app.client`, which this module replaces when the API key changes.
 *
 * The API key: the console first calls Rhetor without one (or with the one
 * this tab already holds). If Rhetor answers 401 it asks for the key, checks
 * it with one call, and keeps it in sessionStorage: for this tab only, gone
 * when the tab closes, never in localStorage or a cookie. A key refused
 * later (the server restarted with another) asks again.
 */

import { RhetorClient, Unauthorized } from './tekton-llm-client/index.js';
import { errorBox, field, fill, h } from './dom.js';
import { chatView } from './views/chat.js';
import { contextsView } from './views/contexts.js';
import { libraryView } from './views/library.js';
import { providersView } from './views/providers.js';
import { spendView } from './views/spend.js';

const KEY_STORE = 'rhetor.console.apiKey';
const COMPONENT = 'rhetor-console';
const VIEWS = [
  ['chat', chatView],
  ['spend', spendView],
  ['providers', providersView],
  ['contexts', contextsView],
  ['library', libraryView],
];

function storedKey() {
  try {
    return sessionStorage.getItem(KEY_STORE) || null;
  } catch {
    return null; // storage disabled: the key lives only as long as the page
  }
}

function storeKey(key) {
  try {
    if (key) sessionStorage.setItem(KEY_STORE, key);
    else sessionStorage.removeItem(KEY_STORE);
  } catch {
    // storage disabled: the key lives only as long as the page
  }
}

/** A refused API key (not a refused origin, which is 403 and no key can fix). */
export function isKeyRefusal(error) {
  return error instanceof Unauthorized && error.status === 401;
}

class Console {
  constructor() {
    this.component = COMPONENT;
    this.client = null;
    this.key = null;
    this.views = new Map();
    this.current = null;
    this.listeners = new Map();
    this.dialog = null;
  }

  #connect(key) {
    return new RhetorClient({ component: COMPONENT, apiKey: key || undefined });
  }

  /** Start: one call to learn whether Rhetor is there and whether it wants a key. */
  async start() {
    this.key = storedKey();
    this.client = this.#connect(this.key);
    window.addEventListener('hashchange', () => this.route());
    try {
      await this.client.getProviders();
    } catch (error) {
      if (isKeyRefusal(error)) {
        // A key kept from earlier in this tab that no longer works is forgotten.
        if (this.key) storeKey(null);
        this.askForKey(this.key ? error : null, error.message);
        return;
      }
      this.#unreachable(error);
      return;
    }
    this.#ready();
  }

  #unreachable(error) {
    fill(
      document.getElementById('views'),
      h('section', { class: 'panel' },
        h('h2', {}, 'Rhetor did not answer'),
        errorBox(error),
        h('button', { type: 'button', onclick: () => location.reload() }, 'Try again')),
    );
  }

  /**
   * Show the key dialog. `refusal` is the server's error for a key that was
   * tried (shown as the server words it); `why` says why a key is needed.
   */
  askForKey(refusal, why) {
    this.dialog?.remove();
    const input = h('input', {
      type: 'password',
      id: 'api-key',
      autocomplete: 'off',
      placeholder: 'RHETOR_API_KEY',
      required: true,
    });
    const problem = h('div', { class: 'key-problem' }, refusal ? errorBox(refusal, { what: 'API key' }) : null);
    const submit = h('button', { type: 'submit', class: 'primary' }, 'Use this key');
    const form = h(
      'form',
      {
        class: 'key-form',
        onsubmit: async (event) => {
          event.preventDefault();
          submit.disabled = true;
          fill(problem, h('span', { class: 'muted' }, 'Checking the key…'));
          try {
            await this.useKey(input.value.trim());
          } catch (error) {
            fill(problem, errorBox(error, { what: 'API key' }));
            input.select();
          } finally {
            submit.disabled = false;
          }
        },
      },
      h('h2', {}, 'This Rhetor needs an API key'),
      h('p', { class: 'muted' }, why ? `Rhetor said: ${why}` : ''),
      field('API key', input),
      h('p', { class: 'muted small' },
        'The key is kept for this browser tab only (sessionStorage) and sent only to this server.'),
      problem,
      submit,
    );
    this.dialog = h('div', { class: 'overlay', role: 'dialog', 'aria-modal': 'true', 'aria-label': 'API key' }, form);
    document.body.append(this.dialog);
    input.focus();
  }

  /** Try `key` with one call; keep it and carry on if Rhetor accepts it, else throw its error. */
  async useKey(key) {
    const client = this.#connect(key);
    try {
      await client.getProviders();
    } catch (error) {
      client.close();
      throw error;
    }
    this.client?.close();
    this.client = client;
    this.key = key;
    storeKey(key);
    this.dialog?.remove();
    this.dialog = null;
    this.#ready();
  }

  /** Forget the key: this tab holds it no more, and the next call will ask again. */
  forgetKey() {
    storeKey(null);
    this.key = null;
    this.client?.close();
    this.client = this.#connect(null);
    this.#keyStatus();
    this.askForKey(null, 'the key was forgotten; enter it again to go on.');
  }

  /** A view's failed call: a refused key asks for the key again; anything else is the view's to show. */
  failed(error) {
    if (isKeyRefusal(error) && !this.dialog) {
      storeKey(null);
      this.askForKey(this.key ? error : null, error.message);
    }
    return errorBox(error);
  }

  on(name, listener) {
    if (!this.listeners.has(name)) this.listeners.set(name, new Set());
    this.listeners.get(name).add(listener);
  }

  emit(name, detail) {
    for (const listener of this.listeners.get(name) ?? []) listener(detail);
  }

  /** Show a view by name (and anything it needs, e.g. `{context}` for chat). */
  go(name, detail) {
    if (location.hash !== `#${name}`) history.pushState(null, '', `#${name}`);
    this.route(detail);
  }

  #ready() {
    this.#keyStatus();
    if (this.views.size === 0) {
      const main = document.getElementById('views');
      fill(main);
      for (const [name, make] of VIEWS) {
        const view = make(this);
        view.element.dataset.view = name;
        view.element.hidden = true;
        main.append(view.element);
        this.views.set(name, view);
      }
    }
    this.current = null;
    this.route();
  }

  #keyStatus() {
    const status = document.getElementById('key-status');
    if (!this.key) {
      fill(status);
      return;
    }
    fill(status,
      h('span', { class: 'muted' }, 'API key in use'),
      h('button', { type: 'button', class: 'link', onclick: () => this.forgetKey() }, 'Forget key'));
  }

  route(detail) {
    if (this.views.size === 0) return;
    const wanted = location.hash.replace(/^#/, '');
    const name = this.views.has(wanted) ? wanted : 'chat';
    for (const [viewName, view] of this.views) view.element.hidden = viewName !== name;
    for (const link of document.querySelectorAll('#nav a')) {
      link.classList.toggle('active', link.dataset.view === name);
      if (link.dataset.view === name) link.setAttribute('aria-current', 'page');
      else link.removeAttribute('aria-current');
    }
    this.current = name;
    this.views.get(name).show(detail);
  }
}

new Console().start();
