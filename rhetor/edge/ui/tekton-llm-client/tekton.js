/**
 * TektonLLMClient: the first Tekton JavaScript client's names, as thin aliases.
 *
 * Existing Tekton UIs call `generateText`, `generateChatResponse`,
 * `streamText`, `streamChatResponse`, `cancelRequest` and `getProviders` with
 * the first client's argument and answer shapes; each call here translates
 * them to and from a RhetorClient call, and does nothing else.
 */

import { RhetorClient } from './client.js';

function seconds(value) {
  return typeof value === 'number' && value > 0 ? value * 1000 : undefined;
}

/** The first client's CompletionResponse for a Rhetor reply; `reply` keeps all of it. */
function completion(reply) {
  const usage = reply.usage;
  return {
    content: reply.message,
    model: reply.model,
    provider: reply.provider,
    finishReason: reply.finish_reason,
    usage: usage
      ? {
          promptTokens: usage.input_tokens,
          completionTokens: usage.output_tokens,
          totalTokens: usage.total_tokens,
        }
      : undefined,
    contextId: reply.context,
    timestamp: reply.timestamp,
    cost: reply.cost,
    reply,
  };
}

/**
 * The first Tekton client, over a RhetorClient (`.client`).
 *
 * `new TektonLLMClient({componentId, rhetorUrl, rhetorWsUrl, providerId,
 * modelId, timeout, authToken, debug})` (`timeout` in seconds), or the older
 * `new TektonLLMClient(componentId, {baseUrl, wsBaseUrl, provider, model})`.
 */
export class TektonLLMClient {
  // Invariant: one entry per stream started here and still delivering to its callbacks.
  #streams = new Map();

  constructor(options = {}, older = {}) {
    if (typeof options === 'string') {
      options = {
        ...older,
        componentId: options,
        rhetorUrl: older.baseUrl,
        rhetorWsUrl: older.wsBaseUrl,
        providerId: older.provider,
        modelId: older.model,
      };
    }
    this.componentId = options.componentId || 'browser-client';
    this.providerId = options.providerId ?? null;
    this.modelId = options.modelId ?? null;
    this.debug = Boolean(options.debug);
    /** The RhetorClient underneath, for everything the first client did not have. */
    this.client = new RhetorClient({
      url: options.rhetorUrl,
      wsUrl: options.rhetorWsUrl,
      component: this.componentId,
      apiKey: options.authToken ?? options.apiKey,
      timeoutMs: seconds(options.timeout),
    });
  }

  /** Generate text for a prompt; resolves to `{content, model, provider, usage, ...}`. */
  async generateText(prompt, options = {}) {
    return completion(await this.client.sendMessage(this.#fields({ message: prompt }, options)));
  }

  /** Generate the next turn of a conversation of `{role, content}` messages. */
  async generateChatResponse(messages, options = {}) {
    return completion(await this.client.chat(messages, this.#fields({}, options)));
  }

  /**
   * Stream text for a prompt: `onChunk({chunk, done, model, provider, ...})`,
   * then `options.onComplete(response)` or `options.onError(error)`.
   * Answers the request id that `cancelRequest` takes.
   */
  streamText(prompt, onChunk, options = {}) {
    const fields = this.#fields({ message: prompt }, options);
    return this.#stream(
      (callbacks) => this.client.streamMessage({ ...fields, ...callbacks }),
      onChunk,
      options,
    );
  }

  /** Stream the next turn of a conversation; as streamText. */
  streamChatResponse(messages, onChunk, options = {}) {
    const fields = this.#fields({}, options);
    return this.#stream(
      (callbacks) => this.client.streamChat(messages, { ...fields, ...callbacks }),
      onChunk,
      options,
    );
  }

  /**
   * Cancel a stream by its id: true if it was running. As in the first client,
   * its callbacks hear nothing more; the server stops the provider call.
   */
  cancelRequest(requestId) {
    const stream = this.#streams.get(requestId);
    if (stream === undefined) return false;
    this.#streams.delete(requestId);
    stream.cancel();
    return true;
  }

  /** Providers and models; `default_provider`/`default_model` name the active ones. */
  async getProviders() {
    const answer = await this.client.getProviders();
    return {
      ...answer,
      default_provider: answer.active_provider,
      default_model: answer.active_model,
    };
  }

  /** Close the WebSocket underneath. */
  close() {
    this.client.close();
  }

  #fields(fields, options) {
    return {
      ...fields,
      systemPrompt: options.systemPrompt,
      provider: options.providerId ?? this.providerId ?? undefined,
      model: options.modelId ?? this.modelId ?? undefined,
      // As in the first client, a component's requests share one context unless told otherwise.
      contextId: options.contextId ?? this.componentId,
      temperature: options.temperature,
      maxTokens: options.maxTokens,
      timeoutMs: seconds(options.timeout),
    };
  }

  #stream(start, onChunk, options) {
    let id = null;
    const live = () => this.#streams.has(id);
    const onError =
      options.onError ??
      ((error) => {
        console.error('Streaming error:', error);
      });
    const stream = start({
      onChunk: (text) => {
        if (!live()) return;
        onChunk({
          chunk: text,
          contextId: options.contextId ?? this.componentId,
          model: '',
          provider: '',
          timestamp: new Date().toISOString(),
          done: false,
        });
      },
      onComplete: (reply) => {
        if (!live()) return;
        this.#streams.delete(id);
        onChunk({
          chunk: '',
          contextId: reply.context,
          model: reply.model,
          provider: reply.provider,
          timestamp: reply.timestamp,
          done: true,
        });
        if (options.onComplete) options.onComplete(completion(reply));
      },
      onError: (error) => {
        if (!live()) return;
        this.#streams.delete(id);
        if (this.debug) console.debug('[TektonLLMClient] stream failed', error);
        onError(error);
      },
    });
    id = stream.id;
    this.#streams.set(id, stream);
    return id;
  }
}
