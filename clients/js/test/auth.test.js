/**
 * A server with RHETOR_API_KEY: the right key works over HTTP and both
 * WebSocket flavours; a missing or wrong one is Unauthorized everywhere.
 */

import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';

import { RhetorClient, TektonLLMClient, Unauthorized } from 'tekton-llm-client';

import { browserLikeWebSocket, countingWebSocket, record, shape } from './support/record.js';
import { startRhetor } from './support/rhetor.js';

const KEY = 'js-test-key-0123456789';

describe('an API key', () => {
  let server;
  before(async () => {
    server = await startRhetor({ env: { RHETOR_API_KEY: KEY } });
  });
  after(() => server.stop());

  it('without a key, calls reject with Unauthorized (401); /health stays open', async () => {
    const client = new RhetorClient({ url: server.url });
    const error = await client.getProviders().catch((e) => e);
    assert.ok(error instanceof Unauthorized, String(error));
    assert.equal(error.status, 401);
    assert.equal(error.type, 'unauthorized');
    assert.equal((await client.health()).status, 'healthy');
    client.close();
  });

  it('a wrong key is Unauthorized over HTTP, and for a stream (the refused handshake explained)', async () => {
    const client = new RhetorClient({ url: server.url, apiKey: 'not-the-key' });
    const error = await client.sendMessage({ message: 'hi' }).catch((e) => e);
    assert.ok(error instanceof Unauthorized, String(error));
    assert.match(error.message, /API key/);
    assert.ok(!error.message.includes('not-the-key'), 'the key is never echoed');
    const { finished } = record((callbacks) => client.streamMessage({ message: 'hi', ...callbacks }));
    const { error: streamError, events } = await finished;
    assert.ok(streamError instanceof Unauthorized, String(streamError));
    assert.deepEqual(shape(events), ['error']);
    client.close();
  });

  it('the right key works over HTTP and over Node\'s WebSocket, sent as a header, not in the URL', async () => {
    const sockets = await countingWebSocket();
    const client = new RhetorClient({ url: server.url, apiKey: KEY, WebSocket: sockets.WebSocket });
    assert.equal((await client.sendMessage({ message: 'keyed' })).message, '[simulated] You said: keyed');
    const { finished } = record((callbacks) => client.streamMessage({ message: 'keyed stream', ...callbacks }));
    assert.equal((await finished).reply.message, '[simulated] You said: keyed stream');
    assert.deepEqual(sockets.opened, [`${server.url.replace('http', 'ws')}/ws`]);
    client.close();
  });

  it('over a browser\'s WebSocket, which cannot send headers, the key goes as ?api_key=', async () => {
    const sockets = await browserLikeWebSocket();
    const client = new RhetorClient({ url: server.url, apiKey: KEY, WebSocket: sockets.WebSocket });
    const { finished } = record((callbacks) => client.streamMessage({ message: 'browser', ...callbacks }));
    assert.equal((await finished).reply.message, '[simulated] You said: browser');
    assert.deepEqual(sockets.opened, [`${server.url.replace('http', 'ws')}/ws?api_key=${KEY}`]);
    client.close();
  });

  it('a browser\'s WebSocket with a wrong key is Unauthorized too', async () => {
    const sockets = await browserLikeWebSocket();
    const client = new RhetorClient({ url: server.url, apiKey: 'wrong', WebSocket: sockets.WebSocket });
    const { finished } = record((callbacks) => client.streamMessage({ message: 'x', ...callbacks }));
    const { error } = await finished;
    assert.ok(error instanceof Unauthorized, String(error));
    client.close();
  });

  it('TektonLLMClient sends its authToken as the key', async () => {
    const client = new TektonLLMClient({ componentId: 'keyed-ui', rhetorUrl: server.url, authToken: KEY });
    const response = await client.generateText('with a token');
    assert.equal(response.content, '[simulated] You said: with a token');
    const refused = new TektonLLMClient({ componentId: 'keyed-ui', rhetorUrl: server.url, authToken: 'x' });
    await assert.rejects(refused.getProviders(), Unauthorized);
    client.close();
    refused.close();
  });
});
