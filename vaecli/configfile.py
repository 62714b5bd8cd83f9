"""Config files: what `--config FILE` reads and `--print-config` writes, by the names of the table of options.

A TOML file of options (`hidden = 10`, `layers = [512, 256]`, `lam = 4.0`), any
subset of them (checked together when the config is made); a run: its folder
or its metrics.json, whose config is read as the run's (so an old run's config
means what it meant then); or a JSON object holding any of the options. Keys
are option names or config fields (`hidden` or `latent_dim`); a wrong key, type
or value names the file and the key.
"""

import hashlib
import json
import math
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vaecli.config import TrainConfig
from vaecli.errors import ConfigError
from vaecli.options import BY_FIELD, BY_NAME, ROWS, Row

if sys.version_info >= (3, 11):
    import tomllib
else:  # the same module, before it joined the standard library
    import tomli as tomllib


# the keys every run's config has held since the first release
RUN_KEYS = {"model", "lam", "epochs", "batch_size", "lr", "seed", "dataset", "binarize"}


def to_toml(config: TrainConfig) -> str:
    """Every option of `config` as a TOML file that `--config` reads back to the same config."""
    lines = []
    for row in ROWS:
        if row.field == "lr" and config.lr_follows_schedule:
            lines.append(f"# lr = {_toml(config.lr)}  (the schedule's own rate; set it to fix one)")
        else:
            lines.append(f"{row.name} = {_toml(row.get(config))}")
    return "\n".join(lines) + "\n"


def _toml(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, tuple):
        return "[" + ", ".join(map(_toml, value)) + "]"
    if isinstance(value, str):
        return json.dumps(value)  # a TOML basic string is a JSON string
    if isinstance(value, float):
        return repr(value) if math.isfinite(value) else "nan"
    return str(value)


def in_keys(path: Path, message: str) -> str:
    """A config error as a file's reader says it: `latent_dim` becomes the file's key 'hidden'."""

    def key(match: re.Match) -> str:
        row = BY_FIELD.get(match.group(1)) or BY_NAME.get(match.group(1))
        return repr(row.name) if row else match.group(0)

    return f"{path}: " + re.sub(r"`([a-z][a-z0-9_]*)`", key, message)


def _read(path: Path) -> tuple[Path, str, dict[str, Any]]:
    """(the file read, its text, its keys and values)."""
    path = Path(path)
    if path.is_dir():  # a run folder: its config, from metrics.json
        path = path / "metrics.json"
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"{path}: cannot read the config file ({getattr(e, 'strerror', None) or e})") from None
    return path, text, _parse(path, text)


def _items(path: Path, data: dict[str, Any]) -> list[tuple[str, Row, Any]]:
    """(key, its row, value) of every option in `data`; a run's "model" object holds options too."""
    model = data.pop("model", {})
    if not isinstance(model, dict):
        raise ConfigError(f"{path}: 'model' must be an object of options, got {model!r}")
    items = []
    for key, value in {**model, **data}.items():
        if key == "image_shape":  # the data set's, not an option
            continue
        row = BY_NAME.get(key) or BY_FIELD.get(key)
        if row is None:
            raise ConfigError(f"{path}: unknown key {key!r}; the options are {', '.join(BY_NAME)}")
        items.append((key, row, value))
    return items


def read_options(path: Path) -> dict[str, Any]:
    """The options that the file at `path` sets, by option name, each of the type its option takes."""
    path, _, data = _read(path)
    if isinstance(data.get("config"), dict) and "history" in data:  # a run's metrics.json
        data = data["config"]
    if RUN_KEYS <= set(data):  # a run's config: the whole of it, with the meaning it had when it was written
        try:
            config = TrainConfig.from_dict(data)
        except ConfigError as e:
            raise ConfigError(in_keys(path, str(e))) from None
        return {row.name: row.get(config) for row in ROWS if not (row.field == "lr" and config.lr_follows_schedule)}
    return {row.name: _value(path, key, row, value) for key, row, value in _items(path, data)}


@dataclass(frozen=True)
class SweepFile:
    """What `ablate --config` reads: the base config's options, the values each compared option takes, the
    seeds, and the file's text (kept beside the sweep's results, and named in its report by its digest)."""

    path: Path
    text: str
    options: dict[str, Any]
    axes: dict[str, tuple[Any, ...]]  # option name -> the values compared, e.g. {"hidden": (2, 10, 25, 50)}
    seeds: tuple[int, ...] | None

    @property
    def digest(self) -> str:
        return hashlib.sha256(self.text.encode()).hexdigest()[:12]


def read_sweep(path: Path) -> SweepFile:
    """A sweep file: options as in a config file, where a list of values for an option that `ablate` compares
    (`hidden = [2, 10, 25, 50]`, `objective = ["elbo", "iwae"]`) is an axis, and `seeds` a list of seeds."""
    path, text, data = _read(path)
    seeds = data.pop("seeds", None)
    if seeds is not None and (not isinstance(seeds, list) or not seeds or not all(_whole(s) and s >= 0 for s in seeds)):
        raise ConfigError(f"{path}: 'seeds' must be a list of whole numbers 0 or more, got {seeds!r}")
    options, axes = {}, {}
    for key, row, value in _items(path, data):
        if row.spec.axis is not None and isinstance(value, list):
            if not value:
                raise ConfigError(f"{path}: {key!r} lists no values to compare")
            axes[row.name] = tuple(_value(path, key, row, v) for v in value)
        else:
            options[row.name] = _value(path, key, row, value)
    return SweepFile(path, text, options, axes, tuple(seeds) if seeds is not None else None)


def _whole(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _parse(path: Path, text: str) -> dict[str, Any]:
    if path.suffix.lower() == ".json":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as e:
            raise ConfigError(f"{path}: not valid JSON ({e})") from None
    else:
        try:
            data = tomllib.loads(text)
        except tomllib.TOMLDecodeError as e:
            raise ConfigError(f"{path}: not valid TOML ({e}); a config file is TOML, or JSON ending .json") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: a config file holds options by name, not a {type(data).__name__}")
    return data


def _value(path: Path, key: str, row: Row, value: Any) -> Any:
    """A file's value as the option takes it: a list of whole numbers as a tuple, a whole number as a float."""
    if row.kind is tuple:
        if not isinstance(value, list) or not all(_whole(v) for v in value):
            raise ConfigError(f"{path}: {key!r} must be a list of whole numbers, got {value!r}")
        return tuple(value)
    if row.kind is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, bool) != (row.kind is bool) or not isinstance(value, row.kind):
        raise ConfigError(f"{path}: {key!r} must be {_noun(row)}, got {value!r}")
    return value


def _noun(row: Row) -> str:
    if row.spec.choices is not None:
        return "one of " + ", ".join(c.value for c in row.spec.choices)
    return {int: "a whole number", float: "a number", str: "a string", bool: "true or false"}[row.kind]
