"""Ablations: a base config varied over latent sizes, lam values and seeds.

Each member is an ordinary run of the run store, so finished members are reused
and an interrupted sweep resumes where it stopped. Members that differ only in
latent size, lam and seed can train together as one stacked model
(vaecli/stacked.py) where that is faster; each still ends as it would alone.
"""

import csv
import hashlib
import io
import math
import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch

from vaecli.checkpoint import RESUME_FILE
from vaecli.config import DATASET_TITLES, STACK_MODES, TrainConfig
from vaecli.data import Dataset
from vaecli.errors import ConfigError
from vaecli.metrics import RunMetrics
from vaecli.runs import is_finished, run_folder, stored_scores, train_in_threads, train_or_reuse, train_together
from vaecli.stacked import stack_key, stackable
from vaecli.trainer import Observer, resolve_device

MAX_MEMBERS = 64  # beyond this a sweep needs an explicit yes
MAX_STACK = 16  # members per stacked group: bounds memory (weights, gradients and Adam state M times over)


@dataclass(frozen=True)
class Sweep:
    """The base config and the values that vary; members are their cross product."""

    base: TrainConfig
    hidden: tuple[int, ...] = ()  # empty: the base's latent size
    lams: tuple[float, ...] = ()  # empty: the base's lam
    seeds: tuple[int, ...] = (0,)

    def __post_init__(self) -> None:
        if not self.seeds:
            raise ConfigError("a sweep needs at least one seed")
        for name, values in (("--hidden", self.hidden), ("--lam", self.lams), ("--seeds", self.seeds)):
            if len(set(values)) != len(values):
                raise ConfigError(f"{name} lists a value twice: {' '.join(f'{v:g}' for v in values)}")

    @property
    def settings(self) -> list[tuple[int, float]]:
        """(latent size, lam) of each setting, in the order given."""
        hidden = self.hidden or (self.base.model.latent_dim,)
        lams = self.lams or (self.base.lam,)
        return [(h, lam) for h in hidden for lam in lams]

    def members(self) -> list[TrainConfig]:
        """One config per setting and seed; invalid values fail here, before any training."""
        return [
            replace(self.base, model=replace(self.base.model, latent_dim=h), lam=lam, seed=seed)
            for h, lam in self.settings
            for seed in self.seeds
        ]

    @property
    def varies(self) -> list[str]:
        """What the sweep compares: 'H', 'lam' or both (a lone member still names its axis)."""
        return [name for name, values in (("H", self.hidden), ("lam", self.lams)) if values] or ["H"]

    def name(self) -> str:
        """A folder name that says what was swept, with a hash of the whole sweep."""
        parts = []
        if self.hidden:
            parts.append("h" + "-".join(map(str, self.hidden)))
        if self.lams:
            parts.append("lam" + "-".join(f"{v:g}" for v in self.lams))
        digest = hashlib.sha256("".join(m.digest() for m in self.members()).encode()).hexdigest()[:8]
        return f"ablate-{'-'.join(parts) or 'base'}-e{self.base.epochs}-{digest}"

    def command(self) -> str:
        """The `vaecli ablate` command line that reproduces this sweep exactly."""
        default, base = TrainConfig(), self.base
        words = ["vaecli", "ablate"]
        if self.hidden:
            words += ["--hidden", *map(str, self.hidden)]
        elif base.model.latent_dim != default.model.latent_dim:
            words += ["--hidden", str(base.model.latent_dim)]
        if self.lams:
            words += ["--lam", *(f"{v:g}" for v in self.lams)]
        elif base.lam != default.lam:
            words += ["--lam", f"{base.lam:g}"]
        if self.seeds != (0,):
            words += ["--seeds", *map(str, self.seeds)]
        options = [
            ("--epochs", base.epochs, default.epochs),
            ("--batch-size", base.batch_size, default.batch_size),
            ("--lr", base.lr, default.lr),
            ("--recon", base.model.recon, default.model.recon),
            ("--dataset", base.dataset, default.dataset),
        ]
        for flag, value, usual in options:
            if value != usual:
                words += [flag, f"{value:g}" if isinstance(value, float) else str(value)]
        if base.model.hidden_layers != default.model.hidden_layers:
            words += ["--layers", *map(str, base.model.hidden_layers)]
        if base.binarize:
            words.append("--binarize")
        return " ".join(words)


@dataclass
class Member:
    """One trained member of a sweep and its test metrics."""

    config: TrainConfig
    path: Path
    metrics: RunMetrics
    train_seconds: float
    reused: bool
    history: list = field(default_factory=list)  # EpochRecords, for the curves figure
    model: Any = None  # the trained VAE (on the CPU), for the comparison figures

    def label(self, varies: Sequence[str]) -> str:
        parts = {"H": f"H={self.config.model.latent_dim}", "lam": f"lam={self.config.lam:g}"}
        return ", ".join(parts[v] for v in varies)


def run_sweep(
    sweep: Sweep,
    data: Dataset,
    *,
    store: Path | None = None,
    device: str = "auto",
    iw_samples: int = 100,
    force: bool = False,
    stack: str = "auto",
    observer: Observer | None = None,
    on_member: Callable[[int, TrainConfig], None] | None = None,
    on_stack: Callable[[list[int]], None] | None = None,
    jobs: int | None = None,
    on_threads: Callable[[list[int], int], None] | None = None,
    observer_for: Callable[[int], Observer] | None = None,
) -> list[Member]:
    """Train (or reuse from the store) and score every member, in order.

    A member is saved as soon as it finishes (a stacked group: when the group
    does), so an interrupted sweep keeps them; running it again trains only the
    rest. `stack`: "on" trains members that need training and share an
    architecture together, "off" one by one, "auto" together where that is
    faster (stacks_faster). `on_stack(indices)` comes before a group trains,
    `on_member(index, config)` at every member's turn. `jobs`: how many of the
    other members that need training train at once, side by side in threads on
    the CPU (None: concurrent_jobs decides); `on_threads(indices, jobs)` comes
    first, and `observer_for(index)` gives each of them its own Observer.
    """
    dev = resolve_device(device)
    configs = sweep.members()
    groups = stacked_groups(configs, store, force, stack, dev)
    stacked = {i for group in groups for i in group}
    waiting = [i for i, c in enumerate(configs) if i not in stacked and not is_finished(c, run_folder(c, store), force)]
    outcomes = {}
    side_by_side = concurrent_jobs(jobs, dev, configs[0], len(waiting))
    if side_by_side > 1:
        if on_threads is not None:
            on_threads(waiting, side_by_side)
        observers = [observer_for(i) for i in waiting] if observer_for is not None else None
        trained = train_in_threads(
            [configs[i] for i in waiting], data, jobs=side_by_side, store=store, force=force, device=device,
            observers=observers,
        )  # fmt: skip
        outcomes.update(zip(waiting, trained, strict=True))
    members = []
    for index, config in enumerate(configs):
        group = next((g for g in groups if g[0] == index), None)
        if group is not None:
            if on_stack is not None:
                on_stack(group)
            trained = train_together([configs[i] for i in group], data, store=store, device=device, observer=observer)
            outcomes.update(zip(group, trained, strict=True))
        if on_member is not None:
            on_member(index, config)
        outcome = outcomes.pop(index, None) or train_or_reuse(
            config, store=store, force=force, device=device, data=data, observer=observer
        )
        run = outcome.run
        metrics = stored_scores(run, data, iw_samples, seed=config.seed, device=dev)
        run.model.cpu()
        seconds = float(run.info.get("train_seconds") or 0.0)
        members.append(Member(config, run.path, metrics, seconds, outcome.reused, list(run.history), run.model))
    return members


MAX_JOBS = 4  # fits side by side by default: each holds the GIL for its Python, about a fifth of a step


def concurrent_jobs(jobs: int | None, device: torch.device, config: TrainConfig, fits: int) -> int:
    """How many of `fits` fits of `config`'s kind train at once, one CPU thread each: `jobs` where asked
    (the CPU only), else one per CPU thread up to MAX_JOBS where there are 2 or more (two side by side
    ran 1.42 x the speed of one after another on 2 cores with 3-epoch members: benchmarks/bench_sweep.py),
    and 1 on a GPU, where stacking (--stack) fills the device instead."""
    if jobs is not None:
        if jobs < 1:
            raise ConfigError(f"--jobs must be at least 1, got {jobs}")
        if jobs > 1 and device.type != "cpu":
            raise ConfigError(f"--jobs trains members side by side on the CPU; on {device.type} use --stack on")
        if jobs > 1 and config.compile:
            raise ConfigError("--jobs cannot --compile; drop one of them")
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


def stacked_groups(
    configs: Sequence[TrainConfig], store: Path | None, force: bool, stack: str, device: torch.device
) -> list[list[int]]:
    """The members (indices) that train stacked: groups of 2 to MAX_STACK that need training and share a stack key."""
    if stack not in STACK_MODES:
        raise ConfigError(f"--stack must be one of {', '.join(STACK_MODES)}; got {stack!r}")
    if stack == "on" and not stackable(configs[0]):
        raise ConfigError("--stack on cannot --compile; drop one of them")
    if stack == "off" or (stack == "auto" and not stacks_faster(device)):
        return []
    by_key: dict[TrainConfig, list[int]] = {}
    for index, config in enumerate(configs):
        folder = run_folder(config, store)
        interrupted = (folder / RESUME_FILE).is_file() and not force  # it resumes on its own, where it stopped
        if stackable(config) and not interrupted and not is_finished(config, folder, force):
            by_key.setdefault(stack_key(config), []).append(index)
    chunks = [group[i : i + MAX_STACK] for group in by_key.values() for i in range(0, len(group), MAX_STACK)]
    return [chunk for chunk in chunks if len(chunk) > 1]


# the columns of the metrics table: (name, value of a member)
def _columns(iw_samples: int) -> list[tuple[str, Callable[[Member], float]]]:
    return [
        ("recon", lambda m: m.metrics.recon),
        ("KL", lambda m: m.metrics.kl),
        ("neg_elbo", lambda m: m.metrics.neg_elbo),
        (f"iw{iw_samples}_nll", lambda m: m.metrics.iw_nll),
        ("active_units", lambda m: m.metrics.active_units),
        ("train_seconds", lambda m: m.train_seconds),
    ]


def first_seed(members: list[Member], sweep: Sweep) -> list[Member]:
    """One member per setting (its first seed), in the sweep's order: the figures' panels."""
    return [next(m for m in members if (m.config.model.latent_dim, m.config.lam) == s) for s in sweep.settings]


def table_rows(members: list[Member], sweep: Sweep) -> list[dict[str, Any]]:
    """One row per setting: each metric's mean over seeds, and its standard deviation when seeds > 1."""
    iw = members[0].metrics.iw_samples if members else 0
    rows = []
    for h, lam in sweep.settings:
        group = [m for m in members if m.config.model.latent_dim == h and m.config.lam == lam]
        row: dict[str, Any] = {"H": h, "lam": lam, "seeds": len(group)}
        for name, value in _columns(iw):
            values = [float(value(m)) for m in group]
            row[name] = statistics.fmean(values)
            if len(sweep.seeds) > 1:
                row[f"{name}_std"] = statistics.stdev(values) if len(values) > 1 else math.nan
        row["active_units"] = f"{row['active_units']:g}/{h}" if len(sweep.seeds) == 1 else row["active_units"]
        row["kl_per_dim"] = [statistics.fmean(d) for d in zip(*(m.metrics.kl_per_dim for m in group), strict=True)]
        rows.append(row)
    return rows


def to_csv(rows: list[dict[str, Any]]) -> str:
    """The table as CSV; the per-dimension KL list is left to the JSON."""
    fields = [k for k in rows[0] if k != "kl_per_dim"] if rows else []
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=fields, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: (f"{v:.4f}" if isinstance(v, float) else v) for k, v in row.items() if k in fields})
    return buffer.getvalue()


def to_markdown(rows: list[dict[str, Any]]) -> str:
    """The table as GitHub Markdown, mean ± std when there are several seeds."""
    fields = [k for k in rows[0] if k != "kl_per_dim" and not k.endswith("_std")] if rows else []
    lines = ["| " + " | ".join(fields) + " |", "|" + "---|" * len(fields)]
    for row in rows:
        cells = []
        for k in fields:
            value = row[k]
            if isinstance(value, float):
                text = f"{value:g}" if k == "lam" else f"{value:.2f}"
            else:
                text = str(value)
            if f"{k}_std" in row and not math.isnan(row[f"{k}_std"]):
                text += f" ± {row[f'{k}_std']:.2f}"
            cells.append(text)
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def report(sweep: Sweep, rows: list[dict[str, Any]], figures: Sequence[tuple[str, str]]) -> str:
    """report.md: what was compared, on which data, the figures, the table and the command."""
    base = sweep.base
    data = DATASET_TITLES[base.dataset] + (" (dynamically binarized)" if base.binarize else " (pixels in [0, 1])")
    layers = "-".join(map(str, base.model.hidden_layers))
    lines = [
        f"# VAE ablation over {' and '.join(sweep.varies)}",
        "",
        f"Data: {data}. Model: 784-{layers}-H, {base.model.recon} likelihood; {base.epochs} epochs, batch "
        f"{base.batch_size}, Adam lr {base.lr:g}; seeds {', '.join(map(str, sweep.seeds))}.",
        "",
        "Reproduce with:",
        "",
        "```bash",
        sweep.command(),
        "```",
        "",
        "## Metrics (test set, nats per image)",
        "",
        to_markdown(rows),
    ]
    for title, filename in figures:
        lines += [f"## {title}", "", f"![{title}]({filename})", ""]
    return "\n".join(lines)
