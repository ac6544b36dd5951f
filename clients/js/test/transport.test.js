/**
 * Deadlines and broken connections, against loopback peers that misbehave on
 * purpose (silent, resetting, refusing): the cases a healthy Rhetor never shows.
 */

import assert from 'node:assert/strict';
import { once } from 'node:events';
import { createServer } from 'node:http';
import { describe, it } from 'node:test';

import { WebSocketServer } from 'ws';

import {
  ConnectionLost,
  ConnectionRefused,
  RhetorClient,
  Timeout,
  ValidationError,
} from 'tekton-llm-client';

import { record, shape } from './support/record.js';

/** An HTTP server running `handler` on a free loopback port; `close()` ends it. */
async function httpPeer(handler) {
  const server = createServer(handler);
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  const { port } = server.address();
  return {
    server,
    url: `http://127.0.0.1:${port}`,
    close: () => {
      server.closeAllConnections();
      server.close();
    },
  };
}

/** A WebSocket peer on /ws; `onFrame(frame, socket)` sees each frame the client sends. */
async function wsPeer(onFrame) {
  const peer = await httpPeer((request, response) => {
    response.writeHead(200, { 'Content-Type': 'application/json' });
    response.end('{}');
  });
  const wss = new WebSocketServer({ server: peer.server, path: '/ws' });
  const frames = [];
  wss.on('connection', (socket) => {
    socket.on('message', (data) => {
      const frame = JSON.parse(String(data));
      frames.push(frame);
      onFrame(frame, socket);
    });
  });
  return {
    url: peer.url,
    frames,
    close: () => {
      for (const socket of wss.clients) socket.terminate();
      wss.close();
      peer.close();
    },
  };
}

function answer(socket, type, id, payload) {
  socket.send(JSON.stringify({ type, id, source: 'rhetor', target: null, payload }));
}

/** A port nothing listens on: bound, then released. */
async function closedPort() {
  const peer = await httpPeer(() => {});
  const { port } = peer.server.address();
  peer.close();
  await once(peer.server, 'close');
  return port;
}

describe('deadlines and broken connections', () => {
  it('an HTTP call to a server that never answers rejects with Timeout at its deadline', async () => {
    const peer = await httpPeer(() => {
      // Never answers.
    });
    try {
      const client = new RhetorClient({ url: peer.url, timeoutMs: 200 });
      const started = Date.now();
      const error = await client.getProviders().catch((e) => e);
      assert.ok(error instanceof Timeout, String(error));
      assert.ok(Date.now() - started >= 190);
      assert.match(error.message, /200 ms/);
      const quicker = await client.health({ timeoutMs: 50 }).catch((e) => e);
      assert.ok(quicker instanceof Timeout);
    } finally {
      peer.close();
    }
  });

  it('nothing listening: HTTP calls and streams fail with ConnectionRefused', async () => {
    const client = new RhetorClient({ url: `http://127.0.0.1:${await closedPort()}` });
    await assert.rejects(client.sendMessage({ message: 'hi' }), ConnectionRefused);
    const { finished } = record((callbacks) => client.streamMessage({ message: 'hi', ...callbacks }));
    const { error, events } = await finished;
    assert.ok(error instanceof ConnectionRefused, String(error));
    assert.deepEqual(shape(events), ['error']);
  });

  it('a GET whose kept-alive connection was closed is sent again once; a POST is not', async () => {
    let seen = 0;
    const peer = await httpPeer((request, response) => {
      seen += 1;
      if (seen === 1 || request.method === 'POST') {
        request.socket.destroy(); // as a server that died with the connection open
        return;
      }
      response.writeHead(200, { 'Content-Type': 'application/json' });
      response.end('{"providers": {}}');
    });
    try {
      const client = new RhetorClient({ url: peer.url });
      assert.deepEqual(await client.getProviders(), { providers: {} });
      assert.equal(seen, 2);
      const error = await client.sendMessage({ message: 'bill me once' }).catch((e) => e);
      assert.ok(error instanceof ConnectionLost, String(error));
      assert.equal(seen, 3, 'the POST was sent once');
    } finally {
      peer.close();
    }
  });

  it('every POST and PUT is JSON, even without a body; a GET has no Content-Type', async () => {
    const seen = [];
    const peer = await httpPeer(async (request, response) => {
      let body = '';
      for await (const part of request) body += part;
      seen.push([request.method, request.headers['content-type'], body, request.headers.origin]);
      response.writeHead(200, { 'Content-Type': 'application/json' });
      response.end('{"context_id": "c", "summary": "s", "versions": [], "template": "t"}');
    });
    try {
      const client = new RhetorClient({ url: peer.url });
      await client.summarizeContext('c');
      await client.updatePrompt('p', {});
      await client.templateVersions('t');
      assert.deepEqual(seen, [
        ['POST', 'application/json', '{}', undefined],
        ['PUT', 'application/json', '{}', undefined],
        ['GET', undefined, '', undefined],
      ]);
    } finally {
      peer.close();
    }
  });

  it('an answer that is not JSON rejects with a ServerError naming the status', async () => {
    const peer = await httpPeer((request, response) => {
      response.writeHead(200, { 'Content-Type': 'text/html' });
      response.end('<html>a proxy page</html>');
    });
    try {
      const client = new RhetorClient({ url: peer.url });
      const error = await client.getBudget().catch((e) => e);
      assert.equal(error.name, 'ServerError');
      assert.match(error.message, /200 with a body that is not JSON/);
    } finally {
      peer.close();
    }
  });

  it('a socket that never registers fails the stream with Timeout at connectTimeoutMs', async () => {
    const peer = await wsPeer(() => {
      // Never answers REGISTER.
    });
    try {
      const client = new RhetorClient({ url: peer.url, connectTimeoutMs: 150 });
      const { finished } = record((callbacks) => client.streamMessage({ message: 'hi', ...callbacks }));
      const { error } = await finished;
      assert.ok(error instanceof Timeout, String(error));
      assert.match(error.message, /REGISTER/);
      client.close();
    } finally {
      peer.close();
    }
  });

  it('a request the server goes silent on fails with Timeout, and the client sends CANCEL for it', async () => {
    const peer = await wsPeer((frame, socket) => {
      if (frame.type === 'REGISTER') answer(socket, 'RESPONSE', frame.id, { status: 'registered' });
      if (frame.type === 'LLM_REQUEST') {
        answer(socket, 'UPDATE', frame.id, { status: 'typing', isTyping: true, context: null });
      }
    });
    try {
      const client = new RhetorClient({ url: peer.url, component: 'silent-test' });
      const { handle, finished } = record((callbacks) =>
        client.streamMessage({ message: 'hello?', timeoutMs: 200, ...callbacks }),
      );
      const { error, events } = await finished;
      assert.ok(error instanceof Timeout, String(error));
      assert.deepEqual(shape(events), ['typing:true', 'typing:false', 'error']);
      const deadline = Date.now() + 10_000;
      while (!peer.frames.some((f) => f.type === 'CANCEL')) {
        assert.ok(Date.now() < deadline, 'no CANCEL was sent');
        await new Promise((resolve) => setTimeout(resolve, 10));
      }
      const cancel = peer.frames.find((f) => f.type === 'CANCEL');
      assert.deepEqual(cancel.payload, { id: handle.id });
      assert.equal(cancel.source, 'silent-test');
      client.close();
    } finally {
      peer.close();
    }
  });

  it('frames interleaved out of order reach their own requests by id', async () => {
    const pending = [];
    const peer = await wsPeer((frame, socket) => {
      if (frame.type === 'REGISTER') answer(socket, 'RESPONSE', frame.id, { status: 'registered' });
      if (frame.type !== 'LLM_REQUEST') return;
      pending.push(frame);
      if (pending.length < 2) return;
      // Answer the second request first, with the first's chunks in between.
      const [a, b] = pending;
      answer(socket, 'UPDATE', b.id, { chunk: 'B1' });
      answer(socket, 'UPDATE', a.id, { chunk: 'A1' });
      answer(socket, 'RESPONSE', b.id, { message: 'B1', model: 'm', provider: 'p' });
      answer(socket, 'UPDATE', a.id, { chunk: 'A2' });
      answer(socket, 'RESPONSE', a.id, { message: 'A1A2', model: 'm', provider: 'p' });
    });
    try {
      const client = new RhetorClient({ url: peer.url });
      const first = record((callbacks) => client.streamMessage({ message: 'a', ...callbacks }));
      const second = record((callbacks) => client.streamMessage({ message: 'b', ...callbacks }));
      assert.equal((await first.finished).reply.message, 'A1A2');
      assert.equal(first.handle.text, 'A1A2');
      assert.equal((await second.finished).reply.message, 'B1');
      assert.equal(second.handle.text, 'B1');
      client.close();
    } finally {
      peer.close();
    }
  });

  it('an id-less ERROR goes to the one request that has heard nothing yet', async () => {
    const peer = await wsPeer((frame, socket) => {
      if (frame.type === 'REGISTER') answer(socket, 'RESPONSE', frame.id, { status: 'registered' });
      if (frame.type === 'LLM_REQUEST') {
        answer(socket, 'ERROR', null, { type: 'payload_too_large', message: 'frame too big' });
      }
    });
    try {
      const client = new RhetorClient({ url: peer.url });
      const { finished } = record((callbacks) => client.streamMessage({ message: 'x', ...callbacks }));
      const { error } = await finished;
      assert.ok(error instanceof ValidationError, String(error));
      assert.equal(error.type, 'payload_too_large');
      client.close();
    } finally {
      peer.close();
    }
  });

  it('a socket the server closes mid-request ends it with ConnectionLost carrying the close code', async () => {
    const peer = await wsPeer((frame, socket) => {
      if (frame.type === 'REGISTER') answer(socket, 'RESPONSE', frame.id, { status: 'registered' });
      if (frame.type === 'LLM_REQUEST') {
        answer(socket, 'UPDATE', frame.id, { chunk: 'partial ' });
        socket.close(1011, 'session unavailable');
      }
    });
    try {
      const client = new RhetorClient({ url: peer.url });
      const { finished } = record((callbacks) => client.streamMessage({ message: 'x', ...callbacks }));
      const { error, events } = await finished;
      assert.ok(error instanceof ConnectionLost, String(error));
      assert.equal(error.body.code, 1011);
      assert.match(error.message, /1011: session unavailable/);
      assert.deepEqual(shape(events), ['chunk', 'error']);
      client.close();
    } finally {
      peer.close();
    }
  });
});
