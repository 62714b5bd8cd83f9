"""Training: config + data in, model + per-epoch history out. The loop never prints.

The data sit on the training device as one tensor; a batch is an index into
it, so the loop does no per-sample Python work. The loss comes from the logits
in one pass, and the step never waits for the device: the epoch's loss sums
stay on it and are read once, after the epoch. benchmarks/bench_train.py
measures the loop against a tutorial-style one and against the matmuls alone.
"""

import math
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch

from vaecli.config import TrainConfig
from vaecli.data import Dataset, load_dataset
from vaecli.errors import ConfigError
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


def build_model(config: TrainConfig) -> VAE:
    """The initial model, the same for the same seed whatever the global RNG holds."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        return VAE(config.model)


def _optimizer(model: VAE, config: TrainConfig, device: torch.device) -> torch.optim.Optimizer:
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
) -> TrainResult:
    """Fit a VAE to `data` (loaded from `data_dir` when None) and score it after each epoch."""
    observer = observer or Observer()
    dev = resolve_device(device)
    if data is None:
        data = load_dataset(config.dataset, data_dir)
    if data.image_shape != config.model.image_shape:
        raise ConfigError(f"the model expects {config.model.image_shape} images but {data.name} has {data.image_shape}")
    _check_options(config, dev)
    precision = resolve_precision(config.precision, dev)
    data = data.to(dev)
    model = build_model(config).to(dev)
    optimizer = _optimizer(model, config, dev)
    shuffle_gen = torch.Generator().manual_seed(config.seed)
    noise_gen = torch.Generator(device=dev).manual_seed(config.seed)
    test_images = scored_test_images(data.test.images, config)
    train_images = data.train.images
    n, batch_size, latent_dim = len(train_images), config.batch_size, config.model.latent_dim
    steps = math.ceil(n / batch_size)
    batch_loss = _batch_loss(model, config, dev, precision)
    # one shape, one compilation: a short last batch runs eagerly instead of recompiling
    full_batch_loss = torch.compile(batch_loss, dynamic=False) if config.compile else batch_loss
    observer.on_start(config, steps, dev)

    history: list[EpochRecord] = []
    started = time.perf_counter()
    for epoch in range(1, config.epochs + 1):
        model.train()
        epoch_start = time.perf_counter()
        order = torch.randperm(n, generator=shuffle_gen).to(dev)
        sums = torch.zeros(2, dtype=torch.float64, device=dev)  # recon, KL summed over images
        for step in range(steps):
            index = order[step * batch_size : (step + 1) * batch_size]
            x = train_images.index_select(0, index)  # (B, D)
            if config.binarize:
                x = torch.bernoulli(x, generator=noise_gen)
            eps = torch.randn((len(index), latent_dim), generator=noise_gen, device=dev)  # (B, H)
            loss, means = (full_batch_loss if len(index) == batch_size else batch_loss)(x, eps)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            sums.add_(means, alpha=len(index))
            observer.on_batch(epoch, step + 1)
        recon_sum, kl_sum = sums.tolist()
        train_terms = Terms(recon_sum / n, kl_sum / n)
        seconds = time.perf_counter() - epoch_start
        # the same noise every epoch, so test numbers differ only because the model did
        eval_gen = torch.Generator(device=dev).manual_seed(config.seed + 2)
        record = EpochRecord(epoch, config.lam, train_terms, evaluate(model, test_images, eval_gen), seconds)
        history.append(record)
        observer.on_epoch(record)

    model.eval()
    return TrainResult(
        config=config,
        model=model.cpu(),
        history=history,
        device=str(dev),
        seconds=time.perf_counter() - started,
        dataset_source=str(data.source),
        precision=precision,
    )
