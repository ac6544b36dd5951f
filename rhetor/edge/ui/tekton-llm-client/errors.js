/**
 * The client's one exception hierarchy, and the one place that builds it.
 *
 * Every failure a call can see is a RhetorClientError; a call never resolves
 * to an error as if it were a reply. Errors the server reports
 * (`{"error": {"type", "message", "field"?}}`) keep the server's `type` in
 * `.type`, so the original kind stays visible where several server types
 * share one class.
 *
 *     RhetorClientError            base: .type, .status, .field, .body
 *     ├── ConnectionRefused        nothing answers at the URL (server down, wrong port, CORS)
 *     ├── Timeout                  no answer within the client's timeout
 *     ├── Unauthorized             the API key is missing or wrong (401), or the origin refused (403)
 *     ├── BudgetExceeded           the budget policy refused the request (.period, .limit, .spent)
 *     ├── ProviderError            one upstream call failed (.provider, .model)
 *     │   └── ProviderUnavailable  no provider could serve the request (.attempts)
 *     ├── ValidationError          a request field is missing or wrong (.field names it)
 *     ├── NotFound                 an id names nothing (template, prompt, context, model, provider)
 *     ├── RequestCancelled         the request was cancelled before it completed
 *     └── ServerError              anything else the server reported
 *         └── ConnectionLost       the connection dropped before the answer was complete
 *
 * Translation happens in exactly two functions: errorFromBody() for what the
 * server says, and errorFromTransport() for what fetch and WebSocket raise.
 */

/** Base of every error a Rhetor client call raises or reports. */
export class RhetorClientError extends Error {
  constructor(message, { type = null, status = null, field = null, body = null, cause } = {}) {
    super(message, cause === undefined ? undefined : { cause });
    /** The server's error type (`validation_error`, `budget_exceeded`, ...), or null. */
    this.type = type;
    /** The HTTP status, when the error came over HTTP. */
    this.status = status;
    /** The request field the server named, if any. */
    this.field = field;
    /** The server's whole `error` object, for details without an attribute here. */
    this.body = body && typeof body === 'object' ? { ...body } : {};
  }
}

/** Raised when nothing answers at the client's URL. */
export class ConnectionRefused extends RhetorClientError {}

/** Raised when the server does not answer within the client's timeout. */
export class Timeout extends RhetorClientError {}

/** Raised when the API key is missing or wrong, or the server refuses this origin. */
export class Unauthorized extends RhetorClientError {}

/** Raised when the server's budget policy refuses a request. */
export class BudgetExceeded extends RhetorClientError {
  /** The period that would be exceeded (`daily`, `weekly`, `monthly`). */
  get period() {
    return typeof this.body.period === 'string' ? this.body.period : null;
  }

  /** That period's limit in USD. */
  get limit() {
    return typeof this.body.limit === 'number' ? this.body.limit : null;
  }

  /** What that period has spent so far, in USD. */
  get spent() {
    return typeof this.body.spent === 'number' ? this.body.spent : null;
  }
}

/** Raised when one upstream provider call failed (rate limited, timed out, broke mid-stream...). */
export class ProviderError extends RhetorClientError {
  /** The provider that failed, when the server names one. */
  get provider() {
    return typeof this.body.provider === 'string' ? this.body.provider : null;
  }

  /** The model that failed, when the server names one. */
  get model() {
    return typeof this.body.model === 'string' ? this.body.model : null;
  }
}

/** Raised when no provider could serve a request (one down, or every one tried). */
export class ProviderUnavailable extends ProviderError {
  /** Each provider and model tried: `{provider, model, type, message}`. */
  get attempts() {
    const value = this.body.attempts;
    return Array.isArray(value) ? value.filter((a) => a && typeof a === 'object') : [];
  }
}

/** Raised when a request field is missing or wrong; `.field` names it. */
export class ValidationError extends RhetorClientError {}

/** Raised when an id (template, prompt, context, model, provider) names nothing. */
export class NotFound extends RhetorClientError {}

/** Raised (or reported to onError) when a request was cancelled before it completed. */
export class RequestCancelled extends RhetorClientError {}

/** Raised when the server reports any other failure. */
export class ServerError extends RhetorClientError {}

/** Raised when the connection dropped before the answer was complete. */
export class ConnectionLost extends ServerError {}

// Minifiers rename classes; the names callers see and log stay fixed.
for (const [cls, name] of [
  [RhetorClientError, 'RhetorClientError'],
  [ConnectionRefused, 'ConnectionRefused'],
  [Timeout, 'Timeout'],
  [Unauthorized, 'Unauthorized'],
  [BudgetExceeded, 'BudgetExceeded'],
  [ProviderError, 'ProviderError'],
  [ProviderUnavailable, 'ProviderUnavailable'],
  [ValidationError, 'ValidationError'],
  [NotFound, 'NotFound'],
  [RequestCancelled, 'RequestCancelled'],
  [ServerError, 'ServerError'],
  [ConnectionLost, 'ConnectionLost'],
]) {
  Object.defineProperty(cls.prototype, 'name', { value: name, configurable: true, writable: true });
}

// Server error types whose meaning a client class already carries.
const BY_TYPE = {
  validation_error: ValidationError,
  invalid_json: ValidationError,
  bad_request: ValidationError,
  payload_too_large: ValidationError,
  unsupported_media_type: ValidationError,
  not_found: NotFound,
  unauthorized: Unauthorized,
  forbidden: Unauthorized,
  budget_exceeded: BudgetExceeded,
  provider_unavailable: ProviderUnavailable,
  all_providers_failed: ProviderUnavailable,
  cancelled: RequestCancelled,
  provider_error: ProviderError,
  rate_limited: ProviderError,
  overloaded: ProviderError,
  context_too_long: ProviderError,
  stream_broken: ProviderError,
};

// For a body without a type the client knows, the status still says what happened.
const BY_STATUS = {
  400: ValidationError,
  401: Unauthorized,
  402: BudgetExceeded,
  403: Unauthorized,
  404: NotFound,
  413: ValidationError,
  415: ValidationError,
  422: ValidationError,
};

/**
 * The client error for a server error body, or for a bare status.
 *
 * `body` is the decoded JSON: `{"error": {...}}` as HTTP answers carry it, or
 * the inner object as WebSocket ERROR frames carry it; anything else falls
 * back on the status.
 */
export function errorFromBody(body, status = null) {
  let error = body && typeof body === 'object' && 'error' in body ? body.error : body;
  if (typeof error === 'string') error = { message: error };
  if (!error || typeof error !== 'object' || Array.isArray(error)) error = {};
  const type = typeof error.type === 'string' ? error.type : null;
  let message = typeof error.message === 'string' && error.message ? error.message : null;
  if (message === null) {
    message = status === null ? 'Rhetor reported an error' : `Rhetor answered ${status}`;
  }
  const field = typeof error.field === 'string' ? error.field : null;
  let cls = (type && Object.hasOwn(BY_TYPE, type) && BY_TYPE[type]) || null;
  if (cls === null && type !== null && type.startsWith('upstream_')) cls = ProviderError;
  if (cls === null && type === null) cls = BY_STATUS[status] || null;
  // A type this client does not know yet, from a provider: still a provider error.
  if (cls === null && typeof error.provider === 'string') cls = ProviderError;
  return new (cls || ServerError)(message, { type, status, field, body: error });
}

// Socket-level failures that mean the connection existed and then broke.
const LOST_CODES = new Set(['ECONNRESET', 'EPIPE', 'UND_ERR_SOCKET', 'UND_ERR_CLOSED']);

/**
 * The client error for a failed fetch (or WebSocket) to `url`.
 *
 * `stage` is `connect` before an answer began and `read` after; `timedOut`
 * and `cancelled` say whether the client's own deadline or the caller's
 * AbortSignal stopped it. The original error stays reachable as `.cause`.
 */
export function errorFromTransport(cause, { url, stage, timedOut, cancelled, timeoutMs }) {
  if (cause instanceof RhetorClientError) return cause;
  if (timedOut) {
    return new Timeout(`Rhetor at ${url} did not answer within ${timeoutMs} ms`, { cause });
  }
  if (cancelled) return new RequestCancelled(`the request to ${url} was aborted`, { cause });
  const code = cause && cause.cause && cause.cause.code;
  if (stage === 'read' || LOST_CODES.has(code)) {
    return new ConnectionLost(`the connection to Rhetor at ${url} was lost`, { cause });
  }
  const detail = code ? ` (${code})` : '';
  return new ConnectionRefused(`cannot reach Rhetor at ${url}${detail}${corsHint(url)}`, {
    cause,
  });
}

/**
 * In a page on another origin than `url`'s, why a browser may refuse without
 * saying so; elsewhere, nothing.
 */
export function corsHint(url) {
  const page = globalThis.location;
  if (!page || !/^https?:$/.test(page.protocol)) return '';
  let target;
  try {
    target = new URL(url, page.href);
  } catch {
    return '';
  }
  target.protocol = target.protocol.replace(/^ws/, 'http');
  if (target.origin === page.origin) return '';
  return `; a page on ${page.origin} needs that origin in Rhetor's RHETOR_CORS_ORIGINS`;
}
