/**
 * A budget refusal, over HTTP and over the WebSocket, on a server with priced models.
 */

import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';

import { BudgetExceeded, RhetorClient } from 'tekton-llm-client';

import { record, shape } from '../support/record.js';

export default function budget(server) {
  describe('budget refusals', () => {
    let client;
    before(async () => {
      client = new RhetorClient({ url: server.url, component: 'js-budget' });
      const policy = await client.setBudgetPolicy('enforce');
      assert.equal(policy.policy, 'enforce');
      const limited = await client.setBudgetLimit({ period: 'daily', limit: 0.0001 });
      assert.equal(limited.periods.daily.limit, 0.0001);
    });
    after(async () => {
      // Put the server back as the other suites found it.
      await client.setBudgetLimit({ period: 'daily', limit: 0 });
      await client.setBudgetPolicy('warn');
      client.close();
    });

    it('sendMessage over the limit rejects with BudgetExceeded: 402, period, limit, spent', async () => {
      const error = await client.sendMessage({ message: 'an expensive question' }).catch((e) => e);
      assert.ok(error instanceof BudgetExceeded, String(error));
      assert.equal(error.type, 'budget_exceeded');
      assert.equal(error.status, 402);
      assert.equal(error.period, 'daily');
      assert.equal(error.limit, 0.0001);
      assert.equal(typeof error.spent, 'number');
      assert.match(error.message, /daily/);
    });

    it('a streamed request over the limit reports BudgetExceeded to onError', async () => {
      const { finished } = record((callbacks) =>
        client.streamMessage({ message: 'an expensive stream', ...callbacks }),
      );
      const { error, events } = await finished;
      assert.ok(error instanceof BudgetExceeded, String(error));
      assert.equal(error.period, 'daily');
      assert.equal(error.status, null, 'it came over the WebSocket, not HTTP');
      assert.equal(shape(events).at(-1), 'error');
      assert.ok(!shape(events).includes('chunk'));
    });
  });
}
