/**
 * The Spend view: each period's budget, spend over time by provider, model
 * or component, and the latest requests of every client with their cost.
 *
 * All of it is read from Rhetor: `GET /budget`, `GET /budget/usage` for each
 * period, and `GET /budget/entries` for the ledger's newest charges. It is read
 * again when the view is shown, when this console's own reply arrives, and on
 * **Refresh** (requests other clients make do not tell the console).
 */

import { spendOverTime, stackedBars } from '../chart.js';
import { count, field, fill, h, money, when } from '../dom.js';

const PERIODS = ['daily', 'weekly', 'monthly'];
const GROUPS = ['provider', 'model', 'component'];
// The latest requests listed (the server allows up to 500).
const LATEST = 50;
// How each ledger status reads, and the badge class that colours it.
const STATUSES = {
  ok: ['ok', 'ok'],
  partial: ['partial: cut off mid-stream', 'warn'],
  failed: ['failed', 'down'],
  interrupted: ['interrupted: the server stopped mid-request', 'down'],
};

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

/** One ledger entry (`GET /budget/entries`): a request's time, who and what served it, and its cost. */
function entryRow(entry) {
  const [label, tone] = STATUSES[entry.status] ?? [String(entry.status), 'down'];
  return h('tr', { 'data-status': entry.status },
    h('td', {}, when(entry.time)),
    h('td', { class: 'component' }, entry.component || '–'),
    h('td', {}, entry.provider),
    h('td', {}, entry.model),
    h('td', {}, h('span', { class: `badge ${tone} status`, title: `billed from ${entry.billed}` }, label)),
    h('td', { class: 'num', title: `${count(entry.input_tokens)} in, ${count(entry.output_tokens)} out` },
      count(entry.total_tokens)),
    h('td', { class: 'num cost' }, money(entry.cost)));
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
  const refreshButton = h('button', { type: 'button', id: 'spend-refresh', onclick: () => refresh() }, 'Refresh');

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

  function renderRequests(entries) {
    if (entries.length === 0) {
      fill(requests, h('p', { class: 'muted' }, 'No requests yet.'));
      return;
    }
    fill(requests, h('table', { class: 'table' },
      headRow(['Time', 'Component', 'Provider', 'Model', 'Status', 'Tokens', 'Cost'], 5),
      h('tbody', {}, entries.map(entryRow))));
  }

  async function refresh() {
    const group = groupBy.value;
    try {
      const [budget, providers, entries, ...usage] = await Promise.all([
        app.client.getBudget(),
        app.client.getProviders(),
        app.client.getBudgetEntries({ limit: LATEST }),
        ...PERIODS.map((period) => app.client.getUsage({ period, groupBy: group })),
      ]);
      fill(problem);
      renderRequests(entries);
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
      h('div', { class: 'panel-head' }, h('h2', {}, 'Latest requests'), refreshButton),
      h('p', { class: 'muted small' },
        `Every client's requests, newest first (the latest ${LATEST}), as the budget ledger bills them.`),
      requests),
  );

  app.on('spend-changed', () => {
    if (app.current === 'spend') refresh();
  });

  return { element, show: refresh };
}
