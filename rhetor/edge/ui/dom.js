/**
 * Small DOM helpers shared by the views: building elements, formatting
 * money, tokens and times, and showing an error as the server worded it.
 *
 * Text always goes in as text (textContent), never as HTML: replies,
 * template contents and error messages are data, and some of it comes from
 * models and other users.
 */

import { BudgetExceeded, RequestCancelled, Unauthorized } from './tekton-llm-client/index.js';

const SVG_NS = 'http://www.w3.org/2000/svg';

function append(node, children) {
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined || child === false) continue;
    node.append(child instanceof Node ? child : String(child));
  }
  return node;
}

/**
 * An element: `h('button', {class: 'primary', onclick: fn, disabled: true}, 'Send')`.
 *
 * Props starting with `on` are listeners; `class`, `text`, `value`,
 * `checked`, `disabled`, `hidden` and `selected` are set as properties;
 * the rest as attributes (`data-*`, `type`, `placeholder`, ...).
 */
export function h(tag, props = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(props ?? {})) {
    if (value === undefined || value === null || value === false) continue;
    if (key.startsWith('on') && typeof value === 'function') {
      node.addEventListener(key.slice(2), value);
    } else if (key === 'class') {
      node.className = value;
    } else if (key === 'text') {
      node.textContent = value;
    } else if (['value', 'checked', 'disabled', 'hidden', 'selected'].includes(key)) {
      node[key] = value;
    } else {
      node.setAttribute(key, value === true ? '' : String(value));
    }
  }
  return append(node, children);
}

/** An SVG element, attributes as given. */
export function svg(tag, attributes = {}, ...children) {
  const node = document.createElementNS(SVG_NS, tag);
  for (const [key, value] of Object.entries(attributes)) {
    if (value !== undefined && value !== null) node.setAttribute(key, String(value));
  }
  return append(node, children);
}

/** Replace a node's children. */
export function fill(node, ...children) {
  node.replaceChildren();
  return append(node, children);
}

/** US dollars with up to six significant digits, as the server prints budget amounts. */
export function money(amount) {
  if (typeof amount !== 'number' || !Number.isFinite(amount)) return '–';
  if (amount === 0) return '$0';
  if (Math.abs(amount) < 1e-6) return `$${amount.toExponential(2)}`;
  return `$${Number(amount.toPrecision(6))}`;
}

/** A whole number with thousands separators. */
export function count(value) {
  return typeof value === 'number' ? value.toLocaleString('en-US') : '–';
}

/** A time from epoch seconds or an ISO string, in the browser's locale. */
export function when(value) {
  if (value === null || value === undefined) return '–';
  const date = typeof value === 'number' ? new Date(value * 1000) : new Date(value);
  return Number.isNaN(date.getTime()) ? String(value) : date.toLocaleString();
}

/** A short date: "Dec 1, 09:00". */
export function shortDate(date) {
  return date.toLocaleString('en-US', {
    month: 'short',
    day: 'numeric',
    hour: '2-digit',
    minute: '2-digit',
    hour12: false,
  });
}

/** A comma-separated field as a list of trimmed, non-empty strings. */
export function listOf(text) {
  return String(text ?? '')
    .split(',')
    .map((item) => item.trim())
    .filter(Boolean);
}

/**
 * An error as the user sees it: the server's words, its type and field.
 *
 * A budget refusal names the period, the limit and what was spent; a
 * refused key says so. `role="alert"` so that screen readers announce it.
 */
export function errorBox(error, { what } = {}) {
  const type = error?.type ? h('code', { class: 'error-type' }, error.type) : null;
  const field = error?.field ? h('span', { class: 'error-field' }, ` (field ${error.field})`) : null;
  const message = error?.message || String(error);
  if (error instanceof BudgetExceeded) {
    const parts = [];
    if (error.period) parts.push(`the ${error.period} budget`);
    if (error.limit !== null) parts.push(`limit ${money(error.limit)}`);
    if (error.spent !== null) parts.push(`spent ${money(error.spent)}`);
    return h(
      'div',
      { class: 'error budget-refusal', role: 'alert' },
      h('strong', {}, 'Over budget: the request was refused.'),
      parts.length ? h('div', {}, `${parts.join(', ')}.`) : null,
      h('div', { class: 'server-words' }, 'Rhetor said: ', message, ' ', type),
      h('div', { class: 'hint' }, 'Raise or remove the limit in Spend, or choose a cheaper model.'),
    );
  }
  if (error instanceof RequestCancelled) {
    return h('div', { class: 'notice', role: 'status' }, 'Cancelled: ', message);
  }
  const title = error instanceof Unauthorized ? 'Refused' : 'Error';
  return h(
    'div',
    { class: 'error', role: 'alert' },
    h('strong', {}, what ? `${title} (${what}): ` : `${title}: `),
    message,
    field,
    ' ',
    type,
  );
}

/** A labelled form control: `<label>Text <control></label>`. */
export function field(label, control, hint) {
  return h('label', { class: 'field' }, h('span', {}, label), control, hint ? h('small', {}, hint) : null);
}

/** A button that asks "Sure?" on its first click and runs `action` on the second. */
export function confirmButton(label, action, { class: className = 'danger' } = {}) {
  let armed = false;
  let timer = null;
  const button = h('button', {
    type: 'button',
    class: className,
    onclick: async () => {
      if (!armed) {
        armed = true;
        button.textContent = `${label}: click again to confirm`;
        timer = setTimeout(() => {
          armed = false;
          button.textContent = label;
        }, 4000);
        return;
      }
      clearTimeout(timer);
      armed = false;
      button.textContent = label;
      await action();
    },
  }, label);
  return button;
}
