/**
 * The Prompts and templates view: two tabs over templates.js and prompts.js.
 */

import { h } from '../dom.js';
import { promptsPanel } from './prompts.js';
import { templatesPanel } from './templates.js';

export function libraryView(app) {
  const panels = { templates: templatesPanel(app), prompts: promptsPanel(app) };
  let current = 'templates';
  const tabs = h('div', { class: 'tabs', role: 'tablist' });

  function select(name) {
    current = name;
    for (const [key, panel] of Object.entries(panels)) panel.element.hidden = key !== name;
    for (const tab of tabs.children) tab.setAttribute('aria-selected', String(tab.dataset.tab === name));
    panels[name].show();
  }

  for (const [key, label] of [['templates', 'Templates'], ['prompts', 'System prompts']]) {
    tabs.append(h('button', { type: 'button', role: 'tab', 'data-tab': key, onclick: () => select(key) }, label));
  }

  const element = h('section', { class: 'view library' }, tabs,
    panels.templates.element, panels.prompts.element);

  return { element, show: () => select(current) };
}
