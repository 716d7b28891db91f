"""One caller against the reference stack with fixed delays: connect time and per-stage medians.

With STT 300 ms, translation 100 ms and TTS 400 ms modelled, what the tester adds on top of the modelled
service times is the VAD hangover (in stt), the HTTP/TLS/Socket.IO hops and the media path.

    .venv/bin/python bench/single_caller.py [--utterances 8] [--port-offset 300]

Ends with one JSON line of its figures.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.integration.stackrun import run_callers, running_stack, short_fixture_ids  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--utterances", type=int, default=8)
    parser.add_argument("--interval", type=float, default=4.5)
    parser.add_argument("--port-offset", type=int, default=300)
    args = parser.parse_args()
    ids = short_fixture_ids(max_duration_s=3.5, count=6)
    with tempfile.TemporaryDirectory() as tmp:
        state = Path(tmp) / "stack"
        state.mkdir()
        with running_stack("fixed-delays", state, args.port_offset) as info:
            frame = run_callers(info, Path(tmp) / "run", callers=1,
                                duration_s=args.utterances * args.interval, interval_s=args.interval,
                                fixture_ids=ids)
    ok = frame[frame["status"] == "ok"]
    figures = {
        "utterances": int(len(frame)),
        "ok": int(len(ok)),
        "connect_ms": round(float(frame["connect_ms"].iloc[0]), 1),
    }
    for stage in ("stt", "translation", "tts", "e2e"):
        figures[f"{stage}_p50_ms"] = round(float(ok[f"{stage}_ms"].median()), 1)
    print(f"1 caller, {figures['utterances']} utterances ({figures['ok']} ok) against fixed-delays "
          f"(STT 300 / translation 100 / TTS 400 ms modelled)")
    print(f"  connect              {figures['connect_ms']:8.1f} ms")
    for stage in ("stt", "translation", "tts", "e2e"):
        print(f"  {stage:<12} p50     {figures[f'{stage}_p50_ms']:8.1f} ms")
    print(json.dumps(figures))
    return 0


if __name__ == "__main__":
    sys.exit(main())
