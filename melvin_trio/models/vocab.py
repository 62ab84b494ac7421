"""Turn a CTranslate2 `vocabulary.txt` (GPT-2 byte-level tokens) into the raw token bytes whisper.cpp wants."""

from __future__ import annotations

from functools import cache
from pathlib import Path

from melvin_trio.errors import MelvinError

END_OF_TEXT = "<|endoftext|>"


class VocabularyError(MelvinError, ValueError):
    """The vocabulary file is missing, malformed or does not fit the model."""


@cache
def _unicode_to_byte() -> dict[str, int]:
    """Inverse of GPT-2's `bytes_to_unicode`: printable bytes stand for themselves, the rest are shifted to 256+."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    table = {chr(b): b for b in printable}
    shifted = 0
    for b in range(256):
        if b not in printable:
            table[chr(256 + shifted)] = b
            shifted += 1
    return table


def token_bytes(token: str) -> bytes:
    """The raw bytes of one byte-level token; raises VocabularyError for a character outside the alphabet."""
    table = _unicode_to_byte()
    try:
        return bytes(table[ch] for ch in token)
    except KeyError as exc:
        raise VocabularyError(f"token {token!r} holds {exc.args[0]!r}, not a GPT-2 byte-level character") from None


def read_text_tokens(path: Path) -> list[bytes]:
    """The ordinary tokens of `vocabulary.txt`: every line before `<|endoftext|>`, as raw bytes.

    whisper.cpp adds the special tokens (end of text, languages, timestamps) itself, so they are not written.
    """
    try:
        lines = path.read_text(encoding="utf-8").split("\n")
    except FileNotFoundError:
        raise VocabularyError(f"{path}: vocabulary file not found") from None
    except UnicodeDecodeError as exc:
        raise VocabularyError(f"{path}: not UTF-8 text") from exc
    try:
        end = lines.index(END_OF_TEXT)
    except ValueError:
        raise VocabularyError(f"{path}: no {END_OF_TEXT} line; not a Whisper vocabulary") from None
    return [token_bytes(line) for line in lines[:end]]
