/**
 * tekton-llm-client: Rhetor's JavaScript client, for browsers and Node 20+.
 *
 * How the layers fit: `errors.js` holds the one exception tree and the two
 * functions that build it; `http.js` is fetch with a deadline; `socket.js`
 * is the shared WebSocket and its streamed requests; `client.js` is
 * RhetorClient, the calls; `tekton.js` is TektonLLMClient, the first Tekton
 * client's names over it. This module only re-exports.
 */

export { RhetorClient } from './client.js';
export { TektonLLMClient } from './tekton.js';
export { StreamRequest } from './socket.js';
export {
  BudgetExceeded,
  ConnectionLost,
  ConnectionRefused,
  NotFound,
  ProviderError,
  ProviderUnavailable,
  RequestCancelled,
  RhetorClientError,
  ServerError,
  Timeout,
  Unauthorized,
  ValidationError,
} from './errors.js';
