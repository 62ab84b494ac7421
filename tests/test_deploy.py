"""The deployment files: the systemd unit passes `systemd-analyze verify` and keeps the promised hardening, and the
production config parses and fits the unit's stop timeout."""

from __future__ import annotations

import configparser
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from melvin_trio.config import load_config
from tests.conftest import REPO

DEPLOY = REPO / "deploy"
UNIT = DEPLOY / "melvin-trio.service"


def _unit() -> configparser.ConfigParser:
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    parser.optionxform = str  # type: ignore[assignment,method-assign]  # keys are case-sensitive in units
    parser.read(UNIT, encoding="utf-8")
    return parser


def _verify(unit: Path) -> subprocess.CompletedProcess[str]:
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        message = "systemd-analyze is missing (apt-get install systemd)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return subprocess.run([analyze, "verify", str(unit)], capture_output=True, text=True, timeout=60, check=False)


def _with_existing_binary(tmp_path: Path, text: str) -> Path:
    """The unit as shipped, but starting this checkout's melvin-trio (verify checks that ExecStart exists)."""
    binary = REPO / ".venv" / "bin" / "melvin-trio"
    assert binary.exists(), "run ./dev setup"
    path = tmp_path / "melvin-trio.service"
    path.write_text(text.replace("/opt/melvin-trio/venv/bin/melvin-trio", str(binary)), encoding="utf-8")
    return path


def test_systemd_unit_verifies(tmp_path: Path) -> None:
    text = UNIT.read_text(encoding="utf-8")
    result = _verify(_with_existing_binary(tmp_path, text))
    # verify exits 0 on unknown keys and bad values, printing a warning: any output is a failure.
    assert (result.returncode, result.stdout + result.stderr) == (0, "")
    # ...and it does read the file here: a bad value is reported.
    broken = _verify(_with_existing_binary(tmp_path, text.replace("ProtectSystem=strict", "ProtectSystem=stric")))
    assert "stric" in broken.stderr


def test_systemd_unit_is_hardened_and_drains_within_its_stop_timeout() -> None:
    service = _unit()["Service"]
    assert service["User"] not in ("", "root")
    assert service["ProtectSystem"] == "strict"
    assert service["NoNewPrivileges"] == "yes"
    assert service["Restart"] == "on-failure"
    assert service["KillSignal"] == "SIGTERM"
    assert service["CapabilityBoundingSet"] == ""
    assert "--config /etc/melvin-trio/config.yml serve" in service["ExecStart"]
    config = load_config(DEPLOY / "config.yml")
    assert str(config.data_dir) in service["ReadWritePaths"].split()
    assert float(service["TimeoutStopSec"]) > config.limits.drain_seconds + 10
    sysusers = (DEPLOY / "melvin-trio.sysusers").read_text(encoding="utf-8")
    assert f"u {service['User']} " in sysusers


def test_container_recipe_runs_the_production_install_as_non_root() -> None:
    recipe = (DEPLOY / "Containerfile").read_text(encoding="utf-8")
    assert "RUN /src/deploy/install.sh --wheelhouse /wheelhouse /opt/melvin-trio" in recipe
    assert "USER 10001:10001" in recipe
    assert 'VOLUME ["/var/lib/melvin-trio", "/opt/melvin-trio/models"]' in recipe
    assert "HEALTHCHECK" in recipe
    assert "/health" in recipe
    config = load_config(DEPLOY / "config.yml")
    assert (str(config.data_dir), str(config.models_dir)) == ("/var/lib/melvin-trio", "/opt/melvin-trio/models")
