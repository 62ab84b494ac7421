"""Subtitles: cues a viewer can read, checked with real SRT and WebVTT parsers."""

from __future__ import annotations

import io
from typing import Any

import pytest
import srt
import webvtt
from hypothesis import given
from hypothesis import strategies as st

from melvin_trio.core.words import Word
from melvin_trio.subtitles import LINE_CHARS, MAX_CUE_SECONDS, cues, render, words_from_finals


def _words(text: str, start: float = 0.0, step: float = 0.4, pause_after: int | None = None) -> list[Word]:
    out = []
    t = start
    for n, token in enumerate(text.split()):
        out.append(Word(token, t, t + step * 0.8, 0.9))
        t += step + (1.5 if n == pause_after else 0.0)
    return out


LECTURE = (
    "Good morning everyone. Today we look at the transport of heat through solid walls, which is the first "
    "topic of the course and the basis of everything that follows this term. Questions? Then let us begin with "
    "a short example from everyday life that all of you will know from home"
)


def check_srt(text: str, duration: float) -> list[srt.Subtitle]:
    parsed = list(srt.parse(text))
    assert parsed
    previous_end = 0.0
    for cue in parsed:
        start, end = cue.start.total_seconds(), cue.end.total_seconds()
        assert previous_end <= start < end <= duration + 1e-3
        previous_end = end
    return parsed


def check_vtt(text: str, duration: float) -> list[webvtt.Caption]:
    parsed: list[webvtt.Caption] = webvtt.from_buffer(io.StringIO(text)).captions
    assert parsed
    previous_end = 0.0
    for cue in parsed:
        start = _seconds(cue.start)
        end = _seconds(cue.end)
        assert previous_end <= start < end <= duration + 1e-3
        previous_end = end
    return parsed


def _seconds(stamp: str) -> float:
    hours, minutes, seconds = stamp.split(":")
    return int(hours) * 3600 + int(minutes) * 60 + float(seconds)


def test_cues_are_readable() -> None:
    words = _words(LECTURE, pause_after=30)
    duration = words[-1].end + 1.0
    items = cues(words, duration)
    for cue in items:
        assert 1 <= len(cue.lines) <= 2
        assert all(len(line) <= LINE_CHARS for line in cue.lines)
        assert cue.end - cue.start <= MAX_CUE_SECONDS + 1e-6
    texts = [cue.text.replace("\n", " ") for cue in items]
    assert texts[0] == "Good morning everyone."  # a sentence end closes a cue
    assert any(t == "Questions?" for t in texts)
    assert " ".join(texts).split() == LECTURE.split()  # nothing lost, nothing repeated


def test_a_pause_starts_a_new_cue() -> None:
    words = _words("one two three four five six", pause_after=2)
    assert [c.text for c in cues(words, 10.0)] == ["one two three", "four five six"]


def test_srt_and_vtt_parse_with_real_parsers() -> None:
    words = _words(LECTURE)
    duration = words[-1].end + 0.5
    parsed_srt = check_srt(render(words, duration, "srt"), duration)
    parsed_vtt = check_vtt(render(words, duration, "vtt"), duration)
    assert [s.content for s in parsed_srt] == [c.text for c in parsed_vtt]
    assert " ".join(s.content.replace("\n", " ") for s in parsed_srt).split() == LECTURE.split()


def test_unknown_format_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown subtitle format"):
        render([], 1.0, "ass")


def test_words_from_finals_reads_the_stream_export() -> None:
    finals: list[dict[str, Any]] = [
        {"result": [{"conf": 0.9, "start": 0.5, "end": 0.9, "word": "Hello"}], "text": " Hello"},
        {"text": ""},
    ]
    assert words_from_finals(finals) == [Word("Hello", 0.5, 0.9, 0.9)]


@given(
    st.lists(
        st.tuples(
            st.text(alphabet="abcdefghijklmnopqrstuvwxyzäöü.,?", min_size=1, max_size=60),
            st.floats(0, 20),
            st.floats(0, 3),
        ),
        max_size=60,
    ),
    st.floats(0.5, 30),
)
def test_cue_times_rise_and_lie_inside_the_audio(raw: list[tuple[str, float, float]], duration: float) -> None:
    """Whatever the engine's times (unsorted, past the end, zero-length), cues rise and stay inside the audio."""
    words = [Word(text, start, start + length, 0.5) for text, start, length in raw]
    items = cues(words, duration)
    previous_end = 0.0
    for cue in items:
        assert previous_end <= cue.start < cue.end <= duration + 1e-9
        previous_end = cue.end
    if items:
        check_srt(render(words, duration, "srt"), duration)
        check_vtt(render(words, duration, "vtt"), duration)
