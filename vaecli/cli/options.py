"""Options shared by commands, declared once, and how a command gets its model.

Every command that needs a trained model takes the training options through
`@training_options`: it receives them as one `TrainingOptions` and calls
`obtain_run`, which loads `--model` or reuses (else trains) the run of that
config from the run store.
"""

import functools
import inspect
import math
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console
from typer.core import TyperCommand

from vaecli.config import (
    LEARNING_RATES,
    MAX_K,
    SCHEDULE_LR,
    DatasetName,
    Device,
    LrSchedule,
    ModelConfig,
    ObjectiveName,
    Precision,
    Recon,
    TrainConfig,
)

if TYPE_CHECKING:
    from vaecli.cli.display import TrainingDisplay
    from vaecli.core.data import Dataset
    from vaecli.engine.observer import Observers
    from vaecli.store.checkpoint import Run
    from vaecli.store.lock import Holder
    from vaecli.store.runs import Outcome


def _is_number(token: str) -> bool:
    try:
        float(token)
    except ValueError:
        return False
    return True


def join_number_lists(args: list[str], names: tuple[str, ...], words: tuple[str, ...] = ()) -> list[str]:
    """['--layers', '512', '256'] -> ['--layers', '512,256'] for the options in `names`; for an option in `words`
    (which wins over `names`), the values that are not options: ['--objective', 'elbo', 'iwae']."""
    joined: list[str] = []
    i = 0
    while i < len(args):
        joined.append(args[i])
        i += 1
        if joined[-1] in names or joined[-1] in words:
            end = i
            value = (lambda arg: not arg.startswith("-")) if joined[-1] in words else _is_number
            while end < len(args) and value(args[end]):
                end += 1
            if end > i:
                joined.append(",".join(args[i:end]))
                i = end
    return joined


def number_lists(*names: str, words: tuple[str, ...] = ()) -> type[TyperCommand]:
    """A command class that reads `--opt 1 2 3` as `--opt 1,2,3` for the options `names` (and `--opt a b` as
    `--opt a,b` for those in `words`).

    The homework writes lists this way; a plain Typer list option would need the
    flag before every value. Declare such an option as `str` and parse it with
    parse_ints / parse_floats.
    """

    class NumberListCommand(TyperCommand):
        def parse_args(self, ctx: Any, args: list[str]) -> list[str]:
            return super().parse_args(ctx, join_number_lists(args, names, words))

    return NumberListCommand


def number_problem(value: float, minimum: float = -math.inf) -> str | None:
    """What is wrong with `value` for a number option with this `minimum`, or None: one wording for all.

    NaN passes a plain `value < minimum` check (and click's min=), so finiteness is checked first.
    """
    if math.isfinite(value) and value >= minimum:
        return None
    bound = f" ≥ {minimum:g}" if math.isfinite(minimum) else ""
    return f"must be a finite number{bound}, got {value:g}"


def at_least(minimum: float) -> Callable[[typer.CallbackParam, float], float]:
    """A click callback refusing NaN, infinities and values below `minimum` with number_problem's line.

    None, an optional option not given, passes.
    """

    def check(param: typer.CallbackParam, value: float) -> float:
        if value is None:
            return value
        problem = number_problem(value, minimum)
        if problem:
            raise typer.BadParameter(problem, param_hint=param.opts[0])
        return value

    return check


def _parse_numbers(text: str, option: str, kind: type, minimum: float) -> tuple:
    try:
        values = tuple(kind(v) for v in text.split(",") if v.strip())
    except ValueError:
        noun = "whole numbers" if kind is int else "numbers"
        raise typer.BadParameter(f"expected {noun}, got {text!r}", param_hint=option) from None
    if not values:
        raise typer.BadParameter("give at least one number", param_hint=option)
    problems = [number_problem(v, minimum) for v in values] if kind is float else []
    problem = next(filter(None, problems), None)
    if problem:
        raise typer.BadParameter(problem, param_hint=option)
    if min(values) < minimum:
        raise typer.BadParameter(f"every value must be at least {minimum:g}, got {min(values):g}", param_hint=option)
    return values


def parse_ints(text: str, option: str, minimum: int = 1) -> tuple[int, ...]:
    """'512,256' -> (512, 256), each at least `minimum`."""
    return _parse_numbers(text, option, int, minimum)


def parse_floats(text: str, option: str, minimum: float = float("-inf")) -> tuple[float, ...]:
    """'1,5,10' -> (1.0, 5.0, 10.0), each at least `minimum`."""
    return _parse_numbers(text, option, float, minimum)


HiddenOpt = Annotated[
    int, typer.Option("--hidden", "-H", min=1, help="Latent size H (mu and logvar each have H units).")
]
LamOpt = Annotated[
    float,
    typer.Option("--lam", callback=at_least(0.0), help="Weight of the KL term (≥ 0): loss = recon + lam * KL."),
]
ObjectiveOpt = Annotated[
    ObjectiveName,
    typer.Option(
        help="elbo: recon + lam * KL, with the variants below; iwae: the importance-weighted bound with --k samples."
    ),
]
KOpt = Annotated[
    int, typer.Option("--k", min=1, max=MAX_K, help="Importance samples per image, for --objective iwae (1: the ELBO).")
]
KlWarmupOpt = Annotated[
    int,
    typer.Option(min=0, metavar="E", help="KL warm-up: the KL weight rises linearly from 0 to lam over E epochs."),
]
FreeBitsOpt = Annotated[
    float,
    typer.Option(callback=at_least(0.0), metavar="F", help="Free bits: each latent dimension's KL counts as ≥ F nats."),
]
CapacityOpt = Annotated[
    float,
    typer.Option(callback=at_least(0.0), metavar="C", help="Capacity: the KL term is lam * |KL - C(t)|, C(t) up to C."),
]
CapacityEpochsOpt = Annotated[
    int, typer.Option(min=0, metavar="E", help="Epochs over which C(t) rises from 0 to --capacity (0: at once).")
]
EpochsOpt = Annotated[int, typer.Option(min=1, help="Passes over the training set.")]
LayersOpt = Annotated[
    str,
    typer.Option(
        metavar="N [N ...]",
        show_default="512 256",
        help="Encoder hidden layer sizes (decoder mirrors them), e.g. --layers 512 256.",
    ),
]
ReconOpt = Annotated[
    Recon, typer.Option(help="Likelihood: bernoulli (BCE on logits) or gaussian (summed squared error).")
]
BatchOpt = Annotated[int, typer.Option(min=1, help="Images per optimizer step.")]
LrOpt = Annotated[
    float | None,
    typer.Option(
        show_default=f"{LEARNING_RATES['cosine']:g}; {LEARNING_RATES['constant']:g} with --lr-schedule constant",
        help="Adam's learning rate (> 0), the peak of a schedule.",
    ),
]
LrScheduleOpt = Annotated[
    LrSchedule,
    typer.Option(
        help="Adam's learning rate over the fit: constant; cosine (a short warm-up, then down to 0 at the "
        "last epoch); onecycle (up over 30 % of the fit, then down)."
    ),
]
SeedOpt = Annotated[
    int, typer.Option(min=0, help="Seed for init, shuffling and noise; same seed on CPU, same weights.")
]
DatasetOpt = Annotated[DatasetName, typer.Option(help="mnist or fashion-mnist.")]
BinarizeOpt = Annotated[
    bool, typer.Option("--binarize", help="Dynamic binarization: a fresh Bernoulli draw of every batch.")
]
PrecisionOpt = Annotated[
    Precision,
    typer.Option(
        help="bf16: the layers in bfloat16 autocast (weights and Adam stay fp32); "
        "auto: bf16 where the CPU or GPU has native bfloat16 (AVX512-BF16, AMX, Ampere+), else fp32."
    ),
]
CompileOpt = Annotated[
    bool, typer.Option("--compile", help="torch.compile the training step (costs a compilation up front).")
]
DeviceOpt = Annotated[Device, typer.Option(help="auto picks CUDA when present.")]
DataDirOpt = Annotated[
    Path | None,
    typer.Option(help="Folder holding MNIST/raw/*-ubyte.", show_default="$VAECLI_DATA_DIR, else ~/.cache/vaecli/data"),
]
DownloadOpt = Annotated[
    bool, typer.Option("--download", help="Download the data into --data-dir when it is missing there.")
]
RunsDirOpt = Annotated[
    Path | None, typer.Option(help="Where runs are kept and found.", show_default="$VAECLI_RUNS, else ./runs")
]
ForceOpt = Annotated[bool, typer.Option("--force", help="Train again even if a finished run with this config exists.")]
ModelOpt = Annotated[
    Path | None,
    typer.Option(
        "--model",
        "-m",
        help="A run folder or model.safetensors to use; without it the training options pick the run.",
    ),
]
QuietOpt = Annotated[bool, typer.Option("--quiet", "-q", help="Print nothing but errors.")]
WaitOpt = Annotated[
    float | None,
    typer.Option(
        "--wait",
        metavar="SECONDS",
        callback=at_least(0.0),
        show_default="until it is done",
        help="How long to wait for another process that is training this run, then reuse it "
        "(0: not at all, exit 1 saying who trains it).",
    ),
]

# name -> (annotation, default) of every training option, in the order --help shows them
TRAINING_OPTIONS: dict[str, tuple[Any, Any]] = {
    "hidden": (HiddenOpt, 2),
    "lam": (LamOpt, 1.0),
    "objective": (ObjectiveOpt, ObjectiveName.elbo),
    "k": (KOpt, 1),
    "kl_warmup": (KlWarmupOpt, 0),
    "free_bits": (FreeBitsOpt, 0.0),
    "capacity": (CapacityOpt, 0.0),
    "capacity_epochs": (CapacityEpochsOpt, 0),
    "epochs": (EpochsOpt, 20),
    "layers": (LayersOpt, "512,256"),
    "recon": (ReconOpt, Recon.bernoulli),
    "batch_size": (BatchOpt, 128),
    "lr": (LrOpt, None),
    "lr_schedule": (LrScheduleOpt, LrSchedule.cosine),
    "seed": (SeedOpt, 0),
    "dataset": (DatasetOpt, DatasetName.mnist),
    "binarize": (BinarizeOpt, False),
    "precision": (PrecisionOpt, Precision.auto),
    "compile": (CompileOpt, False),
    "device": (DeviceOpt, Device.auto),
    "data_dir": (DataDirOpt, None),
    "download": (DownloadOpt, False),
    "runs_dir": (RunsDirOpt, None),
    "force": (ForceOpt, False),
}


@dataclass(frozen=True)
class TrainingOptions:
    """What the training options say: a config, and where and how to train it."""

    config: TrainConfig
    device: str
    data_dir: Path | None
    download: bool | None  # None: only into the default data folder
    runs_dir: Path | None
    force: bool

    @classmethod
    def from_values(cls, v: dict[str, Any]) -> "TrainingOptions":
        config = TrainConfig(
            model=ModelConfig(
                latent_dim=v["hidden"], hidden_layers=parse_ints(v["layers"], "--layers"), recon=v["recon"].value
            ),
            lam=v["lam"],
            epochs=v["epochs"],
            batch_size=v["batch_size"],
            lr=SCHEDULE_LR if v["lr"] is None else v["lr"],
            lr_schedule=v["lr_schedule"].value,
            seed=v["seed"],
            dataset=v["dataset"].value,
            binarize=v["binarize"],
            precision=v["precision"].value,
            compile=v["compile"],
            objective=v["objective"].value,
            k=v["k"],
            kl_warmup=v["kl_warmup"],
            free_bits=v["free_bits"],
            capacity=v["capacity"],
            capacity_epochs=v["capacity_epochs"],
        )
        return cls(config, v["device"].value, v["data_dir"], v["download"] or None, v["runs_dir"], v["force"])


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


# the training options that `ablate` also takes as lists of values to compare (beside --hidden and --lam)
SWEEP_LISTS = ("objective", "k", "kl_warmup", "free_bits", "capacity", "capacity_epochs", "lr_schedule")


def _list_option(name: str) -> Any:
    """TRAINING_OPTIONS' option `name` as one that takes several values: `--free-bits 0 0.5 1`."""
    annotation, _ = TRAINING_OPTIONS[name]
    info = annotation.__metadata__[0]
    flags = info.param_decls or ("--" + name.replace("_", "-"),)
    return Annotated[
        str | None, typer.Option(*flags, metavar="V [V ...]", help=f"{info.help} Several values: compared.")
    ]


def _parse_list(name: str, text: str) -> tuple:
    """The values of list option `name`, each checked as the single option checks it."""
    annotation, _ = TRAINING_OPTIONS[name]
    kind = annotation.__origin__
    flag = "--" + name.replace("_", "-")
    if isinstance(kind, type) and issubclass(kind, Enum):  # --objective, --lr-schedule
        values = tuple(v.strip() for v in text.split(",") if v.strip())
        bad = [v for v in values if v not in {k.value for k in kind}]
        if bad or not values:
            choices = ", ".join(k.value for k in kind)
            raise typer.BadParameter(f"each value must be one of {choices}; got {text!r}", param_hint=flag)
        return values
    return parse_ints(text, flag, minimum=0) if kind is int else parse_floats(text, flag, minimum=0.0)


def sweep_lists(command: Callable[..., Any]) -> Callable[..., Any]:
    """Add the SWEEP_LISTS options to `command` as lists; it receives the given ones as `vary: {name: values}`."""
    lists = [
        inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, annotation=_list_option(name), default=None)
        for name in SWEEP_LISTS
    ]

    def convert(kwargs: dict[str, Any]) -> dict[str, Any]:
        given = {name: kwargs.pop(name) for name in SWEEP_LISTS}
        return {"vary": {name: _parse_list(name, text) for name, text in given.items() if text is not None}, **kwargs}

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
        store=options.runs_dir,
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
