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
from vaecli.core.data import Dataset, load_dataset
from vaecli.engine import memory
from vaecli.engine.device import resolve_device, resolve_precision
from vaecli.engine.interrupt import StopRequest
from vaecli.engine.observer import Observer
from vaecli.engine.records import EpochRecord, Terms, evaluate, scored_test_images
from vaecli.engine.state import Stopped, TrainResult, TrainState
from vaecli.engine.steps import OneModel, StackedModels, eval_generator, generators, step_noise
from vaecli.errors import ConfigError, TrainingDiverged

SaveState = Callable[[int, TrainState], None]  # (member index, its state)


def check_data(config: TrainConfig, data: Dataset) -> None:
    if data.image_shape != config.model.image_shape:
        raise ConfigError(f"the model expects {config.model.image_shape} images but {data.name} has {data.image_shape}")


def _check_options(config: TrainConfig, device: torch.device) -> None:
    if config.precision == "bf16" and device.type == "cuda" and not torch.cuda.is_bf16_supported():
        raise ConfigError("--precision bf16 asked for, but this GPU has no bfloat16; use --precision fp32")
    if config.compile and device.type == "cpu" and not (os.environ.get("CXX") or shutil.which("g++")):
        raise ConfigError("--compile on the CPU needs a C++ compiler (g++ or $CXX); install one or drop --compile")


def _check_resumable(state: TrainState, config: TrainConfig, device: torch.device, n: int, steps: int) -> None:
    """The state must belong to this config, device and data, at a point inside the fit."""
    if state.config != config:
        raise ConfigError("the saved training state belongs to another config")
    if state.device != device.type:
        raise ConfigError(f"the run was interrupted on {state.device}; resume it there (--device {state.device})")
    if len(state.order) not in (0, n) or (state.step > 0) != (len(state.order) == n):
        raise ConfigError(f"the saved shuffle has {len(state.order)} entries, but the data have {n} training images")
    if not (1 <= state.epoch <= config.epochs and 0 <= state.step < steps and len(state.history) == state.epoch - 1):
        raise ConfigError(f"the saved state is at epoch {state.epoch}, step {state.step}: outside this fit")


def diverged(config: TrainConfig, what: str) -> TrainingDiverged:
    return TrainingDiverged(f"training diverged: {what}; try a lower --lr (now {config.lr:g}, e.g. {config.lr / 10:g})")


@dataclass
class _Member:
    """One member's own part of a fit: its config, generators, shuffle, sums and history."""

    config: TrainConfig
    shuffle: torch.Generator
    noise: torch.Generator
    test_images: torch.Tensor
    history: list[EpochRecord]
    order: torch.Tensor
    failed: TrainingDiverged | None = None


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
) -> list[TrainResult | TrainingDiverged]:
    """Fit one VAE, or several of one architecture stacked, and score each after every epoch.

    Returns, per member, its TrainResult or the TrainingDiverged that ended it.
    `resume`: a state per member, all at the same point (as one stop left them).
    `stacked`: train as a StackedVAE (None: when there are several configs).
    """
    if not configs:
        raise ConfigError(f"{'stacked training' if stacked else 'a fit'} needs at least one member")
    if stacked is None:
        stacked = len(configs) > 1
    if not stacked and len(configs) > 1:
        raise ConfigError("several members train stacked only")
    observer = observer or Observer()
    dev = resolve_device(device)
    for config in configs:
        check_data(config, data)
        _check_options(config, dev)
    memory.check_fits(configs, dev, len(data.train.images) + len(data.test.images), data.train.images.shape[1])
    first = configs[0]
    precision = resolve_precision(first.precision, dev)
    data = data.to(dev)
    net = StackedModels(configs, dev, precision) if stacked else OneModel(first, dev, precision)
    train_images = data.train.images
    n, batch_size = len(train_images), first.batch_size
    steps = math.ceil(n / batch_size)
    members = []
    for config in configs:
        shuffle, noise = generators(config, dev)
        test_images = scored_test_images(data.test.images, config)
        members.append(_Member(config, shuffle, noise, test_images, [], torch.empty(0)))
    count = len(members)

    epoch, step, carried, elapsed = 1, 0, 0.0, 0.0
    sums = torch.empty(0)
    if resume is not None:
        if len(resume) != count:
            raise ConfigError(f"{len(resume)} saved states for {count} members")
        for state, config in zip(resume, configs, strict=True):
            _check_resumable(state, config, dev, n, steps)
        if len({(s.epoch, s.step) for s in resume}) > 1:
            raise ConfigError("the members' saved states are at different points; continue them apart")
        net.load_members([(s.model, s.optimizer) for s in resume])
        for member, state in zip(members, resume, strict=True):
            member.shuffle.set_state(state.shuffle_rng)
            member.noise.set_state(state.noise_rng)
            member.history = list(state.history)
            member.order = state.order.to(dev)
        epoch, step = resume[0].epoch, resume[0].step
        carried, elapsed = resume[0].epoch_seconds * count, sum(s.seconds for s in resume)
        sums = torch.stack([s.sums for s in resume]).to(dev)
    observer.on_start(first, steps, dev)
    if resume is not None:
        observer.on_resume(resume[0])

    started = time.perf_counter() - elapsed
    epoch_start = time.perf_counter() - carried

    def snapshot(m: int) -> TrainState:
        member = members[m]
        weights, adam = net.member_tensors(m)
        return TrainState(
            config=member.config,
            epoch=epoch,
            step=step,
            history=list(member.history),
            model=weights,
            optimizer=adam,
            order=member.order.cpu().clone() if step else torch.empty(0, dtype=torch.int64),
            sums=sums[m].cpu().clone() if step else torch.zeros(2, dtype=torch.float64),
            shuffle_rng=member.shuffle.get_state(),
            noise_rng=member.noise.get_state(),
            seconds=(time.perf_counter() - started) / count,  # a stacked member's share
            epoch_seconds=(time.perf_counter() - epoch_start) / count if step else 0.0,
            device=dev.type,
        )

    def fail(m: int, error: TrainingDiverged) -> None:
        members[m].failed = error
        if not stacked:
            raise error
        observer.on_member_failed(m, error)

    def check_finite(losses: torch.Tensor, first_step: int, last: int) -> None:
        """Fail each member whose loss in steps [first_step, last) was NaN or infinite: one host read for all."""
        bad = ~torch.isfinite(losses[first_step:last])  # (steps, M)
        if not bool(bad.any()):
            return
        for m in bad.any(0).nonzero()[:, 0].tolist():
            if members[m].failed is None:
                index = first_step + int(bad[:, m].nonzero()[0, 0])
                what = f"the loss was {float(losses[index, m]):g} at epoch {epoch}, step {index + 1}"
                fail(m, diverged(members[m].config, what))

    def live() -> list[int]:
        return [m for m in range(count) if members[m].failed is None]

    while epoch <= first.epochs and live():
        net.model.train()
        if step == 0:
            epoch_start = time.perf_counter()
            for member in members:
                member.order = torch.randperm(n, generator=member.shuffle).to(dev)
            sums = torch.zeros(count, 2, dtype=torch.float64, device=dev)  # recon, KL summed over images
        first_step = step
        losses = torch.zeros(steps, count, device=dev)  # read once per epoch: the NaN guard costs no sync
        while step < steps:
            xs, eps = [], []
            for member in members:
                index = member.order[step * batch_size : (step + 1) * batch_size]
                x, e = step_noise(train_images.index_select(0, index), member.config, member.noise)
                xs.append(x)  # (B, D)
                eps.append(e)  # (B, H)
            loss, means = net.step(xs, eps)
            sums.add_(means, alpha=len(xs[0]))
            losses[step] = loss
            step += 1
            observer.on_batch(epoch, step)
            if stop is not None and stop.requested and step < steps:
                check_finite(losses, first_step, step)  # never save a diverged state
                raise _stopped(members, snapshot)
        check_finite(losses, first_step, steps)
        seconds = (time.perf_counter() - epoch_start) / count
        totals = sums.tolist()
        for m in live():
            member = members[m]
            recon_sum, kl_sum = totals[m]
            test_terms = evaluate(net.member(m), member.test_images, eval_generator(member.config, dev))
            if not math.isfinite(test_terms.neg_elbo):
                fail(m, diverged(member.config, f"the test loss was {test_terms.neg_elbo:g} after epoch {epoch}"))
                continue
            record = EpochRecord(epoch, member.config.lam, Terms(recon_sum / n, kl_sum / n), test_terms, seconds)
            member.history.append(record)
            observer.on_member_epoch(m, record)
        epoch, step = epoch + 1, 0
        if epoch <= first.epochs and live():
            if stop is not None and stop.requested:
                raise _stopped(members, snapshot)
            if save_state is not None:
                for m in live():
                    save_state(m, snapshot(m))

    net.finish()
    total = (time.perf_counter() - started) / count
    source = str(data.source)
    return [
        member.failed
        if member.failed is not None
        else TrainResult(member.config, net.member(m).cpu(), member.history, str(dev), total, source, precision)
        for m, member in enumerate(members)
    ]


def _stopped(members: list[_Member], snapshot: Callable[[int], TrainState]) -> Stopped:
    states = {m: snapshot(m) for m, member in enumerate(members) if member.failed is None}
    return Stopped(states, {m: member.failed for m, member in enumerate(members) if member.failed is not None})


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
) -> TrainResult:
    """Fit a VAE to `data` (loaded from `data_dir` when None) and score it after each epoch.

    `stop`: when set, the fit raises Stopped after the current batch. `resume`
    continues from a saved state. `save_state` receives the state at every epoch
    boundary before the last, so a crash loses at most one epoch. A NaN or
    infinite loss raises TrainingDiverged (checked once per epoch, without a
    sync per step).
    """
    if data is None:
        data = load_dataset(config.dataset, data_dir)
    (result,) = fit(
        [config],
        data,
        device=device,
        observer=observer,
        stop=stop,
        resume=[resume] if resume is not None else None,
        save_state=(lambda m, state: save_state(state)) if save_state is not None else None,
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
