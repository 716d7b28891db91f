"""The report's frame of samples: which columns it reads and the dtypes it gives them."""

from __future__ import annotations

from dataclasses import dataclass, field

import pandas as pd

from loadtest.conditions import NETWORK_COLUMNS
from loadtest.report.model import EXTRA_METRICS, STAGES

SAMPLES_FILE = "samples.parquet"
JOURNAL_DIR = "journal"

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
    for col in ("snr_db", "user", "reconnects", *NETWORK_COLUMNS):  # read where the run recorded them
        if col in out.columns:
            out[col] = pd.to_numeric(out[col], errors="coerce").astype("float64")
    # Categorical: 1M repeated short strings cost ~1 byte each instead of a Python object each.
    for col in ("status", "status_stage", "worker"):
        out[col] = out[col].astype("category")
    return out
