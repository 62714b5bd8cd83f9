"""Ablations: a base config varied over latent sizes, lam values and seeds.

Each member is an ordinary run of the run store, so finished members are reused
and an interrupted sweep resumes where it stopped. run_sweep finds the members
that need training and hands them to an executor (studies/executors.py): one by
one, side by side in threads, or stacked; each member ends as it would alone.
"""

import hashlib
import itertools
import math
import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch

from vaecli import options
from vaecli.choices import MAX_JOBS, STACK_MODES
from vaecli.config import TrainConfig
from vaecli.core.data import Dataset
from vaecli.core.model import VAE
from vaecli.engine.device import resolve_device
from vaecli.engine.records import EpochRecord
from vaecli.engine.steps import stackable
from vaecli.errors import ConfigError, VaeError
from vaecli.options import Row
from vaecli.store.checkpoint import load_run
from vaecli.store.runs import is_finished, run_folder
from vaecli.studies.executors import Executor, FitContext, OneByOne, SideBySide, Stacked
from vaecli.studies.factor_scores import NAMES as DISENTANGLEMENT
from vaecli.studies.factor_scores import stored_disentanglement
from vaecli.studies.observer import SweepObserver
from vaecli.studies.scores import RunMetrics, stored_scores


@dataclass(frozen=True)
class Axis:
    """An option a sweep may vary (a row of the table of options whose Option has an axis): its column in the
    table, its flag, its part of a folder name, its field."""

    row: Row

    @property
    def label(self) -> str:  # the table's column and a panel's label: "H", "lam", "free bits"
        return self.row.spec.axis[0] if self.row.spec.axis else self.row.name

    @property
    def short(self) -> str:  # in the sweep's folder name: "fb0-0.5-1"
        return self.row.spec.axis[1] if self.row.spec.axis else self.row.name

    @property
    def flag(self) -> str:
        return self.row.flag

    @property
    def field(self) -> str:  # the config field it sets; latent_dim is the model's
        return self.row.field

    def get(self, config: TrainConfig) -> Any:
        return self.row.get(config)

    @staticmethod
    def text(value: Any) -> str:
        return f"{value:g}" if isinstance(value, float) else str(value)


# every option a sweep may vary, by its option name, H and lam first
AXES = {row.name: Axis(row) for row in options.AXES}

AXIS_LABELS = {axis.label for axis in AXES.values()}


@dataclass(frozen=True)
class Sweep:
    """The base config and the values that vary; members are their cross product.

    `hidden` and `lams` are the homework's two axes; `vary` holds any other option of
    AXES with its values, e.g. (("free_bits", (0.0, 0.5, 1.0)),).
    """

    base: TrainConfig
    hidden: tuple[int, ...] = ()  # empty: the base's latent size
    lams: tuple[float, ...] = ()  # empty: the base's lam
    seeds: tuple[int, ...] = (0,)
    vary: tuple[tuple[str, tuple[Any, ...]], ...] = ()

    def __post_init__(self) -> None:
        if not self.seeds:
            raise ConfigError("a sweep needs at least one seed")
        for name, values in self.vary:
            if name not in AXES or name in ("hidden", "lam"):
                raise ConfigError(f"a sweep cannot vary {name!r}; it varies {', '.join(AXES)}")
            if not values:
                raise ConfigError(f"`{AXES[name].field}` needs at least one value")
        lists = [("`latent_dim`", self.hidden), ("`lam`", self.lams), ("`seeds`", self.seeds)]
        for flag, values in lists + [(f"`{AXES[n].field}`", v) for n, v in self.vary]:
            if len(set(values)) != len(values):
                raise ConfigError(f"{flag} lists a value twice: {' '.join(map(Axis.text, values))}")

    @property
    def axes(self) -> list[tuple[str, tuple[Any, ...]]]:
        """Every option and its values, in the order of a setting: H, lam, then the others given."""
        hidden = self.hidden or (self.base.model.latent_dim,)
        return [("hidden", hidden), ("lam", self.lams or (self.base.lam,)), *self.vary]

    @property
    def settings(self) -> list[tuple[Any, ...]]:
        """The values of each setting, as the axes list them: (H, lam, ...), in the order given."""
        return list(itertools.product(*(values for _, values in self.axes)))

    def setting_of(self, config: TrainConfig) -> tuple[Any, ...]:
        """The setting a member belongs to."""
        return tuple(AXES[name].get(config) for name, _ in self.axes)

    def members(self) -> list[TrainConfig]:
        """One config per setting and seed; invalid values fail here, before any training."""
        members = []
        for setting in self.settings:
            fields = {AXES[name].field: value for (name, _), value in zip(self.axes, setting, strict=True)}
            model = replace(self.base.model, latent_dim=fields.pop("latent_dim"))
            # all of a setting's values at once: one alone may not be a valid config (k = 5 before iwae)
            members += [replace(self.base, model=model, seed=seed, **fields) for seed in self.seeds]
        return members

    @property
    def varies(self) -> list[str]:
        """What the sweep compares, as the table labels it: 'H', 'lam', 'free bits', ... (a lone member still
        names its axis)."""
        given = [("H", self.hidden), ("lam", self.lams), *((AXES[n].label, v) for n, v in self.vary)]
        return [label for label, values in given if values] or ["H"]

    def name(self) -> str:
        """A folder name that says what was swept, with a hash of the whole sweep."""
        parts = [AXES[name].short + "-".join(map(Axis.text, values)) for name, values in self.given]
        digest = hashlib.sha256("".join(m.digest() for m in self.members()).encode()).hexdigest()[:8]
        return f"ablate-{'-'.join(parts) or 'base'}-e{self.base.epochs}-{digest}"

    @property
    def given(self) -> list[tuple[str, tuple[Any, ...]]]:
        """The axes given values to compare, by option name, in the order of a setting."""
        return [(name, values) for name, values in [("hidden", self.hidden), ("lam", self.lams), *self.vary] if values]

    def command(self) -> str:
        """The `vaecli ablate` command line that reproduces this sweep exactly: the axes, the seeds, then every
        option of the base config that is not its default (the table of options names them all)."""
        words, given = ["vaecli", "ablate"], dict(self.given)
        for name in AXES:  # in the table's order, whatever the order they were given in
            if name in given:
                words += [AXES[name].flag, *map(options.value_text, given[name])]
        if self.seeds != (0,):
            words += ["--seeds", *map(str, self.seeds)]
        words += options.command_words(self.base, skip=[AXES[name].field for name, _ in self.given] + ["seed"])
        return " ".join(words)


@dataclass
class Member:
    """One member of a sweep: trained (or reused) with its test metrics, or failed with its error."""

    config: TrainConfig
    path: Path
    metrics: RunMetrics | None  # None: not scored (SweepOptions.iw_samples None) or failed
    train_seconds: float
    reused: bool
    history: list[EpochRecord] = field(default_factory=list)  # for the curves figure
    model: VAE | None = None  # the trained VAE (on the CPU), for the comparison figures
    error: VaeError | None = None  # why it failed (it diverged, say): it was not saved

    def label(self, varies: Sequence[str]) -> str:
        """'H=2, lam=40' (the labels of the axes a sweep varies)."""
        by_label = {axis.label: axis for axis in AXES.values()}
        return ", ".join(f"{v}={Axis.text(by_label[v].get(self.config))}" for v in varies)

    @property
    def failed(self) -> bool:
        return self.error is not None


@dataclass(frozen=True)
class SweepOptions:
    """Where a sweep's members live and how they are trained and scored."""

    store: Path | None = None
    device: str = "auto"
    force: bool = False  # train every member again
    iw_samples: int | None = 100  # samples of the importance-weighted bound; None: no test scores
    metric_scale: float = 1.0  # share of disentanglement_lib's sample counts, on a data set with factors
    stack: str = "auto"  # "on", "off", or "auto": where stacks_faster says so
    jobs: int | None = None  # members side by side on the CPU; None: concurrent_jobs decides

    def __post_init__(self) -> None:
        if self.stack not in STACK_MODES:
            raise ConfigError(f"`stack` must be one of {', '.join(STACK_MODES)}; got {self.stack!r}")


def run_sweep(
    sweep: Sweep,
    data: Dataset,
    options: SweepOptions | None = None,
    *,
    executor: Executor | None = None,
    observer: SweepObserver | None = None,
) -> list[Member]:
    """Train (or reuse from the store) and score every member, in the sweep's order.

    The members that need training go to `executor` (default: choose_executor), which
    saves each as soon as it finishes, so an interrupted sweep keeps them; running it
    again trains only the rest. A member that diverged comes back with its error and
    no metrics; the others are unaffected.
    """
    options = options or SweepOptions()
    observer = observer or SweepObserver()
    dev = resolve_device(options.device)
    configs = sweep.members()
    waiting = {i: c for i, c in enumerate(configs) if not is_finished(c, run_folder(c, options.store), options.force)}
    if executor is None:
        executor = choose_executor(options, dev, configs[0], len(waiting))
    context = FitContext(
        data,
        store=options.store,
        force=options.force,
        device=options.device,  # as asked: a fit resolves it where it enters the engine, a cluster on its workers
        observer=observer,
        iw_samples=options.iw_samples,
    )
    fitted = executor.fit(waiting, context) if waiting else {}
    members = []
    for index, config in enumerate(configs):
        folder = run_folder(config, options.store)
        outcome = fitted.get(index)
        if isinstance(outcome, VaeError):
            members.append(Member(config, folder, None, 0.0, False, error=outcome))
            continue
        run = outcome.run if outcome is not None else load_run(folder)
        if outcome is None or outcome.reused:
            observer.on_reused(index, run.path)
        metrics = None
        if options.iw_samples is not None:
            observer.on_scoring(index, config)
            metrics = stored_scores(run, data, options.iw_samples, seed=config.seed, device=dev)
            if data.factors is not None:  # every member on the same draws of factors: seed 0
                factors = stored_disentanglement(run, data, seed=0, scale=options.metric_scale)
                metrics = replace(metrics, disentanglement=factors)
        run.model.cpu()
        seconds = float(run.info.get("train_seconds") or 0.0)
        reused = outcome is None or outcome.reused
        members.append(Member(config, run.path, metrics, seconds, reused, list(run.history), run.model))
    return members


def choose_executor(options: SweepOptions, device: torch.device, config: TrainConfig, fits: int) -> Executor:
    """Stacked where asked for (or, with stack "auto", where stacks_faster), else side by side where
    concurrent_jobs gives more than one job, else one by one."""
    if options.stack == "on" and not stackable(config):
        raise ConfigError("`stack` on cannot `compile`; drop one of them")
    jobs = concurrent_jobs(options.jobs, device, config, fits)
    rest = SideBySide(jobs) if jobs > 1 else OneByOne()
    if options.stack == "on" or (options.stack == "auto" and stacks_faster(device)):
        return Stacked(rest)
    return rest


def concurrent_jobs(jobs: int | None, device: torch.device, config: TrainConfig, fits: int) -> int:
    """How many of `fits` fits of `config`'s kind train at once, one CPU thread each: `jobs` where asked
    (the CPU only), else one per CPU thread up to MAX_JOBS where there are 2 or more (two side by side
    ran 1.42 x the speed of one after another on 2 cores with 3-epoch members: benchmarks/bench_sweep.py),
    and 1 on a GPU, where stacking (--stack) fills the device instead."""
    if jobs is not None:
        if jobs < 1:
            raise ConfigError(f"`jobs` must be at least 1, got {jobs}")
        if jobs > 1 and device.type != "cpu":
            raise ConfigError(f"`jobs` trains members side by side on the CPU; on {device.type} use `stack` on")
        if jobs > 1 and config.compile:
            raise ConfigError("`jobs` cannot `compile`; drop one of them")
        return max(1, min(jobs, fits))
    threads = torch.get_num_threads()
    if device.type != "cpu" or config.compile or threads < 2:
        return 1
    return max(1, min(threads, MAX_JOBS, fits))


def stacks_faster(device: torch.device) -> bool:
    """Whether stacking members beats training them one by one on `device`, as benchmarks/bench_sweep.py measured.

    CUDA: one small MLP at batch 128 leaves a GPU mostly idle, and the stack
    fills it (not yet measured here: no GPU was at hand). CPU: stacked ran at
    1.34 x the speed of one by one on 2 cores (4 members, 3 epochs), but side by
    side (concurrent_jobs, the CPU default) at 1.42 x, so the CPU does not stack.
    """
    return device.type == "cuda"


def _disentanglement(name: str) -> Callable[[RunMetrics, Member], float]:
    return lambda s, m: (s.disentanglement or {}).get(name, math.nan)


# the columns of the metrics table: (name, value of a scored member)
def _columns(iw_samples: int, factors: bool = False) -> list[tuple[str, Callable[[RunMetrics, Member], float]]]:
    columns: list[tuple[str, Callable[[RunMetrics, Member], float]]] = [
        ("recon", lambda s, m: s.recon),
        ("KL", lambda s, m: s.kl),
        ("neg_elbo", lambda s, m: s.neg_elbo),
        (f"iw{iw_samples}_nll", lambda s, m: s.iw_nll),
        ("active_units", lambda s, m: s.active_units),
    ]
    if factors:
        columns += [(name, _disentanglement(name)) for name in DISENTANGLEMENT]
    return columns + [("train_seconds", lambda s, m: m.train_seconds)]


def first_seed(members: list[Member], sweep: Sweep) -> list[Member]:
    """One member per setting (its first seed that did not fail), in the sweep's order: the figures' panels.

    A setting whose every seed failed has no panel.
    """
    shown = []
    for setting in sweep.settings:
        shown += [m for m in members if sweep.setting_of(m.config) == setting and not m.failed][:1]
    return shown


def table_rows(members: list[Member], sweep: Sweep, iw_samples: int | None = None) -> list[dict[str, Any]]:
    """One row per setting: each metric's mean over seeds, and its standard deviation when seeds > 1.

    Failed members are left out of the means; a `failed` column counts them when any failed,
    and a setting whose every seed failed has NaN metrics. `iw_samples` names the bound's column
    (default: the members' own count).
    """
    iw = iw_samples or next((m.metrics.iw_samples for m in members if m.metrics is not None), 0)
    factors = any(m.metrics is not None and m.metrics.disentanglement for m in members)
    any_failed = any(m.failed for m in members)
    labels = [AXES[name].label for name, _ in sweep.axes]
    rows = []
    for setting in sweep.settings:
        group = [m for m in members if sweep.setting_of(m.config) == setting]
        scored = [(m.metrics, m) for m in group if m.metrics is not None]
        row: dict[str, Any] = dict(zip(labels, setting, strict=True))
        row["seeds"] = len(scored)
        if any_failed:
            row["failed"] = sum(m.failed for m in group)
        for name, value in _columns(iw, factors):
            values = [float(value(s, m)) for s, m in scored]
            row[name] = statistics.fmean(values) if values else math.nan
            if len(sweep.seeds) > 1:
                row[f"{name}_std"] = statistics.stdev(values) if len(values) > 1 else math.nan
        h = setting[0]
        if len(sweep.seeds) == 1:
            row["active_units"] = f"{row['active_units']:g}/{h}" if scored else "failed"
        row["kl_per_dim"] = [statistics.fmean(d) for d in zip(*(s.kl_per_dim for s, _ in scored), strict=True)]
        rows.append(row)
    return rows
