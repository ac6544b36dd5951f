/**
 * TektonLLMClient: the first Tekton client's names and shapes, over a real server.
 */

import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';

import { TektonLLMClient, ValidationError } from 'tekton-llm-client';

const LONG = Array.from({ length: 1000 }, (_, i) => `w${i}`).join(' ');

function streamed(start) {
  const chunks = [];
  let settle;
  const finished = new Promise((resolve) => {
    settle = resolve;
  });
  const id = start(
    (chunk) => chunks.push(chunk),
    {
      onComplete: (response) => settle({ response, chunks }),
      onError: (error) => settle({ error, chunks }),
    },
  );
  return { id, chunks, finished };
}

export default function tekton(server) {
  describe('TektonLLMClient aliases', () => {
    let client;
    before(() => {
      client = new TektonLLMClient({ componentId: 'tekton-ui', rhetorUrl: server.url, timeout: 60 });
    });
    after(() => client.close());

    it('generateText resolves to the first client\'s CompletionResponse', async () => {
      const response = await client.generateText('What is the capital of France?', {
        systemPrompt: 'You are a helpful assistant that provides accurate information.',
        temperature: 0.7,
        contextId: 'tekton-ui:generate',
      });
      assert.match(response.content, /^\[simulated\] You said: What is the capital of France\?/);
      assert.match(response.content, /System prompt: You are a helpful assistant/);
      assert.equal(response.model, 'simulated-echo');
      assert.equal(response.provider, 'simulated');
      assert.equal(response.contextId, 'tekton-ui:generate');
      assert.equal(response.finishReason, 'stop');
      assert.ok(response.usage.promptTokens > 0 && response.usage.completionTokens > 0);
      assert.equal(
        response.usage.totalTokens,
        response.usage.promptTokens + response.usage.completionTokens,
      );
      assert.equal(response.reply.message, response.content);
    });

    it('requests share the component id as their context unless given one, as in the first client', async () => {
      const first = await client.generateText('one');
      assert.equal(first.contextId, 'tekton-ui');
      const second = await client.generateText('two');
      assert.match(second.content, /I can see 2 earlier messages/);
    });

    it('generateChatResponse answers a conversation', async () => {
      const response = await client.generateChatResponse(
        [
          { role: 'system', content: 'Be brief.' },
          { role: 'user', content: 'Hello there' },
        ],
        { contextId: 'tekton-ui:chat', modelId: 'simulated-echo', providerId: 'simulated' },
      );
      assert.match(response.content, /^\[simulated\] You said: Hello there/);
    });

    it('streamText returns an id, sends chunks, then a done chunk and onComplete', async () => {
      const { id, finished } = streamed((onChunk, callbacks) =>
        client.streamText('Stream me please', onChunk, { contextId: 'tekton-ui:stream', ...callbacks }),
      );
      assert.equal(typeof id, 'string');
      const { response, chunks } = await finished;
      const last = chunks.at(-1);
      assert.equal(last.done, true);
      assert.equal(last.model, 'simulated-echo');
      assert.equal(last.provider, 'simulated');
      assert.ok(chunks.slice(0, -1).every((c) => c.done === false && typeof c.timestamp === 'string'));
      assert.equal(
        chunks.map((c) => c.chunk).join(''),
        '[simulated] You said: Stream me please',
      );
      assert.equal(response.content, '[simulated] You said: Stream me please');
    });

    it('streamChatResponse streams a conversation', async () => {
      const { finished } = streamed((onChunk, callbacks) =>
        client.streamChatResponse([{ role: 'user', content: 'chat stream' }], onChunk, {
          contextId: 'tekton-ui:chat-stream',
          ...callbacks,
        }),
      );
      const { response } = await finished;
      assert.equal(response.content, '[simulated] You said: chat stream');
    });

    it('a stream error reaches onError as a typed error', async () => {
      const { finished } = streamed((onChunk, callbacks) =>
        client.streamText('bad', onChunk, { maxTokens: -1, ...callbacks }),
      );
      const { error } = await finished;
      assert.ok(error instanceof ValidationError);
      assert.equal(error.field, 'max_tokens');
    });

    it('cancelRequest stops a running stream and silences its callbacks; an unknown id is false', async () => {
      let cancelled = null;
      const heard = [];
      const id = client.streamText(
        LONG,
        (chunk) => {
          heard.push(chunk);
          if (cancelled === null) cancelled = client.cancelRequest(id);
        },
        {
          contextId: 'tekton-ui:cancel',
          onComplete: () => heard.push('complete'),
          onError: (error) => heard.push(error),
        },
      );
      // Wait (bounded) for the server to have nothing in flight on this socket.
      const deadline = Date.now() + 30_000;
      while (cancelled === null || (await client.client.status()).in_flight > 0) {
        assert.ok(Date.now() < deadline, 'the cancelled stream is still running');
        await new Promise((resolve) => setTimeout(resolve, 50));
      }
      assert.equal(cancelled, true);
      assert.equal(heard.length, 1, 'nothing after the cancel');
      assert.equal(client.cancelRequest(id), false);
      assert.equal(client.cancelRequest('no-such-request'), false);
      // The server really stopped it: no turn was stored for the cancelled request.
      const stored = await client.client.getContexts();
      assert.ok(!stored.some((c) => c.id === 'tekton-ui:cancel' && c.message_count > 0));
    });

    it('getProviders adds the first client\'s default_provider and default_model', async () => {
      const providers = await client.getProviders();
      assert.equal(providers.default_provider, providers.active_provider);
      assert.equal(providers.default_model, 'simulated-echo');
      assert.equal(providers.providers.simulated.available, true);
    });

    it('the older constructor, (componentId, {baseUrl}), works too', async () => {
      const older = new TektonLLMClient('older-ui', { baseUrl: server.url });
      try {
        const response = await older.generateText('hello', { contextId: 'older-ui:1' });
        assert.equal(response.content, '[simulated] You said: hello');
        assert.equal(older.componentId, 'older-ui');
      } finally {
        older.close();
      }
    });
  });
}
