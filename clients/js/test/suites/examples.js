/**
 * Every ```js example in the README and in docs/client.md's JavaScript
 * section, run as written against the test server: `http://localhost:8300`
 * is the one thing replaced, by the server's URL. ```jsx examples (React)
 * need a bundler and are not run.
 */

import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { after, describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';

import { REPO } from '../support/rhetor.js';

const PACKAGE = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
// Inside the package, so that `import 'tekton-llm-client'` finds the package by its own name.
const WORK = path.join(PACKAGE, 'test', '.examples');
const run = promisify(execFile);

/** The ```js blocks of a Markdown text. */
function blocks(markdown) {
  return [...markdown.matchAll(/^```(?:js|javascript)\n([\s\S]*?)^```$/gm)].map((m) => m[1]);
}

/** docs/client.md from its JavaScript heading to the next top-level (##) heading. */
function javascriptSection(markdown) {
  const start = markdown.indexOf('\n## The JavaScript client');
  assert.notEqual(start, -1, 'docs/client.md has a JavaScript section');
  const end = markdown.indexOf('\n## ', start + 1);
  return markdown.slice(start, end === -1 ? undefined : end);
}

export default function examples(server) {
  const sources = [
    ['README', blocks(readFileSync(path.join(PACKAGE, 'README.md'), 'utf8'))],
    [
      'docs-client',
      blocks(javascriptSection(readFileSync(path.join(REPO, 'docs', 'client.md'), 'utf8'))),
    ],
  ];

  describe('documented examples', () => {
    after(() => rmSync(WORK, { recursive: true, force: true }));

    it('the README and the docs have examples to run', () => {
      assert.ok(sources[0][1].length >= 5, 'README examples');
      assert.ok(sources[1][1].length >= 3, 'docs/client.md examples');
    });

    for (const [name, examples] of sources) {
      examples.forEach((code, index) => {
        const first = code.split('\n').find((line) => line.trim() && !line.startsWith('import'));
        it(`${name} example ${index + 1} runs: ${first.trim().slice(0, 60)}`, async () => {
          mkdirSync(WORK, { recursive: true });
          const file = path.join(WORK, `${name}-${index + 1}.mjs`);
          writeFileSync(file, code.replaceAll('http://localhost:8300', server.url));
          const { stdout, stderr } = await run(process.execPath, [file], {
            cwd: WORK,
            timeout: 60_000,
          });
          assert.equal(stderr, '', `the example wrote to stderr:\n${stderr}`);
          assert.ok(stdout.trim().length > 0, 'the example printed nothing');
        });
      });
    }
  });
}
