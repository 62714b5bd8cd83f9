"""The table of options: every config field a user sets, with its flag, default, range, help and sweep axis.

Made from the config dataclasses themselves (each field's config.Option), so an
option is declared once, beside its field. The CLI's `train` options and
`ablate` lists, the config files that `--config` reads and `--print-config`
writes, and the reproduce line of a sweep are all made from this table; a
field added to a config is in every one of them.
"""

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, fields, replace
from typing import Any

from vaecli.config import SCHEDULE_LR, ModelConfig, TrainConfig
from vaecli.errors import ConfigError
from vaecli.fields import Option, default_of, option_of

# the order of --help and of a command line: the homework's two first, then the objective, then the rest
ORDER = (
    "latent_dim",
    "lam",
    "objective",
    "k",
    "kl_warmup",
    "free_bits",
    "capacity",
    "capacity_epochs",
    "epochs",
    "hidden_layers",
    "recon",
    "batch_size",
    "lr",
    "lr_schedule",
    "seed",
    "dataset",
    "binarize",
    "precision",
    "compile",
)


@dataclass(frozen=True)
class Row:
    """One option: a config field as a user names it (`--hidden`, `hidden = 2` in a file)."""

    field: str  # the config field: "latent_dim"
    in_model: bool  # a field of ModelConfig, not of TrainConfig
    kind: type  # int, float, str, bool, or tuple (a list of whole numbers)
    default: Any
    spec: Option

    @property
    def flag(self) -> str:
        return self.spec.flag or "--" + self.field.replace("_", "-")

    @property
    def name(self) -> str:
        """The option's name: the CLI's parameter and a config file's key ("hidden", "layers", "lam")."""
        return self.flag.removeprefix("--").replace("-", "_")

    def get(self, config: TrainConfig) -> Any:
        return getattr(config.model if self.in_model else config, self.field)

    def words(self, value: Any) -> list[str]:
        """`value` on a command line: ['--lam', '5'], ['--layers', '512', '256'], ['--binarize'] or []."""
        if self.kind is bool:
            return [self.flag] if value else []
        values = value if isinstance(value, tuple) else (value,)
        return [self.flag, *map(value_text, values)]


def value_text(value: Any) -> str:
    """A value as a command line or a table writes it: 5, not 5.0; 0.003, not 0.0030000000000000001."""
    if isinstance(value, float):
        short = f"{value:g}"
        return short if float(short) == value else repr(value)
    return str(value)


def _kind(annotation: Any) -> type:
    text = str(annotation)
    for name, kind in (("tuple", tuple), ("bool", bool), ("int", int), ("float", float), ("str", str)):
        if text.startswith(name) or text == f"<class '{name}'>":
            return kind
    raise TypeError(f"no option kind for {annotation!r}")


def _rows() -> tuple[Row, ...]:
    rows = []
    for cls, in_model in ((ModelConfig, True), (TrainConfig, False)):
        for f in fields(cls):
            spec = option_of(f)
            if spec is not None:
                rows.append(Row(f.name, in_model, _kind(f.type), default_of(f), spec))
    rank = {name: i for i, name in enumerate(ORDER)}
    return tuple(sorted(rows, key=lambda row: rank.get(row.field, len(rank))))  # a field not in ORDER: last


ROWS = _rows()
BY_NAME = {row.name: row for row in ROWS}
BY_FIELD = {row.field: row for row in ROWS}
AXES = tuple(row for row in ROWS if row.spec.axis is not None)  # what `ablate` may vary


def flag_of(name: str) -> str | None:
    """The flag of a config field or option name ("latent_dim" or "hidden" -> "--hidden"), None if it is neither."""
    row = BY_FIELD.get(name) or BY_NAME.get(name)
    return row.flag if row else None


def build(values: Mapping[str, Any], base: TrainConfig | None = None) -> TrainConfig:
    """The config that `values` ({option name: value}) make of `base` (default: the defaults).

    `lr` None is the schedule's own rate. Values are checked as TrainConfig checks them.
    """
    base = base or TrainConfig()
    unknown = sorted(set(values) - set(BY_NAME))
    if unknown:
        raise ConfigError(f"unknown options: {', '.join(unknown)}")
    model: dict[str, Any] = {}
    train: dict[str, Any] = {}
    for name, value in values.items():
        row = BY_NAME[name]
        if row.field == "lr" and value is None:
            value = SCHEDULE_LR
        (model if row.in_model else train)[row.field] = value
    return replace(base, model=replace(base.model, **model), **train)


def differs(row: Row, config: TrainConfig, default: TrainConfig) -> bool:
    """Whether `config` sets `row` to other than `default` does (an lr left to the schedule is not set)."""
    if row.field == "lr":
        return not config.lr_follows_schedule
    return row.get(config) != row.get(default)


def command_words(config: TrainConfig, skip: Iterable[str] = ()) -> list[str]:
    """The options that turn the defaults into `config` on a command line, in table order ('--lam', '5', ...).

    `skip`: fields left out (a sweep gives its axes as lists).
    """
    default, skipped = TrainConfig(), set(skip)
    words: list[str] = []
    for row in ROWS:
        if row.field not in skipped and differs(row, config, default):
            words += row.words(row.get(config))
    return words
