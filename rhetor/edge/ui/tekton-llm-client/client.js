/**
 * RhetorClient: Rhetor's HTTP API and WebSocket as promise-returning calls.
 *
 * Plain calls go over HTTP (fetch); streamed ones over one shared WebSocket
 * (see socket.js). Every call resolves to what the server answered or
 * rejects with a RhetorClientError subclass (see errors.js).
 */

import { ServerError } from './errors.js';
import { HttpTarget, objectOf } from './http.js';
import { SocketLink } from './socket.js';

const DEFAULT_URL = 'http://localhost:8300';
// Rhetor's own request deadline is 120 s by default; wait a little longer, so
// that the server's answer (even its timeout error) reaches the caller first.
export const DEFAULT_TIMEOUT_MS = 130_000;
export const DEFAULT_CONNECT_TIMEOUT_MS = 10_000;
// The server's default RHETOR_MAX_BODY_BYTES.
export const DEFAULT_MAX_FRAME_BYTES = 1024 * 1024;

function pageOrigin() {
  const location = globalThis.location;
  return location && /^https?:$/.test(location.protocol) ? location.origin : null;
}

function baseUrlOf(url) {
  if (url === undefined || url === null) return pageOrigin() ?? DEFAULT_URL;
  const text = String(url).replace(/\/+$/, '');
  // Checked now, so that a typo fails here rather than as a refused connection later.
  new URL(text || '/', globalThis.location ? globalThis.location.href : undefined);
  return text;
}

function wsUrlOf(baseUrl) {
  const url = new URL(baseUrl || '/', globalThis.location ? globalThis.location.href : undefined);
  url.protocol = url.protocol === 'https:' ? 'wss:' : 'ws:';
  url.pathname = `${url.pathname.replace(/\/+$/, '')}/ws`;
  return url.toString();
}

function path(...parts) {
  return parts.map((p, i) => (i % 2 ? encodeURIComponent(String(p)) : p)).join('');
}

function defined(fields) {
  const out = {};
  for (const [key, value] of Object.entries(fields)) {
    if (value !== undefined && value !== null) out[key] = value;
  }
  return out;
}

function listOf(answer, key, what) {
  const list = answer && typeof answer === 'object' ? answer[key] : undefined;
  if (!Array.isArray(list)) throw new ServerError(`Rhetor's ${what} answer holds no list`);
  return list;
}

function callOptions(options) {
  return { signal: options?.signal, timeoutMs: options?.timeoutMs };
}

// Both spellings of the routing hints; `taskType` inside them is honoured as in the seeds.
function routingOf(routing) {
  if (!routing || typeof routing !== 'object') return { routing: undefined, taskType: undefined };
  const {
    taskType,
    task_type: taskTypeSnake,
    requiredCapabilities,
    maxCost,
    ...rest
  } = routing;
  const fields = defined({
    ...rest,
    required_capabilities: requiredCapabilities,
    max_cost: maxCost,
  });
  return {
    routing: Object.keys(fields).length ? fields : undefined,
    taskType: taskType ?? taskTypeSnake,
  };
}

/**
 * A connection to one Rhetor server.
 *
 * Options: `url` (default: the page's origin in a browser, else
 * http://localhost:8300), `component` (billed to and routed for; the
 * WebSocket's source), `apiKey`, `timeoutMs` (each HTTP call, and the wait
 * for each next frame of a stream), `connectTimeoutMs`, `wsUrl`, `WebSocket`
 * and `fetch` (to supply the platform's), `maxFrameBytes`.
 */
export class RhetorClient {
  #http;
  #socket;

  constructor(options = {}) {
    const baseUrl = baseUrlOf(options.url);
    /** The component requests are made for, unless a call names another; null: the server's default. */
    this.component = options.component ?? null;
    this.url = baseUrl;
    this.wsUrl = options.wsUrl ?? wsUrlOf(baseUrl);
    const apiKey = options.apiKey || null;
    const timeoutMs = options.timeoutMs ?? DEFAULT_TIMEOUT_MS;
    const connectTimeoutMs = options.connectTimeoutMs ?? DEFAULT_CONNECT_TIMEOUT_MS;
    this.#http = new HttpTarget({ baseUrl, apiKey, timeoutMs, fetch: options.fetch });
    this.#socket = new SocketLink({
      wsUrl: this.wsUrl,
      apiKey,
      source: this.component ?? 'js-client',
      timeoutMs,
      connectTimeoutMs,
      maxFrameBytes: options.maxFrameBytes ?? DEFAULT_MAX_FRAME_BYTES,
      WebSocket: options.WebSocket,
      // Why a handshake failed: the key is checked the same way on every route.
      diagnose: () => this.#http.request('GET', '/providers', { timeoutMs: connectTimeoutMs }),
    });
  }

  toString() {
    // The key is a secret: never in a string or a log line.
    return `RhetorClient(${this.url})`;
  }

  /** Close the WebSocket; streams still running end with RequestCancelled. HTTP needs no closing. */
  close() {
    this.#socket.close();
  }

  /** Send any request and resolve to its decoded JSON: the way to routes without a method. */
  request(method, route, { body, query, signal, timeoutMs } = {}) {
    return this.#http.request(method, route, { body, query, signal, timeoutMs });
  }

  // -- LLM requests -----------------------------------------------------------

  #llmFields(options, socket) {
    const { routing, taskType } = routingOf(options.routingParameters);
    return defined({
      message: options.message,
      messages: options.messages,
      [socket ? 'context' : 'context_id']: options.contextId,
      task_type: options.taskType ?? taskType,
      component: options.component ?? this.component,
      provider: options.provider,
      model: options.model,
      temperature: options.temperature,
      max_tokens: options.maxTokens,
      system_prompt: options.systemPrompt,
      routing_parameters: routing,
      tools: options.tools,
      tool_choice: options.toolChoice,
      parallel_tool_calls: options.parallelToolCalls,
      response_format: options.responseFormat,
      stop: options.stop,
      top_p: options.topP,
      seed: options.seed,
      user: options.user,
    });
  }

  /**
   * One message, one whole reply (`POST /message`): `{message, model, provider,
   * context, usage, cost, routing, finish_reason, tool_calls, ...}`. `contextId`
   * keeps the conversation on the server. `message` is text or content blocks;
   * `tools`, `toolChoice`, `parallelToolCalls`, `responseFormat`, `stop`,
   * `topP`, `seed` and `user` are the API's fields (docs/api.md).
   */
  async sendMessage(options = {}) {
    const body = { ...this.#llmFields(options, false), streaming: false };
    return objectOf(
      await this.#http.request('POST', '/message', { body, ...callOptions(options) }),
      'reply',
    );
  }

  /** A conversation of `{role, content}` turns ending with the user's (`POST /chat`). */
  async chat(messages, options = {}) {
    const body = { ...this.#llmFields({ ...options, messages }, false), streaming: false };
    return objectOf(
      await this.#http.request('POST', '/chat', { body, ...callOptions(options) }),
      'reply',
    );
  }

  /**
   * Stream one message's reply over the WebSocket.
   *
   * Callbacks: `onTyping(isTyping, context)` (true first, false before the
   * end, always), `onChunk(text)`, `onToolCall(pieces)` (pieces of tool calls:
   * `{index, id, name, arguments}`), then `onComplete(reply)` or
   * `onError(error)`. Answers a StreamRequest at once: `cancel()`, `done`,
   * `id`, `text`. `timeoutMs` bounds the wait for each next frame.
   */
  streamMessage(options = {}) {
    return this.#socket.stream(
      'LLM_REQUEST',
      { ...this.#llmFields(options, true), streaming: true },
      options,
      options.timeoutMs,
    );
  }

  /** Stream a conversation's reply over the WebSocket; as streamMessage. */
  streamChat(messages, options = {}) {
    return this.#socket.stream(
      'CHAT_REQUEST',
      { ...this.#llmFields({ ...options, messages }, true), streaming: true },
      options,
      options.timeoutMs,
    );
  }

  /** Providers and budget as the WebSocket session sees them (`STATUS`), and `in_flight`. */
  async status(options = {}) {
    return this.#socket.call('STATUS', {}, options.timeoutMs);
  }

  // -- providers and health ----------------------------------------------------

  /** Every provider, its models and availability, and the active provider and model. */
  async getProviders(options) {
    return objectOf(
      await this.#http.request('GET', '/providers', callOptions(options)),
      'providers',
    );
  }

  /** Make `provider` (and `model`, else its first) the active choice. */
  async setProvider(provider, model, options) {
    const body = defined({ provider, model });
    return objectOf(
      await this.#http.request('POST', '/provider', { body, ...callOptions(options) }),
      'provider',
    );
  }

  /** `status` (healthy or degraded), each provider's availability, uptime, version. */
  async health(options) {
    return objectOf(await this.#http.request('GET', '/health', callOptions(options)), 'health');
  }

  // -- templates ----------------------------------------------------------------

  /** The stored templates, of one `category` or all. */
  async getTemplates(options = {}) {
    const answer = await this.#http.request('GET', '/templates', {
      query: { category: options.category },
      ...callOptions(options),
    });
    return listOf(answer, 'templates', 'templates');
  }

  /** One template by id or name; `version` picks an older one. */
  async getTemplate(id, options = {}) {
    return objectOf(
      await this.#http.request('GET', path('/templates/', id), {
        query: { version: options.version },
        ...callOptions(options),
      }),
      'template',
    );
  }

  /**
   * Store a template with `{name}` placeholders: `{name, content, description?,
   * category?, required?, optional?, defaults?, metadata?}`; resolves to it.
   */
  async createTemplate(template, options) {
    return objectOf(
      await this.#http.request('POST', '/templates', { body: template, ...callOptions(options) }),
      'template',
    );
  }

  /** Change a template; a content or parameter change makes a new version. */
  async updateTemplate(id, changes, options) {
    return objectOf(
      await this.#http.request('PUT', path('/templates/', id), {
        body: changes,
        ...callOptions(options),
      }),
      'template',
    );
  }

  /** Delete a template and its versions. */
  async deleteTemplate(id, options) {
    return this.#http.request('DELETE', path('/templates/', id), callOptions(options));
  }

  /** Every version of a template, oldest first. */
  async templateVersions(id, options) {
    const answer = await this.#http.request(
      'GET',
      path('/templates/', id, '/versions'),
      callOptions(options),
    );
    return listOf(answer, 'versions', 'template versions');
  }

  /**
   * Fill a template server-side and resolve to the text. A missing required
   * variable rejects with ValidationError naming it.
   */
  async renderTemplate(id, variables = {}, options) {
    const answer = await this.#http.request('POST', path('/templates/', id, '/render'), {
      body: { variables },
      ...callOptions(options),
    });
    if (typeof answer.rendered !== 'string') {
      throw new ServerError("Rhetor's render answer holds no text");
    }
    return answer.rendered;
  }

  /** Render a template, then sendMessage the result (with `options` as sendMessage's). */
  async generateFromTemplate(id, variables, options = {}) {
    const message = await this.renderTemplate(id, variables, options);
    return this.sendMessage({ ...options, message });
  }

  // -- system prompts -------------------------------------------------------------

  /** The stored system prompts, of one `component` or all. */
  async getPrompts(options = {}) {
    const answer = await this.#http.request('GET', '/prompts', {
      query: { component: options.component },
      ...callOptions(options),
    });
    return listOf(answer, 'prompts', 'prompts');
  }

  /** One system prompt. */
  async getPrompt(id, options) {
    return objectOf(
      await this.#http.request('GET', path('/prompts/', id), callOptions(options)),
      'prompt',
    );
  }

  /**
   * Store a system prompt: `{name, component, content, description?, tags?,
   * isDefault?}`; as the default it displaces its component's old one.
   */
  async createPrompt(prompt, options) {
    return objectOf(
      await this.#http.request('POST', '/prompts', {
        body: promptBody(prompt),
        ...callOptions(options),
      }),
      'prompt',
    );
  }

  /** Change a system prompt. */
  async updatePrompt(id, changes, options) {
    return objectOf(
      await this.#http.request('PUT', path('/prompts/', id), {
        body: promptBody(changes),
        ...callOptions(options),
      }),
      'prompt',
    );
  }

  /** Delete a system prompt. */
  async deletePrompt(id, options) {
    return this.#http.request('DELETE', path('/prompts/', id), callOptions(options));
  }

  /**
   * A prompt built for `task` with `context`, in `format` (`instruction`,
   * `chat`, `few_shot`, `chain_of_thought`, `structured`): `{prompt, task, format}`.
   */
  async generatePrompt({ task, context, format } = {}, options) {
    return objectOf(
      await this.#http.request('POST', '/prompts/generate', {
        body: defined({ task, context, format }),
        ...callOptions(options),
      }),
      'prompt',
    );
  }

  // -- contexts -------------------------------------------------------------------

  /** The stored conversations, most recent first: `[{id, message_count, updated, summary, ...}]`. */
  async getContexts(options = {}) {
    const answer = await this.#http.request('GET', '/contexts', {
      query: { limit: options.limit, offset: options.offset },
      ...callOptions(options),
    });
    return listOf(answer, 'contexts', 'contexts');
  }

  /** One conversation: `{info, messages}`. */
  async getContext(id, options = {}) {
    return objectOf(
      await this.#http.request('GET', path('/contexts/', id), {
        query: { limit: options.limit },
        ...callOptions(options),
      }),
      'context',
    );
  }

  /** Messages matching `query`: `[{context_id, seq, role, snippet}]`. */
  async searchContexts(query, options = {}) {
    const answer = await this.#http.request('GET', '/contexts/search', {
      query: { q: query, limit: options.limit },
      ...callOptions(options),
    });
    return listOf(answer, 'results', 'search');
  }

  /** Summarise a conversation with the model: `{context_id, summary, upto, model}`. */
  async summarizeContext(id, options) {
    return objectOf(
      await this.#http.request('POST', path('/contexts/', id, '/summarize'), callOptions(options)),
      'summary',
    );
  }

  /** Forget a conversation and its messages. */
  async deleteContext(id, options) {
    return this.#http.request('DELETE', path('/contexts/', id), callOptions(options));
  }

  // -- budget and evaluation ----------------------------------------------------------

  /** The policy and each period's spent, reserved, limit and remaining. */
  async getBudget(options) {
    return objectOf(await this.#http.request('GET', '/budget', callOptions(options)), 'budget');
  }

  /** Spend in `period` grouped by `groupBy` (provider, model, component, context). */
  async getUsage(options = {}) {
    return objectOf(
      await this.#http.request('GET', '/budget/usage', {
        query: { period: options.period, group_by: options.groupBy },
        ...callOptions(options),
      }),
      'usage',
    );
  }

  /**
   * The latest requests' charges, newest first: `time`, `component`, `provider`,
   * `model`, tokens, `cost` and `status` (`ok`, `partial`, `failed`, `interrupted`).
   * At most `limit` (1 to 500, default 50), at or after the unix timestamp `since`.
   */
  async getBudgetEntries(options = {}) {
    const answer = await this.#http.request('GET', '/budget/entries', {
      query: { limit: options.limit, since: options.since },
      ...callOptions(options),
    });
    return listOf(answer, 'entries', 'budget entries');
  }

  /** Set a period's limit in USD (0 removes it): for all providers, one provider, or one component. */
  async setBudgetLimit({ period, limit, provider, component } = {}, options) {
    return objectOf(
      await this.#http.request('POST', '/budget/limit', {
        body: defined({ period, limit, provider, component }),
        ...callOptions(options),
      }),
      'budget',
    );
  }

  /** Set the budget policy: `ignore`, `warn` or `enforce`. */
  async setBudgetPolicy(policy, options) {
    return objectOf(
      await this.#http.request('POST', '/budget/policy', {
        body: { policy },
        ...callOptions(options),
      }),
      'budget',
    );
  }

  /** What a prompt would cost at worst: `estimated_cost`, `estimated_tokens`, `under_budget`. */
  async estimateCost({ prompt, messages, model, taskType, maxTokens } = {}, options) {
    const body = defined({ prompt, messages, model, task_type: taskType, max_tokens: maxTokens });
    return objectOf(
      await this.#http.request('POST', '/budget/estimate', { body, ...callOptions(options) }),
      'estimate',
    );
  }

  /** Score a response to a prompt: `evaluation.overall_score` (0-10), `scores`, `feedback`. */
  async evaluate(prompt, response, criteria, options) {
    return objectOf(
      await this.#http.request('POST', '/evaluate', {
        body: defined({ prompt, response, criteria }),
        ...callOptions(options),
      }),
      'evaluation',
    );
  }
}

function promptBody(prompt = {}) {
  const { isDefault, ...rest } = prompt;
  return defined({ ...rest, is_default: isDefault ?? prompt.is_default });
}
