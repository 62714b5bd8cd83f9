"""Rich rendering of training: progress bar, one table row per epoch, the run summary."""

import json
import threading
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from rich.console import Console
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from vaecli.cli import threads
from vaecli.config import TrainConfig
from vaecli.engine.observer import Observer
from vaecli.studies.observer import Placement, SweepObserver

if TYPE_CHECKING:
    from vaecli.engine.records import EpochRecord
    from vaecli.store.lock import Holder
    from vaecli.store.runs import Outcome


def _fmt(value: float) -> str:
    return f"{value:.2f}" if abs(value) < 100 else f"{value:.1f}"


def epoch_row(record: "EpochRecord", header: bool, member: int | None = None, objective: bool = False) -> Table:
    """One epoch as a table row with fixed widths, so rows printed apart line up.

    lam * KL and the total are shown only when lam != 1; at lam = 1 they equal KL and -ELBO.
    Eleven columns fit in 80 characters. `member` (stacked training, rows of
    several members in turn) adds a first column with its number and always
    shows the lam columns, so that every member's rows line up. `objective`: the
    objective trained on (free bits, a capacity, a warm-up, IWAE) in place of the lam columns.
    """
    weighted = (record.lam != 1.0 or member is not None) and not objective
    table = Table(
        box=None, show_header=header, header_style="bold", pad_edge=False, padding=(0, 1), collapse_padding=True
    )
    cells = []
    if member is not None:
        table.add_column("m", width=2, justify="right")
        cells.append(str(member))
    table.add_column("ep", width=3, justify="right")
    cells.append(str(record.epoch))
    for split, terms in (("train", record.train), ("test", record.test)):
        columns = [("recon", terms.recon), ("KL", terms.kl)]
        if weighted:
            columns += [("λ·KL", record.lam * terms.kl), ("total", terms.total(record.lam))]
        if objective:
            value = record.train_objective if split == "train" else record.test_objective
            columns.append(("obj", value if value is not None else float("nan")))
        columns.append(("-ELBO", terms.neg_elbo))
        for name, value in columns:
            table.add_column(f"{split}\n{name}", width=6, justify="right")
            cells.append(_fmt(value))
    table.add_column("time", width=5, justify="right")
    cells.append(f"{record.seconds:.1f}s")
    table.add_row(*cells)
    return table


def _progress(console: Console) -> Any:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[rate]}"),
        TextColumn("ETA"),
        TimeRemainingColumn(),
        console=console,
        transient=True,
    )


class TrainingDisplay(Observer):
    """A trainer Observer: progress bar and table rows on `console`, or JSON lines on stdout."""

    def __init__(self, console: Console, as_json: bool = False) -> None:
        self.console, self.as_json = console, as_json
        self.progress: Any = None
        self.task: Any = None
        self.objective = False  # show the objective's columns: it is not the plain ELBO
        self.said_passive = False  # the note on threads that wait passively, once

    def on_start(self, config: TrainConfig, steps_per_epoch: int, device: Any) -> None:
        self.steps, self.epochs = steps_per_epoch, config.epochs
        self.objective = self.objective or not config.plain_elbo
        if self.as_json or self.console.quiet:
            return
        self.console.print(f"Training {self.training_what(config)} on {device}: {steps_per_epoch} batches per epoch")
        if threads.chose_passive and not self.said_passive:
            self.said_passive = True
            self.console.print(
                "[dim]Other programs keep the CPUs busy, so vaecli's threads sleep while they wait "
                "(OMP_WAIT_POLICY=PASSIVE; set it yourself to choose)[/dim]"
            )
        if self.progress is None:
            self.progress = _progress(self.console)
            self.progress.start()
        total = config.epochs * steps_per_epoch
        if self.task is None:
            self.task = self.progress.add_task(f"epoch 1/{config.epochs}", total=total, rate="")
        else:
            self.progress.reset(self.task, total=total, description=f"epoch 1/{config.epochs}", rate="")

    def on_resume(self, state: Any) -> None:
        if self.as_json or self.console.quiet:
            return
        self.console.print(f"Resuming at epoch {state.epoch}, step {state.step} of {self.steps}")
        for record in state.history:
            self.console.print(epoch_row(record, header=record.epoch == 1, objective=self.objective))
        if self.progress is not None:  # a reset, so the rate counts only batches trained now
            done = (state.epoch - 1) * self.steps + state.step
            self.progress.reset(self.task, total=self.epochs * self.steps, completed=done, rate="")

    def training_what(self, config: TrainConfig) -> str:
        return f"a VAE ({config.describe(long=True)})"

    def waiting(self, holder: "Holder") -> None:
        """Another process is training the run: say who, once, rather than wait in silence."""
        if self.as_json:
            print(json.dumps({"event": "waiting", "run": str(holder.folder), "holder": holder.to_dict()}), flush=True)
        else:
            self.console.print(
                f"{holder.folder} is being trained by {holder}; waiting for it to finish (Ctrl-C stops waiting)",
                soft_wrap=True,
            )

    def on_batch(self, epoch: int, step: int) -> None:
        if self.progress is None:
            return
        speed = next(t.speed for t in self.progress.tasks if t.id == self.task)
        rate = f"{speed:.0f} it/s" if speed else ""
        self.progress.update(
            self.task,
            completed=(epoch - 1) * self.steps + step,
            description=f"epoch {epoch}/{self.epochs}",
            rate=rate,
        )

    def on_epoch(self, record: "EpochRecord") -> None:
        if self.as_json:
            print(json.dumps({"event": "epoch", **record.to_dict()}), flush=True)
        else:
            self.console.print(epoch_row(record, header=record.epoch == 1, objective=self.objective))

    def close(self) -> None:
        if self.progress is not None:
            self.progress.stop()
            self.progress = None


def member_numbers(indices: Sequence[int]) -> str:
    """[0, 1, 2, 4] -> '1-3, 5': 0-based indices as 1-based ranges."""
    runs: list[list[int]] = []
    for i in indices:
        if runs and i == runs[-1][-1] + 1:
            runs[-1].append(i)
        else:
            runs.append([i])
    return ", ".join(f"{r[0] + 1}-{r[-1] + 1}" if len(r) > 1 else f"{r[0] + 1}" for r in runs)


class SweepDisplay(TrainingDisplay, SweepObserver):
    """One bar for the whole sweep above the bar of the member (or stacked members) in training."""

    def __init__(self, console: Console, configs: Sequence[TrainConfig]) -> None:
        super().__init__(console)
        self.configs, self.members = list(configs), len(configs)
        self.objective = any(not c.plain_elbo for c in configs)  # one layout for every member's rows
        self.stacked: list[int] = []  # the members training together now
        self.rows = 0  # epoch rows printed for them
        self.side_by_side: set[int] = set()  # the members training at once in threads
        self.lock = threading.Lock()  # their observers print from several threads
        self.failed: dict[int, str] = {}
        self.displays: dict[int, MemberDisplay] = {}  # the side-by-side members' bars, by member
        self.on_cluster = False  # the members side by side are a cluster's
        self.finished = 0  # the cluster's members that ended
        if console.quiet:
            return
        self.progress = _progress(console)
        self.sweep_task = self.progress.add_task("sweep", total=self.members, rate="")
        self.progress.start()

    def on_fits(self, indices: Sequence[int], how: str, jobs: int) -> None:
        if how in ("side by side", "on a cluster"):
            self.side_by_side, self.rows = set(indices), 0
            self.on_cluster = how == "on a cluster"
            where = "side by side on the CPU" if how == "side by side" else "on the cluster"
            if self.progress is not None:
                self.console.rule(
                    f"members {member_numbers(indices)}/{self.members}: {jobs} at a time, {where}", style="dim"
                )
        elif how == "stacked":
            self._stacked(list(indices))

    def _stacked(self, indices: list[int]) -> None:
        self.stacked, self.rows = indices, 0
        if self.progress is None:
            return
        numbers = member_numbers(indices)
        self.progress.update(self.sweep_task, completed=indices[0], description=f"sweep members {numbers}")
        group = [self.configs[i] for i in indices]
        varying = []
        for name, values in (
            ("H", [c.model.latent_dim for c in group]),
            ("lam", [c.lam for c in group]),
            ("seed", [c.seed for c in group]),
        ):
            varying.append(f"{name} {', '.join(f'{v:g}' for v in dict.fromkeys(values))}")
        self.console.rule(f"members {numbers}/{self.members} stacked: {'; '.join(varying)}", style="dim")

    def observer(self, indices: Sequence[int], configs: Sequence[TrainConfig]) -> Observer:
        if len(indices) > 1:  # a stacked group, announced by on_fits
            return self
        (index,) = indices
        if index in self.side_by_side:
            self.displays[index] = MemberDisplay(self, index)
            return self.displays[index]
        self.stacked = []
        if self.progress is not None:
            description = f"sweep member {index + 1}/{self.members}"
            self.progress.update(self.sweep_task, completed=index, description=description)
            config = self.configs[index]
            what = f"member {index + 1}/{self.members}: {config.describe()}, seed {config.seed}"
            self.console.rule(what, style="dim")
        return self

    def on_failed(self, index: int, error: Any) -> None:
        self.failed[index] = str(error)
        self._done(index)
        with self.lock:
            # Text, not markup: an error's own brackets are not rich styles
            self.console.print(Text.assemble((f"member {index + 1} failed: ", "bold red"), str(error)))

    # a cluster's members: one line each as it is queued, runs (where), is retried, finishes
    def on_queued(self, index: int, config: TrainConfig) -> None:
        self._line(index, "queued", f"{config.describe()}, seed {config.seed}")

    def on_running(self, index: int, placement: Placement) -> None:
        display = self.displays.get(index)
        if display is not None and display.task is not None and self.progress is not None:
            self.progress.remove_task(display.task)  # the bar of the try whose worker died
            display.task = None
        what = "running" if placement.attempt == 1 else f"retried (try {placement.attempt})"
        self._line(index, what, f"on {placement}", style="yellow" if placement.attempt > 1 else "cyan")

    def on_finished(self, index: int, path: Any) -> None:
        self._done(index)
        self._line(index, "finished:", f"saved in {path}", style="green")

    def on_message(self, text: str) -> None:
        with self.lock:
            self.console.print(text, style="dim", soft_wrap=True, markup=False, highlight=False)

    def _line(self, index: int, what: str, detail: str, style: str = "dim") -> None:
        with self.lock:
            self.console.print(
                Text.assemble((f"member {index + 1}/{self.members} ", "bold"), (what, style), " ", detail),
                soft_wrap=True,
            )

    def _done(self, index: int) -> None:
        """A cluster's member ended: the sweep's bar counts it."""
        if self.on_cluster and self.progress is not None:
            self.finished += 1
            self.progress.update(self.sweep_task, completed=self.finished)

    def on_waiting(self, index: int, holder: "Holder") -> None:
        with self.lock:
            self.console.print(
                f"member {index + 1}: {holder.folder.name} is being trained by {holder}; waiting for it", soft_wrap=True
            )

    def on_scoring(self, index: int, config: TrainConfig) -> None:
        if self.progress is not None:
            description = f"sweep member {index + 1}/{self.members}: scoring"
            self.progress.update(self.sweep_task, completed=index, description=description)

    def training_what(self, config: TrainConfig) -> str:
        if not self.stacked:
            return super().training_what(config)
        layers = "-".join(map(str, config.model.hidden_layers)) or "none"
        return f"{len(self.stacked)} VAEs stacked (layers {layers}, {config.model.recon}, {config.dataset})"

    def on_member_epoch(self, member: int, record: "EpochRecord") -> None:
        if not self.stacked:
            return self.on_epoch(record)
        row = epoch_row(record, header=self.rows == 0, member=self.stacked[member] + 1, objective=self.objective)
        self.console.print(row)
        self.rows += 1

    def on_resume(self, state: Any) -> None:
        if self.stacked:  # the group's rows so far are in each member's own history
            if not self.console.quiet:
                self.console.print(f"Resuming the stacked members at epoch {state.epoch}, step {state.step}")
            if self.progress is not None:
                done = (state.epoch - 1) * self.steps + state.step
                self.progress.reset(self.task, total=self.epochs * self.steps, completed=done, rate="")
            return
        super().on_resume(state)

    def close(self) -> None:
        if self.progress is not None:
            self.progress.update(self.sweep_task, completed=self.members)
        super().close()


class MemberDisplay(Observer):
    """The Observer of one sweep member training side by side with others: its own bar, rows numbered."""

    def __init__(self, sweep: SweepDisplay, index: int) -> None:
        self.sweep, self.index = sweep, index
        self.task: Any = None

    def on_start(self, config: TrainConfig, steps_per_epoch: int, device: Any) -> None:
        self.steps, self.epochs = steps_per_epoch, config.epochs
        if self.sweep.progress is not None:
            self.task = self.sweep.progress.add_task(self._what(1), total=self.epochs * self.steps, rate="")

    def on_resume(self, state: Any) -> None:
        self.sweep.console.print(f"member {self.index + 1}: resuming at epoch {state.epoch}, step {state.step}")
        if self.task is not None:
            self.sweep.progress.update(self.task, completed=(state.epoch - 1) * self.steps + state.step)

    def on_batch(self, epoch: int, step: int) -> None:
        if self.task is not None:
            completed = (epoch - 1) * self.steps + step
            self.sweep.progress.update(self.task, completed=completed, description=self._what(epoch))

    def on_epoch(self, record: "EpochRecord") -> None:
        with self.sweep.lock:
            header, self.sweep.rows = self.sweep.rows == 0, self.sweep.rows + 1
            row = epoch_row(record, header=header, member=self.index + 1, objective=self.sweep.objective)
            self.sweep.console.print(row)
        if record.epoch == self.epochs and self.task is not None:
            self.sweep.progress.remove_task(self.task)

    def _what(self, epoch: int) -> str:
        return f"member {self.index + 1}, epoch {epoch}/{self.epochs}"


def summary(outcome: "Outcome") -> Panel:
    """Where the run is, what it holds, how good it is and how long it took."""
    run = outcome.run
    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="bold")
    grid.add_column()
    grid.add_row("folder", str(run.path))
    files = sorted(p for p in run.path.iterdir() if p.is_file() and not p.name.startswith("."))
    grid.add_row("files", ", ".join(f"{p.name} ({_size(p.stat().st_size)})" for p in files))
    grid.add_row("config", run.config.describe(long=True))
    if run.final is not None:
        t = run.final.test
        grid.add_row("test", f"recon {t.recon:.2f}  KL {t.kl:.2f}  -ELBO {t.neg_elbo:.2f} nats per image")
    seconds = run.info.get("train_seconds")
    if seconds is not None and run.history:
        per_epoch = sum(r.seconds for r in run.history) / len(run.history)
        grid.add_row("time", f"{seconds:.1f} s in all, {per_epoch:.2f} s per epoch on {run.info.get('device', '?')}")
    title = "reused finished run" if outcome.reused else "run saved"
    return Panel(grid, title=title, title_align="left", expand=False)


def _size(n: int) -> str:
    return f"{n / 1e6:.1f} MB" if n >= 1e6 else f"{n / 1e3:.0f} kB"
