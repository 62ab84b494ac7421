from __future__ import annotations

from pathlib import Path

import pytest

from melvin_trio.config import Config, ConfigError, load_config, model_path, parse_config

REPO = Path(__file__).resolve().parent.parent


def test_the_shipped_config_holds_the_documented_defaults() -> None:
    config = load_config(REPO / "config.yml")
    defaults = Config()
    assert config.websocket_port == 8394 == defaults.websocket_port
    assert config.rest_port == 8393 == defaults.rest_port
    assert config.websocket_stream == defaults.websocket_stream
    assert config.transcription_default == defaults.transcription_default
    # config.yml documents every default; it must not contradict the one source of them (config.py, StreamSettings)
    assert config.streaming == defaults.streaming
    assert config.limits == defaults.limits
    assert config.cluster == defaults.cluster
    assert config.keep_data_for_hours == 72
    assert config.models_dir == REPO / "models"
    assert config.data_dir == REPO / "data"
    assert config.model_path("tiny.en") == REPO / "models" / "ggml-tiny.en.bin"


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"websocket_prot": 1}, r"^websocket_prot: unknown key"),
        ({"websocket_stream": {"cpu": {"modle": "x"}}}, r"^websocket_stream\.cpu\.modle: unknown key"),
        ({"websocket_port": "8394"}, r"^websocket_port: expected an integer, got '8394'"),
        ({"websocket_port": True}, r"^websocket_port: expected an integer"),
        ({"websocket_port": 70000}, r"^websocket_port: must be a port number"),
        ({"api_keys": "secret"}, r"^api_keys: expected a list of a string"),
        ({"api_keys": [1]}, r"^api_keys\[0\]: expected a string"),
        ({"websocket_stream": {"cpu": {"active": "yes"}}}, r"^websocket_stream\.cpu\.active: expected true or false"),
        ({"websocket_stream": {"cpu": {"worker_seats": -1}}}, r"worker_seats: must not be negative"),
        ({"websocket_stream": {"cpu": {"worker_seats": 0}}}, r"^websocket_stream: no active section"),
        ({"transcription_default": {"language": "German"}}, r"^transcription_default\.language: expected a language"),
        ({"log_level": "LOUD"}, r"^log_level: must be one of"),
        ({"keep_data_for_hours": 0}, r"^keep_data_for_hours: must be positive"),
        ({"limits": {"model_check_seconds": 0}}, r"^limits\.model_check_seconds: must be positive"),
        ({"transcription_default": None}, r"^transcription_default: expected a mapping"),
        ({"streaming": {"utterance_beam_size": 0}}, r"^streaming: utterance_beam_size must be from 1 \(greedy\) to 16"),
        ({"streaming": {"noisy_snr_db": -1}}, r"noisy_snr_db from 0 to 100"),
    ],
)
def test_a_bad_value_is_named(data: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_config(data, Path("/srv"))


def test_null_language_means_detect() -> None:
    config = parse_config({"transcription_default": {"language": None}}, Path("/srv"))
    assert config.transcription_default.language is None


def test_errors_name_the_file(tmp_path: Path) -> None:
    path = tmp_path / "c.yml"
    path.write_text("rest_port: [1]\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=r"c\.yml: rest_port: expected an integer"):
        load_config(path)
    for broken in ("rest_port: [1\n", ": : [\n"):
        path.write_text(broken, encoding="utf-8")
        with pytest.raises(ConfigError, match=r"not valid YAML: .* \(line \d+, column \d+\)$") as raised:
            load_config(path)
        assert "\n" not in str(raised.value)  # one line, as the command line prints every error
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "missing.yml")


def test_api_keys_merge_config_file_and_environment(tmp_path: Path) -> None:
    keys = tmp_path / "keys"
    keys.write_text("# comment\nfrom-file\n\n", encoding="utf-8")
    config = parse_config({"api_keys": ["from-config"], "api_keys_file": "keys"}, tmp_path)
    assert config.api_keys_file == keys
    merged = config.all_api_keys({"MELVIN_API_KEYS": "env-a, env-b,"})
    assert merged == {"from-config", "from-file", "env-a", "env-b"}
    assert parse_config({"api_keys_file": "absent"}, tmp_path).all_api_keys({}) == frozenset()


def test_model_names_map_to_whisper_cpp_files(tmp_path: Path) -> None:
    assert model_path(tmp_path, "base") == tmp_path / "ggml-base.bin"
    assert model_path(tmp_path, "/opt/m/custom.bin") == Path("/opt/m/custom.bin")


def test_the_key_file_defaults_to_api_keys_txt_beside_the_config(tmp_path: Path) -> None:
    """A fresh tester's config held only ports and data_dir, next to the api_keys.txt `./dev setup` made: the README
    says api_keys_file defaults to api_keys.txt, and so it does."""
    (tmp_path / "api_keys.txt").write_text("# keys\nk-123\n", encoding="utf-8")
    path = tmp_path / "c.yml"
    path.write_text("rest_port: 18393\n", encoding="utf-8")
    config = load_config(path)
    assert config.api_keys_file == tmp_path / "api_keys.txt"
    assert config.all_api_keys({}) == frozenset({"k-123"})
