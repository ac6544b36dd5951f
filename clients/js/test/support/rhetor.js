/**
 * A real Rhetor server for the tests: `python -m rhetor serve` on the simulated provider.
 *
 * It binds 127.0.0.1 on a port the kernel picks (or the one given), with a
 * fresh data directory and an environment holding nothing from the caller's
 * but PATH and HOME, so no real provider key or Hermes URL leaks in.
 */

import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const HERE = path.dirname(fileURLToPath(import.meta.url));
/** The repository's root, three levels above clients/js/test/support. */
export const REPO = path.resolve(HERE, '../../../..');
const PYTHON = process.env.RHETOR_PYTHON || path.join(REPO, '.venv/bin/python');
// The checkout whose server runs: this one, unless RHETOR_SOURCE names another.
const SOURCE = process.env.RHETOR_SOURCE || REPO;
// Generous: a loaded 2-core CI machine has been seen to take 5 s to import the server.
const START_DEADLINE_MS = 60_000;
const STOP_DEADLINE_MS = 20_000;

/** A price for both simulated models, so that requests cost something. */
export const PRICES = {
  'simulated-echo': { input_per_mtok: 1000.0, output_per_mtok: 1000.0 },
  'simulated-summary': { input_per_mtok: 1000.0, output_per_mtok: 1000.0 },
};

/** A fresh temporary directory, removed when the process exits. */
export function scratchDir() {
  const dir = mkdtempSync(path.join(tmpdir(), 'rhetor-js-'));
  process.once('exit', () => rmSync(dir, { recursive: true, force: true }));
  return dir;
}

function waitForExit(child, ms) {
  if (child.exitCode !== null || child.signalCode !== null) return Promise.resolve(true);
  return new Promise((resolve) => {
    const timer = setTimeout(() => resolve(false), ms);
    child.once('exit', () => {
      clearTimeout(timer);
      resolve(true);
    });
  });
}

/**
 * Start a server and resolve once it answers /health.
 *
 * `env` adds RHETOR_* settings; `prices` writes a price override file;
 * `dir` reuses a data directory (a restart), `port` a port.
 */
export async function startRhetor({ env = {}, prices = null, dir = null, port = 0 } = {}) {
  const home = dir ?? scratchDir();
  const childEnv = {
    PATH: process.env.PATH,
    HOME: process.env.HOME ?? home,
    PYTHONPATH: SOURCE,
    RHETOR_HOST_BIND: '127.0.0.1',
    RHETOR_PORT: String(port),
    RHETOR_DATA_DIR: path.join(home, 'data'),
    HERMES_API_URL: '',
    // Port 9 (discard) has no listener: Ollama reads as unavailable at once.
    OLLAMA_BASE_URL: 'http://127.0.0.1:9',
    ...env,
  };
  if (prices) {
    const file = path.join(home, 'prices.json');
    writeFileSync(file, JSON.stringify(prices));
    childEnv.RHETOR_PRICE_OVERRIDES = file;
  }
  const child = spawn(PYTHON, ['-m', 'rhetor', 'serve'], {
    cwd: home,
    env: childEnv,
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let stderr = '';
  child.stderr.setEncoding('utf8');
  child.stderr.on('data', (text) => {
    stderr = (stderr + text).slice(-20_000);
  });
  const killOnExit = () => child.kill('SIGKILL');
  process.once('exit', killOnExit);

  const url = await new Promise((resolve, reject) => {
    let out = '';
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      reject(new Error(`Rhetor did not start within ${START_DEADLINE_MS} ms:\n${stderr}`));
    }, START_DEADLINE_MS);
    child.stdout.setEncoding('utf8');
    child.stdout.on('data', (text) => {
      out += text;
      const found = /Rhetor serving on (http:\/\/\S+)/.exec(out);
      if (found) {
        clearTimeout(timer);
        resolve(found[1]);
      }
    });
    child.once('exit', (code, signal) => {
      clearTimeout(timer);
      reject(new Error(`Rhetor exited (${code ?? signal}) before serving:\n${stderr}`));
    });
  });
  // Only now: the listener above must not outlive a successful start.
  child.removeAllListeners('exit');
  const health = await fetch(`${url}/health`, { signal: AbortSignal.timeout(START_DEADLINE_MS) });
  if (!health.ok) throw new Error(`Rhetor's /health answered ${health.status}`);

  return {
    url,
    port: Number(new URL(url).port),
    dir: home,
    get stderr() {
      return stderr;
    },
    /** Kill it at once, as a crash or `kill -9` would. */
    async crash() {
      child.kill('SIGKILL');
      await waitForExit(child, STOP_DEADLINE_MS);
      process.removeListener('exit', killOnExit);
    },
    /** Stop it as an operator would (SIGTERM), killing it if it overstays. */
    async stop() {
      child.kill('SIGTERM');
      if (!(await waitForExit(child, STOP_DEADLINE_MS))) {
        child.kill('SIGKILL');
        await waitForExit(child, STOP_DEADLINE_MS);
      }
      process.removeListener('exit', killOnExit);
    },
  };
}
