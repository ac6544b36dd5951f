/**
 * RhetorClient's HTTP calls against a real server: every method once, and its errors.
 */

import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';

import { NotFound, RequestCancelled, RhetorClient, ValidationError } from 'tekton-llm-client';

export default function calls(server) {
  describe('RhetorClient over HTTP', () => {
    let client;
    before(() => {
      client = new RhetorClient({ url: server.url, component: 'js-calls' });
    });
    after(() => client.close());

    it('health answers healthy, with the simulated provider available', async () => {
      const health = await client.health();
      assert.equal(health.status, 'healthy');
      assert.equal(health.providers.simulated, true);
    });

    it('getProviders lists the simulated provider as available and active', async () => {
      const providers = await client.getProviders();
      assert.equal(providers.providers.simulated.available, true);
      assert.deepEqual(providers.providers.simulated.models, ['simulated-echo', 'simulated-summary']);
      assert.equal(providers.active_provider, 'simulated');
    });

    it('setProvider changes the active model, and an unknown provider is NotFound', async () => {
      const set = await client.setProvider('simulated', 'simulated-summary');
      assert.equal(set.active_model, 'simulated-summary');
      const back = await client.setProvider('simulated', 'simulated-echo');
      assert.equal(back.active_model, 'simulated-echo');
      await assert.rejects(client.setProvider('no-such-provider'), NotFound);
    });

    it('sendMessage resolves to the reply: message, model, provider, context, usage, cost', async () => {
      const reply = await client.sendMessage({
        message: 'What is Tekton?',
        contextId: 'js-calls:send',
        taskType: 'chat',
        component: 'my-component',
      });
      assert.equal(reply.message, '[simulated] You said: What is Tekton?');
      assert.equal(reply.model, 'simulated-echo');
      assert.equal(reply.provider, 'simulated');
      assert.equal(reply.context, 'js-calls:send');
      assert.equal(reply.task_type, 'chat');
      assert.ok(reply.usage.total_tokens > 0);
      assert.ok(reply.cost > 0, 'the price override makes every request cost something');
    });

    it('sendMessage offers tools and the reply carries the call; the result goes back as a block', async () => {
      const weather = {
        name: 'get_weather',
        parameters: { type: 'object', properties: { city: { type: 'string' } }, required: ['city'] },
      };
      const asked = await client.sendMessage({
        message: 'Weather in Paris?',
        contextId: 'js-calls:tools',
        tools: [weather],
        toolChoice: 'required',
      });
      assert.equal(asked.finish_reason, 'tool_calls');
      const [call] = asked.tool_calls;
      assert.equal(call.name, 'get_weather');
      assert.equal(typeof JSON.parse(call.arguments).city, 'string');
      const answered = await client.sendMessage({
        message: [{ type: 'tool_result', call_id: call.id, content: 'sunny' }],
        contextId: 'js-calls:tools',
        tools: [weather],
      });
      assert.equal(answered.finish_reason, 'stop');
      assert.deepEqual(answered.tool_calls, []);
      assert.match(answered.message, /sunny/);
    });

    it('sendMessage keeps the conversation of a context on the server', async () => {
      await client.sendMessage({ message: 'first', contextId: 'js-calls:memory' });
      const second = await client.sendMessage({ message: 'second', contextId: 'js-calls:memory' });
      assert.equal(second.message, '[simulated] You said: second (I can see 2 earlier messages.)');
    });

    it('sendMessage sends model, temperature, maxTokens and systemPrompt as the server names them', async () => {
      const reply = await client.sendMessage({
        message: 'one two three four five six',
        model: 'simulated-echo',
        temperature: 0.2,
        maxTokens: 3,
        systemPrompt: 'Be brief.',
        routingParameters: { complexity: 'low', requiredCapabilities: [], maxCost: 1 },
      });
      assert.equal(reply.usage.output_tokens <= 3, true, JSON.stringify(reply.usage));
      assert.ok(reply.message.length < '[simulated] You said: one two'.length);
    });

    it('a field the server refuses rejects with ValidationError naming it, status 422', async () => {
      const error = await client.sendMessage({ message: 'hi', maxTokens: 0 }).catch((e) => e);
      assert.ok(error instanceof ValidationError);
      assert.equal(error.type, 'validation_error');
      assert.equal(error.status, 422);
      assert.equal(error.field, 'max_tokens');
      assert.equal(error.message, 'max_tokens: must be at least 1');
    });

    it('chat answers a conversation of role/content turns', async () => {
      const reply = await client.chat(
        [
          { role: 'system', content: 'You are a helpful assistant.' },
          { role: 'user', content: 'Hello' },
          { role: 'assistant', content: 'Hi!' },
          { role: 'user', content: 'What is Tekton?' },
        ],
        { taskType: 'chat' },
      );
      assert.match(reply.message, /^\[simulated\] You said: What is Tekton\? \(I can see 2 earlier/);
      assert.equal(reply.provider, 'simulated');
    });

    it('contexts: list, read, search, summarize and delete; then it is NotFound', async () => {
      const id = 'js-calls:ctx@1.a_b';
      await client.sendMessage({ message: 'remember the zebra', contextId: id });
      const listed = await client.getContexts({ limit: 100 });
      assert.ok(listed.some((c) => c.id === id && c.message_count === 2));
      const detail = await client.getContext(id);
      assert.deepEqual(
        detail.messages.map((m) => [m.role, m.content]),
        [
          ['user', 'remember the zebra'],
          ['assistant', '[simulated] You said: remember the zebra'],
        ],
      );
      assert.equal((await client.getContext(id, { limit: 1 })).messages.length, 1);
      const hits = await client.searchContexts('zebra', { limit: 5 });
      assert.ok(hits.some((h) => h.context_id === id && h.snippet.includes('zebra')));
      const summary = await client.summarizeContext(id);
      assert.equal(summary.context_id, id);
      assert.match(summary.summary, /^Summary/);
      assert.deepEqual(await client.deleteContext(id), { deleted: true, id });
      await assert.rejects(client.getContext(id), NotFound);
    });

    it('templates: create, list, read, update to a new version, render, generate and delete', async () => {
      const created = await client.createTemplate({
        name: 'js-greeting',
        content: 'Hello {name}, welcome to {place}.',
        description: 'a greeting',
        category: 'js-tests',
        optional: ['place'],
        defaults: { place: 'Tekton' },
      });
      assert.equal(created.name, 'js-greeting');
      assert.equal(created.version, 1);
      assert.deepEqual([...created.variables].sort(), ['name', 'place']);
      const listed = await client.getTemplates({ category: 'js-tests' });
      assert.deepEqual(
        listed.map((t) => t.name),
        ['js-greeting'],
      );
      assert.equal((await client.getTemplate('js-greeting')).id, created.id);

      const updated = await client.updateTemplate(created.id, { content: 'Hi {name} from {place}!' });
      assert.equal(updated.version, 2);
      const versions = await client.templateVersions(created.id);
      assert.deepEqual(
        versions.map((v) => v.version),
        [1, 2],
      );
      const first = await client.getTemplate(created.id, { version: 1 });
      assert.equal(first.content, 'Hello {name}, welcome to {place}.');

      assert.equal(await client.renderTemplate(created.id, { name: 'Ada' }), 'Hi Ada from Tekton!');
      const missing = await client.renderTemplate(created.id, {}).catch((e) => e);
      assert.ok(missing instanceof ValidationError);
      assert.equal(missing.field, 'parameters.name');

      const reply = await client.generateFromTemplate('js-greeting', { name: 'Ada' }, { taskType: 'chat' });
      assert.equal(reply.message, '[simulated] You said: Hi Ada from Tekton!');

      assert.deepEqual(await client.deleteTemplate(created.id), { deleted: true, id: created.id });
      await assert.rejects(client.getTemplate(created.id), NotFound);
    });

    it('prompts: create a default, list, read, update, generate and delete', async () => {
      const created = await client.createPrompt({
        name: 'js prompt',
        component: 'js-prompted',
        content: 'You are the JS test prompt.',
        tags: ['test'],
        isDefault: true,
      });
      assert.equal(created.is_default, true);
      assert.deepEqual(created.tags, ['test']);
      const listed = await client.getPrompts({ component: 'js-prompted' });
      assert.deepEqual(
        listed.map((p) => p.id),
        [created.id],
      );
      // The component's default prompt reaches the model.
      const reply = await client.sendMessage({ message: 'hi', component: 'js-prompted' });
      assert.match(reply.message, /\(System prompt: You are the JS test prompt\.\)/);

      const updated = await client.updatePrompt(created.id, { content: 'Changed.', isDefault: true });
      assert.equal(updated.content, 'Changed.');
      assert.equal((await client.getPrompt(created.id)).content, 'Changed.');

      const generated = await client.generatePrompt({
        task: 'Write a function to calculate Fibonacci numbers',
        context: { language: 'JavaScript' },
        format: 'instruction',
      });
      assert.equal(generated.format, 'instruction');
      assert.match(generated.prompt, /Fibonacci/);

      assert.deepEqual(await client.deletePrompt(created.id), { deleted: true, id: created.id });
      await assert.rejects(client.getPrompt(created.id), NotFound);
    });

    it('budget reads: status, usage by component, an estimate, and an evaluation', async () => {
      await client.sendMessage({ message: 'bill this', component: 'js-billed' });
      const budget = await client.getBudget();
      assert.equal(budget.policy, 'warn');
      assert.ok(budget.periods.daily.spent > 0);
      const usage = await client.getUsage({ period: 'daily', groupBy: 'component' });
      assert.equal(usage.group_by, 'component');
      const row = usage.usage.find((r) => r.key === 'js-billed');
      assert.ok(row && row.requests === 1 && row.cost > 0, JSON.stringify(usage));
      const estimate = await client.estimateCost({ prompt: 'How much?', taskType: 'chat', maxTokens: 100 });
      assert.equal(estimate.estimated_tokens.output_tokens, 100);
      assert.ok(estimate.estimated_cost > 0);
      assert.equal(estimate.under_budget, true);
      const evaluation = await client.evaluate('What is 2+2?', '4', ['accuracy', 'clarity']);
      assert.equal(typeof evaluation.evaluation.overall_score, 'number');
      assert.deepEqual(Object.keys(evaluation.evaluation.scores).sort(), ['accuracy', 'clarity']);
    });

    it('getBudgetEntries lists requests newest first, bounded by limit and since', async () => {
      await client.sendMessage({ message: 'entry one', component: 'js-entries-1' });
      await client.sendMessage({ message: 'entry two', component: 'js-entries-2' });
      const newest = await client.getBudgetEntries({ limit: 2 });
      assert.deepEqual(newest.map((e) => e.component), ['js-entries-2', 'js-entries-1']);
      const [entry] = newest;
      assert.equal(entry.status, 'ok');
      assert.equal(entry.provider, 'simulated');
      assert.equal(entry.total_tokens, entry.input_tokens + entry.output_tokens);
      assert.ok(entry.cost > 0, 'priced, so it cost something');
      assert.ok(!Number.isNaN(Date.parse(entry.time)));
      const later = await client.getBudgetEntries({ since: entry.ts });
      assert.ok(later.length >= 1 && later.every((e) => e.ts >= entry.ts));
      const error = await client.getBudgetEntries({ limit: 501 }).catch((e) => e);
      assert.ok(error instanceof ValidationError, String(error));
      assert.equal(error.field, 'limit');
    });

    it('request reaches any route, and an unknown one rejects with NotFound', async () => {
      const root = await client.request('GET', '/');
      assert.equal(root.name, 'Rhetor');
      const error = await client.request('GET', '/no/such/route').catch((e) => e);
      assert.ok(error instanceof NotFound);
      assert.equal(error.status, 404);
    });

    it("a call aborted through its signal rejects with RequestCancelled", async () => {
      const controller = new AbortController();
      controller.abort();
      await assert.rejects(client.getProviders({ signal: controller.signal }), RequestCancelled);
    });

    it('the client never shows its key in its string form', () => {
      const keyed = new RhetorClient({ url: server.url, apiKey: 'sekrit-key' });
      assert.equal(String(keyed), `RhetorClient(${server.url})`);
      assert.ok(!JSON.stringify(keyed).includes('sekrit'));
      keyed.close();
    });
  });
}
