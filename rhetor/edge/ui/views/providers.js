/**
 * The Providers view: each provider's availability and the reason when it is
 * down, its models, and the active provider and model (`POST /provider`).
 */

import { fill, h, when } from '../dom.js';

export function providersView(app) {
  const problem = h('div');
  const health = h('div', { class: 'health' });
  const table = h('div');

  async function choose(provider, model) {
    fill(problem);
    try {
      await app.client.setProvider(provider, model);
      app.emit('providers-changed');
      await refresh();
    } catch (error) {
      fill(problem, app.failed(error));
    }
  }

  async function refresh() {
    try {
      const [status, answer] = await Promise.all([app.client.health(), app.client.getProviders()]);
      fill(health,
        h('span', { class: `badge ${status.status === 'healthy' ? 'ok' : 'down'}` }, status.status),
        ` Rhetor ${status.version}, up since ${when(Date.now() / 1000 - status.uptime)}.`,
        ` Active: ${answer.active_provider ?? 'none'} / ${answer.active_model ?? 'none'}.`,
        answer.simulated_fallback ? ' The simulated provider answers when no real provider is up.' : '');
      const rows = Object.entries(answer.providers ?? {}).map(([name, info]) => h(
        'tr',
        { 'data-provider': name },
        h('td', {}, h('strong', {}, name)),
        h('td', {}, h('span', { class: `badge ${info.available ? 'ok' : 'down'}` },
          info.available ? 'available' : 'unavailable')),
        h('td', { class: 'reason' }, info.reason || ''),
        h('td', {}, h('ul', { class: 'models' }, (info.models ?? []).map((model) => {
          const active = name === answer.active_provider && model === answer.active_model;
          return h('li', {},
            h('code', {}, model), ' ',
            active
              ? h('span', { class: 'badge active' }, 'active')
              : h('button', {
                type: 'button',
                class: 'small',
                disabled: !info.available,
                title: info.available ? `Make ${name}/${model} the active model` : `${name} is unavailable`,
                onclick: () => choose(name, model),
              }, 'Make active'));
        }))),
      ));
      fill(table, h('table', { class: 'table providers' },
        h('thead', {}, h('tr', {}, ['Provider', 'Status', 'Reason', 'Models'].map((c) => h('th', {}, c)))),
        h('tbody', {}, rows)));
    } catch (error) {
      fill(problem, app.failed(error));
    }
  }

  const element = h('section', { class: 'view providers' },
    h('div', { class: 'panel' }, h('div', { class: 'panel-head' }, h('h2', {}, 'Providers'),
      h('button', { type: 'button', onclick: () => refresh() }, 'Refresh')), health, problem, table));

  return { element, show: refresh };
}
