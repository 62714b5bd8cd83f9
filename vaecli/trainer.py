"""Training: config + data in, model + per-epoch history out. The loop never prints.

The data sit on the training device as one tensor; a batch is an index into
it, so the loop does no per-sample Python work. The loss comes from the logits
in one pass, and the step never waits for the device: the epoch's loss sums
stay on it and are read once, after the epoch. benchmarks/bench_train.py
measures the loop against a tutorial-style one and against the matmuls alone.

A fit can stop after any batch (a StopRequest, set by Ctrl-C) and continue
later from a TrainState: weights, Adam's moments, both generators, the epoch's
shuffle and loss sums. On the CPU the continued fit ends with the same weights,
bit for bit, as one that never stopped.
"""

import math
import os
import shutil
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch

from vaecli.bf16step import Bf16Step
from vaecli.config import TrainConfig
from vaecli.data import Dataset, binarize, load_dataset
from vaecli.errors import ConfigError, TrainingDiverged
from vaecli.interrupt import StopRequest
from vaecli.loss import vae_loss
from vaecli.metrics import EpochRecord, Terms, evaluate, scored_test_images
from vaecli.model import VAE, VAEOutput

DEVICES = ("auto", "cpu", "cuda", "mps")


class Observer:
    """Hooks for progress display; the library's default ignores them all."""

    def on_start(self, config: TrainConfig, steps_per_epoch: int, device: torch.device) -> None:
        pass

    def on_batch(self, epoch: int, step: int) -> None:
        pass

    def on_epoch(self, record: EpochRecord) -> None:
        pass

    def on_resume(self, state: "TrainState") -> None:
        """Called after on_start when the fit continues from `state`."""


@dataclass
class TrainState:
    """Everything needed to continue a fit exactly where it stopped.

    `epoch` is the epoch in progress (1-based) and `step` the batches of it done;
    at an epoch boundary `step` is 0 and `order` is empty (the next shuffle is not drawn yet).
    Tensors are CPU copies.
    """

    config: TrainConfig
    epoch: int
    step: int
    history: list[EpochRecord]
    model: dict[str, torch.Tensor]  # the state_dict
    optimizer: dict[str, torch.Tensor]  # Adam's state per parameter: "<index>.step|exp_avg|exp_avg_sq"
    order: torch.Tensor  # (N,) int64: the epoch's shuffle of the training images, or (0,)
    sums: torch.Tensor  # (2,) float64: recon and KL summed over the epoch's images so far
    shuffle_rng: torch.Tensor  # uint8 generator states
    noise_rng: torch.Tensor
    seconds: float  # wall time of the fit so far
    epoch_seconds: float  # training-pass time of the epoch in progress so far
    device: str  # the device type it ran on: the noise generator's state only fits that type


class Stopped(Exception):
    """Raised by train() when its StopRequest was set; `state` continues the fit."""

    def __init__(self, state: TrainState) -> None:
        super().__init__(f"training stopped at epoch {state.epoch}, step {state.step}")
        self.state = state


@dataclass
class TrainResult:
    config: TrainConfig
    model: VAE
    history: list[EpochRecord]
    device: str
    seconds: float  # wall time of the whole fit, evaluations included
    dataset_source: str = ""
    precision: str = "fp32"  # the arithmetic used: config.precision with "auto" resolved

    @property
    def final(self) -> EpochRecord:
        return self.history[-1]


def resolve_device(name: str = "auto") -> torch.device:
    """'auto' picks CUDA when present, else the CPU; a named device must exist."""
    if name not in DEVICES:
        raise ConfigError(f"device must be one of {', '.join(DEVICES)}; got {name!r}")
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("--device cuda asked for, but PyTorch sees no CUDA GPU; use --device cpu or auto")
    if name == "mps" and not torch.backends.mps.is_available():
        raise ConfigError("--device mps asked for, but this PyTorch has no Apple MPS support; use --device cpu")
    return torch.device(name)


def fast_bf16(device: torch.device) -> bool:
    """Whether `device` multiplies bfloat16 matrices natively, so that bf16 autocast pays.

    CPUs: AVX512-BF16 or AMX through oneDNN (about 4x the fp32 matmul rate on a 2-core
    Zen 5); without them bfloat16 is emulated and slower than fp32. GPUs: Ampere and later.
    """
    if device.type == "cuda":
        return torch.cuda.get_device_capability(device) >= (8, 0)
    if device.type == "cpu" and torch.backends.mkldnn.is_available():
        # private but stable since torch 2.1; a torch without them gets fp32
        probes = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
        return any(getattr(torch.cpu, name, lambda: False)() for name in probes)
    return False


def resolve_precision(name: str, device: torch.device) -> str:
    """'auto' -> 'bf16' where bfloat16 is fast on `device`, else 'fp32'; other names stay."""
    if name != "auto":
        return name
    return "bf16" if fast_bf16(device) else "fp32"


_INIT_LOCK = threading.Lock()  # the initial weights come from the global RNG, which threads share


def build_model(config: TrainConfig) -> VAE:
    """The initial model, the same for the same seed whatever the global RNG holds, in any thread."""
    with _INIT_LOCK, torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        return VAE(config.model)


def _optimizer(model: torch.nn.Module, config: TrainConfig, device: torch.device) -> torch.optim.Optimizer:
    # the fused kernel is the fastest Adam on CPU and CUDA and changes no result beyond rounding
    fused = device.type in ("cpu", "cuda")
    return torch.optim.Adam(model.parameters(), lr=config.lr, fused=fused)


BatchLoss = Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]


def _batch_loss(model: VAE, config: TrainConfig, device: torch.device, precision: str) -> BatchLoss:
    """(x (B, D), eps (B, H)) -> (the loss to minimize, its (recon, KL) means): the step's forward.

    bf16: the layers run in bfloat16 under autocast; the loss is taken in float32.
    """
    lam, kind = config.lam, config.model.recon
    bf16 = precision == "bf16"

    def batch_loss(x: torch.Tensor, eps: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            out = model(x, eps=eps)
        if bf16:
            out = VAEOutput(*(t.float() for t in out))
        terms = vae_loss(out, x, lam, kind)
        return terms.total, torch.stack((terms.recon, terms.kl)).detach()

    return batch_loss


TrainStep = Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]


def _train_step(
    model: VAE, optimizer: torch.optim.Optimizer, config: TrainConfig, device: torch.device, precision: str
) -> TrainStep:
    """(x (B, D), eps (B, H)) -> (the loss, its (recon, KL) means), the model updated once: a training step.

    bf16 on the CPU: Bf16Step, autocast's arithmetic with the forward and backward written
    out (a third faster there); otherwise autograd through _batch_loss, compiled on --compile.
    """
    if precision == "bf16" and device.type == "cpu" and not config.compile:
        return Bf16Step(model, optimizer, config.lam, config.model.recon, vae_loss)
    batch_loss = _batch_loss(model, config, device, precision)
    # one shape, one compilation: a short last batch runs eagerly instead of recompiling
    full_batch_loss = torch.compile(batch_loss, dynamic=False) if config.compile else batch_loss

    def step(x: torch.Tensor, eps: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        loss, means = (full_batch_loss if len(x) == config.batch_size else batch_loss)(x, eps)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        return loss, means

    return step


def _optimizer_tensors(optimizer: torch.optim.Optimizer) -> dict[str, torch.Tensor]:
    return {
        f"{index}.{name}": value.detach().cpu().clone()
        for index, entry in optimizer.state_dict()["state"].items()
        for name, value in entry.items()
    }


def _load_optimizer_tensors(optimizer: torch.optim.Optimizer, tensors: dict[str, torch.Tensor]) -> None:
    state: dict[int, dict[str, torch.Tensor]] = {}
    for key, value in tensors.items():
        index, name = key.split(".", 1)
        state.setdefault(int(index), {})[name] = value
    optimizer.load_state_dict({"state": state, "param_groups": optimizer.state_dict()["param_groups"]})


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


def _check_finite(losses: torch.Tensor, first: int, last: int, config: TrainConfig, epoch: int) -> None:
    """Raise TrainingDiverged naming the first step in [first, last) whose loss is NaN or infinite.

    One host read for the whole range, so the guard costs no sync per step.
    """
    bad = ~torch.isfinite(losses[first:last])
    if bool(bad.any()):
        index = first + int(bad.nonzero()[0, 0])
        raise _diverged(config, f"the loss was {float(losses[index]):g} at epoch {epoch}, step {index + 1}")


def _diverged(config: TrainConfig, what: str) -> TrainingDiverged:
    return TrainingDiverged(f"training diverged: {what}; try a lower --lr (now {config.lr:g}, e.g. {config.lr / 10:g})")


def _check_data(config: TrainConfig, data: Dataset) -> None:
    if data.image_shape != config.model.image_shape:
        raise ConfigError(f"the model expects {config.model.image_shape} images but {data.name} has {data.image_shape}")


def _generators(config: TrainConfig, device: torch.device) -> tuple[torch.Generator, torch.Generator]:
    """(shuffle, noise): a run's batch order, drawn on the CPU, and its noise, drawn on `device`."""
    return torch.Generator().manual_seed(config.seed), torch.Generator(device=device).manual_seed(config.seed)


def _step_noise(x: torch.Tensor, config: TrainConfig, noise_gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """(x (B, D), eps (B, H)) of a step: x binarized first when the run binarizes, then eps, from one generator."""
    if config.binarize:
        x = binarize(x, noise_gen)
    return x, torch.randn((len(x), config.model.latent_dim), generator=noise_gen, device=x.device)


def _eval_generator(config: TrainConfig, device: torch.device) -> torch.Generator:
    # the same noise every epoch, so test numbers differ only because the model did
    return torch.Generator(device=device).manual_seed(config.seed + 2)


def _check_options(config: TrainConfig, device: torch.device) -> None:
    if config.precision == "bf16" and device.type == "cuda" and not torch.cuda.is_bf16_supported():
        raise ConfigError("--precision bf16 asked for, but this GPU has no bfloat16; use --precision fp32")
    if config.compile and device.type == "cpu" and not (os.environ.get("CXX") or shutil.which("g++")):
        raise ConfigError("--compile on the CPU needs a C++ compiler (g++ or $CXX); install one or drop --compile")


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
    observer = observer or Observer()
    dev = resolve_device(device)
    if data is None:
        data = load_dataset(config.dataset, data_dir)
    _check_data(config, data)
    _check_options(config, dev)
    precision = resolve_precision(config.precision, dev)
    data = data.to(dev)
    model = build_model(config).to(dev)
    optimizer = _optimizer(model, config, dev)
    shuffle_gen, noise_gen = _generators(config, dev)
    test_images = scored_test_images(data.test.images, config)
    train_images = data.train.images
    n, batch_size = len(train_images), config.batch_size
    steps = math.ceil(n / batch_size)
    train_step = _train_step(model, optimizer, config, dev, precision)

    history: list[EpochRecord] = []
    epoch, step, carried, elapsed = 1, 0, 0.0, 0.0
    order = sums = torch.empty(0)
    if resume is not None:
        _check_resumable(resume, config, dev, n, steps)
        model.load_state_dict(resume.model)
        _load_optimizer_tensors(optimizer, resume.optimizer)
        shuffle_gen.set_state(resume.shuffle_rng)
        noise_gen.set_state(resume.noise_rng)
        history = list(resume.history)
        epoch, step, carried, elapsed = resume.epoch, resume.step, resume.epoch_seconds, resume.seconds
        order, sums = resume.order.to(dev), resume.sums.to(dev)
    observer.on_start(config, steps, dev)
    if resume is not None:
        observer.on_resume(resume)

    started = time.perf_counter() - elapsed
    epoch_start = time.perf_counter() - carried

    def snapshot() -> TrainState:
        return TrainState(
            config=config,
            epoch=epoch,
            step=step,
            history=list(history),
            model={k: v.detach().cpu().clone() for k, v in model.state_dict().items()},
            optimizer=_optimizer_tensors(optimizer),
            order=order.cpu().clone() if step else torch.empty(0, dtype=torch.int64),
            sums=sums.cpu().clone() if step else torch.zeros(2, dtype=torch.float64),
            shuffle_rng=shuffle_gen.get_state(),
            noise_rng=noise_gen.get_state(),
            seconds=time.perf_counter() - started,
            epoch_seconds=time.perf_counter() - epoch_start if step else 0.0,
            device=dev.type,
        )

    while epoch <= config.epochs:
        model.train()
        if step == 0:
            epoch_start = time.perf_counter()
            order = torch.randperm(n, generator=shuffle_gen).to(dev)
            sums = torch.zeros(2, dtype=torch.float64, device=dev)  # recon, KL summed over images
        first_step = step
        losses = torch.zeros(steps, device=dev)  # read once per epoch: the NaN guard costs no sync
        while step < steps:
            index = order[step * batch_size : (step + 1) * batch_size]
            x, eps = _step_noise(train_images.index_select(0, index), config, noise_gen)  # (B, D), (B, H)
            loss, means = train_step(x, eps)
            sums.add_(means, alpha=len(index))
            losses[step] = loss.detach()
            step += 1
            observer.on_batch(epoch, step)
            if stop is not None and stop.requested and step < steps:
                _check_finite(losses, first_step, step, config, epoch)  # never save a diverged state
                raise Stopped(snapshot())
        _check_finite(losses, first_step, steps, config, epoch)
        recon_sum, kl_sum = sums.tolist()
        train_terms = Terms(recon_sum / n, kl_sum / n)
        seconds = time.perf_counter() - epoch_start
        test_terms = evaluate(model, test_images, _eval_generator(config, dev))
        if not math.isfinite(test_terms.neg_elbo):
            raise _diverged(config, f"the test loss was {test_terms.neg_elbo:g} after epoch {epoch}")
        record = EpochRecord(epoch, config.lam, train_terms, test_terms, seconds)
        history.append(record)
        observer.on_epoch(record)
        epoch, step = epoch + 1, 0
        if epoch <= config.epochs:
            if stop is not None and stop.requested:
                raise Stopped(snapshot())
            if save_state is not None:
                save_state(snapshot())

    model.eval()
    model.zero_grad(set_to_none=True)  # Bf16Step keeps the gradients between steps
    return TrainResult(
        config=config,
        model=model.cpu(),
        history=history,
        device=str(dev),
        seconds=time.perf_counter() - started,
        dataset_source=str(data.source),
        precision=precision,
    )
