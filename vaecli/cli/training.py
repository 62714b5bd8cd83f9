"""How a command gets its config and its model: the training options, the sweep lists, and obtain_run.

Every command that needs a trained model takes the training options through
`@training_options`: it receives them as one `TrainingOptions` and calls
`obtain_run`, which loads `--model` or reuses (else trains) the run of that
config from the run store. The options themselves come from the table of
options (vaecli/options.py), so a new config field is a new option here too.
"""

import functools
import inspect
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich.console import Console

from vaecli.cli.params import PLACE_OPTIONS, config_option, config_value, list_option, list_values
from vaecli.config import TrainConfig
from vaecli.options import AXES, BY_NAME, ROWS, build

if TYPE_CHECKING:
    from vaecli.cli.display import TrainingDisplay
    from vaecli.core.data import Dataset
    from vaecli.engine.observer import Observers
    from vaecli.store.checkpoint import Run
    from vaecli.store.lock import Holder
    from vaecli.store.runs import Outcome

# name -> (annotation, default) of every training option, in the order --help shows them: the config's, then
# where and how it is trained
TRAINING_OPTIONS: dict[str, tuple[Any, Any]] = {row.name: config_option(row) for row in ROWS} | PLACE_OPTIONS


@dataclass(frozen=True)
class TrainingOptions:
    """What the training options say: a config, and where and how to train it."""

    config: TrainConfig
    device: str
    data_dir: Path | None
    download: bool | None  # None: only into the default data folder
    store: Path  # the run store, resolved once here
    force: bool

    @classmethod
    def from_values(cls, v: dict[str, Any]) -> "TrainingOptions":
        from vaecli.store.runs import store_path

        config = build({row.name: config_value(row, v[row.name]) for row in ROWS})
        return cls(
            config, v["device"].value, v["data_dir"], v["download"] or None, store_path(v["runs_dir"]), v["force"]
        )


def training_options(command: Callable[..., Any] | None = None, *, exclude: tuple[str, ...] = ()) -> Callable[..., Any]:
    """Add every training option to `command`, which receives them as `options: TrainingOptions`.

    Options in `exclude` are left out (the command declares its own) and take
    their defaults in `options`. Use as `@training_options` or
    `@training_options(exclude=("lam",))`.
    """
    if command is None:
        return functools.partial(training_options, exclude=exclude)
    shared = [
        inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, annotation=annotation, default=default)
        for name, (annotation, default) in TRAINING_OPTIONS.items()
        if name not in exclude
    ]

    def convert(kwargs: dict[str, Any]) -> dict[str, Any]:
        values = {
            name: kwargs.pop(name) if name not in exclude else default
            for name, (_, default) in TRAINING_OPTIONS.items()
        }
        return {"options": TrainingOptions.from_values(values), **kwargs}

    return _with_parameters(command, "options", shared, convert)


def _with_parameters(
    command: Callable[..., Any],
    replaced: str,
    added: list[inspect.Parameter],
    convert: Callable[[dict[str, Any]], dict[str, Any]],
) -> Callable[..., Any]:
    """`command` with its parameter `replaced` swapped for the parameters `added`, as Typer reads them.

    Typer reads a command's parameters from its signature, so the wrapper's is the
    command's own followed by `added`; `convert` turns the values Typer passes into
    the command's own arguments.
    """
    own = [p for p in inspect.signature(command).parameters.values() if p.name != replaced]

    @functools.wraps(command)
    def wrapper(**kwargs: Any) -> Any:
        return command(**convert(kwargs))

    parameters = own + added
    wrapper.__signature__ = inspect.Signature(parameters)  # type: ignore[attr-defined]
    wrapper.__annotations__ = {p.name: p.annotation for p in parameters}
    return wrapper


def given_here(ctx: Any, name: str) -> bool:
    """Whether the command's parameter `name` was given on the command line, not left at its default."""
    source = ctx.get_parameter_source(name)  # None for a name the command does not have
    return source is not None and source.name != "DEFAULT"


def with_file(options: TrainingOptions, path: Path, given: Callable[[str], bool]) -> TrainingOptions:
    """`options` with the config file's values under the ones the command line gave (`given(name)`)."""
    from vaecli.configfile import read_options

    return with_values(options, read_options(path), given, path)


def with_values(
    options: TrainingOptions, values: dict[str, Any], given: Callable[[str], bool], path: Path
) -> TrainingOptions:
    """`options` with `values` (read from the file at `path`) under the ones the command line gave."""
    from dataclasses import replace

    from vaecli.configfile import in_keys
    from vaecli.errors import ConfigError

    values = dict(values)
    config = options.config
    for row in ROWS:
        if given(row.name):
            values[row.name] = None if row.field == "lr" and config.lr_follows_schedule else row.get(config)
    try:
        return replace(options, config=build(values))
    except ConfigError as e:
        raise ConfigError(in_keys(path, str(e))) from None


# the training options that `ablate` also takes as lists of values to compare (beside --hidden and --lam, which
# it declares with the homework's own help)
SWEEP_LISTS = tuple(row.name for row in AXES if row.name not in ("hidden", "lam"))


def sweep_lists(command: Callable[..., Any]) -> Callable[..., Any]:
    """Add the SWEEP_LISTS options to `command` as lists; it receives the given ones as `vary: {name: values}`."""
    lists = [
        inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, annotation=list_option(BY_NAME[name]), default=None)
        for name in SWEEP_LISTS
    ]

    def convert(kwargs: dict[str, Any]) -> dict[str, Any]:
        given = {name: kwargs.pop(name) for name in SWEEP_LISTS}
        vary = {name: list_values(BY_NAME[name], text) for name, text in given.items() if text is not None}
        return {"vary": vary, **kwargs}

    return _with_parameters(command, "vary", lists, convert)


def train_with_display(
    options: TrainingOptions,
    display: "TrainingDisplay | Observers",
    out: Path | None = None,
    resume: bool = False,
    data: "Dataset | None" = None,
    wait: float | None = None,
    on_wait: "Callable[[Holder], None] | None" = None,
) -> "Outcome":
    """The run for `options`: reused from the store, or trained with progress shown by `display`.

    `wait`: how long to wait for another process training it (None: until it is done),
    `on_wait` told when the wait begins.
    """
    from vaecli.store.runs import RunRequest, train_or_reuse

    request = RunRequest(
        options.config,
        out=out,
        store=options.store,
        force=options.force,
        resume=resume,
        device=options.device,
        data_dir=options.data_dir,
        download=options.download,
        wait=wait,
    )
    try:
        return train_or_reuse(request, data=data, observer=display, on_wait=on_wait)
    finally:
        display.close()


def one_model(run: Path | None, model: Path | None) -> Path | None:
    """The run a command was given, as its RUN argument or as --model (either, not both)."""
    if run is not None and model is not None and run != model:
        import typer

        raise typer.BadParameter(f"give the run once, as RUN or as --model; got {run} and {model}", param_hint="RUN")
    return run if run is not None else model


def obtain_run(options: TrainingOptions, model: Path | None, console: Console) -> "Run":
    """The model a command works on: `--model` if given, else the store's run for the options."""
    if model is not None:
        from vaecli.store.checkpoint import load_run

        return load_run(model)
    from vaecli.cli.display import TrainingDisplay

    display = TrainingDisplay(console)
    outcome = train_with_display(options, display, on_wait=display.waiting)
    if outcome.reused:
        console.print(f"Using the finished run {outcome.run.path}")
    return outcome.run
