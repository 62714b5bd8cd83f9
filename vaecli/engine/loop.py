"""The training loop: config(s) + data in, trained model(s) + per-epoch history out. It never prints.

One epoch loop trains one VAE (engine/steps.OneModel) or several side by side in
one stacked model (StackedModels), so every guarantee holds for both:

- a NaN or infinite loss is found once per epoch (one host read, no sync per step);
  a lone fit raises TrainingDiverged, a diverged stacked member is dropped from what
  is saved and the others go on;
- a StopRequest (Ctrl-C) stops after the current batch and raises Stopped with every
  member's TrainState; `resume` continues from such states, and on the CPU the
  continued fit ends with the same weights, bit for bit, as one that never stopped;
- `save_state` receives every member's state at each epoch boundary before the last.

The data sit on the training device as one tensor; a batch is an index into it,
so the loop does no per-sample Python work. The epoch's loss sums stay on the
device and are read once, after the epoch. benchmarks/bench_train.py measures the
loop against a tutorial-style one and against the matmuls alone.
"""

import math
import os
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from vaecli.config import TrainConfig
from vaecli.core.data import Dataset, load_for
from vaecli.core.images import Images
from vaecli.engine import memory
from vaecli.engine.device import resolve_device, resolve_precision
from vaecli.engine.factor import FactorModel
from vaecli.engine.interrupt import StopRequest
from vaecli.engine.observer import Observer
from vaecli.engine.records import EpochRecord, Terms, evaluate, scored_test_images, test_objective
from vaecli.engine.state import Stopped, TrainResult, TrainState
from vaecli.engine.steps import OneModel, StackedModels, eval_generator, generators, schedule, step_noise
from vaecli.errors import ConfigError, TrainingDiverged

SaveState = Callable[[int, TrainState], None]  # (member index, its state)


def check_data(config: TrainConfig, data: Dataset) -> None:
    if data.image_shape != config.model.image_shape:
        raise ConfigError(f"the model expects {config.model.image_shape} images but {data.name} has {data.image_shape}")


def _check_options(config: TrainConfig, device: torch.device) -> None:
    if config.precision == "bf16" and device.type == "cuda" and not torch.cuda.is_bf16_supported():
        raise ConfigError("`precision` bf16 asked for, but this GPU has no bfloat16; use `precision` fp32")
    if config.compile and device.type == "cpu" and not (os.environ.get("CXX") or shutil.which("g++")):
        raise ConfigError("`compile` on the CPU needs a C++ compiler (g++ or $CXX); install one or drop `compile`")


def _check_resumable(state: TrainState, config: TrainConfig, device: torch.device, n: int, steps: int) -> None:
    """The state must belong to this config, device and data, at a point inside the fit."""
    if state.config != config:
        raise ConfigError("the saved training state belongs to another config")
    if state.device != device.type:
        raise ConfigError(f"the run was interrupted on {state.device}; resume it there (`device` {state.device})")
    if len(state.order) not in (0, n) or (state.step > 0) != (len(state.order) == n):
        raise ConfigError(f"the saved shuffle has {len(state.order)} entries, but the data have {n} training images")
    if not (1 <= state.epoch <= config.epochs and 0 <= state.step < steps and len(state.history) == state.epoch - 1):
        raise ConfigError(f"the saved state is at epoch {state.epoch}, step {state.step}: outside this fit")


def diverged(config: TrainConfig, what: str) -> TrainingDiverged:
    return TrainingDiverged(f"training diverged: {what}; try a lower `lr` (now {config.lr:g}, e.g. {config.lr / 10:g})")


@dataclass
class _Member:
    """One member's own part of a fit: its config, generators, shuffle and history."""

    config: TrainConfig
    shuffle: torch.Generator
    noise: torch.Generator
    test_images: Images
    history: list[EpochRecord]
    order: torch.Tensor
    failed: TrainingDiverged | None = None


class _Fit:
    """One fit in progress: the model(s), each member's part, and where the loop is (epoch, step)."""

    def __init__(
        self,
        configs: Sequence[TrainConfig],
        data: Dataset,
        dev: torch.device,
        stacked: bool,
        observer: Observer,
        precision: str,
    ) -> None:
        first = configs[0]
        self.dev, self.stacked, self.observer, self.epochs = dev, stacked, observer, first.epochs
        self.precision = precision  # "fp32" or "bf16", resolved where the fit was entered
        self.data = data.to(dev)
        self.n, self.batch_size = len(self.data.train.images), first.batch_size
        self.steps = math.ceil(self.n / self.batch_size)
        if stacked:
            self.net: OneModel | StackedModels = StackedModels(configs, dev, self.precision, self.steps)
        else:
            self.net = (
                FactorModel(first, dev, self.precision, self.steps)
                if first.objective == "factor"
                else OneModel(first, dev, self.precision, self.steps, self.n)
            )
        self.members = []
        for config in configs:
            shuffle, noise = generators(config, dev)
            test_images = scored_test_images(self.data.test.images, config)
            self.members.append(_Member(config, shuffle, noise, test_images, [], torch.empty(0)))
        self.count = len(self.members)
        self.epoch, self.step = 1, 0
        self.sums = torch.empty(0)  # (M, 3) float64: recon, KL and objective summed over the epoch's images
        self.started = self.epoch_start = time.perf_counter()

    def resume(self, states: Sequence[TrainState]) -> None:
        """Continue from `states`, one per member, all at the same point."""
        if len(states) != self.count:
            raise ConfigError(f"{len(states)} saved states for {self.count} members")
        for state, member in zip(states, self.members, strict=True):
            _check_resumable(state, member.config, self.dev, self.n, self.steps)
        if len({(s.epoch, s.step) for s in states}) > 1:
            raise ConfigError("the members' saved states are at different points; continue them apart")
        self.net.load_members([(s.model, s.optimizer) for s in states])
        for member, state in zip(self.members, states, strict=True):
            member.shuffle.set_state(state.shuffle_rng)
            member.noise.set_state(state.noise_rng)
            member.history = list(state.history)
            member.order = state.order.to(self.dev)
        self.epoch, self.step = states[0].epoch, states[0].step
        self.sums = torch.stack([s.sums for s in states]).to(self.dev)
        now = time.perf_counter()
        self.started = now - sum(s.seconds for s in states)
        self.epoch_start = now - states[0].epoch_seconds * self.count

    def live(self) -> list[int]:
        return [m for m, member in enumerate(self.members) if member.failed is None]

    def run(self, stop: StopRequest | None, save_state: SaveState | None) -> list[TrainResult | TrainingDiverged]:
        while self.epoch <= self.epochs and self.live():
            self._train_epoch(stop)
            self._score_epoch()
            self.epoch, self.step = self.epoch + 1, 0
            if self.epoch <= self.epochs and self.live():
                if stop is not None and stop.requested:
                    raise self._stopped()
                if save_state is not None:
                    for m in self.live():
                        save_state(m, self.snapshot(m))
        self.net.finish()
        seconds = (time.perf_counter() - self.started) / self.count
        source = str(self.data.source)
        return [
            member.failed
            if member.failed is not None
            else TrainResult(
                member.config, self.net.member(m).cpu(), member.history, str(self.dev), seconds, source, self.precision
            )
            for m, member in enumerate(self.members)
        ]

    def _train_epoch(self, stop: StopRequest | None) -> None:
        """The epoch's batches from self.step on; Stopped after a batch when `stop` is set."""
        self.net.model.train()
        if self.step == 0:
            self.epoch_start = time.perf_counter()
            for member in self.members:
                member.order = torch.randperm(self.n, generator=member.shuffle).to(self.dev)
            self.sums = torch.zeros(self.count, 3, dtype=torch.float64, device=self.dev)
        first_step, batch_size, images = self.step, self.batch_size, self.data.train.images
        losses = torch.zeros(self.steps, self.count, device=self.dev)  # read once per epoch: no sync per step
        while self.step < self.steps:
            xs, eps = [], []
            for member in self.members:
                index = member.order[self.step * batch_size : (self.step + 1) * batch_size]
                x, e = step_noise(images[index], member.config, member.noise)
                xs.append(x)  # (B, D)
                eps.append(e)  # (B, H)
            loss, means = self.net.step(xs, eps, (self.epoch - 1) * self.steps + self.step)
            self.sums.add_(means, alpha=len(xs[0]))
            losses[self.step] = loss
            self.step += 1
            self.observer.on_batch(self.epoch, self.step)
            if stop is not None and stop.requested and self.step < self.steps:
                self._check_finite(losses, first_step, self.step)  # never save a diverged state
                raise self._stopped()
        self._check_finite(losses, first_step, self.steps)

    def _score_epoch(self) -> None:
        """Each live member's EpochRecord: its training sums and its test terms."""
        seconds = (time.perf_counter() - self.epoch_start) / self.count
        totals = self.sums.tolist()
        last_step = self.epoch * self.steps - 1  # the test objective takes the KL weight of the epoch's last step
        for m in self.live():
            member, model, config = self.members[m], self.net.member(m), self.members[m].config
            recon_sum, kl_sum, objective_sum = totals[m]
            generator = eval_generator(config, self.dev)
            test = evaluate(model, member.test_images, generator)
            if not math.isfinite(test.neg_elbo):
                self._fail(m, diverged(config, f"the test loss was {test.neg_elbo:g} after epoch {self.epoch}"))
                continue
            objective = test.total(config.lam)
            if not config.plain_elbo:
                lam, capacity = schedule(config, last_step, self.steps)
                objective = test_objective(
                    model, member.test_images, test, config, lam, capacity, generator, data_size=self.n
                )
            train_terms = Terms(recon_sum / self.n, kl_sum / self.n)
            record = EpochRecord(self.epoch, config.lam, train_terms, test, seconds, objective_sum / self.n, objective)
            member.history.append(record)
            self.observer.on_member_epoch(m, record)
            was_training = model.training
            self.observer.on_member_model(m, record, model.eval())
            model.train(was_training)

    def _check_finite(self, losses: torch.Tensor, first: int, last: int) -> None:
        """Fail each member whose loss in steps [first, last) was NaN or infinite: one host read for all."""
        bad = ~torch.isfinite(losses[first:last])  # (steps, M)
        if not bool(bad.any()):
            return
        for m in bad.any(0).nonzero()[:, 0].tolist():
            if self.members[m].failed is None:
                index = first + int(bad[:, m].nonzero()[0, 0])
                what = f"the loss was {float(losses[index, m]):g} at epoch {self.epoch}, step {index + 1}"
                self._fail(m, diverged(self.members[m].config, what))

    def _fail(self, m: int, error: TrainingDiverged) -> None:
        self.members[m].failed = error
        if not self.stacked:
            raise error
        self.observer.on_member_failed(m, error)

    def snapshot(self, m: int) -> TrainState:
        """Member m's state now, as CPU copies."""
        member, step, now = self.members[m], self.step, time.perf_counter()
        weights, adam = self.net.member_tensors(m)
        return TrainState(
            config=member.config,
            epoch=self.epoch,
            step=step,
            history=list(member.history),
            model=weights,
            optimizer=adam,
            order=member.order.cpu().clone() if step else torch.empty(0, dtype=torch.int64),
            sums=self.sums[m].cpu().clone() if step else torch.zeros(3, dtype=torch.float64),
            shuffle_rng=member.shuffle.get_state(),
            noise_rng=member.noise.get_state(),
            seconds=(now - self.started) / self.count,  # a stacked member's share
            epoch_seconds=(now - self.epoch_start) / self.count if step else 0.0,
            device=self.dev.type,
        )

    def _stopped(self) -> Stopped:
        failed = {m: member.failed for m, member in enumerate(self.members) if member.failed is not None}
        return Stopped({m: self.snapshot(m) for m in self.live()}, failed)


@memory.one_line_oom()  # around the whole fit: an allocation failure anywhere in it becomes one line
def fit(
    configs: Sequence[TrainConfig],
    data: Dataset,
    *,
    device: str = "auto",
    observer: Observer | None = None,
    stop: StopRequest | None = None,
    resume: Sequence[TrainState] | None = None,
    save_state: SaveState | None = None,
    stacked: bool | None = None,
    precision: str | None = None,
) -> list[TrainResult | TrainingDiverged]:
    """Fit one VAE, or several of one architecture stacked, and score each after every epoch.

    Returns, per member, its TrainResult or the TrainingDiverged that ended it.
    `resume`: a state per member, all at the same point (as one stop left them).
    `stacked`: train as a StackedVAE (None: when there are several configs).
    `precision`: the arithmetic of a config's "auto", when it was resolved on another
    machine (a cluster's driver), so that one run name never means two arithmetics.
    """
    if not configs:
        raise ConfigError(f"{'stacked training' if stacked else 'a fit'} needs at least one member")
    if stacked is None:
        stacked = len(configs) > 1
    if not stacked and len(configs) > 1:
        raise ConfigError("several members train stacked only")
    # the device and the arithmetic, resolved once here, where the engine is entered
    dev = resolve_device(device)
    arithmetic = resolve_precision(precision or configs[0].precision, dev)
    for config in configs:
        check_data(config, data)
        _check_options(config, dev)
    n_images, pixels = len(data.train.images) + len(data.test.images), data.train.images.pixels
    memory.check_fits(configs, dev, n_images, pixels, arithmetic, data_bytes=data.nbytes + 8 * n_images)
    observer = observer or Observer()
    run = _Fit(configs, data, dev, stacked, observer, arithmetic)
    if resume is not None:
        run.resume(resume)
    observer.on_start(configs[0], run.steps, dev)
    if resume is not None:
        observer.on_resume(resume[0])
    return run.run(stop, save_state)


def train(
    config: TrainConfig,
    data: Dataset | None = None,
    *,
    device: str = "auto",
    data_dir: str | None = None,
    observer: Observer | None = None,
    stop: StopRequest | None = None,
    resume: TrainState | None = None,
    save_state: Callable[[TrainState], None] | None = None,
    precision: str | None = None,
) -> TrainResult:
    """Fit a VAE to `data` (loaded from `data_dir` when None) and score it after each epoch.

    `stop`: when set, the fit raises Stopped after the current batch. `resume`
    continues from a saved state. `save_state` receives the state at every epoch
    boundary before the last, so a crash loses at most one epoch. A NaN or
    infinite loss raises TrainingDiverged (checked once per epoch, without a
    sync per step).
    """
    if data is None:
        data = load_for(config, data_dir)
    (result,) = fit(
        [config],
        data,
        device=device,
        observer=observer,
        stop=stop,
        resume=[resume] if resume is not None else None,
        save_state=(lambda m, state: save_state(state)) if save_state is not None else None,
        precision=precision,
    )
    if isinstance(result, TrainingDiverged):  # fit raises it for a lone member; never reached
        raise result
    return result


def train_stacked(
    configs: Sequence[TrainConfig],
    data: Dataset,
    *,
    device: str = "auto",
    observer: Observer | None = None,
    stop: StopRequest | None = None,
    resume: Sequence[TrainState] | None = None,
    save_state: SaveState | None = None,
) -> list[TrainResult | TrainingDiverged]:
    """Train the members together as one stacked model; each ends as train(config) alone, up to float rounding.

    A diverged member is returned as its TrainingDiverged; the others finish.
    """
    return fit(
        configs, data, device=device, observer=observer, stop=stop, resume=resume, save_state=save_state, stacked=True
    )
