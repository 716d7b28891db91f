'use strict';
// Prerequisites of the gateway's tests (a mediasoup worker, redis-server), as tests/prereq.py does for
// pytest: without one a developer's run skips the test and names what is missing; under
// SPEECHLOAD_REQUIRE_ALL=1 -- set by `make test`, which CI runs after setup installed everything -- a
// missing prerequisite is a failing test of its own, as a skip there would only hide an untested path.
//
//   test('media against a real mediasoup worker', needs(BIN, 'no mediasoup worker binary'), async (t) => {...});
//
// Not a test file itself: `npm test` runs test/*.test.js.

const fs = require('fs');
const test = require('node:test');

const REQUIRE_ALL = process.env.SPEECHLOAD_REQUIRE_ALL === '1';
const reported = new Set();

/** test() options for a test that needs `available`: run it, or skip it (and fail under REQUIRE_ALL). */
function needs(available, reason) {
  if (available) return { skip: false };
  if (REQUIRE_ALL && !reported.has(reason)) {
    reported.add(reason);
    test(`prerequisite: ${reason}`, () => {
      throw new Error(`missing prerequisite (SPEECHLOAD_REQUIRE_ALL=1, so this is not a skip): ${reason}`);
    });
  }
  return { skip: reason };
}

/**
 * The mediasoup worker binary: MEDIASOUP_WORKER_BIN, or the path the infra build wrote to
 * /tmp/speechload-worker-path.txt (then exported, for mediasoup to find); null when there is none.
 */
function workerBin() {
  const env = process.env.MEDIASOUP_WORKER_BIN;
  if (env && fs.existsSync(env)) return env;
  try {
    const p = fs.readFileSync('/tmp/speechload-worker-path.txt', 'utf8').trim();
    if (!fs.existsSync(p)) return null;
    process.env.MEDIASOUP_WORKER_BIN = p;
    return p;
  } catch {
    return null;
  }
}

module.exports = { needs, workerBin, REQUIRE_ALL };
