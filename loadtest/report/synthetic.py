"""Synthetic sample sets with known distributions in the docs/samples.md schema (tests, scale bench)."""

from __future__ import annotations

import json
from collections.abc import Hashable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

TIMEOUT_STAGES = ("sent", "stt", "translation", "tts_event")


@dataclass(frozen=True)
class SyntheticSpec:
    rows: int = 2000
    seed: int = 0
    steps: tuple[int, ...] = (10, 20, 40)  # active callers per step, equal time each
    workers: int = 2
    duration_s: float = 600.0
    stt_median: float = 300.0
    translation_median: float = 100.0
    tts_median: float = 400.0
    sigma: float = 0.3
    knee_callers: int = 30  # above this, latency grows with load (queueing), so the knee chart has a knee
    timeout_rate: float = 0.004
    error_rate: float = 0.002
    rtc: bool = True
    texts: bool = True
    run_id: str = "synthetic"
    t0: float = 1_760_000_000.0


def make_samples(spec: SyntheticSpec = SyntheticSpec()) -> pd.DataFrame:
    rng = np.random.default_rng(spec.seed)
    n = spec.rows
    wall = spec.t0 + np.sort(rng.uniform(0.0, spec.duration_s, n))
    step_idx = np.minimum(
        ((wall - spec.t0) / spec.duration_s * len(spec.steps)).astype(int), len(spec.steps) - 1
    )
    level = np.asarray(spec.steps)[step_idx]
    load = np.maximum(1.0, level / spec.knee_callers) ** 1.5
    stt = rng.lognormal(np.log(spec.stt_median), spec.sigma, n) * load
    translation = rng.lognormal(np.log(spec.translation_median), spec.sigma, n)
    tts = rng.lognormal(np.log(spec.tts_median), spec.sigma, n) * np.sqrt(load)
    worker_idx = rng.integers(0, spec.workers, n)
    users_per_worker = spec.steps[0] // max(spec.workers, 1) or 1
    user = rng.integers(0, max(users_per_worker, 1) * 8, n)
    conversation = np.char.add(np.char.add("w", worker_idx.astype(str)), np.char.add("-c", user.astype(str)))
    conv_codes, conv_inverse = np.unique(conversation, return_inverse=True)
    connect = rng.lognormal(np.log(80.0), 0.2, conv_codes.size)[conv_inverse]

    u = rng.uniform(size=n)
    status = np.where(
        u < spec.timeout_rate, "timeout", np.where(u < spec.timeout_rate + spec.error_rate, "error", "ok")
    )
    stage = np.full(n, None, dtype=object)
    to_mask = status == "timeout"
    stage[to_mask] = rng.choice(TIMEOUT_STAGES, int(to_mask.sum()))
    err_mask = status == "error"
    stage[err_mask] = rng.choice(["stt", "translation", "tts"], int(err_mask.sum()))
    # A stage not reached is NaN, exactly as the journal writes it.
    reached_stt = ~(to_mask & np.isin(stage, ["sent"])) & ~(err_mask & (stage == "stt"))
    reached_tr = reached_stt & ~(to_mask & (stage == "stt")) & ~(err_mask & (stage == "translation"))
    reached_tts = status == "ok"
    stt = np.where(reached_stt, stt, np.nan)
    translation = np.where(reached_tr, translation, np.nan)
    tts = np.where(reached_tts, tts, np.nan)
    e2e = np.where(reached_tts, stt + translation + tts, np.nan)

    frame = pd.DataFrame(
        {
            "run_id": spec.run_id,
            "worker": np.char.add("host:", (1000 + worker_idx).astype(str)),
            "user": user,
            "conversation": conversation,
            "utterance_id": np.char.add(np.char.add(conversation, "-"), np.arange(n).astype(str)),
            "seq": np.arange(n) % 50 + 1,
            "fixture_id": "clip-01",
            "source_language": "en",
            "target_language": "es",
            "wall_start": wall,
            "t_planned": wall - spec.t0 + 1000.0,
            "connect_ms": connect,
            "stt_ms": stt,
            "translation_ms": translation,
            "tts_ms": tts,
            "e2e_ms": e2e,
            "status": status,
            "status_stage": stage,
            "error": _where(err_mask, np.char.add("pipelineError: ", stage.astype(str))),
            "send_lateness_p99_ms": rng.gamma(2.0, 1.5, n),
            "active_users": np.maximum(level // max(spec.workers, 1), 1),
        }
    )
    if spec.rtc:
        frame["jitter_ms"] = rng.gamma(2.0, 4.0, n) * np.sqrt(load)
        frame["packets_lost"] = rng.poisson(0.2 * load)
        frame["rtt_ms"] = rng.lognormal(np.log(2.0), 0.3, n)
    if spec.texts:
        pool = np.array(["hello how are you", "the weather is nice today", "see you tomorrow"])
        frame["transcript"] = pool[rng.integers(0, pool.size, n)]
        frame["translation"] = _where(status == "ok", np.full(n, "hola"))
        frame["wer"] = rng.beta(1.0, 12.0, n)
        frame["chrf"] = rng.uniform(40.0, 80.0, n)
    return frame


def write_run(run_dir: Path, frame: pd.DataFrame) -> Path:
    run_dir.mkdir(parents=True, exist_ok=True)
    path = run_dir / "samples.parquet"
    frame.to_parquet(path, index=False)
    return path


def write_journal(
    run_dir: Path, frame: pd.DataFrame, shards: int = 2, truncate_last: bool = False
) -> list[Path]:
    """Journal shards as the tester writes them; truncate_last cuts the last shard mid-line (a kill)."""
    jdir = run_dir / "journal"
    jdir.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, part in enumerate(np.array_split(np.arange(len(frame)), shards)):
        records = frame.iloc[part].to_dict(orient="records")
        text = "".join(json.dumps(_jsonable(r)) + "\n" for r in records)
        if truncate_last and i == shards - 1:
            text = text[: len(text) - len(text.splitlines()[-1]) // 2 - 1]
        path = jdir / f"shard-{i}.jsonl"
        path.write_text(text, encoding="utf-8")
        paths.append(path)
    return paths


def _where(mask: np.ndarray, values: np.ndarray) -> np.ndarray:
    """values where mask, else None (a missing text, as the journal writes it)."""
    out = np.full(mask.shape, None, dtype=object)
    out[mask] = values[mask]
    return out


def _jsonable(record: Mapping[Hashable, Any]) -> dict[str, object]:
    out: dict[str, object] = {}
    for k, v in record.items():
        if isinstance(v, float) and not np.isfinite(v):
            out[str(k)] = None
        elif isinstance(v, np.generic):
            out[str(k)] = v.item()
        else:
            out[str(k)] = v
    return out
