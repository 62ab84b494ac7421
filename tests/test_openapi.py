"""/openapi.json describes every REST route (validated by openapi-spec-validator), and /docs renders it offline in
headless Chromium without a single request beyond this server."""

from __future__ import annotations

import json
import re
import time
from pathlib import Path
from typing import Any

import trio
from openapi_spec_validator import validate

from melvin_trio.engine.fake import FakeEngine
from melvin_trio.engine.whispercpp import is_known_language
from melvin_trio.server.app import EngineSection, MelvinServer
from melvin_trio.server.workers import EngineWorker
from tests.browser import open_browser, require_browser
from tests.server_harness import make_config, running_server

# Quart's built-in static route (the package has no static/ folder; nothing is served there), hidden from the document.
UNDOCUMENTED_ENDPOINTS = {"static"}


async def test_openapi_lists_every_route_with_its_answers(tmp_path: Path) -> None:
    config = make_config(tmp_path)
    section = EngineSection("cpu", [EngineWorker(FakeEngine(), "cpu-0")], 1)
    server = MelvinServer(config, [section], known_language=is_known_language, environ={})
    app = server.build_rest_app("127.0.0.1")
    response = await app.test_client().get("/openapi.json")
    assert response.status_code == 200
    document: dict[str, Any] = json.loads(await response.get_data())
    validate(document)
    routes = 0
    for rule in app.url_map.iter_rules():
        if rule.endpoint in UNDOCUMENTED_ENDPOINTS or rule.websocket:
            continue
        path = re.sub(r"<(?:[^:<>]+:)?([^<>]+)>", r"{\1}", rule.rule)
        assert path in document["paths"], f"{rule.rule} is not in /openapi.json"
        for method in sorted((rule.methods or set()) - {"HEAD", "OPTIONS"}):
            operation = document["paths"][path][method.lower()]
            assert operation["responses"], f"{method} {rule.rule}: no response documented"
            assert operation.get("summary"), f"{method} {rule.rule}: no summary (the view's docstring)"
            routes += 1
    assert routes >= 9
    secured = document["paths"]["/export/transcript/{stream_id}"]["get"]
    assert secured["security"] == [{"apiKey": []}]
    assert document["components"]["securitySchemes"]["apiKey"] == {
        "type": "apiKey",
        "in": "header",
        "name": "Authorization",
    }
    transcript = secured["responses"]["200"]["content"]["application/json"]["schema"]
    assert transcript["type"] == "array"


def _render_docs(driver: Any, url: str) -> dict[str, Any]:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    driver.get_log("performance")  # discard the browser's start-up entries
    driver.get(url)
    WebDriverWait(driver, 60).until(lambda d: "/export/transcript/" in d.find_element(By.TAG_NAME, "body").text)
    time.sleep(1.0)  # let late requests (fonts, workers) show up in the log
    requested = []
    for entry in driver.get_log("performance"):
        message = json.loads(entry["message"])["message"]
        if message["method"] == "Network.requestWillBeSent":
            requested.append(message["params"]["request"]["url"])
    resources = driver.execute_script("return performance.getEntriesByType('resource').map(e => e.name)")
    return {
        "title": driver.find_element(By.TAG_NAME, "h1").text,
        "body": driver.find_element(By.TAG_NAME, "body").text,
        "requested": requested,
        "resources": resources,
    }


async def test_docs_page_renders_offline(tmp_path: Path) -> None:
    require_browser()
    with trio.fail_after(120):
        async with running_server(FakeEngine(), tmp_path / "data") as running:
            with open_browser(tmp_path / "profile") as driver:
                page = await trio.to_thread.run_sync(_render_docs, driver, running.rest_url + "/docs")
    assert "melvin-trio REST API" in page["title"]
    for path in ("/health", "/export/audio/{stream_id}", "/metrics"):
        assert path in page["body"]
    assert any(url.endswith("/web/redoc.standalone.js") for url in page["requested"])
    # Anything on the network (the browser's own chrome:// pages are not) goes to this server only.
    outside = [
        url
        for url in page["requested"] + page["resources"]
        if url.startswith(("http:", "https:", "ws:", "wss:", "//")) and not url.startswith(running.rest_url + "/")
    ]
    assert outside == [], "the docs page must make no request beyond this server"
