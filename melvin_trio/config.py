"""Configuration: `config.yml` parsed once, at start, into frozen typed objects.

Every key is checked: an unknown key, a wrong type or a value out of range stops the program with one message that
names the key (`ConfigError`). Relative paths are taken from the directory of the config file. Names follow the
original Melvin ASR where it had them.
"""

from __future__ import annotations

import dataclasses
import os
import re
import socket
import types
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, TypeVar, Union, get_args, get_origin, get_type_hints

import yaml

from melvin_trio.core.decoding import BEAM_SIZES
from melvin_trio.core.settings import StreamSettings
from melvin_trio.core.vad import SPEECH_DETECTORS
from melvin_trio.errors import MelvinError
from melvin_trio.models.probe import PROBE_TIMEOUT_S

API_KEYS_ENV: Final = "MELVIN_API_KEYS"
PORTS: Final = (0, 65535)  # 0: any free port
CPU_THREADS: Final = (1, 256)  # whisper.cpp threads per context
LOG_LEVELS: Final = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")


class ConfigError(MelvinError, ValueError):
    """The configuration is invalid; the message names the key and says what is wrong."""


@dataclass(frozen=True)
class CpuSection:
    active: bool = True
    # whisper.cpp's q8_0 of tiny.en: passes about 15% cheaper than the f16 file at its WER (bench/README.md).
    model: str = "tiny.en-q8_0"
    cpu_threads: int = 2
    worker_seats: int = 1
    # whisper contexts (one thread each) the seats share; each holds the model in memory once.
    workers: int = 1
    # Encode only as much audio context as the window needs instead of whisper's 30 s: about 3x cheaper for short
    # windows, at some cost in accuracy (see bench/README.md).
    reduce_audio_ctx: bool = False


@dataclass(frozen=True)
class CudaSection:
    active: bool = False
    model: str = "base"
    device_index: int = 0
    worker_seats: int = 2
    workers: int = 1
    reduce_audio_ctx: bool = False


@dataclass(frozen=True)
class WebsocketStream:
    cpu: CpuSection = field(default_factory=CpuSection)
    cuda: CudaSection = field(default_factory=CudaSection)


@dataclass(frozen=True)
class TranscriptionDefault:
    # ISO 639-1 code, or None: detect once per stream from its first seconds of speech.
    language: str | None = "en"


# The streaming section is the core's own settings object: its defaults live there, once.
StreamingSection = StreamSettings


@dataclass(frozen=True)
class LimitsSection:
    auth_timeout_seconds: float = 10.0  # the first message must arrive within this
    max_frame_bytes: int = 1 << 20  # larger WebSocket messages close the connection (1009)
    # On SIGTERM/SIGINT, open streams get this long to send their last final; a stream whose client left without
    # eof gets as long to transcribe the audio it received (its seat is held that long at most).
    drain_seconds: float = 30.0
    waiting_notice_seconds: float = 10.0  # the waiting text repeats this often
    # Audio received but not yet transcribed, held in memory per stream (a client sending faster than real time,
    # or waiting for a seat). Past it the client is still read and the rest waits in its spool on disk, read back
    # as the transcriber makes room: memory stays bounded, no audio is dropped, pings are still answered.
    max_backlog_seconds: float = 300.0
    # Every ping_interval_seconds the server pings each client; one that does not answer within
    # ping_timeout_seconds is gone (a dead network path holds no seat).
    ping_interval_seconds: float = 20.0
    ping_timeout_seconds: float = 20.0
    # An engine call (one pass, normally 0.3-3 s) running longer than this is aborted and the worker serves the
    # others. Once, the stream goes on (its next pass covers the audio: a busy CPU); a call starved of CPU is
    # retried however often, the limit growing with the box's slowness (server/workers.py, SLOW_BOX_FACTOR); twice
    # in a row for a call that used the CPU (a stuck engine), the stream ends with a message and its export, and its
    # seat is returned.
    engine_call_timeout_seconds: float = 60.0
    # `serve` loads each configured model once in a child process before it starts (a malformed file can crash
    # whisper.cpp); a load that takes longer than this is refused. A busy machine may need more (a fresh tester:
    # base took over 120 s at nice 19 beside a load of 8 on 2 cores).
    model_check_seconds: float = PROBE_TIMEOUT_S
    # An upload to the file API (POST /transcriptions, /v1/audio/*) larger than this is refused with 413.
    max_upload_bytes: int = 500 * 1024 * 1024


@dataclass(frozen=True)
class ClusterSection:
    # Every heartbeat_seconds a node rewrites the heartbeat in its lock file (data_dir/nodes/<node_id>.lock) and
    # looks for dead nodes' spools.
    heartbeat_seconds: float = 5.0
    # A node whose heartbeat is older than this is dead (on another host; on this host the OS tells at once):
    # another node takes its lock and turns its spools into exports.
    stale_after_seconds: float = 30.0
    recover_dead_nodes: bool = True
    # A TCP port answering HAProxy's agent-check: "ready up N%" with N = 100 x seats (on `weight 1`: the seat
    # count), "drain" while shutting down. null: no agent.
    agent_port: int | None = None


@dataclass(frozen=True)
class MetricsSection:
    # Whether GET /metrics needs an API key. null: only when the REST server listens beyond loopback.
    require_key: bool | None = None


@dataclass(frozen=True)
class TlsSection:
    # Both set: the WebSocket server speaks wss:// and the REST server https://, on the same ports.
    certfile: Path | None = None
    keyfile: Path | None = None


@dataclass(frozen=True)
class Config:
    host: str = "0.0.0.0"
    websocket_port: int = 8394
    rest_port: int = 8393
    api_keys: tuple[str, ...] = ()
    # A file with one API key per line (blank lines and lines starting with # ignored); keeps secrets out of
    # config.yml. Missing file: no keys from it. Relative to the config file (as every path here).
    api_keys_file: Path | None = Path("api_keys.txt")
    log_level: str = "INFO"
    data_dir: Path = Path("data")
    # This node's name in data_dir (its lock and spool folder); null: the host name. Nodes sharing a data_dir
    # need different ids.
    node_id: str | None = None
    # Finished exports; null: data_dir. Nodes behind one load balancer share it, so any node serves any export.
    exports_dir: Path | None = None
    keep_data_for_hours: float = 72.0
    models_dir: Path = Path("models")
    websocket_stream: WebsocketStream = field(default_factory=WebsocketStream)
    transcription_default: TranscriptionDefault = field(default_factory=TranscriptionDefault)
    streaming: StreamingSection = field(default_factory=StreamingSection)
    limits: LimitsSection = field(default_factory=LimitsSection)
    cluster: ClusterSection = field(default_factory=ClusterSection)
    metrics: MetricsSection = field(default_factory=MetricsSection)
    tls: TlsSection = field(default_factory=TlsSection)
    # The WebSocket URL the live page connects to, e.g. wss://asr.example.org/ws behind a reverse proxy; null: the
    # page uses its own host name with websocket_port (ws:// or wss:// as the page itself).
    page_websocket_url: str | None = None

    @property
    def node(self) -> str:
        """This node's id: `node_id`, else the host name."""
        return self.node_id or socket.gethostname()

    def all_api_keys(self, environ: Mapping[str, str] | None = None) -> frozenset[str]:
        """Keys from the config, the key file and the MELVIN_API_KEYS environment variable (comma-separated)."""
        env = os.environ if environ is None else environ
        keys = set(self.api_keys)
        keys.update(k.strip() for k in env.get(API_KEYS_ENV, "").split(",") if k.strip())
        if self.api_keys_file is not None:
            try:
                lines = self.api_keys_file.read_text(encoding="utf-8").splitlines()
            except FileNotFoundError:
                lines = []
            except OSError as exc:
                raise ConfigError(f"api_keys_file: cannot read {self.api_keys_file}: {exc.strerror}") from exc
            keys.update(s for line in lines if (s := line.strip()) and not s.startswith("#"))
        return frozenset(keys)

    def model_path(self, name: str) -> Path:
        return model_path(self.models_dir, name)


def model_path(models_dir: Path, name: str) -> Path:
    """Where a model named as whisper.cpp names its files lives: `tiny.en` -> `<models_dir>/ggml-tiny.en.bin`.

    A name that is itself a path to a file (it contains a `/` or ends in `.bin`) is taken as it is.
    """
    if "/" in name or name.endswith(".bin"):
        return Path(name)
    return models_dir / f"ggml-{name}.bin"


T = TypeVar("T")


def _describe(tp: Any) -> str:
    if tp is type(None):
        return "null"
    origin = get_origin(tp)
    if origin in (Union, types.UnionType):
        return " or ".join(_describe(a) for a in get_args(tp))
    if origin is tuple:
        return f"a list of {_describe(get_args(tp)[0])}"
    if dataclasses.is_dataclass(tp):
        return "a mapping"
    return {bool: "true or false", int: "an integer", float: "a number", str: "a string", Path: "a path"}.get(
        tp, str(tp)
    )


def _convert(value: Any, tp: Any, key: str, base: Path) -> Any:
    origin = get_origin(tp)
    if origin in (Union, types.UnionType):
        for option in get_args(tp):
            try:
                return _convert(value, option, key, base)
            except ConfigError:
                continue
        raise ConfigError(f"{key}: expected {_describe(tp)}, got {value!r}")
    if tp is type(None):
        if value is None:
            return None
    elif origin is tuple:
        if isinstance(value, list):
            return tuple(_convert(v, get_args(tp)[0], f"{key}[{i}]", base) for i, v in enumerate(value))
    elif dataclasses.is_dataclass(tp):
        if isinstance(value, dict):
            return _build(tp, value, f"{key}.", base)  # type: ignore[arg-type]
    elif tp is bool:
        if isinstance(value, bool):
            return value
    elif tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif tp is float:
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
    elif tp is str:
        if isinstance(value, str):
            return value
    elif tp is Path and isinstance(value, str) and value:
        path = Path(value).expanduser()
        return path if path.is_absolute() else base / path
    raise ConfigError(f"{key}: expected {_describe(tp)}, got {value!r}")


def _build(cls: type[T], data: Mapping[str, Any], prefix: str, base: Path) -> T:
    hints = get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]  # type: ignore[arg-type]
    for key in data:
        if key not in names:
            raise ConfigError(f"{prefix}{key}: unknown key (known here: {', '.join(names)})")
    values = {name: _convert(data[name], hints[name], f"{prefix}{name}", base) for name in names if name in data}
    return cls(**values)


def _check_port(config: Config, key: str) -> None:
    if not PORTS[0] <= getattr(config, key) <= PORTS[1]:
        raise ConfigError(f"{key}: must be a port number from {PORTS[0]} to {PORTS[1]}")


NODE_ID: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")


def _validate(config: Config) -> None:
    _check_port(config, "websocket_port")
    _check_port(config, "rest_port")
    if config.node_id is not None and not NODE_ID.fullmatch(config.node_id):
        raise ConfigError(
            f"node_id: 1 to 64 letters, digits, '.', '_' or '-', not starting with '.', '_' or '-'; "
            f"got {config.node_id!r}"
        )
    cluster = config.cluster
    if cluster.heartbeat_seconds <= 0 or cluster.stale_after_seconds < 3 * cluster.heartbeat_seconds:
        raise ConfigError("cluster: need heartbeat_seconds > 0 and stale_after_seconds >= 3 x heartbeat_seconds")
    if cluster.agent_port is not None and not PORTS[0] <= cluster.agent_port <= PORTS[1]:
        raise ConfigError(f"cluster.agent_port: must be a port number from {PORTS[0]} to {PORTS[1]}, or null")
    if config.log_level.upper() not in LOG_LEVELS:
        raise ConfigError(f"log_level: must be one of {', '.join(LOG_LEVELS)}, got {config.log_level!r}")
    if config.keep_data_for_hours <= 0:
        raise ConfigError("keep_data_for_hours: must be positive")
    stream = config.websocket_stream
    if not CPU_THREADS[0] <= stream.cpu.cpu_threads <= CPU_THREADS[1]:
        raise ConfigError(f"websocket_stream.cpu.cpu_threads: must be from {CPU_THREADS[0]} to {CPU_THREADS[1]}")
    for name, section in (("cpu", stream.cpu), ("cuda", stream.cuda)):
        if section.worker_seats < 0:
            raise ConfigError(f"websocket_stream.{name}.worker_seats: must not be negative")
        if not section.model:
            raise ConfigError(f"websocket_stream.{name}.model: must name a model")
    for name, section in (("cpu", stream.cpu), ("cuda", stream.cuda)):
        if section.workers < 1:
            raise ConfigError(f"websocket_stream.{name}.workers: must be at least 1")
    st = config.streaming
    if not 1.0 <= st.window_seconds <= 28.0:
        raise ConfigError("streaming.window_seconds: must be from 1 to 28 (whisper reads 30 s at most)")
    if not 1.0 <= st.trim_seconds <= st.window_seconds:
        raise ConfigError("streaming.trim_seconds: must be from 1 to window_seconds")
    if not 0.1 <= st.min_new_audio_seconds <= st.window_seconds:
        raise ConfigError("streaming.min_new_audio_seconds: must be from 0.1 to window_seconds")
    if not 0.0 <= st.vad_pause_threshold <= st.vad_speech_threshold <= 1.0 or st.vad_min_speech_seconds < 0:
        raise ConfigError(
            "streaming: need 0 <= vad_pause_threshold <= vad_speech_threshold <= 1, vad_min_speech_seconds >= 0"
        )
    if not 0.1 <= st.first_pass_speech_seconds <= st.window_seconds:
        raise ConfigError("streaming.first_pass_speech_seconds: must be from 0.1 to window_seconds")
    if not 0.1 <= st.preview_speech_seconds <= st.first_pass_speech_seconds:
        raise ConfigError("streaming.preview_speech_seconds: must be from 0.1 to first_pass_speech_seconds")
    if not 0.0 <= st.confirm_min_probability <= 1.0 or not 0.0 <= st.settled_min_probability <= 1.0:
        raise ConfigError("streaming: confirm_min_probability and settled_min_probability must be from 0 to 1")
    if not 0.0 <= st.settled_margin_seconds <= st.window_seconds:
        raise ConfigError("streaming.settled_margin_seconds: must be from 0 (off) to window_seconds")
    if st.behind_seconds < st.min_new_audio_seconds:
        raise ConfigError("streaming.behind_seconds: must be at least min_new_audio_seconds")
    if not 0.0 <= st.background_max_confidence <= 1.0 or st.background_margin_db < 0:
        raise ConfigError("streaming: background_max_confidence must be from 0 (off) to 1, background_margin_db >= 0")
    if st.vad_detector not in SPEECH_DETECTORS:
        raise ConfigError(f"streaming.vad_detector: must be one of {', '.join(SPEECH_DETECTORS)}")
    if not 0.1 <= st.short_pause_seconds <= st.pause_seconds <= 5.0:
        raise ConfigError("streaming: need 0.1 <= short_pause_seconds <= pause_seconds <= 5")
    if not BEAM_SIZES[0] <= st.utterance_beam_size <= BEAM_SIZES[1] or not 0 <= st.noisy_snr_db <= 100:
        raise ConfigError(
            f"streaming: utterance_beam_size must be from {BEAM_SIZES[0]} (greedy) to {BEAM_SIZES[1]},"
            " noisy_snr_db from 0 to 100"
        )
    if st.final_after_words < 1 or st.final_after_seconds <= 0 or st.prompt_chars < 0:
        raise ConfigError("streaming: final_after_words and final_after_seconds must be positive, prompt_chars >= 0")
    lim = config.limits
    if lim.auth_timeout_seconds <= 0 or lim.drain_seconds < 0 or lim.waiting_notice_seconds <= 0:
        raise ConfigError("limits: timeouts must be positive")
    if lim.ping_interval_seconds <= 0 or lim.ping_timeout_seconds <= 0:
        raise ConfigError("limits: ping_interval_seconds and ping_timeout_seconds must be positive")
    if lim.engine_call_timeout_seconds <= 0:
        raise ConfigError("limits.engine_call_timeout_seconds: must be positive")
    if lim.model_check_seconds <= 0:
        raise ConfigError("limits.model_check_seconds: must be positive")
    if lim.max_backlog_seconds < 30:
        raise ConfigError("limits.max_backlog_seconds: must be at least 30")
    if lim.max_upload_bytes < 1024:
        raise ConfigError("limits.max_upload_bytes: must be at least 1024")
    if lim.max_frame_bytes < 1024:
        raise ConfigError("limits.max_frame_bytes: must be at least 1024")
    if stream.cuda.device_index < 0:
        raise ConfigError("websocket_stream.cuda.device_index: must not be negative")
    if not any(s.active and s.worker_seats > 0 for s in (stream.cpu, stream.cuda)):
        raise ConfigError("websocket_stream: no active section with worker_seats > 0; no client could be served")
    if (config.tls.certfile is None) != (config.tls.keyfile is None):
        raise ConfigError("tls: set both certfile and keyfile, or neither")
    language = config.transcription_default.language
    if language is not None and not (language.isalpha() and 2 <= len(language) <= 3 and language.islower()):
        raise ConfigError(
            f"transcription_default.language: expected a language code such as 'en' or 'de', or null; got {language!r}"
        )


# Config's relative path defaults, as text: merged into the file's values, they resolve against the config's
# directory exactly as a value written in the file does.
_RELATIVE_PATH_DEFAULTS: Final = {
    f.name: str(f.default) for f in dataclasses.fields(Config) if f.name in ("data_dir", "models_dir", "api_keys_file")
}


def parse_config(data: Any, base: Path) -> Config:
    """Build a Config from parsed YAML `data`; relative paths are resolved against `base`."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError("the configuration must be a mapping of keys to values")
    merged = {**_RELATIVE_PATH_DEFAULTS, **data}
    config = _build(Config, merged, "", base)
    _validate(config)
    return config


def load_config(path: Path) -> Config:
    """Read and check `path`; raises ConfigError naming the file and the faulty key."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{path}: configuration file not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read: {exc}") from exc
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {_yaml_problem(exc)}") from exc
    try:
        return parse_config(data, path.resolve().parent)
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from None


def default_config_path(environ: Mapping[str, str] | None = None, cwd: Path | None = None) -> Path:
    """`$MELVIN_CONFIG`, else `config.yml` in the working directory."""
    env = os.environ if environ is None else environ
    if value := env.get("MELVIN_CONFIG"):
        return Path(value)
    return (cwd or Path.cwd()) / "config.yml"


def _yaml_problem(exc: yaml.YAMLError) -> str:
    """PyYAML's error on one line: the problem and where (its own text spans several lines and quotes the file)."""
    problem = getattr(exc, "problem", None)
    mark = getattr(exc, "problem_mark", None)
    if problem and mark is not None:
        return f"{problem} (line {mark.line + 1}, column {mark.column + 1})"
    return " ".join(str(exc).split())
