"""The file API over real sockets with the real model: /transcriptions (the original's), /v1/audio/* (OpenAI's,
through the official client), subtitles, refusals, persistence across a restart."""

from __future__ import annotations

import io
import itertools
import json
import re
import socket
import uuid
import warnings
from pathlib import Path
from typing import Any, Final

import pytest
import srt
import trio
import webvtt

from melvin_trio.audiofile import read_audio
from melvin_trio.engine.base import FILE_DECODING, Engine
from melvin_trio.evaluation import Clip, count_errors, normalise
from melvin_trio.filetranscribe import transcribe_file
from melvin_trio.server.exports import wav_header
from tests.audio_formats import write_format
from tests.server_harness import API_KEY, Running, running_server

pytestmark = pytest.mark.model


# A German clip whose English translation by base is plain (checked in test_german_speech_is_translated_into_english).
TRANSLATED_CLIP: Final = "voxforge-de_1337ad-20170321-kgs-de11-035.wav"


def _jfk(clips: list[Clip]) -> Clip:
    return next(c for c in clips if c.path.name == "melvin_jfk.wav")


def multipart(fields: dict[str, str | list[str]], file: tuple[str, bytes] | None) -> tuple[bytes, str]:
    boundary = uuid.uuid4().hex
    parts = []
    for name, value in fields.items():
        for item in value if isinstance(value, list) else [value]:
            parts.append(f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{item}\r\n'.encode())
    if file is not None:
        filename, data = file
        parts.append(
            f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="{filename}"\r\n'
            "Content-Type: application/octet-stream\r\n\r\n".encode()
            + data
            + b"\r\n"
        )
    parts.append(f"--{boundary}--\r\n".encode())
    return b"".join(parts), f"multipart/form-data; boundary={boundary}"


def request(
    running: Running, method: str, path: str, body: bytes = b"", headers: dict[str, str] | None = None
) -> tuple[int, dict[str, str], bytes]:
    """One request on its own connection (http.client: no proxies, no retries)."""
    import http.client

    conn = http.client.HTTPConnection("127.0.0.1", running.addresses.rest[1], timeout=120)
    try:
        conn.request(method, path, body=body or None, headers=headers or {})
        response = conn.getresponse()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()
    finally:
        conn.close()


async def post_job(
    running: Running, fields: dict[str, str | list[str]], file: tuple[str, bytes] | None, key: str | None = API_KEY
) -> tuple[int, Any]:
    body, content_type = multipart(fields, file)
    headers = {"Content-Type": content_type}
    if key:
        headers["Authorization"] = key
    status, _, data = await trio.to_thread.run_sync(lambda: request(running, "POST", "/transcriptions", body, headers))
    return status, json.loads(data)


async def get_json(running: Running, path: str) -> tuple[int, Any]:
    status, _, data = await running.aget(path)
    return status, json.loads(data)


async def wait_finished(running: Running, job_id: str) -> dict[str, Any]:
    while True:
        status, job = await get_json(running, f"/transcriptions/{job_id}")
        assert status == 200
        assert job["status"] in ("in_query", "in_progress", "finished", "error")
        assert 0.0 <= job["progress"] <= 1.0
        if job["status"] in ("finished", "error"):
            return dict(job)
        await trio.sleep(0.2)


def check_transcript(job: dict[str, Any]) -> None:
    """The original's transcript shape; words rise and lie inside the audio."""
    transcript = job["transcript"]
    assert set(transcript) == {"text", "segments"}
    previous = 0.0
    for segment in transcript["segments"]:
        assert set(segment) == {"text", "start", "end", "words"}
        for word in segment["words"]:
            assert set(word) == {"text", "start", "end", "probability"}
            assert previous <= word["start"] <= word["end"] <= job["duration"] + 1e-3
            previous = word["start"]
    assert transcript["text"] == "".join(f" {w['text']}" for s in transcript["segments"] for w in s["words"])


@pytest.mark.parametrize("kind", ["flac", "mp3", "wav-44k-stereo", "wav-float"])
async def test_each_format_through_transcriptions_at_the_offline_wer(
    kind: str, tiny_en_engine: Engine, clips: list[Clip], tmp_path: Path
) -> None:
    jfk = _jfk(clips)
    path = write_format(jfk.path, kind, tmp_path)
    audio, _ = read_audio(path)
    offline = transcribe_file(tiny_en_engine, audio, language="en", decoding=FILE_DECODING)
    offline_wer = count_errors(jfk.text, " ".join(w.text for w in offline), "en").wer
    with trio.fail_after(300):
        async with running_server(tiny_en_engine, tmp_path / "data") as running:
            status, job = await post_job(running, {"language": "en"}, (path.name, path.read_bytes()))
            assert status == 200, job
            assert job["status"] == "in_query"
            assert set(job) >= {"transcription_id", "status", "start_time", "settings", "model", "task", "language"}
            assert (job["model"], job["task"], job["language"], job["settings"]) == ("tiny.en", "transcribe", "en", {})
            finished = await wait_finished(running, job["transcription_id"])
            status, listing = await get_json(running, "/transcriptions")
    assert finished["status"] == "finished", finished
    check_transcript(finished)
    wer = count_errors(jfk.text, finished["transcript"]["text"], "en").wer
    assert wer <= offline_wer + 0.05  # the same engine and decoding; the fallback samples, so allow a word
    assert {"transcription_id": job["transcription_id"], "status": "finished"} in listing


async def test_subtitles_and_text_of_a_job_and_of_a_stream(
    tiny_en_engine: Engine, clips: list[Clip], tmp_path: Path
) -> None:
    jfk = _jfk(clips)
    with trio.fail_after(300):
        async with running_server(tiny_en_engine, tmp_path) as running:
            status, job = await post_job(
                running,
                {"settings": json.dumps({"beam_size": 1, "temperature_inc": 0.0})},
                ("jfk.wav", jfk.path.read_bytes()),
            )
            assert status == 200, job
            finished = await wait_finished(running, job["transcription_id"])
            job_id = finished["transcription_id"]
            _, _, srt_text = await running.aget(f"/transcriptions/{job_id}?format=srt")
            _, _, vtt_text = await running.aget(f"/transcriptions/{job_id}?format=vtt")
            _, headers, txt = await running.aget(f"/transcriptions/{job_id}?format=txt")
            assert headers["content-type"].startswith("text/plain")
            status, _, _ = await running.aget(f"/transcriptions/{job_id}?format=docx")
            assert status == 400
            # A finished stream's export (as the session writes it) as subtitles.
            stream_id = uuid.uuid4().hex
            finals = [
                {"result": [{"conf": 0.9, "start": 0.3, "end": 0.6, "word": "Hello."}], "text": " Hello."},
                {"result": [{"conf": 0.8, "start": 1.0, "end": 1.4, "word": "World"}], "text": " World"},
            ]
            (tmp_path / f"{stream_id}.json").write_text(json.dumps(finals), encoding="utf-8")
            (tmp_path / f"{stream_id}.wav").write_bytes(wav_header(64000) + bytes(64000))
            status, _, stream_srt = await running.aget(f"/export/subtitles/{stream_id}?format=srt")
            assert status == 200
            status, _, stream_vtt = await running.aget(f"/export/subtitles/{stream_id}?format=vtt")
            assert status == 200
            status, _, _ = await running.aget(f"/export/subtitles/{stream_id}?format=srt", key=None)
            assert status == 401
            status, _, _ = await running.aget(f"/export/subtitles/{'0' * 32}?format=srt")
            assert status == 404
    duration = finished["duration"]
    cues = list(srt.parse(srt_text.decode()))
    captions = webvtt.from_buffer(io.StringIO(vtt_text.decode())).captions
    assert [c.content for c in cues] == [c.text for c in captions]
    for cue in cues:
        assert 0 <= cue.start.total_seconds() < cue.end.total_seconds() <= duration + 1e-3
    assert all(a.end <= b.start for a, b in itertools.pairwise(cues))
    assert count_errors(jfk.text, " ".join(c.content for c in cues), "en").wer <= 0.1
    assert count_errors(jfk.text, txt.decode(), "en").wer <= 0.1
    assert [c.content for c in srt.parse(stream_srt.decode())] == ["Hello.", "World"]
    assert [c.text for c in webvtt.from_buffer(io.StringIO(stream_vtt.decode())).captions] == ["Hello.", "World"]


async def test_refusals_each_with_its_message(tiny_en_engine: Engine, clips: list[Clip], tmp_path: Path) -> None:
    wav = _jfk(clips).path.read_bytes()
    with trio.fail_after(120):
        async with running_server(tiny_en_engine, tmp_path, limits={"max_upload_bytes": 100_000}) as running:
            small = wav[:60_000]
            status, body = await post_job(running, {}, ("a.wav", small), key=None)
            assert (status, body["error"]) == (401, "missing or invalid API key")
            status, body = await post_job(running, {}, ("a.wav", small), key="wrong")
            assert status == 401
            status, body = await post_job(running, {}, ("big.wav", wav))
            assert status == 413
            assert "100000" in body["error"]
            status, body = await post_job(running, {"model": "large-v9"}, ("a.wav", small))
            assert status == 418
            assert "large-v9" in body["error"]
            assert "tiny.en" in body["error"]
            status, body = await post_job(running, {}, ("notes.mp3", b"not audio at all" * 100))
            assert status == 400
            assert "notes.mp3: cannot decode" in body["error"]
            status, body = await post_job(
                running, {"settings": '{"beam_size": 5, "vad_filter": true}'}, ("a.wav", small)
            )
            assert status == 400
            assert "vad_filter" in body["error"]
            status, body = await post_job(running, {"settings": '{"beam_size": 99}'}, ("a.wav", small))
            assert status == 400
            assert "beam_size" in body["error"]
            huge = '{"beam_size": ' + "9" * 5001 + "}"  # past Python's integer conversion limit
            status, body = await post_job(running, {"settings": huge}, ("a.wav", small))
            assert status == 400
            assert "settings: not valid JSON" in body["error"]
            for task in ("align", "force-align"):
                status, body = await post_job(running, {"task": task}, ("a.wav", small))
                assert status == 400
                assert task in body["error"]
            status, body = await post_job(running, {"language": "de"}, ("a.wav", small))
            assert status == 400
            assert "English-only" in body["error"]
            status, body = await post_job(running, {}, None)
            assert status == 400
            assert "file" in body["error"]
            status, body = await get_json(running, f"/transcriptions/{uuid.uuid4()}")
            assert (status, body["error"]) == (404, "Transcription ID not found")
            status, body = await get_json(running, "/transcriptions/..%2f..%2fconfig")
            assert status == 404
            status, _, _ = await running.aget("/transcriptions", key=None)
            assert status == 401
            _, listing = await get_json(running, "/transcriptions")
            assert listing == []  # nothing refused became a job
    assert not list((tmp_path / "jobs").glob("*.upload"))
    assert not list((tmp_path / "jobs").glob("incoming-*"))


def _read_response(sock: socket.socket) -> tuple[int, bytes]:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        assert chunk, "the server closed the connection"
        data += chunk
    head, _, rest = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    length = next(int(line.split(":", 1)[1]) for line in lines if line.lower().startswith("content-length:"))
    while len(rest) < length:
        chunk = sock.recv(65536)
        assert chunk, "the server closed the connection"
        rest += chunk
    return int(lines[0].split()[1]), rest[:length]


@pytest.mark.parametrize(
    ("path", "key", "status"),
    [("/no/such/route", API_KEY, 404), ("/transcriptions", "wrong", 401), ("/transcriptions", API_KEY, 400)],
)
async def test_a_refused_large_post_leaves_the_connection_usable(
    path: str, key: str, status: int, tiny_en_engine: Engine, tmp_path: Path
) -> None:
    body = bytes(500_000)
    with trio.fail_after(60):
        async with running_server(tiny_en_engine, tmp_path) as running:

            def exchange() -> tuple[tuple[int, bytes], tuple[int, bytes]]:
                with socket.create_connection(("127.0.0.1", running.addresses.rest[1]), timeout=20) as sock:
                    sock.sendall(
                        f"POST {path} HTTP/1.1\r\nHost: x\r\nAuthorization: {key}\r\n"
                        f"Content-Type: application/octet-stream\r\nContent-Length: {len(body)}\r\n\r\n".encode()
                        + body
                    )
                    first = _read_response(sock)
                    sock.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
                    return first, _read_response(sock)

            first, second = await trio.to_thread.run_sync(exchange)
    assert first[0] == status
    assert second[0] == 200
    assert json.loads(second[1])["status"] == "ok"


async def test_a_job_survives_a_restart(tiny_en_engine: Engine, clips: list[Clip], tmp_path: Path) -> None:
    jfk = _jfk(clips)
    with trio.fail_after(300):
        async with running_server(tiny_en_engine, tmp_path) as running:
            # Hold the engines with a "live stream" so the job cannot start before the server stops.
            async with running.server.seats.open_seat():
                status, job = await post_job(running, {"language": "en"}, ("jfk.flac", jfk.path.read_bytes()))
                assert status == 200
                job_id = job["transcription_id"]
                await trio.sleep(0.5)
                _, waiting = await get_json(running, f"/transcriptions/{job_id}")
                assert waiting["status"] in ("in_query", "in_progress")  # read, waiting for the engines
                assert waiting["progress"] == 0.0
            running.server.request_stop()
        async with running_server(tiny_en_engine, tmp_path) as running:
            finished = await wait_finished(running, job_id)
        async with running_server(tiny_en_engine, tmp_path) as running:
            status, again = await get_json(running, f"/transcriptions/{job_id}")
    assert finished["status"] == "finished"
    assert count_errors(jfk.text, finished["transcript"]["text"], "en").wer <= 0.1
    assert (status, again) == (200, finished)


async def test_the_openai_client_gets_every_response_format(
    tiny_en_engine: Engine, clips: list[Clip], tmp_path: Path
) -> None:
    from openai import OpenAI

    jfk = _jfk(clips)
    results: dict[str, Any] = {}
    with trio.fail_after(900):
        async with running_server(tiny_en_engine, tmp_path) as running:

            def use_client() -> None:
                with OpenAI(base_url=running.rest_url + "/v1", api_key=API_KEY, max_retries=0, timeout=300) as client:
                    use(client)
                with OpenAI(base_url=running.rest_url + "/v1", api_key="wrong", max_retries=0) as bad:
                    try:
                        with jfk.path.open("rb") as audio:
                            bad.audio.transcriptions.create(model="whisper-1", file=audio)
                    except Exception as exc:
                        results["unauthorised"] = exc

            def use(client: OpenAI) -> None:
                with jfk.path.open("rb") as audio:
                    results["json"] = client.audio.transcriptions.create(model="whisper-1", file=audio)
                for fmt in ("text", "srt", "vtt"):
                    with jfk.path.open("rb") as audio:
                        results[fmt] = client.audio.transcriptions.create(
                            model="tiny.en",
                            file=audio,
                            response_format=fmt,
                            language="en",
                        )
                with jfk.path.open("rb") as audio:
                    results["verbose_json"] = client.audio.transcriptions.create(
                        model="tiny.en",
                        file=audio,
                        response_format="verbose_json",
                        timestamp_granularities=["word", "segment"],
                        prompt="President Kennedy's inaugural address.",
                        temperature=0.0,
                    )
                try:
                    with jfk.path.open("rb") as audio:
                        client.audio.transcriptions.create(model="nope", file=audio)
                except Exception as exc:  # the client's own error type
                    results["error"] = exc
                try:  # translation needs a multilingual model: tiny.en is refused with the reason
                    with jfk.path.open("rb") as audio, warnings.catch_warnings():
                        warnings.simplefilter("ignore", DeprecationWarning)  # the client marks translations deprecated
                        client.audio.translations.create(model="tiny.en", file=audio)
                except Exception as exc:
                    results["translation"] = exc

            await trio.to_thread.run_sync(use_client)
    from openai import AuthenticationError, BadRequestError, NotFoundError

    assert count_errors(jfk.text, results["json"].text, "en").wer <= 0.1
    assert count_errors(jfk.text, str(results["text"]), "en").wer <= 0.1
    assert list(srt.parse(str(results["srt"])))
    assert webvtt.from_buffer(io.StringIO(str(results["vtt"]))).captions
    verbose = results["verbose_json"]
    assert verbose.language == "en"
    assert verbose.duration == pytest.approx(11.0, abs=0.1)
    assert count_errors(jfk.text, verbose.text, "en").wer <= 0.1
    assert verbose.words
    assert verbose.segments
    for segment in verbose.segments:  # measured, not placeholders: tiny.en is sure of JFK, and text compresses
        assert -1.0 < segment.avg_logprob < 0.0
        assert 0.5 < segment.compression_ratio < 2.4  # openai-whisper's threshold for a looping decoder is 2.4
    assert all(0 <= w.start <= w.end <= verbose.duration for w in verbose.words)
    assert isinstance(results["error"], NotFoundError)
    assert "nope" in str(results["error"])
    assert isinstance(results["unauthorised"], AuthenticationError)
    assert isinstance(results["translation"], BadRequestError)
    assert "English-only" in str(results["translation"])


# Function words, to tell English text from German without a language model.
_ENGLISH: Final = (
    "the a an of to is are was were and in on at this that it its by with for has have he she they his her not "
    "as be from who which"
)
_GERMAN: Final = (
    "der die das den dem des und ist sind war ein eine einen diesen dieser nicht mit hat haben er sie es von zu "
    "auf ich wie wir"
)
ENGLISH_WORDS: Final = frozenset(_ENGLISH.split())
GERMAN_WORDS: Final = frozenset(_GERMAN.split())


def english_words(text: str) -> tuple[list[str], int, int]:
    """The words of `text` (lower case), how many are English function words, and how many German ones."""
    words = re.findall(r"[^\W\d_]+(?:'[^\W\d_]+)?", text.lower())
    return words, sum(w in ENGLISH_WORDS for w in words), sum(w in GERMAN_WORDS for w in words)


async def test_german_speech_is_translated_into_english(base_engine: Engine, clips: list[Clip], tmp_path: Path) -> None:
    """task=translate on /transcriptions and /v1/audio/translations (the openai client) with the multilingual base
    model: German speech in, English text out (English function words, no German ones, no German word of the
    reference transcript), and the language detected as German."""
    from openai import OpenAI

    clip = next(c for c in clips if c.path.name == TRANSLATED_CLIP)
    german = set(normalise(clip.text, "de"))
    with trio.fail_after(600):
        async with running_server(base_engine, tmp_path) as running:
            status, job = await post_job(
                running, {"task": "translate", "model": "base"}, (clip.path.name, clip.path.read_bytes())
            )
            assert status == 200, job
            finished = await wait_finished(running, job["transcription_id"])

            def translate() -> Any:
                with (
                    OpenAI(base_url=running.rest_url + "/v1", api_key=API_KEY, max_retries=0, timeout=300) as client,
                    clip.path.open("rb") as audio,
                    warnings.catch_warnings(),
                ):
                    warnings.simplefilter("ignore", DeprecationWarning)  # the client marks translations deprecated
                    return client.audio.translations.create(model="base", file=audio, response_format="verbose_json")

            verbose = await trio.to_thread.run_sync(translate)
    assert finished["status"] == "finished", finished.get("message")
    assert finished["language"] == "de"
    assert (verbose.task, verbose.language) == ("translate", "de")
    for text in (finished["transcript"]["text"], verbose.text):
        words, english, german_function = english_words(text)
        assert text.isascii(), text
        assert len(words) >= 4, text
        assert english >= 2, text
        assert german_function == 0, text
        assert not (set(words) & german - ENGLISH_WORDS), text
