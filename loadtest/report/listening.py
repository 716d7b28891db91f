"""Listener experience: when each utterance's translated audio started and ended for its listener, whether
all of it arrived, and (for the decoded sample, --listen-sample) whether it was silent or clipped.

Offsets are against the source speech (start_offset_ms: first translated audio − start of the speech;
end_offset_ms: end of the translated audio − end of the speech). Received vs announced compares the
packets that arrived (audio_received_ms, 20 ms each) with the duration the gateway announced
(tts_audio_ms): an utterance is short when it lacks more than one packet.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from loadtest.report.aggregate import stage_stats
from loadtest.report.scenarios_model import ListeningSummary

PACKET_MS = 20.0
HEARING_COLUMNS: tuple[str, ...] = (
    "start_offset_ms", "end_offset_ms", "audio_packets", "audio_received_ms", "audio_missing_packets",
    "audio_gaps",
)


def _floats(frame: pd.DataFrame, col: str) -> np.ndarray:
    if col not in frame.columns:
        return np.full(len(frame), np.nan)
    return pd.to_numeric(frame[col], errors="coerce").to_numpy(dtype=np.float64)


def _flags(frame: pd.DataFrame, col: str) -> np.ndarray:
    """True where the (nullable boolean) column is True; a missing value is not True."""
    if col not in frame.columns:
        return np.zeros(len(frame), dtype=bool)
    return frame[col].astype("boolean").fillna(False).to_numpy(dtype=bool)


def _median(values: np.ndarray) -> float | None:
    finite = values[np.isfinite(values)]
    return float(np.median(finite)) if finite.size else None


def has_hearing_columns(frame: pd.DataFrame) -> bool:
    numeric = any(c in frame.columns and bool(frame[c].notna().any()) for c in HEARING_COLUMNS)
    return numeric or bool(_flags(frame, "listen_checked").any())


def listening_summary(
    frame: pd.DataFrame, rng: np.random.Generator, resamples: int
) -> ListeningSummary | None:
    """None when no row carries a hearing column (runs made before the listener metrics)."""
    if not has_hearing_columns(frame):
        return None
    hearing = np.zeros(len(frame), dtype=bool)
    for col in HEARING_COLUMNS:
        hearing |= np.isfinite(_floats(frame, col))
    checked = _flags(frame, "listen_checked")
    received, announced = _floats(frame, "audio_received_ms"), _floats(frame, "tts_audio_ms")
    both = np.isfinite(received) & np.isfinite(announced)
    shortfall = np.where(both, announced - received, np.nan)
    with np.errstate(invalid="ignore"):
        short = both & (shortfall > PACKET_MS)
    gaps, missing = _floats(frame, "audio_gaps"), _floats(frame, "audio_missing_packets")
    gap_known = np.isfinite(gaps)
    rms = _floats(frame, "listen_rms_dbfs")[checked]
    rms = rms[np.isfinite(rms)]
    return ListeningSummary(
        utterances=int((hearing | checked).sum()),
        start_offset=stage_stats(_floats(frame, "start_offset_ms"), rng, resamples),
        end_offset=stage_stats(_floats(frame, "end_offset_ms"), rng, resamples),
        compared=int(both.sum()),
        short=int(short.sum()),
        shortfall_p50_ms=_median(shortfall[short]),
        gap_rows=int(gap_known.sum()),
        with_gaps=int((gap_known & (np.nan_to_num(gaps) > 0)).sum()),
        gaps=int(np.nansum(gaps)) if gap_known.any() else 0,
        missing_packets=int(np.nansum(missing)) if np.isfinite(missing).any() else 0,
        checked=int(checked.sum()),
        silent=int((checked & _flags(frame, "listen_silent")).sum()),
        clipped=int((checked & _flags(frame, "listen_clipped")).sum()),
        rms_dbfs_p50=float(np.median(rms)) if rms.size else None,
        rms_dbfs_min=float(rms.min()) if rms.size else None,
        rms_dbfs_max=float(rms.max()) if rms.size else None,
    )
