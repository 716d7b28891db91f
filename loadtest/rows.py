"""Journal rows: a finished utterance's timeline plus what the run knows around it (quality, RTC stats,
load)."""

from __future__ import annotations

import bisect
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from loadtest.fixtures import FixtureLibrary
from loadtest.quality import score
from loadtest.redaction import scrub_tree
from loadtest.timeline import RowContext, SampleRow, UtteranceTimeline, to_row

if TYPE_CHECKING:
    from loadtest.webrtc_client import PipelineClient


@dataclass
class ActiveUsers:
    """How many conversations were connected at each moment (for rows' ``active_users``)."""

    times: list[float] = field(default_factory=list)
    counts: list[int] = field(default_factory=list)
    current: int = 0

    def change(self, t: float, delta: int) -> None:
        self.current += delta
        self.times.append(t)
        self.counts.append(self.current)

    def at(self, t: float) -> int:
        index = bisect.bisect_right(self.times, t) - 1
        return self.counts[index] if index >= 0 else 0


@dataclass(frozen=True)
class RowMaker:
    """Turns a finished utterance's timeline into its journal row (quality scores, RTC stats, load)."""

    run_id: str
    worker: str
    library: FixtureLibrary
    active: ActiveUsers

    def __call__(self, tl: UtteranceTimeline, client: PipelineClient, user: int) -> SampleRow:
        # A conversation that failed before speaking reports one row with no fixture.
        fixture = self.library.fixture(tl.fixture_id) if tl.fixture_id else None
        reference_transcript = fixture.transcript if fixture is not None else None
        reference_translation = fixture.translations.get(tl.target_language) if fixture is not None else None
        quality = score(tl.transcript, reference_transcript, tl.translation, reference_translation)
        stats = client.stats_for(tl)  # the RTC stats of the listener that heard it
        speaker_node, listener_node = client.nodes_for(tl)
        ctx = RowContext(
            run_id=self.run_id, worker=self.worker, user=user, connect_ms=client.result.connect_ms,
            reference_transcript=reference_transcript, reference_translation=reference_translation,
            wer=quality.wer, chrf=quality.chrf, jitter_ms=stats["jitter_ms"],
            packets_lost=stats["packets_lost"], rtt_ms=stats["rtt_ms"],
            active_users=self.active.at(tl.t_planned), speaker_node=speaker_node,
            listener_node=listener_node, reconnects=client.result.reconnects,
            network=client.network.columns(stats) if client.network is not None else {})
        # Error texts may quote a URL or the server's words: no secret of the run reaches the journal.
        row: SampleRow = scrub_tree(to_row(tl, ctx))
        return row
