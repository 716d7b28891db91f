"""Call shapes: who is in each kind of call, and each kind's timetable."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest

from loadtest.cast import CastError, Ear, Voice, cast_for
from loadtest.config import ConfigError, RunConfig
from loadtest.credentials import Credentials
from loadtest.fixtures import FixtureLibrary
from loadtest.scenarios import (
    BARGE_IN_AFTER_S,
    MONOLOGUE_PAUSES_S,
    PlanError,
    endless_plan,
    finite_plan,
    fixtures_by_party,
)
from loadtest.session import Party, session_variables

pytestmark = pytest.mark.unit

MANIFEST = Path(__file__).resolve().parents[2] / "fixtures" / "audio" / "manifest.json"


@pytest.fixture(scope="module")
def library() -> FixtureLibrary:
    return FixtureLibrary(MANIFEST)


def test_casts_name_who_speaks_and_who_hears_whom() -> None:
    one = cast_for("one-way")
    assert one.voices == (Voice("a", "en", "es"),) and one.ears == (Ear("l1", "a", "es"),)
    two = cast_for("two-way", "en", "es")
    assert two.voices == (Voice("a", "en", "es"), Voice("b", "es", "en"))
    assert two.ears == (Ear("b", "a", "es"), Ear("a", "b", "en"))  # each party hears the other
    group = cast_for("group", listeners=5, target_languages=("es", "fr"))
    assert [(e.name, e.language) for e in group.ears] == [
        ("l1", "es"), ("l2", "fr"), ("l3", "es"), ("l4", "fr"), ("l5", "es")]
    assert cast_for("monologue").matching == "span" and cast_for("barge-in").matching == "order"


def test_bad_casts_are_refused_with_the_reason() -> None:
    with pytest.raises(CastError, match="unknown scenario kind 'duet'"):
        cast_for("duet")
    with pytest.raises(CastError, match="'en' is the speaker's own language"):
        cast_for("group", "en", "es", 2, ("es", "en"))
    with pytest.raises(CastError, match="'listeners' must be >= 1"):
        cast_for("group", listeners=0)


def test_run_config_checks_the_scenario_keys() -> None:
    base = RunConfig()
    assert base.with_overrides(scenario={"kind": "two-way"}).scenario.cast().kind == "two-way"
    with pytest.raises(ConfigError, match="'scenario.kind'.*unknown scenario kind"):
        base.with_overrides(scenario={"kind": "chorus"})
    with pytest.raises(ConfigError, match="monologue is one take of at least 60 s"):
        base.with_overrides(scenario={"kind": "monologue", "duration_s": 30})
    with pytest.raises(ConfigError, match="'scenario.listen_sample'"):
        base.with_overrides(scenario={"listen_sample": 1.5})


def test_peer_names_stay_plain_for_two_peers_and_carry_names_beyond() -> None:
    plain = Party("c1", "listener", 0, "en", "es")
    assert plain.peer == "c1-listener"
    assert session_variables(plain, Credentials())["speaker_peer"] == "c1-speaker"
    named = Party("c1", "listener", 0, "es", "en", name="a", speaker_name="b")
    variables = session_variables(named, Credentials())
    assert named.peer == "c1-listener-a" and variables["speaker_peer"] == "c1-speaker-b"
    assert variables["listener_peer"] == "c1-listener-a"


def test_two_way_alternates_parties_each_in_its_language(library: FixtureLibrary) -> None:
    plan = finite_plan(cast_for("two-way"), library, (), caller=0, interval_s=7.0, duration_s=30.0)
    assert [item.party for item in plan] == ["a", "b", "a", "b", "a"]
    assert [item.offset_s for item in plan] == [0.0, 7.0, 14.0, 21.0, 28.0]
    for item in plan:
        language = library.fixture(item.fixture_id).language
        assert language == ("en" if item.party == "a" else "es")
    # each party cycles through its own fixtures: b's two turns say different things
    assert plan[1].fixture_id != plan[3].fixture_id


def test_chosen_fixtures_split_by_language_and_a_missing_language_named(library: FixtureLibrary) -> None:
    chosen = ("cards-001", "es-cards-002")
    by_party = fixtures_by_party(cast_for("two-way"), library, chosen)
    assert by_party == {"a": ["cards-001"], "b": ["es-cards-002"]}
    with pytest.raises(PlanError, match="party b speaks 'de'"):
        fixtures_by_party(cast_for("two-way", "en", "de"), library, ())


def test_barge_in_pairs_a_long_lead_with_a_short_barge_timed_from_its_audio(library: FixtureLibrary) -> None:
    plan = list(itertools.islice(endless_plan(cast_for("barge-in"), library, (), 0, 9.0), 6))
    leads, barges = plan[0::2], plan[1::2]
    assert all(item.after_onset_s is None for item in leads)
    assert all(item.after_onset_s == BARGE_IN_AFTER_S for item in barges)
    assert [item.offset_s for item in plan] == [0.0, 9.0, 18.0, 27.0, 36.0, 45.0]  # the fallback slots
    shortest_lead = min(library.fixture(i.fixture_id).duration_s for i in leads)
    longest_barge = max(library.fixture(i.fixture_id).duration_s for i in barges)
    assert shortest_lead >= longest_barge


def test_monologue_is_one_take_with_natural_pauses(library: FixtureLibrary) -> None:
    plan = finite_plan(cast_for("monologue"), library, (), caller=1, interval_s=9.0, duration_s=60.0)
    assert plan[-1].offset_s < 60.0 and plan[-1].offset_s + plan[-1].clip.duration_s >= 55.0
    for k, (first, then) in enumerate(itertools.pairwise(plan)):
        pause = then.offset_s - (first.offset_s + first.clip.duration_s)
        assert pause == pytest.approx(MONOLOGUE_PAUSES_S[k % len(MONOLOGUE_PAUSES_S)])
    assert {library.fixture(item.fixture_id).language for item in plan} == {"en"}
