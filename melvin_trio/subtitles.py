"""Subtitles (SRT and WebVTT) from timed words, in cues a viewer can read.

A cue holds at most two lines of about `LINE_CHARS` characters and lasts at most about `MAX_CUE_SECONDS`; a new
cue starts after a sentence end and at a pause of `PAUSE_SECONDS`. Cue times rise, never overlap, and lie inside
the audio (`duration`); a short cue is held on screen up to `MIN_CUE_SECONDS` when the next one leaves room.
Pure functions: no I/O.
"""

from __future__ import annotations

import textwrap
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Final

from melvin_trio.core.words import Word

LINE_CHARS: Final = 42
MAX_LINES: Final = 2
MAX_CUE_SECONDS: Final = 6.0
PAUSE_SECONDS: Final = 0.6
MIN_CUE_SECONDS: Final = 1.0
_MIN_SPAN: Final = 0.05  # a cue whose words all carry one instant still shows for this long
FORMATS: Final = ("srt", "vtt")


@dataclass(frozen=True)
class Cue:
    start: float
    end: float
    lines: list[str]

    @property
    def text(self) -> str:
        return "\n".join(self.lines)


def _wrap(text: str) -> list[str]:
    """Two lines of about equal length when the text does not fit on one (easier to read than a full first line
    and a stub); otherwise textwrap's greedy lines."""
    if len(text) <= LINE_CHARS:
        return [text]
    best: tuple[int, list[str]] | None = None
    for index, char in enumerate(text):
        if char == " ":
            first, second = text[:index], text[index + 1 :]
            longest = max(len(first), len(second))
            if longest <= LINE_CHARS and (best is None or longest < best[0]):
                best = (longest, [first, second])
    return best[1] if best else textwrap.wrap(text, LINE_CHARS, break_long_words=False) or [text]


def _fits(text: str) -> bool:
    return len(textwrap.wrap(text, LINE_CHARS, break_long_words=False)) <= MAX_LINES


def cues(words: Iterable[Word], duration: float) -> list[Cue]:
    """The cues for `words` (times in seconds from the start of audio lasting `duration` seconds)."""
    groups: list[list[Word]] = []
    current: list[Word] = []
    for word in words:
        if not word.text.strip():
            continue
        if current:
            text = " ".join(w.text for w in [*current, word])
            if (
                current[-1].ends_sentence
                or word.start - current[-1].end >= PAUSE_SECONDS
                or word.end - current[0].start > MAX_CUE_SECONDS
                or not _fits(text)
            ):
                groups.append(current)
                current = []
        current.append(word)
    if current:
        groups.append(current)

    out: list[Cue] = []
    floor = 0.0
    for index, group in enumerate(groups):
        start = min(max(group[0].start, floor), duration)
        end = min(max(group[-1].end, start + _MIN_SPAN), duration)
        next_start = groups[index + 1][0].start if index + 1 < len(groups) else duration
        if end - start < MIN_CUE_SECONDS:
            end = max(end, min(start + MIN_CUE_SECONDS, next_start, duration))
        if end <= start:  # at the very end of the audio: nothing left to show it in
            if out and start >= duration:
                previous = out[-1]
                out[-1] = Cue(previous.start, previous.end, _wrap(" ".join([*previous.lines, *_words(group)])))
                continue
            start = max(min(start, duration - _MIN_SPAN), floor)
            end = max(start + _MIN_SPAN, end)
        out.append(Cue(start, end, _wrap(" ".join(_words(group)))))
        floor = end
    return out


def _words(group: list[Word]) -> list[str]:
    return [w.text.strip() for w in group]


def _timestamp(seconds: float, separator: str) -> str:
    ms = max(round(seconds * 1000), 0)
    hours, rest = divmod(ms, 3_600_000)
    minutes, rest = divmod(rest, 60_000)
    secs, millis = divmod(rest, 1000)
    return f"{hours:02d}:{minutes:02d}:{secs:02d}{separator}{millis:03d}"


def to_srt(items: list[Cue]) -> str:
    blocks = [
        f"{n}\n{_timestamp(c.start, ',')} --> {_timestamp(c.end, ',')}\n{c.text}\n" for n, c in enumerate(items, 1)
    ]
    return "\n".join(blocks)


def to_vtt(items: list[Cue]) -> str:
    # "-->" may not appear in a cue's text; whisper does not write it, but a user's prompt could bring it.
    blocks = [
        f"{_timestamp(c.start, '.')} --> {_timestamp(c.end, '.')}\n{c.text.replace('-->', '->')}\n" for c in items
    ]
    return "WEBVTT\n\n" + "\n".join(blocks)


def render(words: Iterable[Word], duration: float, fmt: str) -> str:
    """SRT or WebVTT text for `words`; `fmt` is "srt" or "vtt" (ValueError otherwise)."""
    items = cues(words, duration)
    if fmt == "srt":
        return to_srt(items)
    if fmt == "vtt":
        return to_vtt(items)
    raise ValueError(f"unknown subtitle format {fmt!r} (known: {', '.join(FORMATS)})")


def words_from_finals(finals: list[dict[str, Any]]) -> list[Word]:
    """The words of a stream's exported finals (`{"result": [{"word", "start", "end", "conf"}], "text"}`)."""
    words: list[Word] = []
    for final in finals:
        for entry in final.get("result", []) or []:
            try:
                words.append(
                    Word(str(entry["word"]), float(entry["start"]), float(entry["end"]), float(entry.get("conf", 1.0)))
                )
            except (KeyError, TypeError, ValueError):
                continue
    return words
