/**
 * The Spend view: each period's budget, spend over time by provider, model
 * or component, and this console's latest requests with their cost.
 *
 * Everything but the request list is read from Rhetor (`GET /budget`,
 * `GET /budget/usage`). Rhetor has no endpoint listing individual requests
 * yet, so the list holds the replies this console received, from this tab
 * (docs/console.md says so, and what endpoint would lift it).
 */

import { spendOverTime, stackedBars } from '../chart.js';
import { count, field, fill, h, money, when } from '../dom.js';

const PERIODS = ['daily', 'weekly', 'monthly'];
const GROUPS = ['provider', 'model', 'component'];

function periodCard(name, period) {
  const limit = period.limit > 0 ? period.limit : null;
  const used = limit ? Math.min(1, (period.spent + period.reserved) / limit) : 0;
  const meter = h('div', { class: 'meter' }, h('div', { class: used >= 1 ? 'fill over' : 'fill' }));
  // CSSOM, not a style attribute: the page's CSP allows no inline styles.
  meter.firstChild.style.width = `${Math.round(used * 100)}%`;
  return h(
    'div',
    { class: 'card period', 'data-period': name },
    h('h3', {}, name),
    h('dl', {},
      h('dt', {}, 'Spent'), h('dd', { class: 'spent' }, money(period.spent)),
      h('dt', {}, 'Reserved'), h('dd', {}, money(period.reserved)),
      h('dt', {}, 'Limit'), h('dd', { class: 'limit' }, limit ? money(limit) : 'none'),
      h('dt', {}, 'Remaining'), h('dd', { class: 'remaining' },
        period.remaining === null || period.remaining === undefined ? 'no limit' : money(period.remaining)),
      h('dt', {}, 'Since'), h('dd', {}, when(period.start))),
    limit ? meter : null,
    Object.keys(period.providers ?? {}).length
      ? h('div', { class: 'muted small' }, 'Per provider: ',
        Object.entries(period.providers).map(([p, v]) =>
          `${p} ${money(v.spent)} of ${money(v.limit)}`).join('; '))
      : null,
  );
}

/** A table's head row; the columns from `firstNumber` on are numbers, aligned right. */
function headRow(columns, firstNumber) {
  return h('thead', {}, h('tr', {}, columns.map((c, i) => h('th', { class: i >= firstNumber ? 'num' : null }, c))));
}

function requestRow({ at, reply, request }) {
  const usage = reply.usage ?? {};
  return h('tr', {},
    h('td', {}, at.toLocaleTimeString()),
    h('td', {}, reply.provider),
    h('td', {}, reply.model),
    h('td', {}, request.component ?? ''),
    h('td', {}, reply.context ?? ''),
    h('td', { class: 'num' }, count(usage.total_tokens)),
    h('td', { class: 'num cost' }, money(reply.cost)));
}

export function spendView(app) {
  const problem = h('div');
  const policy = h('select', { id: 'budget-policy' },
    ['ignore', 'warn', 'enforce'].map((p) => h('option', { value: p }, p)));
  const limitPeriod = h('select', { id: 'limit-period' }, PERIODS.map((p) => h('option', { value: p }, p)));
  const limitAmount = h('input', { id: 'limit-amount', type: 'number', min: 0, step: 'any', placeholder: '0 removes it' });
  const limitProvider = h('select', { id: 'limit-provider' }, h('option', { value: '' }, 'all providers'));
  const periods = h('div', { class: 'cards' });
  const groupBy = h('select', { id: 'spend-group' }, GROUPS.map((g) => h('option', { value: g }, `by ${g}`)));
  const chart = h('div', { class: 'chart-box' });
  const totals = h('div');
  const requests = h('div', { class: 'requests' });

  const act = async (action) => {
    fill(problem);
    try {
      await action();
      await refresh();
    } catch (error) {
      fill(problem, app.failed(error));
    }
  };

  policy.addEventListener('change', () => act(() => app.client.setBudgetPolicy(policy.value)));
  const limitForm = h('form', {
    class: 'inline-form',
    onsubmit: (event) => {
      event.preventDefault();
      act(() => app.client.setBudgetLimit({
        period: limitPeriod.value,
        limit: Number(limitAmount.value || 0),
        provider: limitProvider.value || undefined,
      }));
    },
  }, field('Period', limitPeriod), field('Limit (USD)', limitAmount), field('Provider', limitProvider),
  h('button', { type: 'submit', id: 'limit-set' }, 'Set limit'));
  groupBy.addEventListener('change', () => refresh());

  function renderRequests() {
    if (app.requests.length === 0) {
      fill(requests, h('p', { class: 'muted' }, 'No requests from this console yet.'));
      return;
    }
    fill(requests, h('table', { class: 'table' },
      headRow(['Time', 'Provider', 'Model', 'Component', 'Context', 'Tokens', 'Cost'], 5),
      h('tbody', {}, app.requests.map(requestRow))));
  }

  async function refresh() {
    const group = groupBy.value;
    try {
      const [budget, providers, ...usage] = await Promise.all([
        app.client.getBudget(),
        app.client.getProviders(),
        ...PERIODS.map((period) => app.client.getUsage({ period, groupBy: group })),
      ]);
      policy.value = budget.policy;
      const chosen = limitProvider.value;
      fill(limitProvider, h('option', { value: '' }, 'all providers'),
        Object.keys(providers.providers ?? {}).map((p) => h('option', { value: p }, p)));
      limitProvider.value = chosen;
      fill(periods, PERIODS.filter((p) => budget.periods?.[p]).map((p) => periodCard(p, budget.periods[p])));
      const windows = PERIODS.map((period, i) => ({
        period,
        start: new Date(budget.periods[period].start),
        rows: usage[i].usage,
      })).filter((w) => !Number.isNaN(w.start.getTime()));
      const series = spendOverTime(windows);
      fill(chart, series.keys.length
        ? stackedBars(series, { title: `Spend by ${group} over time` })
        : h('p', { class: 'muted' }, 'Nothing spent in these periods.'));
      // The totals of the widest window: everything the chart shows.
      const earliest = windows.reduce((a, b) => (b.start < a.start ? b : a), windows[0]);
      const rows = earliest ? usage[PERIODS.indexOf(earliest.period)].usage : [];
      fill(totals, rows.length
        ? h('table', { class: 'table', id: 'spend-totals' },
          h('caption', { class: 'muted small' }, `Since ${when(earliest.start.toISOString())}`),
          headRow([group, 'Requests', 'Input tokens', 'Output tokens', 'Cost'], 1),
          h('tbody', {}, rows.map((row) => h('tr', {},
            h('td', {}, row.key ?? '(none)'),
            h('td', { class: 'num' }, count(row.requests)),
            h('td', { class: 'num' }, count(row.input_tokens)),
            h('td', { class: 'num' }, count(row.output_tokens)),
            h('td', { class: 'num cost' }, money(row.cost))))))
        : null);
    } catch (error) {
      fill(problem, app.failed(error));
    }
    renderRequests();
  }

  const element = h(
    'section',
    { class: 'view spend' },
    h('div', { class: 'toolbar' }, field('Policy', policy), limitForm),
    problem,
    periods,
    h('div', { class: 'panel' },
      h('div', { class: 'panel-head' }, h('h2', {}, 'Spend over time'), groupBy),
      h('p', { class: 'muted small' },
        'Each bar is a stretch of this month (and of this week, where it began last month); the last one ends now.'),
      chart,
      totals),
    h('div', { class: 'panel' },
      h('h2', {}, 'Latest requests from this console'),
      h('p', { class: 'muted small' }, 'Replies this browser tab received, newest first.'),
      requests),
  );

  app.on('spend-changed', () => {
    if (app.current === 'spend') refresh();
  });

  return { element, show: refresh };
}
