"""Who is in a call: the speaking parties, the listeners and whom each listener times.

A call is one room. Each speaking party publishes a microphone (a speaker peer); each listener is a
peer that consumes one party's translated speech in the language it asks for, and times that party's
utterances. A party that both speaks and listens (two-way) is a speaker peer and a listener peer, as
the signaling profile's roles are: the gateway sees two peers per party.

Kinds (``[scenario] kind``, ``--scenario``):

* ``one-way``: party a speaks, listener l1 hears a (today's conversation);
* ``two-way``: a speaks the source language, b the target language; b hears a, a hears b;
* ``group``: a speaks, listeners l1..lN each ask for one of ``target_languages`` (in turn);
* ``barge-in``: one-way, and every second utterance starts while the previous translation plays;
* ``monologue``: one-way, one long take; transcripts are matched by the gateway's speech spans.
"""

from __future__ import annotations

from dataclasses import dataclass

KINDS = ("one-way", "two-way", "group", "barge-in", "monologue")


@dataclass(frozen=True)
class Voice:
    """A speaking party: its microphone's language and the language its own peer asks for."""

    party: str
    source_language: str
    target_language: str


@dataclass(frozen=True)
class Ear:
    """A listener: its name in the rows, the party it hears and times, the language it asks for."""

    name: str
    hears: str
    language: str


@dataclass(frozen=True)
class Cast:
    kind: str
    voices: tuple[Voice, ...]
    ears: tuple[Ear, ...]

    @property
    def matching(self) -> str:
        """How transcripts find their utterances: in speaking order, or by the gateway's speech spans."""
        return "span" if self.kind == "monologue" else "order"

    def voice(self, party: str) -> Voice:
        return next(v for v in self.voices if v.party == party)

    def ears_of(self, party: str) -> tuple[Ear, ...]:
        return tuple(e for e in self.ears if e.hears == party)

    @property
    def legs(self) -> int:
        return len(self.ears)


class CastError(ValueError):
    pass


def cast_for(kind: str, source_language: str = "en", target_language: str = "es", listeners: int = 1,
             target_languages: tuple[str, ...] = ()) -> Cast:
    if kind not in KINDS:
        raise CastError(f"unknown scenario kind {kind!r} (one of: {', '.join(KINDS)})")
    if kind == "two-way":
        return Cast(kind, (Voice("a", source_language, target_language),
                           Voice("b", target_language, source_language)),
                    (Ear("b", "a", target_language), Ear("a", "b", source_language)))
    if kind == "group":
        languages = target_languages or (target_language,)
        if source_language in languages:
            raise CastError(f"group: target language {source_language!r} is the speaker's own language "
                            "(a listener asking for it gets no translated speech)")
        if listeners < 1:
            raise CastError(f"group: 'listeners' must be >= 1, got {listeners}")
        ears = tuple(Ear(f"l{k + 1}", "a", languages[k % len(languages)]) for k in range(listeners))
        return Cast(kind, (Voice("a", source_language, languages[0]),), ears)
    return Cast(kind, (Voice("a", source_language, target_language),), (Ear("l1", "a", target_language),))
