"""Adverse network conditions injected by the tester (docs/impairment.md).

`models` (pure, seeded: loss, bursts, delay/jitter/reorder, bandwidth cap), `profiles` (named profiles
in TOML), `hook` (where aioice meets its sockets), `observe` (counters beside what the far ends saw).
Importing this package loads none of them.
"""
