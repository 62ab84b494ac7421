"""`melvin-trio serve`: check the models, load the engines, run the server, drain on SIGINT/SIGTERM."""

from __future__ import annotations

import logging
import signal

import trio

from melvin_trio.config import Config, ConfigError
from melvin_trio.engine.base import EngineError
from melvin_trio.engine.whispercpp import WhisperCppEngine, WhisperCppOptions, is_known_language
from melvin_trio.errors import ServeError
from melvin_trio.models.ggml import ModelFileError, inspect_model
from melvin_trio.models.probe import probe_model
from melvin_trio.server.app import EngineSection, MelvinServer, take_node_lock
from melvin_trio.server.lock import NodeLock
from melvin_trio.server.workers import EngineWorker

log = logging.getLogger(__name__)


def check_model(config: Config, name: str, section: str) -> None:
    """Stop with a clear message unless the model exists, is complete, and whisper.cpp loads it."""
    path = config.model_path(name)
    try:
        inspect_model(path)
    except ModelFileError as exc:
        hint = " (melvin-trio models install-default, or models fetch NAME)" if not path.exists() else ""
        raise ConfigError(f"websocket_stream.{section}.model: {exc}{hint}") from None
    probe = probe_model(path, timeout=config.limits.model_check_seconds)
    if not probe.ok:
        raise ConfigError(f"websocket_stream.{section}.model: {path} does not load: {probe.message}")


def load_sections(config: Config) -> list[EngineSection]:
    """The configured engine workers, GPU first. Raises ConfigError for a missing or bad model."""
    stream = config.websocket_stream
    sections = []
    plans = (
        (
            "cuda",
            stream.cuda.active,
            stream.cuda.model,
            stream.cuda.worker_seats,
            stream.cuda.workers,
            WhisperCppOptions(
                n_threads=stream.cpu.cpu_threads,
                use_gpu=True,
                gpu_device=stream.cuda.device_index,
                reduce_audio_ctx=stream.cuda.reduce_audio_ctx,
            ),
        ),
        (
            "cpu",
            stream.cpu.active,
            stream.cpu.model,
            stream.cpu.worker_seats,
            stream.cpu.workers,
            WhisperCppOptions(
                n_threads=stream.cpu.cpu_threads, use_gpu=False, reduce_audio_ctx=stream.cpu.reduce_audio_ctx
            ),
        ),
    )
    for kind, active, model, seats, n_workers, options in plans:
        if not active or seats == 0:
            continue
        check_model(config, model, kind)
        workers = []
        for index in range(n_workers):
            engine = WhisperCppEngine(config.model_path(model), options, name=model)
            workers.append(EngineWorker(engine, f"{kind}-{index}"))
        log.info("%s: %d seat(s) on %d worker(s) with %s", kind, seats, n_workers, model)
        sections.append(EngineSection(kind, workers, seats))
    return sections


async def _watch_signals(server: MelvinServer, cancel_scope: trio.CancelScope) -> None:
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async for signum in signals:
            if not server.stopping:
                log.info("%s received: draining", signal.Signals(signum).name)
                server.request_stop()
            else:
                log.warning("second signal: stopping now")
                cancel_scope.cancel()


async def _main(server: MelvinServer, host: str | None, ws_port: int | None, rest_port: int | None) -> None:
    async with trio.open_nursery() as nursery:
        nursery.start_soon(_watch_signals, server, nursery.cancel_scope)
        await server.serve(host=host, websocket_port=ws_port, rest_port=rest_port)
        nursery.cancel_scope.cancel()  # drained: stop watching signals
    log.info("stopped")


def run_server(config: Config, *, host: str | None, ws_port: int | None, rest_port: int | None) -> int:
    if not config.all_api_keys():
        raise ConfigError(
            "no API keys: set api_keys_file (./dev setup creates api_keys.txt), MELVIN_API_KEYS, or api_keys"
        )
    # The lock first: a second server on this data_dir stops here, before it loads a model or touches a file.
    lock = NodeLock(config.data_dir, config.node, stale_after=config.cluster.stale_after_seconds)
    take_node_lock(lock)
    try:
        try:
            sections = load_sections(config)
        except EngineError as exc:
            raise ConfigError(str(exc)) from exc
        server = MelvinServer(config, sections, known_language=is_known_language, node_lock=lock)
        try:
            trio.run(_main, server, host, ws_port, rest_port)
        except* OSError as group:  # binding a port failed (taken, or not allowed)
            raise ServeError(f"cannot listen: {_first_leaf(group)}") from None
    finally:
        lock.release()
    return 0


def _first_leaf(group: BaseExceptionGroup[OSError]) -> OSError:
    first = group.exceptions[0]
    return _first_leaf(first) if isinstance(first, BaseExceptionGroup) else first
