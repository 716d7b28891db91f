"""Per-scenario report sections, each present only when the samples carry its rows (docs/reports.md).

* two-way: the run's figures per direction (what `--by direction` shows), when there are two or more;
* group: how far apart the listeners of one spoken utterance heard its translation, and per listener;
* barge-in: what the gateway did with a translation ready while the previous one still played;
* monologue: the gateway's segmentation of a long take against the manifest, per fixture.

A spoken utterance is (worker, conversation, party, seq): its listeners' rows share those, and their
t_audio_onset are on one clock (a conversation lives in one tester process).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from loadtest.report.groups import NONE_LABEL, group_summaries, label_series
from loadtest.report.listening import listening_summary
from loadtest.report.model import RunSummary
from loadtest.report.scenarios_model import (
    SEGMENTATIONS,
    BargeInSummary,
    GroupBy,
    GroupSpread,
    ListenerRow,
    MonologueSummary,
    ScenarioSections,
    SegmentationRow,
)

UTTERANCE_KEY: tuple[str, ...] = ("worker", "conversation", "party", "seq")


def _rows_of(frame: pd.DataFrame, kind: str) -> np.ndarray:
    """Row mask of one scenario kind (all False when the samples do not name scenarios)."""
    if "scenario" not in frame.columns:
        return np.zeros(len(frame), dtype=bool)
    return (frame["scenario"].astype(object) == kind).to_numpy(dtype=bool)


def _floats(frame: pd.DataFrame, col: str) -> np.ndarray:
    if col not in frame.columns:
        return np.full(len(frame), np.nan)
    return pd.to_numeric(frame[col], errors="coerce").to_numpy(dtype=np.float64)


def _q(values: np.ndarray, q: float) -> float | None:
    finite = values[np.isfinite(values)]
    return float(np.quantile(finite, q)) if finite.size else None


def _text(frame: pd.DataFrame, col: str) -> pd.Series:
    if col not in frame.columns:
        return pd.Series([NONE_LABEL] * len(frame), index=frame.index, dtype=object)
    return label_series(frame[col])


def two_way(frame: pd.DataFrame, status: np.ndarray, target_ms: float, rng: np.random.Generator,
            resamples: int) -> GroupBy | None:
    """Per direction, when the samples name two directions or more."""
    if "direction" not in frame.columns or frame["direction"].nunique(dropna=True) < 2:
        return None
    return group_summaries(frame, status, ("direction",), target_ms, rng, resamples)


def group_spread(frame: pd.DataFrame, status: np.ndarray) -> GroupSpread | None:
    mask = _rows_of(frame, "group")
    if not mask.any():
        return None
    rows, st = frame.loc[mask], status[mask]
    key = pd.DataFrame({c: _text(rows, c) for c in UTTERANCE_KEY}, index=rows.index)
    onset_ms = _floats(rows, "t_audio_onset") * 1000.0
    tmp = key.assign(onset=onset_ms)
    per = tmp.groupby(list(UTTERANCE_KEY), sort=False)["onset"]
    heard, listening = per.count(), per.size()  # per spoken utterance: listeners that heard it, all of them
    spread = (per.max() - per.min())[heard >= 2].to_numpy(dtype=np.float64)
    behind = onset_ms - per.transform("min").to_numpy(dtype=np.float64)
    e2e = _floats(rows, "e2e_ms")
    who = pd.DataFrame({"listener": _text(rows, "listener"), "language": _text(rows, "target_language")},
                       index=rows.index)
    table = []
    for (name, language), pos in who.groupby(["listener", "language"], sort=True).indices.items():
        s = st[pos]
        table.append(ListenerRow(
            listener=str(name), language=str(language), sent=int(pos.size), ok=int((s == "ok").sum()),
            timeout=int((s == "timeout").sum()), error=int((s == "error").sum()),
            e2e_p50_ms=_q(e2e[pos], 0.50), e2e_p95_ms=_q(e2e[pos], 0.95),
            behind_first_p50_ms=_q(behind[pos], 0.50), behind_first_max_ms=_q(behind[pos], 1.0)))
    return GroupSpread(
        utterances=int(listening.size), measured=int(spread.size), incomplete=int((heard < listening).sum()),
        spread_p50_ms=_q(spread, 0.50), spread_p95_ms=_q(spread, 0.95), spread_max_ms=_q(spread, 1.0),
        listeners=tuple(table))


def _barge_in_sentence(overlapped: int, cut: int, wait_ms: float | None, after_ms: float | None,
                       n: int) -> tuple[str, str]:
    """(behaviour, the one plain sentence saying what the gateway did)."""
    if overlapped == 0:
        return "none", (f"no translation was ready while the previous one still played ({n} utterances): "
                        "nothing to queue or cut")
    if 2 * cut > overlapped:
        return "cut", f"cut the previous translation in {cut} of {overlapped} cases"
    if after_ms is not None and after_ms < 0:
        return "overlaid", (f"played the next translation over the previous one: it started a median "
                            f"{-after_ms:.0f} ms before the previous one ended ({overlapped} cases)")
    wait = "+? ms" if wait_ms is None else f"{round(wait_ms):+d} ms"  # round first: never "-0 ms"
    also = f"; cut the previous translation in {cut} of {overlapped} cases" if cut else ""
    return "queued", f"translated audio queued behind the previous one: {wait} median wait{also}"


def barge_in(frame: pd.DataFrame) -> BargeInSummary | None:
    """Among translations ready while the previous translated audio still played (overlap_ms > 0)."""
    mask = _rows_of(frame, "barge-in")
    if not mask.any():
        return None
    rows = frame.loc[mask]
    overlap, tts = _floats(rows, "overlap_ms"), _floats(rows, "tts_ms")
    with np.errstate(invalid="ignore"):
        over = overlap > 0
    cut_col = rows["previous_cut"] if "previous_cut" in rows.columns else pd.Series(pd.NA, index=rows.index)
    cut = int((cut_col.astype("boolean").fillna(False).to_numpy(dtype=bool) & over).sum())
    tts_over, tts_others = _q(tts[over], 0.5), _q(tts[~over], 0.5)
    overlap_p50 = _q(overlap[over], 0.5)
    # The wait queueing added: their TTS stage against the others'; with no others, the audio still to play.
    wait = tts_over - tts_others if tts_over is not None and tts_others is not None else overlap_p50
    after = _q(_floats(rows, "after_previous_ms")[over], 0.5)
    behaviour, sentence = _barge_in_sentence(int(over.sum()), cut, wait, after, int(mask.sum()))
    return BargeInSummary(
        utterances=int(mask.sum()), overlapped=int(over.sum()), tts_p50_overlapped_ms=tts_over,
        tts_p50_others_ms=tts_others, overlap_p50_ms=overlap_p50, after_previous_p50_ms=after,
        previous_cut=cut, behaviour=behaviour, sentence=sentence)


def _monologue_sentence(total: SegmentationRow) -> str:
    n = total.total
    if n and total.single == n:
        return (f"the gateway's segmentation matched the manifest: each of the {n} fixtures came back as "
                "one utterance")
    return (f"{total.single} of {n} fixtures came back as one utterance, as the manifest marks them; "
            f"{total.merged} merged with a neighbour, {total.split} split into several, {total.lost} lost")


def monologue(frame: pd.DataFrame) -> MonologueSummary | None:
    """Counts of single/merged/split/lost per fixture id, in the order the fixtures were spoken."""
    if "segmentation" not in frame.columns:
        return None
    seg = frame["segmentation"].astype(object)
    mask = seg.isin(SEGMENTATIONS).to_numpy(dtype=bool)
    if not mask.any():
        return None
    rows = pd.DataFrame({"fixture": _text(frame.loc[mask], "fixture_id"), "seg": seg[mask],
                         "seq": _floats(frame.loc[mask], "seq")})
    counts = rows.groupby(["fixture", "seg"]).size().unstack(fill_value=0)
    order = rows.groupby("fixture")["seq"].min().sort_values(kind="stable", na_position="last").index
    fixtures = tuple(
        SegmentationRow(str(f), *(int(counts.at[f, s]) if s in counts.columns else 0 for s in SEGMENTATIONS))
        for f in order)
    total = SegmentationRow("all", *(sum(getattr(r, s) for r in fixtures) for s in SEGMENTATIONS))
    return MonologueSummary(fixtures=fixtures, total=total, sentence=_monologue_sentence(total))


def scenario_sections(frame: pd.DataFrame, status: np.ndarray, target_ms: float, rng: np.random.Generator,
                      resamples: int) -> ScenarioSections:
    """Every section the samples carry; an older run's samples give an empty (false) ScenarioSections."""
    if frame.empty:
        return ScenarioSections()
    return ScenarioSections(
        two_way=two_way(frame, status, target_ms, rng, resamples),
        group=group_spread(frame, status),
        barge_in=barge_in(frame),
        monologue=monologue(frame),
        listening=listening_summary(frame, rng, resamples),
    )


def add_sections(summary: RunSummary, frame: pd.DataFrame, status: np.ndarray, by: tuple[str, ...],
                 resamples: int, seed: int) -> None:
    """Fill summary.by (when asked) and summary.scenarios (what the samples carry).

    A generator of their own: the run's own figures and CIs stay exactly what they were without them.
    """
    if frame.empty:
        return
    rng = np.random.default_rng(seed)
    if by:
        summary.by = group_summaries(frame, status, by, summary.target_ms, rng, resamples)
    summary.scenarios = scenario_sections(frame, status, summary.target_ms, rng, resamples)
