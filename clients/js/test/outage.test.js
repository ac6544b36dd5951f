/**
 * The server going away: killed mid-stream, down, back again, and stopping gracefully.
 */

import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';

import {
  ConnectionLost,
  ConnectionRefused,
  RhetorClient,
} from 'tekton-llm-client';

import { countingWebSocket, record, shape } from './support/record.js';
import { startRhetor } from './support/rhetor.js';

// At 0.1 s a chunk this stream would run for half a minute: it is always mid-way when stopped.
const LONG = Array.from({ length: 300 }, (_, i) => `word${i}`).join(' ');
const SLOW = { RHETOR_SIMULATED_CHUNK_DELAY: '0.1' };

describe('the server going away', () => {
  let server;
  let client;
  let sockets;
  before(async () => {
    server = await startRhetor({ env: SLOW });
    sockets = await countingWebSocket();
    client = new RhetorClient({
      url: server.url,
      component: 'js-outage',
      WebSocket: sockets.WebSocket,
      connectTimeoutMs: 20_000,
    });
  });
  after(async () => {
    client.close();
    await server.stop();
  });

  it('a stream in flight when the server is killed ends with ConnectionLost, after typing off', async () => {
    const warm = await client.sendMessage({ message: 'warm up' });
    assert.equal(warm.provider, 'simulated');
    const { finished } = record(
      (callbacks) => client.streamMessage({ message: LONG, contextId: 'outage:1', ...callbacks }),
      { onChunk: () => server.crash() },
    );
    const { error, events } = await finished;
    assert.ok(error instanceof ConnectionLost, String(error));
    assert.equal(error.type, null, 'the client noticed it; the server said nothing');
    assert.equal(error.body.code, 1006);
    assert.deepEqual(shape(events), ['typing:true', 'chunk', 'typing:false', 'error']);
  });

  it('while the server is down, calls and streams fail with ConnectionRefused', async () => {
    await assert.rejects(client.getProviders(), ConnectionRefused);
    const { finished } = record((callbacks) =>
      client.streamMessage({ message: 'anyone there?', ...callbacks }),
    );
    const { error, events } = await finished;
    assert.ok(error instanceof ConnectionRefused, String(error));
    assert.deepEqual(shape(events), ['error']);
  });

  it('once the server is back on its port, the same client reconnects for the next stream', async () => {
    const port = server.port;
    const opened = sockets.opened.length;
    server = await startRhetor({ env: SLOW, dir: server.dir, port });
    const { finished } = record((callbacks) =>
      client.streamMessage({ message: 'back again', ...callbacks }),
    );
    const { reply, events } = await finished;
    assert.equal(reply.message, '[simulated] You said: back again');
    assert.deepEqual(shape(events), ['typing:true', 'chunk', 'typing:false', 'complete']);
    assert.equal(sockets.opened.length, opened + 1, 'one new socket');
  });

  it('a stream in flight when the server stops gracefully ends with ConnectionLost (1001)', async () => {
    let stopping = null;
    const { finished } = record(
      (callbacks) => client.streamMessage({ message: LONG, ...callbacks }),
      {
        onChunk: () => {
          stopping ??= server.stop();
        },
      },
    );
    const { error, events } = await finished;
    await stopping;
    assert.ok(error instanceof ConnectionLost, String(error));
    assert.equal(error.body.code, 1001);
    assert.match(error.message, /1001/);
    assert.deepEqual(shape(events).slice(-2), ['typing:false', 'error']);
  });
});
