"""The report's frame of samples: which columns it reads and the dtypes it gives them."""

from __future__ import annotations

from dataclasses import dataclass, field

import pandas as pd

from loadtest.conditions import NETWORK_COLUMNS
from loadtest.report.model import EXTRA_METRICS, OPTIONAL_METRICS, STAGES

SAMPLES_FILE = "samples.parquet"
JOURNAL_DIR = "journal"

# Scenarios and listeners (report/scenarios.py, report/listening.py, report --by): read when the samples
# have them, typed when present and never invented, so an older run's frame is what it always was.
SCENARIO_TEXT_COLUMNS: tuple[str, ...] = (
    "scenario", "party", "listener", "direction", "segmentation", "fixture_id", "source_language",
    "target_language",
)
SCENARIO_NUMERIC_COLUMNS: tuple[str, ...] = (
    "seq", "t_audio_onset", "audio_packets", "audio_received_ms", "audio_missing_packets", "audio_gaps",
    "listen_rms_dbfs", "overlap_ms", "after_previous_ms",
)
SCENARIO_BOOL_COLUMNS: tuple[str, ...] = ("listen_checked", "listen_silent", "listen_clipped", "previous_cut")
SCENARIO_COLUMNS: tuple[str, ...] = (
    *SCENARIO_TEXT_COLUMNS, *SCENARIO_NUMERIC_COLUMNS, *SCENARIO_BOOL_COLUMNS,
)

# Only what the report uses is read: at 1M rows the text columns (transcripts, references) would cost
# more memory than everything else together.
REPORT_COLUMNS: tuple[str, ...] = (
    "run_id",
    "worker",
    "conversation",
    "wall_start",
    "status",
    "status_stage",
    "error",
    "active_users",
    "speaker_node",
    "listener_node",
    "user",  # with worker: the caller, whose reconnects are counted
    "reconnects",
    *(f"{s}_ms" for s in STAGES),
    *EXTRA_METRICS,
    "impairment",  # adverse conditions (report/conditions.py)
    "snr_db",
    *NETWORK_COLUMNS,
    *OPTIONAL_METRICS,
    *SCENARIO_COLUMNS,
)


@dataclass
class LoadedSamples:
    frame: pd.DataFrame
    source: str  # "samples.parquet" | "journal" | "none"
    partial: bool = False
    notes: list[str] = field(default_factory=list)



def normalise(frame: pd.DataFrame) -> pd.DataFrame:
    """Give every column the report reads a predictable dtype; absent columns become all-missing."""
    out = frame.copy() if not frame.empty else pd.DataFrame(index=pd.RangeIndex(0))
    n = len(out)
    for col in (*(f"{s}_ms" for s in STAGES), *EXTRA_METRICS, "wall_start"):
        if col in out.columns:
            out[col] = pd.to_numeric(out[col], errors="coerce").astype("float64")
        else:
            out[col] = pd.Series([float("nan")] * n, index=out.index, dtype="float64")
    if "active_users" in out.columns:
        out["active_users"] = pd.to_numeric(out["active_users"], errors="coerce").astype("float64")
    else:
        out["active_users"] = pd.Series([float("nan")] * n, index=out.index, dtype="float64")
    for col in ("status", "status_stage", "error", "worker", "conversation", "run_id", "speaker_node",
                "listener_node"):
        if col not in out.columns:
            out[col] = pd.Series([None] * n, index=out.index, dtype="object")
    for col in ("snr_db", "user", "reconnects", *NETWORK_COLUMNS, *OPTIONAL_METRICS):  # where recorded
        if col in out.columns:
            out[col] = pd.to_numeric(out[col], errors="coerce").astype("float64")
    for col in SCENARIO_NUMERIC_COLUMNS:
        # Nullable integers (Int64: seq, packet counts of newer runs) become floats with NaN; a plain int64
        # seq (older runs) stays as it is, so their samples.csv does too.
        if col in out.columns and (not pd.api.types.is_numeric_dtype(out[col])
                                   or isinstance(out[col].dtype, pd.api.extensions.ExtensionDtype)):
            out[col] = pd.to_numeric(out[col], errors="coerce").astype("float64")
    for col in SCENARIO_BOOL_COLUMNS:
        if col in out.columns:
            out[col] = _boolean(out[col])
    for col in SCENARIO_TEXT_COLUMNS:
        if col in out.columns:
            out[col] = _label(out[col])
    # Categorical: 1M repeated short strings cost ~1 byte each instead of a Python object each.
    for col in ("status", "status_stage", "worker"):
        out[col] = out[col].astype("category")
    return out


def _boolean(col: pd.Series) -> pd.Series:
    """Nullable booleans from what a journal or a parquet file holds: bools with nulls (object), 0/1/NaN."""
    try:
        return col.astype("boolean")
    except (TypeError, ValueError):  # e.g. "true"/"false" strings from a hand-made file
        text = col.astype("string").str.strip().str.lower()
        return text.map({"true": True, "1": True, "false": False, "0": False}).astype("boolean")


def _label(col: pd.Series) -> pd.Series:
    """A category column where an empty label (a direction of "", say) is a missing one."""
    cat = col.astype("category")
    blank = [c for c in cat.cat.categories if isinstance(c, str) and not c.strip()]
    return cat.cat.remove_categories(blank) if blank else cat
