"""GET /metrics: Prometheus text, parsed with prometheus_client's own parser, scraped while a real stream runs."""

from __future__ import annotations

import json
from pathlib import Path

import trio
from prometheus_client.parser import text_string_to_metric_families

from melvin_trio.audio import read_wav_pcm16
from melvin_trio.client import open_connection, stream_pcm
from melvin_trio.engine.base import Engine
from melvin_trio.evaluation import Clip
from melvin_trio.server.metrics import REFUSAL_REASONS, Metrics, is_loopback
from tests.server_harness import API_KEY, Running, read_until_closed, running_server

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


async def _scrape(running: Running, key: str | None = None) -> Samples:
    status, headers, body = await running.aget("/metrics", key=key)
    assert status == 200, body
    assert headers["content-type"].startswith("text/plain")
    samples: Samples = {}
    for family in text_string_to_metric_families(body.decode()):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def _value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


async def test_metrics_move_during_a_stream(tiny_en_engine: Engine, clips: list[Clip], tmp_path: Path) -> None:
    jfk = next(c for c in clips if c.path.name == "melvin_jfk.wav")
    pcm = read_wav_pcm16(jfk.path)
    with trio.fail_after(300):  # generous: six developers share two cores
        async with running_server(tiny_en_engine, tmp_path) as running:
            before = await _scrape(running)  # no key needed: the server listens on loopback
            assert _value(before, "melvin_seats_total", kind="cpu") == 1
            assert _value(before, "melvin_seats_free", kind="cpu") == 1
            assert _value(before, "melvin_streams_active") == 0
            assert _value(before, "melvin_build_info", **_build_labels(before)) == 1

            async with open_connection(running.ws_url) as ws:  # a wrong key is refused and counted
                await ws.send_message(json.dumps({"Authorization": "wrong"}))
                await read_until_closed(ws)
            for rate in ("abc", 96000, "x" * 200):  # refused rates: counted under one label, never the client's text
                async with open_connection(running.ws_url) as ws:
                    await ws.send_message(json.dumps({"Authorization": API_KEY, "config": {"sample_rate": rate}}))
                    await read_until_closed(ws)

            async with trio.open_nursery() as nursery:
                nursery.start_soon(lambda: stream_pcm(running.ws_url, API_KEY, pcm))  # real time: 11 s
                while True:  # scrape until the first engine pass is counted, as Prometheus would, mid-stream
                    mid = await _scrape(running)
                    if _value(mid, "melvin_engine_passes_total", model="tiny.en", kind="transcribe", outcome="ok"):
                        break
                    await trio.sleep(0.2)
            after = await _scrape(running)

    assert _value(mid, "melvin_streams_active") == 1
    assert _value(mid, "melvin_seats_free", kind="cpu") == 0
    assert _value(mid, "melvin_audio_received_seconds_total") > 0
    assert _value(after, "melvin_streams_active") == 0
    assert _value(after, "melvin_seats_free", kind="cpu") == 1
    assert _value(after, "melvin_streams_total") == 1
    assert _value(after, "melvin_logins_refused_total", reason="invalid_key") == 1
    assert _value(after, "melvin_logins_refused_total", reason="sample_rate") == 3
    refusal_labels = {dict(labels)["reason"] for name, labels in after if name == "melvin_logins_refused_total"}
    assert refusal_labels <= set(REFUSAL_REASONS)
    assert abs(_value(after, "melvin_audio_received_seconds_total") - len(pcm) / 32000) < 1e-6
    transcribed = _value(after, "melvin_audio_transcribed_seconds_total")
    assert 0 < transcribed <= len(pcm) / 32000 + 1e-6
    passes = _value(after, "melvin_engine_passes_total", model="tiny.en", kind="transcribe", outcome="ok")
    assert passes >= _value(mid, "melvin_engine_passes_total", model="tiny.en", kind="transcribe", outcome="ok") > 0
    assert _value(after, "melvin_engine_pass_seconds_count", model="tiny.en") == passes
    assert _value(after, "melvin_engine_pass_seconds_sum", model="tiny.en") > 0
    words = _value(after, "melvin_words_emitted_total")
    assert words >= 15  # the JFK clip has 22 words
    assert _value(after, "melvin_final_latency_seconds_count") == words
    assert _value(after, "melvin_final_latency_seconds_bucket", le="+Inf") == words
    assert _value(after, "melvin_exports_written_total", outcome="ok") == 1


def _build_labels(samples: Samples) -> dict[str, str]:
    labels = next(dict(lbl) for name, lbl in samples if name == "melvin_build_info")
    assert set(labels) == {"version", "pywhispercpp", "python"}
    return labels


async def test_metrics_need_the_key_when_configured(tiny_en_engine: Engine, tmp_path: Path) -> None:
    with trio.fail_after(30):
        async with running_server(tiny_en_engine, tmp_path, metrics={"require_key": True}) as running:
            status, _, _ = await running.aget("/metrics", key=None)
            assert status == 401
            status, _, _ = await running.aget("/metrics", key="wrong")
            assert status == 401
            assert (await _scrape(running, key=API_KEY))[("melvin_streams_active", ())] == 0


def test_metrics_key_default_depends_on_the_address() -> None:
    for address in ("127.0.0.1", "::1", "localhost"):
        assert is_loopback(address)
    for address in ("0.0.0.0", "192.168.1.5", "::"):
        assert not is_loopback(address)


def test_two_servers_keep_their_own_registries() -> None:
    a, b = Metrics(), Metrics()
    a.stream_started()
    assert b"melvin_streams_active 1.0" in a.exposition()
    assert b"melvin_streams_active 0.0" in b.exposition()
