/**
 * Type declarations for tekton-llm-client, Rhetor's JavaScript client.
 *
 * Replies and records keep the server's own field names (snake_case), as
 * docs/api.md describes them; options use JavaScript's camelCase.
 */

// -- errors -------------------------------------------------------------------

/** What every error carries besides its message. */
export interface ErrorDetails {
  type?: string | null;
  status?: number | null;
  field?: string | null;
  body?: Record<string, unknown> | null;
  cause?: unknown;
}

/** Base of every error a call raises or reports to onError. */
export class RhetorClientError extends Error {
  constructor(message: string, details?: ErrorDetails);
  /** The server's error type (`validation_error`, `budget_exceeded`, ...), or null for the client's own. */
  readonly type: string | null;
  /** The HTTP status, when the error came over HTTP. */
  readonly status: number | null;
  /** The request field the server named, if any. */
  readonly field: string | null;
  /** The server's whole `error` object. */
  readonly body: Record<string, unknown>;
}
/** Nothing answers at the client's URL (server down, wrong port, or CORS refused the page). */
export class ConnectionRefused extends RhetorClientError {}
/** No answer within the client's timeout. */
export class Timeout extends RhetorClientError {}
/** The API key is missing or wrong (401), or the server refuses this origin (403). */
export class Unauthorized extends RhetorClientError {}
/** The budget policy refused the request. */
export class BudgetExceeded extends RhetorClientError {
  readonly period: string | null;
  readonly limit: number | null;
  readonly spent: number | null;
}
/** One upstream provider call failed. */
export class ProviderError extends RhetorClientError {
  readonly provider: string | null;
  readonly model: string | null;
}
/** No provider could serve the request. */
export class ProviderUnavailable extends ProviderError {
  readonly attempts: Array<{ provider: string; model: string; type: string; message: string }>;
}
/** A request field is missing or wrong; `.field` names it. */
export class ValidationError extends RhetorClientError {}
/** An id (template, prompt, context, model, provider) names nothing. */
export class NotFound extends RhetorClientError {}
/** The request was cancelled before it completed. */
export class RequestCancelled extends RhetorClientError {}
/** Any other failure the server reported. */
export class ServerError extends RhetorClientError {}
/** The connection dropped before the answer was complete. */
export class ConnectionLost extends ServerError {}

// -- values -------------------------------------------------------------------

export interface Usage {
  input_tokens: number;
  output_tokens: number;
  total_tokens: number;
}

/** A whole reply: what sendMessage and chat resolve to, and onComplete receives. */
export interface Reply {
  message: string;
  model: string;
  provider: string;
  context: string | null;
  finished: boolean;
  timestamp: string;
  usage: Usage;
  cost: number;
  routing: string;
  request_id: string;
  task_type: string;
  /** stop, length, tool_calls or content_filter. */
  finish_reason?: 'stop' | 'length' | 'tool_calls' | 'content_filter' | null;
  /** The tools the model called (then finish_reason is tool_calls). */
  tool_calls?: ToolCall[];
  /** Set under the `warn` policy when a limit would be passed. */
  budget_warning?: string;
  [key: string]: unknown;
}

export interface ChatMessage {
  role: 'system' | 'user' | 'assistant';
  /** Text, or content blocks (images and tool results in user turns, tool calls in assistant turns). */
  content: string | ContentBlock[];
}

/** A tool call the model made; `arguments` is JSON text. */
export interface ToolCall {
  id: string;
  name: string;
  arguments: string;
}

/** A streamed piece of a tool call: the first of each call has id and name, later ones argument text. */
export interface ToolCallPiece {
  index: number;
  id: string | null;
  name: string | null;
  arguments: string;
}

export type ContentBlock =
  | { type: 'text'; text: string }
  | {
      type: 'image';
      url?: string;
      data?: string;
      media_type?: string;
      detail?: 'low' | 'high' | 'auto';
    }
  | { type: 'tool_call'; id: string; name: string; arguments?: string | Record<string, unknown> }
  | {
      type: 'tool_result';
      call_id: string;
      content?: string | ContentBlock[];
      is_error?: boolean;
    };

/** A tool the model may call; `parameters` is a JSON Schema. */
export interface ToolSpec {
  name: string;
  description?: string;
  parameters?: Record<string, unknown>;
  strict?: boolean;
}

export interface ResponseFormat {
  type: 'text' | 'json_object' | 'json_schema';
  schema?: Record<string, unknown>;
  name?: string;
  description?: string;
  strict?: boolean;
}

export interface ProviderInfo {
  available: boolean;
  models: string[];
  reason: string;
}

export interface Providers {
  providers: Record<string, ProviderInfo>;
  active_provider: string | null;
  active_model: string | null;
  simulated_fallback?: boolean;
  [key: string]: unknown;
}

export interface Health {
  status: 'healthy' | 'degraded';
  providers: Record<string, boolean>;
  uptime: number;
  version: string;
  [key: string]: unknown;
}

export interface Template {
  id: string;
  name: string;
  description: string;
  category: string;
  current_version: number;
  version: number;
  content: string;
  variables: string[];
  required: string[];
  optional: string[];
  defaults: Record<string, string>;
  metadata: Record<string, unknown>;
  /** Seconds since the epoch. */
  created: number;
  /** Seconds since the epoch. */
  updated: number;
  [key: string]: unknown;
}

export interface TemplateFields {
  name: string;
  content: string;
  description?: string;
  category?: string;
  required?: string[];
  optional?: string[];
  defaults?: Record<string, string>;
  metadata?: Record<string, unknown>;
}

export interface TemplateVersion {
  template_id: string;
  version: number;
  content: string;
  variables: string[];
  required: string[];
  optional: string[];
  defaults: Record<string, string>;
  metadata: Record<string, unknown>;
  /** Seconds since the epoch. */
  created: number;
}

export interface Prompt {
  id: string;
  name: string;
  component: string;
  content: string;
  description: string;
  tags: string[];
  is_default: boolean;
  /** Seconds since the epoch. */
  created: number;
  /** Seconds since the epoch. */
  updated: number;
  [key: string]: unknown;
}

export interface PromptFields {
  name: string;
  component: string;
  content: string;
  description?: string;
  tags?: string[];
  isDefault?: boolean;
}

export interface ContextInfo {
  id: string;
  /** Seconds since the epoch. */
  created: number;
  /** Seconds since the epoch. */
  updated: number;
  message_count: number;
  summary: string | null;
  metadata: Record<string, unknown>;
  [key: string]: unknown;
}

export interface ContextMessage {
  context_id: string;
  seq: number;
  role: string;
  content: string;
  /** Seconds since the epoch. */
  ts: number;
  tokens: number;
  [key: string]: unknown;
}

export interface ContextDetail {
  info: ContextInfo;
  messages: ContextMessage[];
}

export interface SearchHit {
  context_id: string;
  seq: number;
  role: string;
  snippet: string;
}

export interface Summary {
  context_id: string;
  summary: string;
  upto: number;
  model: string;
  [key: string]: unknown;
}

export interface Deleted {
  deleted: boolean;
  id: string;
}

export type Period = 'daily' | 'weekly' | 'monthly';
export type BudgetPolicy = 'ignore' | 'warn' | 'enforce';

export interface PeriodStatus {
  spent: number;
  reserved: number;
  limit: number;
  remaining: number | null;
  start: string;
  providers: Record<string, unknown>;
  components: Record<string, unknown>;
  [key: string]: unknown;
}

export interface BudgetStatus {
  policy: BudgetPolicy;
  periods: Record<Period, PeriodStatus>;
  [key: string]: unknown;
}

export interface UsageRow {
  key: string;
  requests: number;
  input_tokens: number;
  output_tokens: number;
  cost: number;
}

export interface UsageReport {
  period: Period;
  group_by: 'provider' | 'model' | 'component' | 'context';
  usage: UsageRow[];
}

/** One request's charge in the ledger: what getBudgetEntries lists. */
export interface BudgetEntry {
  /** ISO 8601, UTC. */
  time: string;
  /** The same instant in unix seconds: what `since` compares against. */
  ts: number;
  request_id: string;
  component: string;
  context_id: string | null;
  provider: string;
  model: string;
  input_tokens: number;
  output_tokens: number;
  total_tokens: number;
  cost: number;
  /** `partial`: cut off mid-stream; `interrupted`: its server process died. */
  status: 'ok' | 'partial' | 'failed' | 'interrupted';
  /** What the cost was computed from. */
  billed: 'usage' | 'capped' | 'worst_case';
}

export interface Estimate {
  model: string;
  provider: string;
  estimated_tokens: Usage;
  estimated_cost: number;
  price_known: boolean;
  under_budget: boolean;
  budget_warning?: string;
  [key: string]: unknown;
}

export interface Evaluation {
  evaluation: {
    overall_score: number;
    scores: Record<string, number>;
    feedback: string;
    method: string;
  };
  model: string;
  provider: string;
  cost: number;
  [key: string]: unknown;
}

export interface SessionStatus {
  providers: Providers;
  budget: BudgetStatus;
  in_flight: number;
}

// -- options ------------------------------------------------------------------

export interface ClientOptions {
  /** Rhetor's base URL; default: the page's origin in a browser, else http://localhost:8300. */
  url?: string;
  /** Billed to and routed for, unless a call names another; the WebSocket's source ('js-client' if none). */
  component?: string;
  /** Sent as `X-API-Key` (over a browser's WebSocket, as `?api_key=`). */
  apiKey?: string | null;
  /** Each HTTP call's deadline, and the wait for each next frame of a stream (130000). */
  timeoutMs?: number;
  /** Opening and registering the WebSocket (10000). */
  connectTimeoutMs?: number;
  /** Default: the `url` with ws(s): and `/ws`. */
  wsUrl?: string;
  /** A WebSocket class; default: the platform's, or the `ws` package on Node 20. */
  WebSocket?: unknown;
  /** A fetch function; default: the platform's. */
  fetch?: typeof fetch;
  /** Frames over this size are refused before sending (1 MiB, the server's default). */
  maxFrameBytes?: number;
}

export interface CallOptions {
  /** Abort the call: it then rejects with RequestCancelled. */
  signal?: AbortSignal;
  /** This call's deadline instead of the client's. */
  timeoutMs?: number;
}

export interface RoutingParameters {
  complexity?: 'low' | 'medium' | 'high';
  requiredCapabilities?: string[];
  maxCost?: number;
  taskType?: string;
  [key: string]: unknown;
}

export interface LLMOptions extends CallOptions {
  contextId?: string;
  taskType?: string;
  component?: string;
  provider?: string;
  model?: string;
  temperature?: number;
  maxTokens?: number;
  systemPrompt?: string;
  routingParameters?: RoutingParameters;
  tools?: ToolSpec[];
  toolChoice?: 'auto' | 'none' | 'required' | { name: string };
  parallelToolCalls?: boolean;
  responseFormat?: ResponseFormat;
  stop?: string | string[];
  topP?: number;
  seed?: number;
  user?: string;
}

export interface MessageOptions extends LLMOptions {
  message: string | ContentBlock[];
}

export interface StreamCallbacks {
  /** Each piece of text, as it arrives. */
  onChunk?: (chunk: string, frame: Record<string, unknown>) => void;
  /** Pieces of tool calls, as they arrive (the whole calls are in the reply's tool_calls). */
  onToolCall?: (pieces: ToolCallPiece[], frame: Record<string, unknown>) => void;
  /** True when the model starts; false before onComplete or onError, always. */
  onTyping?: (isTyping: boolean, context: string | null) => void;
  onComplete?: (reply: Reply) => void;
  /** A typed error; RequestCancelled after cancel(), ConnectionLost if the socket drops. */
  onError?: (error: RhetorClientError) => void;
}

/** A streamed request, answered at once by streamMessage and streamChat. */
export class StreamRequest {
  private constructor();
  /** The frame id the server's frames echo. */
  readonly id: string;
  /** The reply, or the error onError also receives. */
  readonly done: Promise<Reply>;
  /** The text streamed so far. */
  readonly text: string;
  readonly finished: boolean;
  /** Ask the server to stop; true if it did (the request then ends with RequestCancelled). */
  cancel(): Promise<boolean>;
}

// -- the client -----------------------------------------------------------------

export class RhetorClient {
  constructor(options?: ClientOptions);
  readonly url: string;
  readonly wsUrl: string;
  readonly component: string | null;

  /** Close the WebSocket; streams still running end with RequestCancelled. */
  close(): void;
  /** Any route: resolves to its decoded JSON. */
  request(
    method: string,
    route: string,
    options?: CallOptions & { body?: unknown; query?: Record<string, string | number | null | undefined> },
  ): Promise<any>;

  sendMessage(options: MessageOptions): Promise<Reply>;
  chat(messages: ChatMessage[], options?: LLMOptions): Promise<Reply>;
  streamMessage(options: MessageOptions & StreamCallbacks): StreamRequest;
  streamChat(messages: ChatMessage[], options?: LLMOptions & StreamCallbacks): StreamRequest;
  status(options?: { timeoutMs?: number }): Promise<SessionStatus>;

  getProviders(options?: CallOptions): Promise<Providers>;
  setProvider(provider: string, model?: string | null, options?: CallOptions): Promise<Providers>;
  health(options?: CallOptions): Promise<Health>;

  getTemplates(options?: CallOptions & { category?: string }): Promise<Template[]>;
  getTemplate(id: string, options?: CallOptions & { version?: number }): Promise<Template>;
  createTemplate(template: TemplateFields, options?: CallOptions): Promise<Template>;
  updateTemplate(id: string, changes: Partial<TemplateFields>, options?: CallOptions): Promise<Template>;
  deleteTemplate(id: string, options?: CallOptions): Promise<Deleted>;
  templateVersions(id: string, options?: CallOptions): Promise<TemplateVersion[]>;
  renderTemplate(id: string, variables?: Record<string, unknown>, options?: CallOptions): Promise<string>;
  generateFromTemplate(
    id: string,
    variables: Record<string, unknown>,
    options?: LLMOptions,
  ): Promise<Reply>;

  getPrompts(options?: CallOptions & { component?: string }): Promise<Prompt[]>;
  getPrompt(id: string, options?: CallOptions): Promise<Prompt>;
  createPrompt(prompt: PromptFields, options?: CallOptions): Promise<Prompt>;
  updatePrompt(id: string, changes: Partial<PromptFields>, options?: CallOptions): Promise<Prompt>;
  deletePrompt(id: string, options?: CallOptions): Promise<Deleted>;
  generatePrompt(
    request: {
      task: string;
      context?: Record<string, unknown> | string;
      format?: 'instruction' | 'chat' | 'few_shot' | 'chain_of_thought' | 'structured';
    },
    options?: CallOptions,
  ): Promise<{ prompt: string; task: string; format: string }>;

  getContexts(options?: CallOptions & { limit?: number; offset?: number }): Promise<ContextInfo[]>;
  getContext(id: string, options?: CallOptions & { limit?: number }): Promise<ContextDetail>;
  searchContexts(query: string, options?: CallOptions & { limit?: number }): Promise<SearchHit[]>;
  summarizeContext(id: string, options?: CallOptions): Promise<Summary>;
  deleteContext(id: string, options?: CallOptions): Promise<Deleted>;

  getBudget(options?: CallOptions): Promise<BudgetStatus>;
  getUsage(
    options?: CallOptions & { period?: Period; groupBy?: UsageReport['group_by'] },
  ): Promise<UsageReport>;
  getBudgetEntries(
    options?: CallOptions & { limit?: number; since?: number },
  ): Promise<BudgetEntry[]>;
  setBudgetLimit(
    limit: { period: Period; limit: number; provider?: string; component?: string },
    options?: CallOptions,
  ): Promise<BudgetStatus>;
  setBudgetPolicy(policy: BudgetPolicy, options?: CallOptions): Promise<BudgetStatus>;
  estimateCost(
    request: {
      prompt?: string;
      messages?: ChatMessage[];
      model?: string;
      taskType?: string;
      maxTokens?: number;
    },
    options?: CallOptions,
  ): Promise<Estimate>;
  evaluate(
    prompt: string,
    response: string,
    criteria?: string[],
    options?: CallOptions,
  ): Promise<Evaluation>;
}

// -- the first Tekton client's names ----------------------------------------------

export interface TektonLLMClientOptions {
  componentId: string;
  rhetorUrl?: string;
  rhetorWsUrl?: string;
  providerId?: string;
  modelId?: string;
  /** Seconds. */
  timeout?: number;
  authToken?: string;
  debug?: boolean;
}

export interface GenerationOptions {
  systemPrompt?: string;
  providerId?: string;
  modelId?: string;
  contextId?: string;
  temperature?: number;
  maxTokens?: number;
  /** Accepted for compatibility; Rhetor has no stop sequences and ignores them. */
  stopSequences?: string[];
  /** Seconds. */
  timeout?: number;
}

export interface StreamingOptions extends GenerationOptions {
  onComplete?: (response: CompletionResponse) => void;
  onError?: (error: RhetorClientError) => void;
}

export interface CompletionResponse {
  content: string;
  model: string;
  provider: string;
  finishReason?: string | null;
  usage?: { promptTokens: number; completionTokens: number; totalTokens: number };
  contextId: string | null;
  timestamp: string;
  cost: number;
  /** The whole Rhetor reply. */
  reply: Reply;
}

export interface StreamingChunk {
  chunk: string;
  contextId: string | null;
  model: string;
  provider: string;
  timestamp: string;
  done: boolean;
}

export interface TektonProviders extends Providers {
  default_provider: string | null;
  default_model: string | null;
}

export class TektonLLMClient {
  constructor(options: TektonLLMClientOptions);
  constructor(
    componentId: string,
    options?: { baseUrl?: string; wsBaseUrl?: string; provider?: string; model?: string },
  );
  readonly componentId: string;
  /** The RhetorClient underneath. */
  readonly client: RhetorClient;
  generateText(prompt: string, options?: GenerationOptions): Promise<CompletionResponse>;
  generateChatResponse(messages: ChatMessage[], options?: GenerationOptions): Promise<CompletionResponse>;
  streamText(prompt: string, onChunk: (chunk: StreamingChunk) => void, options?: StreamingOptions): string;
  streamChatResponse(
    messages: ChatMessage[],
    onChunk: (chunk: StreamingChunk) => void,
    options?: StreamingOptions,
  ): string;
  cancelRequest(requestId: string): boolean;
  getProviders(): Promise<TektonProviders>;
  close(): void;
}
