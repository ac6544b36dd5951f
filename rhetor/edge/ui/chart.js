/**
 * Spend over time, from what Rhetor answers today, and its chart.
 *
 * Rhetor sums usage over three calendar windows that all end now: this day,
 * this week and this month (`GET /budget/usage?period=...`, with each
 * window's start in `GET /budget`). Windows ending at the same instant are
 * nested, so the differences between them are disjoint stretches of time:
 * with the week starting before the month, "week start to month start",
 * "month start to today" and "today". `spendOverTime` computes those, per
 * key (provider, model or component); `stackedBars` draws them as an SVG
 * chart, one bar per stretch, stacked by key.
 */

import { h, money, shortDate, svg } from './dom.js';

const COLOURS = ['#3557c4', '#d9822b', '#2f9e6e', '#b8406a', '#7b5cc4', '#8a8f2d', '#2c8fb8', '#a0522d'];

/**
 * Stretches of time with the cost of each key in each.
 *
 * `windows`: `[{period, start: Date, rows: [{key, cost, requests}]}]`.
 * Answers `{buckets: [{label, from, to, costs: Map(key -> cost)}], keys}`,
 * oldest stretch first, keys costliest first. A key's cost in a stretch is
 * the wider window's minus the narrower one's (the three answers are read
 * one after another, so a charge landing in between could make it a hair
 * negative: it is then 0).
 */
export function spendOverTime(windows, now = new Date()) {
  const ordered = [...windows].sort((a, b) => a.start - b.start);
  const sums = ordered.map((w) => {
    const costs = new Map();
    for (const row of w.rows) costs.set(row.key ?? '(none)', (costs.get(row.key ?? '(none)') ?? 0) + row.cost);
    return costs;
  });
  const buckets = [];
  for (let i = 0; i < ordered.length; i += 1) {
    const from = ordered[i].start;
    const to = i + 1 < ordered.length ? ordered[i + 1].start : now;
    if (to - from <= 0) continue; // two windows starting together leave nothing between them
    const costs = new Map();
    for (const [key, cost] of sums[i]) {
      const later = i + 1 < ordered.length ? sums[i + 1].get(key) ?? 0 : 0;
      costs.set(key, Math.max(0, cost - later));
    }
    const label = i + 1 < ordered.length ? `${shortDate(from)} – ${shortDate(to)}` : `${shortDate(from)} – now`;
    buckets.push({ label, from, to, costs });
  }
  const totals = new Map();
  for (const bucket of buckets) {
    for (const [key, cost] of bucket.costs) totals.set(key, (totals.get(key) ?? 0) + cost);
  }
  const keys = [...totals.keys()].sort((a, b) => totals.get(b) - totals.get(a) || a.localeCompare(b));
  return { buckets, keys, totals };
}

/** A stacked bar chart of `spendOverTime`'s answer, as an SVG element with a legend. */
export function stackedBars({ buckets, keys }, { title }) {
  const width = 640;
  const height = 240;
  const left = 64;
  const bottom = 40;
  const top = 16;
  const plotHeight = height - top - bottom;
  const max = Math.max(0, ...buckets.map((b) => [...b.costs.values()].reduce((s, c) => s + c, 0)));
  const colour = new Map(keys.map((key, i) => [key, COLOURS[i % COLOURS.length]]));
  const slot = (width - left - 16) / Math.max(1, buckets.length);
  const barWidth = Math.min(96, slot * 0.6);
  const scale = max > 0 ? plotHeight / max : 0;

  const chart = svg('svg', {
    viewBox: `0 0 ${width} ${height}`,
    class: 'chart',
    role: 'img',
    'aria-label': title,
  }, svg('title', {}, title));
  // Axis: zero and the top value.
  chart.append(
    svg('line', { x1: left, y1: top + plotHeight, x2: width - 8, y2: top + plotHeight, class: 'axis' }),
    svg('text', { x: left - 6, y: top + plotHeight, class: 'tick', 'text-anchor': 'end' }, '$0'),
  );
  if (max > 0) {
    chart.append(
      svg('line', { x1: left, y1: top, x2: width - 8, y2: top, class: 'grid' }),
      svg('text', { x: left - 6, y: top + 4, class: 'tick', 'text-anchor': 'end' }, money(max)),
    );
  }
  buckets.forEach((bucket, i) => {
    const x = left + slot * i + (slot - barWidth) / 2;
    let y = top + plotHeight;
    const bar = svg('g', { class: 'bar', 'data-label': bucket.label });
    for (const key of keys) {
      const cost = bucket.costs.get(key) ?? 0;
      if (cost <= 0) continue;
      const barHeight = Math.max(1, cost * scale);
      y -= barHeight;
      bar.append(svg('rect', { x, y, width: barWidth, height: barHeight, fill: colour.get(key) },
        svg('title', {}, `${key}: ${money(cost)} (${bucket.label})`)));
    }
    const total = [...bucket.costs.values()].reduce((s, c) => s + c, 0);
    bar.append(
      svg('text', { x: x + barWidth / 2, y: y - 4, class: 'value', 'text-anchor': 'middle' }, money(total)),
      svg('text', { x: x + barWidth / 2, y: height - bottom + 16, class: 'tick', 'text-anchor': 'middle' }, bucket.label),
    );
    chart.append(bar);
  });
  const legend = h('ul', { class: 'legend' }, keys.map((key) =>
    h('li', {}, svg('svg', { viewBox: '0 0 10 10', width: 10, height: 10 },
      svg('rect', { width: 10, height: 10, fill: colour.get(key) })), ` ${key}`)));
  return h('figure', { class: 'chart-figure' }, chart, legend);
}
