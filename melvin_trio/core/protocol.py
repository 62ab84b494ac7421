"""The Melvin ASR WebSocket wire format: the first (auth) message, control frames, partials, finals.

Texts the original server sent as plain frames are kept to the letter: clients match on them.
"""

from __future__ import annotations

import contextlib
import hmac
import json
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Final

from melvin_trio.core import SAMPLE_RATE
from melvin_trio.core.words import Word, join_text

AUTH_NOT_TEXT: Final = "Initial message was not text and therefore did not match the expected auth format"
AUTH_INVALID_JSON: Final = "Initial websocket message contained invalid json"
AUTH_INVALID_KEY: Final = "Provided api key is invalid"
WAITING_FOR_SEAT: Final = "No transcription workers available. Retrying in 10 seconds"
CONTROL_UNKNOWN: Final = "control message unknown"

_LANGUAGE_KEYS: Final = ("language", "lang")
# The language that asks for detection (on the stream's speech, or a file's first 30 s), wherever a language is
# chosen: the first WebSocket message, `stream --language`, `transcribe --language`, the file API's form.
AUTO_LANGUAGE: Final = "auto"


def language_not_supported(language: str) -> str:
    return f"Language {language!r} is not supported"


def language_not_in_model(language: str) -> str:
    return f"Language {language!r} is not supported by the English-only model of this server"


def storage_error(reason: str) -> str:
    return f"Server storage error ({reason}): the stream ends here"


TRANSCRIPTION_FAILED: Final = "Transcription failed: "  # the notice's prefix; clients test for it
SERVER_STOPPING: Final = "Server shutting down: "  # the notice's prefix; clients test for it


def server_stopping(seconds: float) -> str:
    """The notice to a stream the server ends before the client's eof (it was stopped): how much audio it took."""
    return f"{SERVER_STOPPING}the stream ends after {seconds:.1f} s of audio; what came later was not transcribed"


def transcription_failed(error: object) -> str:
    return f"{TRANSCRIPTION_FAILED}{error}"


@dataclass(frozen=True)
class LanguageRefused:
    message: str  # the exact text to send before closing


def choose_language(
    asked: str | None, default: str | None, *, english_only: bool, known: Callable[[str], bool]
) -> str | LanguageRefused | None:
    """The stream's language: the client's, else the server default; None means detect it on the stream's speech
    (the client asked for `auto`, or the default is null; never on an English-only server: there is nothing to
    detect). A language the model cannot do is refused."""
    language = None if asked == AUTO_LANGUAGE else asked or default
    if language is None:
        return "en" if english_only else None
    if not known(language):
        return LanguageRefused(language_not_supported(language))
    if english_only and language != "en":
        return LanguageRefused(language_not_in_model(language))
    return language


@dataclass(frozen=True)
class AuthOk:
    language: str | None  # None: the client did not ask; the server default applies
    sample_rate: int = SAMPLE_RATE  # of the client's audio, from config.sample_rate


@dataclass(frozen=True)
class AuthFailed:
    message: str  # the exact text to send before closing
    # A fixed label for logs and metrics (one of AUTH_REASONS), never the client's own text: a label that echoed
    # the client would let each client mint a new metrics series.
    reason: str = field(default="invalid_key", compare=False)


AUTH_REASONS: Final = ("not_text", "invalid_json", "invalid_key", "sample_rate", "language", "config")
AUTH_CONFIG_NOT_OBJECT: Final = 'Invalid config: it must be an object such as {"sample_rate": 16000}'


def _key_matches(candidate: str, keys: Iterable[str]) -> bool:
    """Constant-time comparison against every key, so timing tells nothing about a key's prefix."""
    encoded = candidate.encode("utf-8", errors="surrogatepass")
    found = False
    for key in keys:
        found |= hmac.compare_digest(encoded, key.encode("utf-8", errors="surrogatepass"))
    return found


def parse_auth(message: str | bytes, keys: Iterable[str]) -> AuthOk | AuthFailed:
    """Check the first message: `{"Authorization": "<key>", ...}`; extra keys are allowed (BigBlueButton sends
    `"config": {...}`), and `"language": "de"` chooses the stream's language."""
    if not isinstance(message, str):
        return AuthFailed(AUTH_NOT_TEXT, reason="not_text")
    try:
        data = json.loads(message)
    except (ValueError, RecursionError):
        # ValueError: not JSON (JSONDecodeError), or an integer past Python's 4300-digit conversion limit (a
        # fresh tester's 5001-digit sample rate made a traceback and a close without a word)
        return AuthFailed(AUTH_INVALID_JSON, reason="invalid_json")
    if not isinstance(data, dict):
        return AuthFailed(AUTH_INVALID_JSON, reason="invalid_json")
    key = data.get("Authorization")
    if not isinstance(key, str) or not _key_matches(key, keys):
        return AuthFailed(AUTH_INVALID_KEY, reason="invalid_key")
    if data.get("config") is not None and not isinstance(data["config"], dict):
        return AuthFailed(AUTH_CONFIG_NOT_OBJECT, reason="config")
    rate = declared_sample_rate(data)
    if isinstance(rate, AuthFailed):
        return rate
    for name in _LANGUAGE_KEYS:
        value = data.get(name)
        if value is None:
            continue  # absent or null: the server's default
        if not isinstance(value, str) or not value.strip():
            return AuthFailed(invalid_language(value), reason="language")
        return AuthOk(language=value.strip().lower(), sample_rate=rate)
    return AuthOk(language=None, sample_rate=rate)


def invalid_language(value: object) -> str:
    shown = json.dumps(value, ensure_ascii=False)[:40]
    return f'Invalid language {shown}: a language code such as "de", "{AUTO_LANGUAGE}", or null'


MIN_SAMPLE_RATE: Final = 8000
MAX_SAMPLE_RATE: Final = 48000


def declared_sample_rate(first: Mapping[str, object]) -> int | AuthFailed:
    """The audio's rate as vosk-style and BigBlueButton clients declare it: `"config": {"sample_rate": R}`, a
    number or a string of one; absent means 16 kHz. Anything else, or a rate outside 8-48 kHz, is refused."""
    config = first.get("config")
    value = config.get("sample_rate") if isinstance(config, dict) else None
    if value is None:
        return SAMPLE_RATE
    rate: float | None = None
    if isinstance(value, int | float) and not isinstance(value, bool):
        with contextlib.suppress(OverflowError):  # an integer too large for a float is no rate either
            rate = float(value)
    elif isinstance(value, str):
        with contextlib.suppress(ValueError):
            rate = float(value.strip())
    if rate is None or not rate.is_integer() or not MIN_SAMPLE_RATE <= rate <= MAX_SAMPLE_RATE:
        shown = json.dumps(value, ensure_ascii=False)[:40]
        return AuthFailed(
            f"Unsupported sample rate {shown}: config.sample_rate must be a whole number of Hz "
            f"from {MIN_SAMPLE_RATE} to {MAX_SAMPLE_RATE}",
            reason="sample_rate",
        )
    return int(rate)


def is_eof(text: str) -> bool:
    """The original treated any text containing "eof" as the end of the stream: "eof", {"eof" : 1},
    {"type":"eof"} all qualify."""
    return "eof" in text


def partial_message(text: str) -> str:
    return json.dumps({"partial": text}, ensure_ascii=False)


def final_payload(words: list[Word]) -> dict[str, object]:
    """A final as the original sent it: the words with `conf`, `start`, `end` (stream seconds) and `word`."""
    return {
        "result": [
            {"conf": round(w.probability, 6), "start": round(w.start, 3), "end": round(w.end, 3), "word": w.text}
            for w in words
        ],
        "text": join_text(words),
    }


def final_message(payload: dict[str, object]) -> str:
    return json.dumps(payload, ensure_ascii=False)
