"""Training: config + data in, model + per-epoch history out. The loop never prints.

The data sit on the training device as one tensor; a batch is an index into
it, so the loop does no per-sample Python work.
"""

import math
import time
from dataclasses import dataclass

import torch

from vaecli.config import TrainConfig
from vaecli.data import Dataset, load_dataset
from vaecli.errors import ConfigError
from vaecli.loss import vae_loss
from vaecli.metrics import EpochRecord, Terms, evaluate, scored_test_images
from vaecli.model import VAE

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


def build_model(config: TrainConfig) -> VAE:
    """The initial model, the same for the same seed whatever the global RNG holds."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        return VAE(config.model)


def _optimizer(model: VAE, config: TrainConfig, device: torch.device) -> torch.optim.Optimizer:
    # the fused kernel is the fastest Adam on CPU and CUDA and changes no result beyond rounding
    fused = device.type in ("cpu", "cuda")
    return torch.optim.Adam(model.parameters(), lr=config.lr, fused=fused)


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
    data = data.to(dev)
    model = build_model(config).to(dev)
    optimizer = _optimizer(model, config, dev)
    shuffle_gen = torch.Generator().manual_seed(config.seed)
    noise_gen = torch.Generator(device=dev).manual_seed(config.seed)
    test_images = scored_test_images(data.test.images, config)
    train_images = data.train.images
    n, batch_size = len(train_images), config.batch_size
    steps = math.ceil(n / batch_size)
    observer.on_start(config, steps, dev)

    history: list[EpochRecord] = []
    started = time.perf_counter()
    for epoch in range(1, config.epochs + 1):
        model.train()
        epoch_start = time.perf_counter()
        order = torch.randperm(n, generator=shuffle_gen).to(dev)
        recon_sum = torch.zeros((), dtype=torch.float64, device=dev)
        kl_sum = torch.zeros((), dtype=torch.float64, device=dev)
        for step in range(steps):
            index = order[step * batch_size : (step + 1) * batch_size]
            x = train_images[index]  # (B, D)
            if config.binarize:
                x = torch.bernoulli(x, generator=noise_gen)
            terms = vae_loss(model(x, noise_gen), x, config.lam, config.model.recon)
            optimizer.zero_grad(set_to_none=True)
            terms.total.backward()
            optimizer.step()
            recon_sum += terms.recon.detach() * len(index)
            kl_sum += terms.kl.detach() * len(index)
            observer.on_batch(epoch, step + 1)
        train_terms = Terms(recon_sum.item() / n, kl_sum.item() / n)
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
    )
