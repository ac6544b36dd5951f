/**
 * Every RhetorClient and TektonLLMClient call against one real Rhetor on the
 * simulated provider, with prices set so that requests cost something and a
 * small chunk delay so that streams can be cancelled mid-way.
 */

import { after, before } from 'node:test';

import { PRICES, startRhetor } from './support/rhetor.js';
import budget from './suites/budget.js';
import calls from './suites/calls.js';
import examples from './suites/examples.js';
import streaming from './suites/streaming.js';
import tekton from './suites/tekton.js';

// Filled in before the suites run; each reads it lazily.
const server = {};

before(async () => {
  const started = await startRhetor({
    prices: PRICES,
    env: { RHETOR_SIMULATED_CHUNK_DELAY: '0.02' },
  });
  Object.assign(server, started, { stop: started.stop });
});

after(() => server.stop());

calls(server);
streaming(server);
tekton(server);
examples(server);
budget(server);
