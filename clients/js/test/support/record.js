/**
 * Recording what a streamed request reports, in order, for assertions.
 */

/**
 * Start a stream with recording callbacks: `start(callbacks)` must call
 * streamMessage or streamChat with them. Answers the handle, the events as
 * they come (`['typing', true]`, `['chunk', text]`, `['complete']`,
 * `['error']`), and `finished`, resolving to `{reply}` or `{error}`.
 */
export function record(start, { onChunk } = {}) {
  const events = [];
  let settle;
  const finished = new Promise((resolve) => {
    settle = resolve;
  });
  const handle = start({
    onTyping: (typing) => events.push(['typing', typing]),
    onChunk: (chunk) => {
      events.push(['chunk', chunk]);
      if (onChunk) onChunk(chunk, handle);
    },
    onComplete: (reply) => {
      events.push(['complete']);
      settle({ reply, events });
    },
    onError: (error) => {
      events.push(['error']);
      settle({ error, events });
    },
  });
  return { handle, events, finished };
}

/** The events' kinds with chunks collapsed: e.g. typing:true, chunk, typing:false, complete. */
export function shape(events) {
  const kinds = [];
  for (const [kind, value] of events) {
    const name = kind === 'typing' ? `typing:${value}` : kind;
    if (name !== kinds[kinds.length - 1] || name !== 'chunk') kinds.push(name);
  }
  return kinds;
}

/** The text of the recorded chunks. */
export function chunksOf(events) {
  return events.filter(([kind]) => kind === 'chunk').map(([, text]) => text);
}

/** A WebSocket class (Node's `ws`) that records the URL of each socket it opens. */
export async function countingWebSocket() {
  const { WebSocket } = await import('ws');
  const opened = [];
  class Counting extends WebSocket {
    constructor(url, ...rest) {
      super(url, ...rest);
      opened.push(String(url));
    }
  }
  return { WebSocket: Counting, opened };
}

/**
 * A WebSocket class with only a browser's surface (no headers, no EventEmitter),
 * over Node's `ws`; records the URL of each socket it opens.
 */
export async function browserLikeWebSocket() {
  const { WebSocket } = await import('ws');
  const opened = [];
  class BrowserLike {
    #ws;
    constructor(url) {
      opened.push(String(url));
      this.onopen = this.onmessage = this.onclose = this.onerror = null;
      this.#ws = new WebSocket(url);
      this.#ws.addEventListener('open', (event) => this.onopen?.(event));
      this.#ws.addEventListener('message', (event) => this.onmessage?.({ data: event.data }));
      this.#ws.addEventListener('close', (e) => this.onclose?.({ code: e.code, reason: e.reason }));
      this.#ws.addEventListener('error', (event) => this.onerror?.(event));
    }

    get readyState() {
      return this.#ws.readyState;
    }

    send(data) {
      this.#ws.send(data);
    }

    close(code, reason) {
      this.#ws.close(code, reason);
    }
  }
  return { WebSocket: BrowserLike, opened };
}
