/**
 * Rhetor's HTTP API over the platform's fetch, with a deadline on every call.
 *
 * Every request sends `Accept: application/json`, a JSON body with
 * `Content-Type: application/json`, and the API key as `X-API-Key`. Every
 * answer is decoded as JSON; an error answer becomes its typed error.
 */

import { ServerError, errorFromBody, errorFromTransport } from './errors.js';

const IDEMPOTENT = new Set(['GET', 'HEAD', 'PUT', 'DELETE', 'OPTIONS']);
// What Node's fetch reports for a pooled connection found closed when it was used.
const STALE = new Set(['UND_ERR_SOCKET', 'ECONNRESET', 'EPIPE']);

/** Where and how to reach one Rhetor server over HTTP. */
export class HttpTarget {
  /**
   * @param {object} options
   * @param {string} options.baseUrl   `http(s)://host:port`, or '' for the page's own origin
   * @param {string|null} options.apiKey
   * @param {number} options.timeoutMs  the default deadline of each call
   * @param {typeof fetch} [options.fetch]
   */
  constructor({ baseUrl, apiKey, timeoutMs, fetch: fetchImpl }) {
    this.baseUrl = baseUrl;
    this.timeoutMs = timeoutMs;
    this._apiKey = apiKey;
    this._fetch = fetchImpl || globalThis.fetch.bind(globalThis);
  }

  /** The URL of `path` with `query`'s set values. */
  url(path, query) {
    let url = this.baseUrl + path;
    if (query) {
      const params = new URLSearchParams();
      for (const [key, value] of Object.entries(query)) {
        if (value !== undefined && value !== null) params.set(key, String(value));
      }
      const text = params.toString();
      if (text) url += `?${text}`;
    }
    return url;
  }

  /**
   * Send one request and resolve to its decoded JSON.
   *
   * The deadline (`timeoutMs`, else the target's) covers the whole exchange,
   * reading the body included. `signal` lets the caller abort: the call then
   * rejects with RequestCancelled, and the server, seeing the connection go,
   * cancels the work down to the provider call.
   */
  async request(method, path, { body, query, signal, timeoutMs } = {}) {
    const url = this.url(path, query);
    const limit = timeoutMs ?? this.timeoutMs;
    const controller = new AbortController();
    let timedOut = false;
    const timer = setTimeout(() => {
      timedOut = true;
      controller.abort();
    }, limit);
    const onAbort = () => controller.abort();
    if (signal) {
      if (signal.aborted) controller.abort();
      else signal.addEventListener('abort', onAbort, { once: true });
    }
    // Every POST and PUT carries a JSON body, empty or not: Rhetor refuses a
    // state-changing request that is not JSON.
    if (body === undefined && (method === 'POST' || method === 'PUT')) body = {};
    const headers = { Accept: 'application/json' };
    if (body !== undefined) headers['Content-Type'] = 'application/json';
    if (this._apiKey) headers['X-API-Key'] = this._apiKey;
    const fail = (cause, stage) =>
      errorFromTransport(cause, {
        url,
        stage,
        timedOut,
        cancelled: !timedOut && Boolean(signal && signal.aborted),
        timeoutMs: limit,
      });
    const send = () =>
      this._fetch(url, {
        method,
        headers,
        body: body === undefined ? undefined : JSON.stringify(body),
        signal: controller.signal,
      });
    try {
      let response;
      try {
        try {
          response = await send();
        } catch (cause) {
          // A kept-alive connection the server closed (it restarted, or died) fails
          // before any answer; Node's fetch does not check pooled connections first.
          // Only a request safe to repeat is sent again, once, on a new connection.
          if (!IDEMPOTENT.has(method) || !STALE.has(cause?.cause?.code) || controller.signal.aborted) {
            throw cause;
          }
          response = await send();
        }
      } catch (cause) {
        throw fail(cause, 'connect');
      }
      let text;
      try {
        text = await response.text();
      } catch (cause) {
        throw fail(cause, 'read');
      }
      let decoded = null;
      try {
        decoded = text ? JSON.parse(text) : null;
      } catch {
        decoded = null;
      }
      if (!response.ok) throw errorFromBody(decoded, response.status);
      if (decoded === null) {
        throw new ServerError(
          `Rhetor answered ${response.status} with a body that is not JSON (${method} ${path})`,
          { status: response.status },
        );
      }
      return decoded;
    } finally {
      clearTimeout(timer);
      if (signal) signal.removeEventListener('abort', onAbort);
    }
  }
}

/** Check that an answer is a JSON object; `what` names it in the error. */
export function objectOf(answer, what) {
  if (!answer || typeof answer !== 'object' || Array.isArray(answer)) {
    throw new ServerError(`Rhetor's ${what} answer is not a JSON object`);
  }
  return answer;
}
