"""Stop strings over any split of the output into events: the streamed pieces never show text that a
stop string completed later would cut, and together they are the text cut before the stop string."""

from __future__ import annotations

import itertools

from hypothesis import given
from hypothesis import strategies as st

from owlkit.backends.base import Event, Request, Sampling
from owlkit.serve.generation import Choice


def decode(ids: list[int]) -> str:  # one character per token id: what the stop logic sees is exact
    return "".join(map(chr, ids))


def run(text: str, cuts: list[int], stops: list[str]) -> tuple[list[str], str | None, bool]:
    req = Request([65], Sampling(), sink=lambda ev: None)
    choice = Choice(0, [65], req, decode, stops)
    ids = [ord(c) for c in text]
    bounds = sorted({0, len(ids), *(c % (len(ids) + 1) for c in cuts)})
    pieces, finish = [], None
    for a, b in itertools.pairwise(bounds):
        up = choice.feed(Event(tokens=ids[a:b], finish="length" if b == len(ids) else None))
        pieces.append(up.text)
        finish = up.finish
        if finish:
            break
    if len(ids) == 0:
        finish = choice.feed(Event(finish="length")).finish
    return pieces, finish, req.cancelled.is_set()


@given(
    text=st.text(alphabet="ab\n.", max_size=30),
    cuts=st.lists(st.integers(0, 40), max_size=8),
    stops=st.lists(st.text(alphabet="ab\n.", min_size=1, max_size=4), max_size=3),
)
def test_stream_of_any_split_equals_the_cut_text(text: str, cuts: list[int], stops: list[str]) -> None:
    pieces, finish, cancelled = run(text, cuts, stops)
    # Generation stops as soon as a stop string is complete (checked after each token, here each
    # character), cut where the earliest one found by then begins.
    end = next((e for e in range(len(text) + 1) if any(s in text[:e] for s in stops)), None)
    hits = [] if end is None else [text[:end].find(s) for s in stops if s in text[:end]]
    want = text[: min(hits)] if hits else text
    assert "".join(pieces) == want
    assert finish == ("stop" if hits else "length") and cancelled == bool(hits)
    # Shown text is never taken back: what a client has seen, at any moment, begins the final text.
    for i in range(len(pieces)):
        assert want.startswith("".join(pieces[: i + 1]))


def test_held_back_text_is_released_when_it_is_not_a_stop() -> None:
    req = Request([65], Sampling(), sink=lambda ev: None)
    choice = Choice(0, [65], req, decode, ["END"])
    assert choice.feed(Event(tokens=[ord(c) for c in "xyzE"])).text == "xyz"  # "E" may start "END"
    assert choice.feed(Event(tokens=[ord("N")])).text == ""
    assert choice.feed(Event(tokens=[ord("D")])).finish == "stop" and req.cancelled.is_set()
    other = Choice(0, [65], None, decode, ["END"])
    other.feed(Event(tokens=[ord(c) for c in "xyEN"]))
    assert other.feed(Event(tokens=[ord("!")], finish="length")).text == "EN!"
