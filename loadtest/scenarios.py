"""Each scenario kind's timetable: which party says which fixture when (an open model: planned ahead).

* ``one-way``, ``group``: utterance k at k·interval, fixtures in turn (each caller starts at another);
* ``two-way``: the same timetable, turns alternating between party a and party b, each in its language;
* ``barge-in``: pairs every 2·interval: a long utterance (the longest third of the fixtures), then a
  short one (the shortest third) that starts
  ``BARGE_IN_AFTER_S`` after the long one's translated speech began at the listener (while it still
  plays) -- a caller talking over the translation. If that audio never comes, the short one keeps its
  planned slot (one interval after the long one);
* ``monologue``: one take, the fixtures back to back with natural pauses (the clips' own edge silence
  plus ``MONOLOGUE_PAUSES_S`` in turn), for the run's whole duration.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator, Sequence

from loadtest.adverse import clip_for
from loadtest.cast import Cast
from loadtest.conditions import NoiseConfig
from loadtest.fixtures import FixtureLibrary
from loadtest.webrtc_client import ScheduledUtterance

BARGE_IN_AFTER_S = 0.5
MONOLOGUE_PAUSES_S = (0.45, 0.8, 0.6, 1.1, 0.7)


class PlanError(ValueError):
    pass


def fixtures_by_party(cast: Cast, library: FixtureLibrary,
                      fixture_ids: Sequence[str]) -> dict[str, list[str]]:
    """Each speaking party's fixtures: the run's chosen ids in its language, else all in its language."""
    out = {}
    for voice in cast.voices:
        lang = voice.source_language
        chosen = [i for i in fixture_ids if library.fixture(i).language == lang]
        ids = chosen or library.ids_for(lang)
        if not ids:
            raise PlanError(f"party {voice.party} speaks {lang!r} but the fixture manifest has no "
                            f"{lang!r} speech ({library.manifest})")
        out[voice.party] = ids
    return out


def spoken_ids(cast: Cast, library: FixtureLibrary, fixture_ids: Sequence[str]) -> list[str]:
    """Every fixture the cast's parties may say (to encode before the clock starts)."""
    return [i for ids in fixtures_by_party(cast, library, fixture_ids).values() for i in ids]


def endless_plan(cast: Cast, library: FixtureLibrary, fixture_ids: Sequence[str], caller: int,
                 interval_s: float, noise: NoiseConfig | None = None) -> Iterator[ScheduledUtterance]:
    """The caller's plan for its cast's kind, in offset order, without end (a run cuts it)."""
    noise = noise or NoiseConfig()
    ids = fixtures_by_party(cast, library, fixture_ids)

    def say(party: str, k: int, offset_s: float, after_onset_s: float | None = None) -> ScheduledUtterance:
        pool = ids[party]
        fixture_id = pool[(caller + k) % len(pool)]
        return ScheduledUtterance(fixture_id, clip_for(library, fixture_id, noise, caller), offset_s,
                                  party=party, after_onset_s=after_onset_s)

    if cast.kind == "two-way":
        parties = [v.party for v in cast.voices]
        for k in itertools.count():
            yield say(parties[k % 2], k // 2, k * interval_s)
    elif cast.kind == "barge-in":
        yield from _barge_in(library, ids["a"], caller, interval_s, noise)
    elif cast.kind == "monologue":
        offset = 0.0
        for k in itertools.count():
            item = say("a", k, offset)
            yield item
            offset += item.clip.duration_s + MONOLOGUE_PAUSES_S[k % len(MONOLOGUE_PAUSES_S)]
    else:
        for k in itertools.count():
            yield say("a", k, k * interval_s)


def _barge_in(library: FixtureLibrary, ids: list[str], caller: int, interval_s: float,
              noise: NoiseConfig) -> Iterator[ScheduledUtterance]:
    # Long leads give translated speech long enough to be talked over; short barges are ready (spoken,
    # transcribed, translated, synthesized) before it ends.
    by_length = sorted(ids, key=lambda i: library.fixture(i).duration_s)
    third = max(1, len(by_length) // 3)
    shorts, longs = by_length[:third], by_length[-third:]
    for j in itertools.count():
        lead, barge = longs[(caller + j) % len(longs)], shorts[(caller + j) % len(shorts)]
        yield ScheduledUtterance(lead, clip_for(library, lead, noise, caller), 2 * j * interval_s)
        yield ScheduledUtterance(barge, clip_for(library, barge, noise, caller), (2 * j + 1) * interval_s,
                                 after_onset_s=BARGE_IN_AFTER_S)


def finite_plan(cast: Cast, library: FixtureLibrary, fixture_ids: Sequence[str], caller: int,
                interval_s: float, duration_s: float,
                noise: NoiseConfig | None = None) -> list[ScheduledUtterance]:
    """The plan's utterances planned to start within ``duration_s``."""
    items = endless_plan(cast, library, fixture_ids, caller, interval_s, noise)
    return list(itertools.takewhile(lambda item: item.offset_s < duration_s, items))
