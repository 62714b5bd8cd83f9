"""Executors: the ways a sweep trains the members that need training, behind one interface.

    executor.fit({index: config, ...}, context) -> {index: Outcome, or the VaeError that ended it}

OneByOne trains them one after another; SideBySide in threads on the CPU, one CPU
thread each; Stacked as stacked models of up to MAX_STACK members (the rest by
another executor). Each member is an ordinary run of the store: it is saved as
soon as its fit ends, a diverged member is returned as its error while the
others go on, and Ctrl-C stops every fit after its batch with each member's
state saved in its folder (Interrupted is raised), so that the same sweep
continues them. A new way to run a sweep is one more class with this fit().
"""

import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import torch

from vaecli.choices import MAX_STACK
from vaecli.config import TrainConfig
from vaecli.core.data import Dataset
from vaecli.engine.interrupt import StopRequest, stop_on_sigint
from vaecli.engine.loop import train_stacked
from vaecli.engine.observer import Observer
from vaecli.engine.state import Stopped
from vaecli.engine.steps import stack_key, stackable
from vaecli.errors import ConfigError, Interrupted, TrainingDiverged, VaeError
from vaecli.store.checkpoint import RESUME_FILE, load_state, read_state_header
from vaecli.store.lock import Holder, held_all
from vaecli.store.runs import (
    Outcome,
    RunRequest,
    StateWriter,
    clear_leftovers,
    diverged_here,
    is_finished,
    run_folder,
    save_run,
    train_or_reuse,
)
from vaecli.studies.observer import SweepObserver

Fitted = Outcome | VaeError  # a failed member's error: it diverged, or (on a cluster) its worker failed


@dataclass(frozen=True)
class FitContext:
    """What every executor needs besides the members: the data, the store and the device."""

    data: Dataset
    store: Path | None = None
    force: bool = False  # train again members that the store holds finished
    device: str = "auto"
    observer: SweepObserver = field(default_factory=SweepObserver)
    iw_samples: int | None = None  # the sweep's test scores, for an executor that scores where it trains

    def request(self, config: TrainConfig) -> RunRequest:
        return RunRequest(config, store=self.store, force=self.force, device=self.device)


class Executor(Protocol):
    def fit(self, members: Mapping[int, TrainConfig], context: FitContext) -> dict[int, Fitted]:
        """Train `members` (sweep index -> config) and save each in its store folder."""
        ...


def _fit_alone(
    index: int, config: TrainConfig, context: FitContext, observer: Observer, stop: StopRequest | None = None
) -> Fitted:
    def waiting(holder: Holder) -> None:  # another process is training it
        context.observer.on_waiting(index, holder)

    try:
        request = context.request(config)
        return train_or_reuse(request, data=context.data, observer=observer, stop=stop, on_wait=waiting)
    except TrainingDiverged as e:
        context.observer.on_failed(index, e)
        return e


class OneByOne:
    """One member after another, in this thread, on all of its CPU threads."""

    def fit(self, members: Mapping[int, TrainConfig], context: FitContext) -> dict[int, Fitted]:
        context.observer.on_fits(list(members), "one by one", 1)
        return {
            index: _fit_alone(index, config, context, context.observer.observer([index], [config]))
            for index, config in members.items()
        }


class SideBySide:
    """`jobs` members at a time, each in a thread of its own on one CPU thread.

    A small model's step keeps two cores only partly busy (the elementwise work between
    its matmuls barely gains from a second thread), so one-thread fits side by side
    finish more per second. One thread each, because a two-thread OpenMP team started
    from another thread, once the main thread has a team of its own, ran the step at
    about half speed on a 2-core CPU (4.7 s an epoch against 2.4). Each fit ends as it
    would alone, bit for bit: its own generators, and CPU kernels that do not depend on
    the thread count (tested for 1 and 2). An error other than divergence is raised
    once the other fits have ended.
    """

    def __init__(self, jobs: int) -> None:
        if jobs < 1:
            raise ConfigError(f"jobs must be at least 1, got {jobs}")
        self.jobs = jobs

    def fit(self, members: Mapping[int, TrainConfig], context: FitContext) -> dict[int, Fitted]:
        if self.jobs == 1 or len(members) < 2:
            return OneByOne().fit(members, context)
        jobs = min(self.jobs, len(members))
        context.observer.on_fits(list(members), "side by side", jobs)
        fitted: dict[int, Fitted] = {}
        errors: dict[int, BaseException] = {}
        waiting = list(members)
        lock = threading.Lock()
        threads_before = torch.get_num_threads()

        def work(stop: StopRequest) -> None:
            while True:
                with lock:
                    if not waiting or stop.requested:
                        return
                    index = waiting.pop(0)
                config = members[index]
                try:
                    observer = context.observer.observer([index], [config])
                    fitted[index] = _fit_alone(index, config, context, observer, stop)
                except BaseException as e:  # raised in the caller's thread below
                    errors[index] = e

        with stop_on_sigint() as stop:
            torch.set_num_threads(1)  # a new thread takes the intra-op thread count set last: set it first
            try:
                workers = [
                    threading.Thread(target=work, args=(stop,), name=f"vaecli: fit {k + 1}") for k in range(jobs)
                ]
                for worker in workers:
                    worker.start()
                for worker in workers:
                    worker.join()
            finally:
                stop.request()  # a KeyboardInterrupt above (a second Ctrl-C): the fits stop after their batch too
                torch.set_num_threads(threads_before)
        if any(isinstance(e, Interrupted) for e in errors.values()):
            raise Interrupted(
                "interrupted; every fit in training saved its state; run the same command again to continue"
            )
        if errors:
            raise errors[min(errors)]
        return {index: fitted[index] for index in members}


class Stacked:
    """Members that share an architecture and their progress, trained as stacked models of 2 to `max_stack`.

    Progress: fresh, or interrupted at the same epoch and step (a stacked group that
    was stopped), so an interrupted group continues stacked, bit for bit. The other
    members go to `rest`.
    """

    def __init__(self, rest: Executor | None = None, max_stack: int = MAX_STACK) -> None:
        self.rest: Executor = rest or OneByOne()
        self.max_stack = max_stack

    def groups(self, members: Mapping[int, TrainConfig], context: FitContext) -> list[list[int]]:
        """The members (indices) that train stacked, in groups of 2 to max_stack."""
        by_key: dict[tuple, list[int]] = {}
        for index, config in members.items():
            if stackable(config):
                by_key.setdefault((stack_key(config), _progress(config, context)), []).append(index)
        size = self.max_stack
        chunks = [group[i : i + size] for group in by_key.values() for i in range(0, len(group), size)]
        return [chunk for chunk in chunks if len(chunk) > 1]

    def fit(self, members: Mapping[int, TrainConfig], context: FitContext) -> dict[int, Fitted]:
        fitted: dict[int, Fitted] = {}
        groups = self.groups(members, context)
        for group in groups:
            fitted.update(self._fit_group(group, [members[i] for i in group], context))
        grouped = {i for group in groups for i in group}
        rest = {i: c for i, c in members.items() if i not in grouped}
        if rest:
            fitted.update(self.rest.fit(rest, context))
        return {index: fitted[index] for index in members}

    def _fit_group(self, group: list[int], configs: list[TrainConfig], context: FitContext) -> dict[int, Fitted]:
        folders = [run_folder(c, context.store) for c in configs]
        with held_all(folders) as held:
            if held and _as_grouped(configs, folders, context):
                return self._fit_held_group(group, configs, folders, context)
        # another process trains a member, or has since the group was formed: each alone, waiting for its own lock
        return self.rest.fit(dict(zip(group, configs, strict=True)), context)

    def _fit_held_group(
        self, group: list[int], configs: list[TrainConfig], folders: list[Path], context: FitContext
    ) -> dict[int, Fitted]:
        for folder in folders:
            clear_leftovers(folder)
        resume = None
        if _progress(configs[0], context) is not None:
            resume = [load_state(folder) for folder in folders]
        context.observer.on_fits(group, "stacked", len(group))
        observer = context.observer.observer(group, configs)
        writer = StateWriter(folders)
        try:
            with stop_on_sigint() as stop:
                results = train_stacked(
                    configs,
                    context.data,
                    device=context.device,
                    observer=observer,
                    stop=stop,
                    resume=resume,
                    save_state=writer,
                )
        except Stopped as e:
            writer.save_stopped(e.states)
            first = next(iter(e.states.values()))
            raise Interrupted(
                f"interrupted at epoch {first.epoch}, step {first.step}; each of the {len(e.states)} stacked members "
                "saved its state in its run folder; run the same command again to continue them stacked "
                "(or one alone: vaecli train --resume FOLDER)"
            ) from None
        except BaseException:  # a second Ctrl-C, say: the last finished epoch's states still land first
            writer.wait(reraise=False)
            raise
        writer.wait()
        fitted: dict[int, Fitted] = {}
        for m, (index, result) in enumerate(zip(group, results, strict=True)):
            if isinstance(result, TrainingDiverged):
                error = diverged_here(result, folders[m])
                context.observer.on_failed(index, error)
                fitted[index] = error
            else:
                fitted[index] = Outcome(save_run(folders[m], result), reused=False)
        return fitted


def _as_grouped(configs: list[TrainConfig], folders: list[Path], context: FitContext) -> bool:
    """Whether the members are still as groups() found them: none finished, all at one progress."""
    if any(is_finished(c, f, context.force) for c, f in zip(configs, folders, strict=True)):
        return False
    return len({_progress(c, context) for c in configs}) == 1


def _progress(config: TrainConfig, context: FitContext) -> tuple[int, int] | None:
    """(epoch, step) where an interrupted fit of `config` stopped, None for a fresh one (or with force)."""
    folder = run_folder(config, context.store)
    if context.force or not (folder / RESUME_FILE).is_file():
        return None
    header = read_state_header(folder)
    if header.config != config:
        return None  # train_or_reuse reports it
    return header.epoch, int(header.numbers["step"])


def one_by_one_or_side_by_side(jobs: int) -> Executor:
    return SideBySide(jobs) if jobs > 1 else OneByOne()
