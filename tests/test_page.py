"""The live captioning page in a real browser: headless Chromium with a fake microphone fed from a shared clip,
the page served by a real server with the real tiny.en model."""

from __future__ import annotations

import json
import os
import shutil
import time
import wave
from pathlib import Path
from typing import Any

import trio

from melvin_trio.audio import read_wav, read_wav_pcm16
from melvin_trio.core import protocol
from melvin_trio.engine.base import Engine
from melvin_trio.engine.fake import FakeEngine
from melvin_trio.engine.whispercpp import is_known_language
from melvin_trio.evaluation import Clip, count_errors
from melvin_trio.server.app import EngineSection, MelvinServer
from melvin_trio.server.workers import EngineWorker
from tests.browser import open_browser, require_browser
from tests.server_harness import API_KEY, make_config, open_raw_session, running_server, wait_for

LEAD_IN_S = 1.0  # silence before the clip: the fake device starts when the page opens the microphone
TAIL_S = 3.0  # silence after it, so the last words end in a pause before stop is pressed


def _padded_clip(clip: Path, target: Path) -> float:
    """The clip between silences, as the 16-bit PCM WAV Chromium's fake capture reads; returns its seconds."""
    pcm = read_wav_pcm16(clip)
    lead = bytes(int(16000 * LEAD_IN_S) * 2)
    tail = bytes(int(16000 * TAIL_S) * 2)
    with wave.open(str(target), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(16000)
        out.writeframes(lead + pcm + tail)
    return (len(lead) + len(pcm) + len(tail)) / 32000


def _drive(driver: Any, url: str, seconds: float, screenshot: Path) -> dict[str, Any]:
    """Open the page, enter the key, start, wait for the clip to play, stop, wait for the exports."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    driver.get(url)
    WebDriverWait(driver, 10).until(lambda d: d.find_element(By.ID, "url").get_attribute("value"))
    driver.find_element(By.ID, "key").send_keys(API_KEY)
    driver.find_element(By.ID, "toggle").click()
    WebDriverWait(driver, 20).until(lambda d: d.find_element(By.ID, "toggle").text == "Stop")
    partials: set[str] = set()
    end = time.monotonic() + seconds + 1.0
    while time.monotonic() < end:
        text = driver.find_element(By.ID, "partial").text
        if text:
            partials.add(text)
        time.sleep(0.2)
    driver.find_element(By.ID, "toggle").click()
    WebDriverWait(driver, 60).until(lambda d: d.find_element(By.ID, "exports").get_attribute("data-ready") == "true")
    driver.save_screenshot(str(screenshot))
    finals = [e.text for e in driver.find_elements(By.CSS_SELECTOR, "#captions .final")]
    links = {
        e.get_attribute("data-export"): e.get_attribute("href")
        for e in driver.find_elements(By.CSS_SELECTOR, "#export-links a")
    }
    return {
        "finals": finals,
        "partials": sorted(partials),
        "stream_id": driver.find_element(By.ID, "stream-id").text,
        "links": links,
        "status": driver.find_element(By.ID, "status").text,
    }


async def test_page_captions_the_microphone(tiny_en_engine: Engine, clips: list[Clip], tmp_path: Path) -> None:
    require_browser()
    clip = next(c for c in clips if c.path.name == "melvin_jfk.wav")
    fake = tmp_path / "microphone.wav"
    seconds = _padded_clip(clip.path, fake)
    offline = count_errors(
        clip.text, " ".join(w.text for w in tiny_en_engine.transcribe(read_wav(clip.path)[0], language="en")), "en"
    )
    with trio.fail_after(300):  # generous: six developers share two cores
        async with running_server(tiny_en_engine, tmp_path / "data") as running:
            with open_browser(tmp_path / "profile", fake) as driver:
                page = await trio.to_thread.run_sync(
                    _drive, driver, running.rest_url + "/", seconds, tmp_path / "page.png"
                )
            status, _, body = await running.aget(f"/export/transcript/{page['stream_id']}")
            audio_status, _, audio = await running.aget(f"/export/audio/{page['stream_id']}")
    if target := os.environ.get("MELVIN_PAGE_SCREENSHOT"):
        shutil.copyfile(tmp_path / "page.png", target)
    captions = " ".join(page["finals"])
    assert count_errors(clip.text, captions, "en").wer <= offline.wer + 0.10, (captions, page)
    assert page["partials"], "partials are shown while the stream runs"
    assert page["status"] == "Done."
    assert status == 200
    assert [f["text"].strip() for f in json.loads(body)] == [f.strip() for f in page["finals"]]
    assert audio_status == 200
    # The browser resampled to 16 kHz: the export lasts as long as the microphone was open (the clip, its
    # silences, the time the test waited), never two or three times that.
    exported_seconds = (len(audio) - 44) / 32000
    assert clip.seconds <= exported_seconds <= seconds + 15, exported_seconds
    assert set(page["links"]) >= {
        f"/export/audio/{page['stream_id']}",
        f"/export/transcript/{page['stream_id']}",
    }


def _stream_file(driver: Any, url: str, wav: Path) -> dict[str, Any]:
    """Choose a file in the page; it streams it in real time, stops by itself and shows the exports."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    driver.get(url)
    WebDriverWait(driver, 10).until(lambda d: d.find_element(By.ID, "url").get_attribute("value"))
    driver.find_element(By.ID, "key").send_keys(API_KEY)
    driver.find_element(By.ID, "file").send_keys(str(wav))
    WebDriverWait(driver, 90).until(lambda d: d.find_element(By.ID, "exports").get_attribute("data-ready") == "true")
    return {
        "finals": [e.text for e in driver.find_elements(By.CSS_SELECTOR, "#captions .final")],
        "stream_id": driver.find_element(By.ID, "stream-id").text,
    }


async def test_page_streams_a_chosen_file(tiny_en_engine: Engine, clips: list[Clip], tmp_path: Path) -> None:
    require_browser()
    clip = next(c for c in clips if c.path.name == "librispeech_2412-153948-0000.wav")
    offline = count_errors(
        clip.text, " ".join(w.text for w in tiny_en_engine.transcribe(read_wav(clip.path)[0], language="en")), "en"
    )
    with trio.fail_after(300):  # generous: six developers share two cores
        async with running_server(tiny_en_engine, tmp_path / "data") as running:
            with open_browser(tmp_path / "profile") as driver:
                started = trio.current_time()
                page = await trio.to_thread.run_sync(_stream_file, driver, running.rest_url + "/", clip.path)
                took = trio.current_time() - started
            exported = running.exported_pcm(page["stream_id"])
    assert count_errors(clip.text, " ".join(page["finals"]), "en").wer <= offline.wer + 0.10, page
    assert took >= clip.seconds, "the file is sent in real time, not at once"
    # decodeAudioData at 16 kHz of a 16 kHz file changes no sample count: the export is the file's audio.
    assert abs(len(exported) - len(read_wav_pcm16(clip.path))) <= 2 * 1600, (len(exported), clip.seconds)


async def test_page_config_names_the_websocket(tmp_path: Path) -> None:
    """The page learns the WebSocket port (bound after the REST app is built), or the proxy's URL if configured."""
    section = EngineSection("cpu", [EngineWorker(FakeEngine(), "cpu-0")], 1)
    for url in (None, "wss://asr.example.org/ws"):
        config = make_config(tmp_path, page_websocket_url=url)
        server = MelvinServer(config, [section], known_language=is_known_language, environ={})
        client = server.build_rest_app("127.0.0.1").test_client()
        response = await client.get("/web/config.json")
        assert json.loads(await response.get_data()) == {"websocket_port": None, "websocket_url": url}
        page = await client.get("/")
        assert page.status_code == 200
        assert "connect-src 'self' ws: wss:" in page.headers["Content-Security-Policy"]
        assert (await client.get("/web/../config.py")).status_code == 404


def _wait_for_notice(driver: Any, url: str) -> str:
    """Start streaming while every seat is taken: the page shows the waiting notice."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    driver.get(url)
    WebDriverWait(driver, 10).until(lambda d: d.find_element(By.ID, "url").get_attribute("value"))
    driver.find_element(By.ID, "key").send_keys(API_KEY)
    driver.find_element(By.ID, "toggle").click()
    WebDriverWait(driver, 30).until(lambda d: d.find_element(By.ID, "status").get_attribute("class") == "waiting")
    notice: str = driver.find_element(By.ID, "status").text
    return notice


def _stop_and_wait_for_exports(driver: Any) -> str:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    driver.find_element(By.ID, "toggle").click()
    WebDriverWait(driver, 60).until(lambda d: d.find_element(By.ID, "exports").get_attribute("data-ready") == "true")
    stream_id: str = driver.find_element(By.ID, "stream-id").text
    return stream_id


async def test_page_shows_the_waiting_notice(clips: list[Clip], tmp_path: Path) -> None:
    require_browser()
    clip = next(c for c in clips if c.path.name == "melvin_jfk.wav")
    fake = tmp_path / "microphone.wav"
    _padded_clip(clip.path, fake)
    with trio.fail_after(120):
        async with running_server(FakeEngine(), tmp_path / "data", seats=1) as running:
            with open_browser(tmp_path / "profile", fake) as driver:
                async with await open_raw_session(running):  # holds the only seat
                    await wait_for(lambda: running.server.seats.available == 0)
                    notice = await trio.to_thread.run_sync(_wait_for_notice, driver, running.rest_url + "/")
                # The seat is free again: the page's stream is seated, transcribed and exported.
                stream_id = await trio.to_thread.run_sync(_stop_and_wait_for_exports, driver)
            assert stream_id in running.export_ids()
    assert notice.startswith(protocol.WAITING_FOR_SEAT)
