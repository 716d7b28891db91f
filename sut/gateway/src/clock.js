'use strict';
// One clock for every gateway timestamp: CLOCK_MONOTONIC via process.hrtime.
// Python's time.monotonic() reads the same clock on Linux, so the tester can put
// ground-truth lines (seconds) and event timestamps (milliseconds) next to its own.

function nowNs() {
  return process.hrtime.bigint();
}

/** Milliseconds on CLOCK_MONOTONIC (fractional, µs resolution): the unit of event `*Ts` fields. */
function nowMs() {
  return Number(process.hrtime.bigint()) / 1e6;
}

/** Seconds on CLOCK_MONOTONIC: the unit of ground-truth `t`. */
function nowS() {
  return Number(process.hrtime.bigint()) / 1e9;
}

module.exports = { nowNs, nowMs, nowS };
