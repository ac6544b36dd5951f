/**
 * One WebSocket on Rhetor's `/ws`, carrying many requests at once.
 *
 * The socket opens on first use and registers with `REGISTER`. Every frame
 * the client sends has its own `id`, and every frame the server sends about
 * it echoes that id, so answers are matched to requests however they
 * interleave. When the socket drops, the requests on it end with
 * ConnectionLost, and the next request opens a new socket.
 *
 * Every wait has a deadline: opening and registering (`connectTimeoutMs`),
 * each next frame of a request (`timeoutMs`), a STATUS or CANCEL answer.
 */

import {
  ConnectionLost,
  RequestCancelled,
  RhetorClientError,
  ServerError,
  Timeout,
  ValidationError,
  corsHint,
  errorFromBody,
} from './errors.js';

// A variable, so that bundlers for the browser do not try to bundle Node's `ws`.
const WS_PACKAGE = 'ws';
const OPEN = 1;
let nodeWebSocket = null;

/**
 * The WebSocket class to use, and whether it accepts handshake headers.
 *
 * Browsers and Node 22+ have a global WebSocket (no custom headers: the key
 * goes in `?api_key=`). Node 20 has none, so the optional `ws` package is
 * loaded, and the key goes in an `X-API-Key` header instead of the URL.
 * A class passed in is used as given.
 */
async function webSocketClass(explicit) {
  // Node-style sockets (EventEmitters, as `ws`) take handshake headers; a browser's never does.
  if (explicit) return { Impl: explicit, headers: typeof explicit.prototype?.on === 'function' };
  if (typeof globalThis.WebSocket === 'function') {
    return { Impl: globalThis.WebSocket, headers: false };
  }
  if (nodeWebSocket === null) {
    try {
      const mod = await import(/* @vite-ignore */ /* webpackIgnore: true */ WS_PACKAGE);
      nodeWebSocket = mod.WebSocket || mod.default;
    } catch (cause) {
      throw new RhetorClientError(
        "this platform has no WebSocket: install the 'ws' package (npm install ws)",
        { cause },
      );
    }
  }
  return { Impl: nodeWebSocket, headers: true };
}

/** Call a user callback; what it throws is reported, never lets it break the client. */
function notify(callback, ...args) {
  if (typeof callback !== 'function') return;
  try {
    callback(...args);
  } catch (error) {
    // Rethrown outside the client's own frame handling, as an event listener's would be.
    queueMicrotask(() => {
      throw error;
    });
  }
}

function closeQuietly(ws, code, reason) {
  try {
    ws.close(code, reason);
  } catch {
    // Already closing or closed: nothing left to release.
  }
}

/** One opened socket and the requests sent on it. */
class Channel {
  constructor(ws) {
    this.ws = ws;
    this.open = true;
    // Invariant: one entry per request sent on this socket and not yet finished, by frame id.
    this.requests = new Map();
  }
}

/**
 * One streamed request: what `streamMessage` and `streamChat` answer.
 *
 * `done` resolves to the reply (the object `sendMessage` resolves to) or
 * rejects with the typed error that `onError` also gets. `cancel()` asks the
 * server to stop; the request then ends with RequestCancelled.
 */
export class StreamRequest {
  #link;
  #callbacks;
  #idleMs;
  #timer = null;
  #typing = false;
  #context = null;
  #parts = [];
  #channel = null;
  // pending (not sent yet) -> sent -> done
  #state = 'pending';
  #resolve;
  #reject;

  constructor(link, id, callbacks, idleMs) {
    /** The frame id, as the server's frames echo it. */
    this.id = id;
    this.#link = link;
    this.#callbacks = callbacks;
    this.#idleMs = idleMs;
    /** Whether any frame about this request has arrived. */
    this.heard = false;
    this.done = new Promise((resolve, reject) => {
      this.#resolve = resolve;
      this.#reject = reject;
    });
    // With onError the failure is reported there; awaiting `done` stays optional.
    if (typeof callbacks.onError === 'function') this.done.catch(() => {});
  }

  /** The text streamed so far. */
  get text() {
    return this.#parts.join('');
  }

  /** Whether the request has completed, failed or been cancelled. */
  get finished() {
    return this.#state === 'done';
  }

  /**
   * Ask the server to cancel this request.
   *
   * Resolves true when the server stopped it (the request then ends with
   * RequestCancelled through onError and `done`), false when it had already
   * finished or the cancel could not be delivered.
   */
  async cancel() {
    if (this.#state === 'done') return false;
    if (this.#state === 'pending') {
      this._fail(new RequestCancelled(`request ${this.id} was cancelled`, { type: 'cancelled' }));
      return true;
    }
    try {
      const answer = await this.#link._call(this.#channel, 'CANCEL', { id: this.id });
      return Boolean(answer.cancelled);
    } catch {
      // The socket is gone (the request reports that itself) or the answer was late.
      return false;
    }
  }

  _sent(channel) {
    this.#channel = channel;
    this.#state = 'sent';
    this.#arm();
  }

  _frame(frame) {
    if (this.#state === 'done') return;
    this.heard = true;
    this.#arm();
    const payload = frame.payload && typeof frame.payload === 'object' ? frame.payload : {};
    if (frame.type === 'UPDATE') {
      if (typeof payload.chunk === 'string') {
        if (payload.chunk) {
          this.#parts.push(payload.chunk);
          notify(this.#callbacks.onChunk, payload.chunk, frame);
        }
        if (Array.isArray(payload.tool_calls)) {
          notify(this.#callbacks.onToolCall, payload.tool_calls, frame);
        }
      } else if (payload.status === 'typing') {
        this.#setTyping(Boolean(payload.isTyping), payload.context ?? null);
      }
    } else if (frame.type === 'RESPONSE') {
      this.#finish(null, payload);
    } else if (frame.type === 'ERROR') {
      this.#finish(errorFromBody(payload), null);
    }
  }

  _fail(error) {
    this.#finish(error, null);
  }

  #arm() {
    clearTimeout(this.#timer);
    this.#timer = setTimeout(() => {
      this.#link._cancelQuietly(this.#channel, this.id);
      this._fail(new Timeout(`Rhetor sent nothing about request ${this.id} for ${this.#idleMs} ms`));
    }, this.#idleMs);
  }

  #setTyping(typing, context) {
    if (context !== null) this.#context = context;
    if (typing === this.#typing) return;
    this.#typing = typing;
    notify(this.#callbacks.onTyping, typing, this.#context);
  }

  #finish(error, reply) {
    if (this.#state === 'done') return;
    this.#state = 'done';
    clearTimeout(this.#timer);
    this.#link._forget(this.#channel, this.id);
    // The indicator always ends before the outcome, even when the socket dropped.
    this.#setTyping(false, null);
    if (error) {
      notify(this.#callbacks.onError, error);
      this.#reject(error);
    } else {
      notify(this.#callbacks.onComplete, reply);
      this.#resolve(reply);
    }
  }
}

/**
 * The client's WebSocket: opened on first use, reopened after a drop.
 */
export class SocketLink {
  #options;
  #channel = null;
  #opening = null;
  #closed = false;
  #count = 0;
  #prefix = `js${Math.random().toString(36).slice(2, 10)}`;
  // Invariant: requests waiting for the socket to open, not yet on any channel.
  #waiting = new Set();

  /**
   * @param {object} options
   * @param {string} options.wsUrl
   * @param {string|null} options.apiKey
   * @param {string} options.source         the REGISTER source and every frame's source
   * @param {number} options.timeoutMs       the wait for each next frame of a request
   * @param {number} options.connectTimeoutMs
   * @param {number} options.maxFrameBytes
   * @param {Function} [options.WebSocket]
   * @param {() => Promise<unknown>} options.diagnose  an HTTP call that rejects with why a handshake failed
   */
  constructor(options) {
    this.#options = options;
  }

  /** A fresh frame id, unique to this client. */
  nextId() {
    this.#count += 1;
    return `${this.#prefix}-${this.#count}`;
  }

  /** Start a streamed request (`LLM_REQUEST`, `CHAT_REQUEST`); answers its StreamRequest at once. */
  stream(type, payload, callbacks, timeoutMs) {
    const request = new StreamRequest(
      this,
      this.nextId(),
      callbacks,
      timeoutMs ?? this.#options.timeoutMs,
    );
    this.#launch(request, type, payload);
    return request;
  }

  /** Send a `STATUS`-like frame on the socket and resolve to its RESPONSE payload. */
  async call(type, payload, timeoutMs) {
    const channel = await this.#open();
    return this._call(channel, type, payload, timeoutMs);
  }

  /** Close the socket; requests still running end with RequestCancelled. */
  close() {
    this.#closed = true;
    const error = () => new RequestCancelled('the client was closed', { type: 'cancelled' });
    for (const request of [...this.#waiting]) request._fail(error());
    const channel = this.#channel;
    this.#channel = null;
    if (channel !== null) {
      this.#drop(channel, error);
      closeQuietly(channel.ws, 1000, 'client closed');
    }
  }

  async #launch(request, type, payload) {
    this.#waiting.add(request);
    let channel;
    try {
      channel = await this.#open();
    } catch (error) {
      request._fail(error);
      return;
    } finally {
      this.#waiting.delete(request);
    }
    if (request.finished) return; // cancelled while the socket opened
    try {
      channel.requests.set(request.id, request);
      this.#send(channel, { type, id: request.id, payload });
      request._sent(channel);
    } catch (error) {
      request._fail(error);
    }
  }

  _call(channel, type, payload, timeoutMs) {
    const limit = timeoutMs ?? this.#options.connectTimeoutMs;
    return new Promise((resolve, reject) => {
      const id = this.nextId();
      const end = () => {
        clearTimeout(timer);
        channel.requests.delete(id);
      };
      const entry = {
        heard: false,
        _frame(frame) {
          if (frame.type === 'RESPONSE') {
            end();
            resolve(frame.payload && typeof frame.payload === 'object' ? frame.payload : {});
          } else if (frame.type === 'ERROR') {
            end();
            reject(errorFromBody(frame.payload));
          }
        },
        _fail(error) {
          end();
          reject(error);
        },
      };
      const timer = setTimeout(
        () => entry._fail(new Timeout(`Rhetor did not answer ${type} within ${limit} ms`)),
        limit,
      );
      channel.requests.set(id, entry);
      try {
        this.#send(channel, { type, id, payload });
      } catch (error) {
        entry._fail(error);
      }
    });
  }

  _forget(channel, id) {
    if (channel !== null) channel.requests.delete(id);
  }

  _cancelQuietly(channel, id) {
    if (channel === null || !channel.open) return;
    this._call(channel, 'CANCEL', { id }).catch(() => {
      // Best effort: the request has already failed on the client's side.
    });
  }

  #send(channel, frame) {
    if (!channel.open || channel.ws.readyState !== OPEN) {
      throw new ConnectionLost('the WebSocket to Rhetor is closed');
    }
    const text = JSON.stringify({ ...frame, source: this.#options.source });
    const size = new TextEncoder().encode(text).length;
    if (size > this.#options.maxFrameBytes) {
      // The server would answer with an id-less ERROR this request could not be matched to.
      throw new ValidationError(
        `frame of ${size} bytes is over the ${this.#options.maxFrameBytes} byte limit`,
        { type: 'payload_too_large' },
      );
    }
    channel.ws.send(text);
  }

  #open() {
    if (this.#closed) {
      return Promise.reject(new RhetorClientError('the client is closed'));
    }
    if (this.#channel !== null) return Promise.resolve(this.#channel);
    if (this.#opening === null) {
      this.#opening = this.#connect().finally(() => {
        this.#opening = null;
      });
    }
    return this.#opening;
  }

  async #connect() {
    const { wsUrl, apiKey, connectTimeoutMs } = this.#options;
    const { Impl, headers } = await webSocketClass(this.#options.WebSocket);
    let ws;
    if (apiKey && headers) {
      ws = new Impl(wsUrl, { headers: { 'X-API-Key': apiKey } });
    } else {
      const url = apiKey
        ? `${wsUrl}${wsUrl.includes('?') ? '&' : '?'}api_key=${encodeURIComponent(apiKey)}`
        : wsUrl;
      ws = new Impl(url);
    }
    await this.#opened(ws, wsUrl, connectTimeoutMs);
    const channel = new Channel(ws);
    ws.onmessage = (event) => this.#receive(channel, event);
    ws.onclose = (event) => this.#closedBy(channel, event);
    ws.onerror = () => {
      // A close event follows every error; the requests are ended there.
    };
    try {
      await this._call(channel, 'REGISTER', {}, connectTimeoutMs);
    } catch (error) {
      channel.open = false;
      closeQuietly(ws, 1000, 'registration failed');
      throw error;
    }
    if (this.#closed) {
      channel.open = false;
      closeQuietly(ws, 1000, 'client closed');
      throw new RequestCancelled('the client was closed', { type: 'cancelled' });
    }
    this.#channel = channel;
    return channel;
  }

  #opened(ws, wsUrl, limit) {
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        settle();
        closeQuietly(ws, 1000, 'open timed out');
        reject(new Timeout(`the WebSocket to Rhetor at ${wsUrl} did not open within ${limit} ms`));
      }, limit);
      const settle = () => {
        clearTimeout(timer);
        ws.onopen = ws.onclose = null;
      };
      // Never without an error listener: Node's `ws` throws an error nobody listens to.
      // A close event follows every error; the reason is found there.
      ws.onerror = () => {};
      ws.onopen = () => {
        settle();
        resolve();
      };
      ws.onclose = (event) => {
        settle();
        this.#refusal(wsUrl, event).then(reject, reject);
      };
    });
  }

  /**
   * Why the handshake failed. A WebSocket never says (browsers hide the
   * status), so an HTTP call with the same key asks: its typed error
   * (Unauthorized, ConnectionRefused, ...) is the answer.
   */
  async #refusal(wsUrl, event) {
    try {
      await this.#options.diagnose();
    } catch (error) {
      if (error instanceof RhetorClientError) return error;
    }
    return new ServerError(
      `Rhetor refused the WebSocket at ${wsUrl} (close code ${event.code})${corsHint(wsUrl)}`,
      { body: { code: event.code, reason: event.reason || '' } },
    );
  }

  #receive(channel, event) {
    let frame;
    try {
      frame = JSON.parse(typeof event.data === 'string' ? event.data : String(event.data));
    } catch {
      return; // the server sends only JSON; anything else names no request
    }
    if (!frame || typeof frame !== 'object') return;
    let entry = channel.requests.get(frame.id);
    if (entry === undefined && frame.id === null && frame.type === 'ERROR') {
      // The server could not read the frame's id: it belongs to a request that has
      // heard nothing yet, if there is exactly one.
      const silent = [...channel.requests.values()].filter((r) => !r.heard);
      if (silent.length === 1) entry = silent[0];
    }
    if (entry !== undefined) entry._frame(frame);
  }

  #closedBy(channel, event) {
    const reason = event.reason ? `: ${event.reason}` : '';
    this.#drop(
      channel,
      () =>
        new ConnectionLost(`the WebSocket to Rhetor closed (code ${event.code}${reason})`, {
          body: { code: event.code, reason: event.reason || '' },
        }),
    );
  }

  #drop(channel, error) {
    channel.open = false;
    if (this.#channel === channel) this.#channel = null;
    for (const entry of [...channel.requests.values()]) entry._fail(error());
    channel.requests.clear();
  }
}
