/**
 * Streaming over the WebSocket against a real server: typing, chunks, many
 * requests on one socket, cancel, errors, status and close.
 */

import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';

import {
  RequestCancelled,
  RhetorClient,
  RhetorClientError,
  StreamRequest,
  ValidationError,
} from 'tekton-llm-client';

import { chunksOf, countingWebSocket, record, shape } from '../support/record.js';

// Long enough that, at the server's chunk delay, the stream is still running when cancelled.
const LONG = Array.from({ length: 1000 }, (_, i) => `w${i}`).join(' ');

export default function streaming(server) {
  describe('RhetorClient over the WebSocket', () => {
    let client;
    let sockets;
    before(async () => {
      sockets = await countingWebSocket();
      client = new RhetorClient({
        url: server.url,
        component: 'js-stream',
        WebSocket: sockets.WebSocket,
      });
    });
    after(() => client.close());

    it('streamMessage reports typing on, the chunks, typing off, then the whole reply', async () => {
      const { handle, finished } = record((callbacks) =>
        client.streamMessage({
          message: 'Explain how Rhetor works',
          contextId: 'js-stream:1',
          taskType: 'reasoning',
          component: 'my-component',
          ...callbacks,
        }),
      );
      assert.ok(handle instanceof StreamRequest);
      const { reply, events } = await finished;
      assert.deepEqual(shape(events), ['typing:true', 'chunk', 'typing:false', 'complete']);
      assert.equal(chunksOf(events).join(''), reply.message);
      assert.equal(reply.message, '[simulated] You said: Explain how Rhetor works');
      assert.equal(reply.model, 'simulated-echo');
      assert.equal(reply.provider, 'simulated');
      assert.equal(reply.context, 'js-stream:1');
      assert.equal(reply.task_type, 'reasoning');
      assert.equal(handle.text, reply.message);
      assert.equal(handle.finished, true);
      assert.deepEqual(await handle.done, reply);
    });

    it('streamMessage with tools hands the pieces of the call to onToolCall, the whole call to the reply', async () => {
      const pieces = [];
      const request = client.streamMessage({
        message: 'Weather?',
        tools: [{ name: 'get_weather', parameters: { type: 'object', properties: {} } }],
        toolChoice: { name: 'get_weather' },
        onToolCall: (got) => pieces.push(...got),
      });
      const reply = await request.done;
      assert.equal(reply.finish_reason, 'tool_calls');
      assert.equal(pieces[0].name, 'get_weather');
      assert.equal(pieces[0].id, reply.tool_calls[0].id);
      assert.equal(pieces.map((p) => p.arguments).join(''), reply.tool_calls[0].arguments);
    });

    it('streamChat streams the reply to a conversation', async () => {
      const { finished } = record((callbacks) =>
        client.streamChat(
          [
            { role: 'user', content: 'Hi' },
            { role: 'assistant', content: 'Hello!' },
            { role: 'user', content: 'Tell me more' },
          ],
          { taskType: 'chat', ...callbacks },
        ),
      );
      const { reply, events } = await finished;
      assert.deepEqual(shape(events), ['typing:true', 'chunk', 'typing:false', 'complete']);
      assert.equal(reply.message, '[simulated] You said: Tell me more (I can see 2 earlier messages.)');
    });

    it('many requests share one socket, and each gets its own answer by id', async () => {
      const before = sockets.opened.length;
      const streams = Array.from({ length: 6 }, (_, i) =>
        record((callbacks) => client.streamMessage({ message: `request number ${i}`, ...callbacks })),
      );
      assert.equal(new Set(streams.map((s) => s.handle.id)).size, 6);
      const results = await Promise.all(streams.map((s) => s.finished));
      results.forEach(({ reply, events }, i) => {
        assert.equal(reply.message, `[simulated] You said: request number ${i}`);
        assert.equal(chunksOf(events).join(''), reply.message);
      });
      assert.ok(sockets.opened.length - before <= 1, 'at most one new socket for all six');
    });

    it('cancel stops a running stream: typing ends, then onError gets RequestCancelled', async () => {
      let cancelled;
      const { handle, finished } = record(
        (callbacks) => client.streamMessage({ message: LONG, ...callbacks }),
        {
          onChunk: (chunk, stream) => {
            cancelled ??= stream.cancel();
          },
        },
      );
      const { error, events } = await finished;
      assert.ok(error instanceof RequestCancelled, String(error));
      assert.equal(error.type, 'cancelled');
      assert.equal(await cancelled, true);
      assert.deepEqual(shape(events).slice(-2), ['typing:false', 'error']);
      assert.ok(chunksOf(events).length < LONG.split(' ').length, 'it stopped early');
      await assert.rejects(handle.done, RequestCancelled);
      // The socket carries on.
      const next = await client.sendMessage({ message: 'still here' });
      assert.equal(next.message, '[simulated] You said: still here');
      const again = record((callbacks) => client.streamMessage({ message: 'again', ...callbacks }));
      assert.equal((await again.finished).reply.message, '[simulated] You said: again');
    });

    it('cancel before the request is sent ends it at once, and nothing reaches the server', async () => {
      const fresh = new RhetorClient({ url: server.url, component: 'js-early-cancel' });
      try {
        const { handle, finished } = record((callbacks) =>
          fresh.streamMessage({ message: 'never sent', ...callbacks }),
        );
        assert.equal(await handle.cancel(), true);
        const { error, events } = await finished;
        assert.ok(error instanceof RequestCancelled);
        assert.deepEqual(shape(events), ['error']);
        const status = await fresh.status();
        assert.equal(status.in_flight, 0);
      } finally {
        fresh.close();
      }
    });

    it('cancel after the stream completed answers false', async () => {
      const { handle, finished } = record((callbacks) =>
        client.streamMessage({ message: 'quick', ...callbacks }),
      );
      await finished;
      assert.equal(await handle.cancel(), false);
    });

    it("a refused streamed request reports the server's typed error, and the socket carries on", async () => {
      const { finished } = record((callbacks) =>
        client.streamMessage({ message: 'bad', maxTokens: 0, ...callbacks }),
      );
      const { error } = await finished;
      assert.ok(error instanceof ValidationError);
      assert.equal(error.field, 'max_tokens');
      const ok = record((callbacks) => client.streamMessage({ message: 'fine', ...callbacks }));
      assert.equal((await ok.finished).reply.message, '[simulated] You said: fine');
    });

    it('done rejects with the typed error when no onError is given', async () => {
      const stream = client.streamMessage({ message: 'bad', temperature: 9 });
      const error = await stream.done.catch((e) => e);
      assert.ok(error instanceof ValidationError);
      assert.equal(error.field, 'temperature');
    });

    it('status answers providers and budget over the socket', async () => {
      const status = await client.status();
      assert.equal(status.providers.active_provider, 'simulated');
      assert.ok('daily' in status.budget.periods);
      assert.equal(typeof status.in_flight, 'number');
    });

    it('a frame over maxFrameBytes is refused before sending, as payload_too_large', async () => {
      const small = new RhetorClient({ url: server.url, maxFrameBytes: 2048 });
      try {
        const { finished } = record((callbacks) =>
          small.streamMessage({ message: 'x'.repeat(4096), ...callbacks }),
        );
        const { error } = await finished;
        assert.ok(error instanceof ValidationError);
        assert.equal(error.type, 'payload_too_large');
      } finally {
        small.close();
      }
    });

    it('close ends a running stream with RequestCancelled, and later calls reject', async () => {
      const closing = new RhetorClient({ url: server.url });
      const { finished } = record(
        (callbacks) => closing.streamMessage({ message: LONG, ...callbacks }),
        { onChunk: () => closing.close() },
      );
      const { error, events } = await finished;
      assert.ok(error instanceof RequestCancelled);
      assert.deepEqual(shape(events).slice(-2), ['typing:false', 'error']);
      const later = record((callbacks) => closing.streamMessage({ message: 'late', ...callbacks }));
      const { error: refused } = await later.finished;
      assert.ok(refused instanceof RhetorClientError);
      assert.match(refused.message, /closed/);
    });
  });
}
