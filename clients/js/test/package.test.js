/**
 * The package's surface: its public names, its error tree and how server
 * error bodies map onto it, and the tarball `npm pack` makes.
 */

import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdirSync, readdirSync } from 'node:fs';
import path from 'node:path';
import { describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';

import * as api from 'tekton-llm-client';

import { errorFromBody, errorFromTransport } from '../src/errors.js';
import { scratchDir } from './support/rhetor.js';

const PACKAGE = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');

describe('the package', () => {
  it('exports exactly the public names', () => {
    assert.deepEqual(Object.keys(api).sort(), [
      'BudgetExceeded',
      'ConnectionLost',
      'ConnectionRefused',
      'NotFound',
      'ProviderError',
      'ProviderUnavailable',
      'RequestCancelled',
      'RhetorClient',
      'RhetorClientError',
      'ServerError',
      'StreamRequest',
      'TektonLLMClient',
      'Timeout',
      'Unauthorized',
      'ValidationError',
    ]);
  });

  it('every error is an Error and a RhetorClientError, named for its class', () => {
    const classes = Object.entries(api).filter(
      ([, value]) => typeof value === 'function' && value.prototype instanceof Error,
    );
    assert.equal(classes.length, 12);
    for (const [name, cls] of classes) {
      const error = new cls('m');
      assert.ok(error instanceof Error && error instanceof api.RhetorClientError, name);
      assert.equal(error.name, name);
      assert.deepEqual([error.type, error.status, error.field, error.body], [null, null, null, {}]);
    }
    assert.ok(new api.ProviderUnavailable('m') instanceof api.ProviderError);
    assert.ok(new api.ConnectionLost('m') instanceof api.ServerError);
  });

  it("server error types map to their classes, keeping the server's type, status and field", () => {
    const cases = [
      ['validation_error', 422, api.ValidationError],
      ['invalid_json', 400, api.ValidationError],
      ['payload_too_large', 413, api.ValidationError],
      ['unsupported_media_type', 415, api.ValidationError],
      ['not_found', 404, api.NotFound],
      ['unauthorized', 401, api.Unauthorized],
      ['forbidden', 403, api.Unauthorized],
      ['budget_exceeded', 402, api.BudgetExceeded],
      ['provider_unavailable', 503, api.ProviderUnavailable],
      ['all_providers_failed', 503, api.ProviderUnavailable],
      ['rate_limited', 429, api.ProviderError],
      ['upstream_timeout', 504, api.ProviderError],
      ['stream_broken', 502, api.ProviderError],
      ['context_too_long', 400, api.ProviderError],
      ['cancelled', null, api.RequestCancelled],
      ['service_unavailable', 503, api.ServerError],
      ['internal_error', 500, api.ServerError],
      ['method_not_allowed', 405, api.ServerError],
    ];
    for (const [type, status, cls] of cases) {
      const error = errorFromBody({ error: { type, message: `a ${type}`, field: 'f' } }, status);
      assert.equal(error.constructor, cls, type);
      assert.deepEqual([error.type, error.status, error.field, error.message], [type, status, 'f', `a ${type}`]);
    }
  });

  it('details ride on the error: budget period/limit/spent, provider attempts', () => {
    const budget = errorFromBody(
      { type: 'budget_exceeded', message: 'over', period: 'daily', limit: 1, spent: 0.99 },
      null,
    );
    assert.deepEqual([budget.period, budget.limit, budget.spent], ['daily', 1, 0.99]);
    const failed = errorFromBody({
      error: {
        type: 'all_providers_failed',
        message: 'all failed',
        attempts: [{ provider: 'anthropic', model: 'm', type: 'rate_limited', message: 'slow down' }, 7],
      },
    });
    assert.equal(failed.attempts.length, 1);
    assert.equal(failed.attempts[0].provider, 'anthropic');
    const upstream = errorFromBody({ type: 'upstream_server_error', message: 'x', provider: 'openai', model: 'gpt-4o' });
    assert.ok(upstream instanceof api.ProviderError);
    assert.deepEqual([upstream.provider, upstream.model], ['openai', 'gpt-4o']);
  });

  it('a body without a known type falls back on the status, and a hostile one still gives an error', () => {
    assert.ok(errorFromBody(null, 401) instanceof api.Unauthorized);
    assert.ok(errorFromBody('<html>', 402) instanceof api.BudgetExceeded);
    assert.ok(errorFromBody({ error: { type: 'new_kind', provider: 'x' } }, 502) instanceof api.ProviderError);
    for (const body of [undefined, 7, [], { error: [] }, { error: { type: 5, message: {} } }, { __proto__: null }]) {
      const error = errorFromBody(body, 500);
      assert.ok(error instanceof api.ServerError);
      assert.equal(error.message, 'Rhetor answered 500');
    }
    assert.equal(errorFromBody({ error: 'plain words' }).message, 'plain words');
    assert.equal(errorFromBody({ error: { type: 'toString', message: 'm' } }).constructor, api.ServerError);
  });

  it('in a page on another origin, a refused connection names RHETOR_CORS_ORIGINS; elsewhere not', () => {
    const refused = (url) =>
      errorFromTransport(new TypeError('Failed to fetch'), { url, stage: 'connect' }).message;
    assert.equal(refused('http://rhetor:8300/providers'), 'cannot reach Rhetor at http://rhetor:8300/providers');
    globalThis.location = new URL('http://localhost:5173/chat');
    try {
      assert.match(
        refused('http://localhost:8300/providers'),
        /a page on http:\/\/localhost:5173 needs that origin in Rhetor's RHETOR_CORS_ORIGINS$/,
      );
      assert.ok(!refused('http://localhost:5173/providers').includes('CORS'), 'same origin');
      assert.ok(!refused('/providers').includes('CORS'), 'a relative URL is the same origin');
    } finally {
      delete globalThis.location;
    }
  });

  it('npm pack makes a tarball with the sources, types and README, which imports on its own', () => {
    const dir = scratchDir();
    const out = execFileSync('npm', ['pack', '--json', '--pack-destination', dir], {
      cwd: PACKAGE,
      encoding: 'utf8',
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    const [packed] = JSON.parse(out);
    const files = packed.files.map((f) => f.path).sort();
    assert.deepEqual(files, [
      'README.md',
      'index.d.ts',
      'package.json',
      'src/client.js',
      'src/errors.js',
      'src/http.js',
      'src/index.js',
      'src/socket.js',
      'src/tekton.js',
    ]);
    // Unpacked as npm installs it, into a project that has nothing else.
    const target = path.join(dir, 'project', 'node_modules', 'tekton-llm-client');
    mkdirSync(target, { recursive: true });
    execFileSync('tar', ['-xzf', path.join(dir, packed.filename), '-C', target, '--strip-components=1']);
    assert.ok(readdirSync(target).includes('index.d.ts'));
    const names = execFileSync(
      process.execPath,
      ['--input-type=module', '-e', "import * as m from 'tekton-llm-client'; console.log(Object.keys(m).length)"],
      { cwd: path.join(dir, 'project'), encoding: 'utf8' },
    );
    assert.equal(names.trim(), '15');
  });
});
