"""A config field's metadata and checks: what `vaecli/config.py`'s dataclasses declare per field.

`option(default, help, ...)` makes a dataclass field that carries its `Option`: the range and
choices it is checked against (`check_fields`, one line naming the field in backquotes), the
help and flag the command line shows, and the axis `ablate` sweeps it on.
"""

import math
from dataclasses import MISSING, Field, dataclass, field, fields
from enum import Enum
from typing import Any

from vaecli.errors import ConfigError


@dataclass(frozen=True)
class Option:
    """What a config field is to a user: checked here, shown by `--help`, swept by `ablate`.

    `flag` defaults to the field's name with dashes; `axis` is (label, short) for a
    field that `ablate` may vary: its table column and its part of a sweep's folder name.
    """

    help: str
    flag: str | None = None
    short: str | None = None  # "-H"
    minimum: float | None = None
    maximum: float | None = None
    above: bool = False  # the minimum itself is refused (a learning rate > 0)
    choices: type[Enum] | None = None
    metavar: str | None = None
    show_default: str | None = None
    axis: tuple[str, str] | None = None


def option(default: Any, help: str, **kwargs: Any) -> Any:
    """A dataclass field with its Option: `lam: float = option(1.0, "Weight of the KL term.", minimum=0.0)`."""
    return field(default=default, metadata={"option": Option(help, **kwargs)})


def option_of(f: Field) -> Option | None:
    return f.metadata.get("option")


def check_int(name: str, value: Any, minimum: float | None, maximum: float | None = None) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(f"`{name}` must be an integer, got {value!r}")
    if minimum is not None and value < minimum:
        raise ConfigError(f"`{name}` must be at least {minimum:g}, got {value}")
    if maximum is not None and value > maximum:
        raise ConfigError(f"`{name}` must be at most {maximum:g}, got {value}")


def check_float(name: str, value: Any, minimum: float | None, *, strict: bool = False) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ConfigError(f"`{name}` must be a finite number, got {value!r}")
    if minimum is not None and (value < minimum or (strict and value == minimum)):
        bound = "greater than" if strict else "at least"
        raise ConfigError(f"`{name}` must be {bound} {minimum:g}, got {value:g}")


def check_field(f: Field, value: Any) -> None:
    """The checks that a field's type and Option give: a type, a range, a choice."""
    spec = option_of(f)
    if spec is None:
        return
    if spec.choices is not None:
        choices = [c.value for c in spec.choices]
        if value not in choices:
            raise ConfigError(f"`{f.name}` must be one of {', '.join(choices)}; got {value!r}")
    elif f.type in (bool, "bool"):
        if not isinstance(value, bool):
            raise ConfigError(f"`{f.name}` must be true or false, got {value!r}")
    elif f.type in (int, "int"):
        check_int(f.name, value, spec.minimum, spec.maximum)
    elif f.type in (float, "float"):
        check_float(f.name, value, spec.minimum, strict=spec.above)


def check_fields(config: Any) -> None:
    for f in fields(config):
        check_field(f, getattr(config, f.name))


def check_keys(cls: type, data: Any) -> None:
    if not isinstance(data, dict):
        raise ConfigError(f"{cls.__name__} must be a JSON object, got {type(data).__name__}")
    unknown = set(data) - {f.name for f in fields(cls)}
    if unknown:
        raise ConfigError(f"{cls.__name__} has unknown keys: {', '.join(sorted(unknown))}")


def default_of(f: Field) -> Any:
    return f.default_factory() if f.default is MISSING else f.default  # type: ignore[operator]
