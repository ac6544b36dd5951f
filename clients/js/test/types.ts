/**
 * The type declarations, checked by `tsc --noEmit --strict`: the documented
 * uses compile, and misuses (each marked @ts-expect-error) do not.
 */

import {
  BudgetExceeded,
  ConnectionLost,
  ProviderUnavailable,
  RhetorClient,
  RhetorClientError,
  StreamRequest,
  TektonLLMClient,
  type Reply,
  type StreamingChunk,
  type ToolCall,
  type ToolCallPiece,
} from 'tekton-llm-client';

export async function documentedUses(): Promise<void> {
  const client = new RhetorClient({ url: 'http://localhost:8300', component: 'typed', apiKey: null });
  const reply: Reply = await client.sendMessage({ message: 'hi', contextId: 'c', taskType: 'chat' });
  const text: string = reply.message;
  const tokens: number = reply.usage.total_tokens;
  const stream: StreamRequest = client.streamMessage({
    message: 'hi',
    onTyping: (typing: boolean, context: string | null) => void [typing, context],
    onChunk: (chunk: string) => void chunk,
    onComplete: (done: Reply) => void done.model,
    onError: (error: RhetorClientError) => void [error.type, error.status, error.field, error.body],
  });
  const cancelled: boolean = await stream.cancel();
  const asked: Reply = await client.sendMessage({
    message: [{ type: 'text', text: 'Weather?' }, { type: 'image', url: 'https://example.com/a.png' }],
    tools: [{ name: 'get_weather', parameters: { type: 'object' } }],
    toolChoice: { name: 'get_weather' },
    responseFormat: { type: 'json_object' },
  });
  const calls: ToolCall[] = asked.tool_calls ?? [];
  await client.chat([
    { role: 'assistant', content: [{ type: 'tool_call', id: 'c1', name: 'get_weather', arguments: {} }] },
    { role: 'user', content: [{ type: 'tool_result', call_id: 'c1', content: 'sunny' }] },
  ]);
  client.streamMessage({
    message: 'm',
    tools: [{ name: 'f' }],
    onToolCall: (pieces: ToolCallPiece[]) => void pieces[0]?.arguments,
  });
  void calls;
  const final: Reply = await stream.done;
  client.streamChat([{ role: 'user', content: 'x' }], { onChunk: () => {} });
  const chat = await client.chat([{ role: 'system', content: 's' }, { role: 'user', content: 'u' }]);
  const providers = await client.getProviders({ signal: new AbortController().signal });
  const available: boolean = providers.providers['simulated']!.available;
  const template = await client.createTemplate({ name: 'n', content: '{x}', optional: ['x'] });
  const version: number = template.version;
  const rendered: string = await client.renderTemplate(template.id, { x: 1 });
  const versions = await client.templateVersions(template.id);
  const prompt = await client.createPrompt({ name: 'p', component: 'c', content: 'c', isDefault: true });
  const contexts = await client.getContexts({ limit: 5, offset: 0 });
  const detail = await client.getContext(contexts[0]!.id);
  const budget = await client.getBudget();
  const daily: number | null = budget.periods.daily.remaining;
  await client.setBudgetPolicy('enforce');
  await client.setBudgetLimit({ period: 'daily', limit: 1 });
  const usage = await client.getUsage({ period: 'weekly', groupBy: 'model' });
  const entries = await client.getBudgetEntries({ limit: 10, since: 0 });
  const entryStatus: 'ok' | 'partial' | 'failed' | 'interrupted' = entries[0]!.status;
  const entryTokens: number = entries[0]!.total_tokens;
  const estimate = await client.estimateCost({ prompt: 'p', maxTokens: 10 });
  const evaluation = await client.evaluate('p', 'r', ['accuracy']);
  const status = await client.status();
  const anything: unknown = await client.request('GET', '/', { query: { a: 1 } });
  client.close();

  try {
    await client.health();
  } catch (error) {
    if (error instanceof BudgetExceeded) void [error.period, error.limit, error.spent];
    if (error instanceof ProviderUnavailable) void [error.provider, error.attempts[0]?.type];
    if (error instanceof ConnectionLost) void error.body['code'];
  }

  const tekton = new TektonLLMClient({ componentId: 'ui', rhetorUrl: 'http://localhost:8300', timeout: 30 });
  const older = new TektonLLMClient('ui', { baseUrl: 'http://localhost:8300' });
  const completion = await tekton.generateText('p', { systemPrompt: 's', temperature: 0.2 });
  const id: string = tekton.streamText('p', (chunk: StreamingChunk) => void chunk.done, {
    onComplete: (response) => void response.usage?.totalTokens,
  });
  const wasRunning: boolean = tekton.cancelRequest(id);
  const defaults = await older.getProviders();
  void [text, tokens, cancelled, final, chat, available, version, rendered, versions, prompt];
  void [detail, daily, usage, entryStatus, entryTokens, estimate, evaluation, status, anything];
  void [completion, wasRunning];
  void defaults.default_model;
}

export async function misuses(client: RhetorClient): Promise<void> {
  // @ts-expect-error: a message is required
  await client.sendMessage({ contextId: 'c' });
  // @ts-expect-error: a tool choice is auto, none, required or a named tool
  await client.sendMessage({ message: 'm', toolChoice: 'sometimes' });
  // @ts-expect-error: callbacks get a string chunk
  client.streamMessage({ message: 'm', onChunk: (chunk: number) => void chunk });
  // @ts-expect-error: not a policy
  await client.setBudgetPolicy('sometimes');
  // @ts-expect-error: since is a unix timestamp in seconds, not a Date
  await client.getBudgetEntries({ since: new Date() });
  // @ts-expect-error: a template needs content
  await client.createTemplate({ name: 'n' });
  // @ts-expect-error: replies are not writable strings
  const n: number = (await client.sendMessage({ message: 'm' })).message;
  // @ts-expect-error: streamText answers an id, not a promise
  await new TektonLLMClient({ componentId: 'c' }).streamText('p', () => {}).then();
  void n;
}
