"""ModelConfig and TrainConfig: frozen dataclasses that round-trip through JSON.

Loading rejects unknown keys and wrong types, so a config read from a shared
file is as trustworthy as one built in code.
"""

import hashlib
import json
import math
from dataclasses import asdict, dataclass, field, fields
from enum import Enum
from typing import Any

from vaecli.errors import ConfigError


# the choices and limits of the options, defined once here (free of torch, so --help can show them fast);
# the CLI takes the Enums, configs hold their values: plain strings
class Recon(str, Enum):
    """The likelihood p(x|z)."""

    bernoulli = "bernoulli"
    gaussian = "gaussian"


class DatasetName(str, Enum):
    mnist = "mnist"
    fashion_mnist = "fashion-mnist"


class Precision(str, Enum):
    auto = "auto"
    fp32 = "fp32"
    bf16 = "bf16"


class Device(str, Enum):
    auto = "auto"
    cpu = "cpu"
    cuda = "cuda"
    mps = "mps"


class ObjectiveName(str, Enum):
    """What training maximizes: the ELBO (with lam and its variants) or the importance-weighted bound."""

    elbo = "elbo"
    iwae = "iwae"


class LrSchedule(str, Enum):
    """How Adam's learning rate moves over a fit (engine/steps.learning_rate)."""

    constant = "constant"
    cosine = "cosine"
    onecycle = "onecycle"


class StackMode(str, Enum):
    """How a sweep trains its members: see studies/sweep.choose_executor."""

    auto = "auto"
    on = "on"
    off = "off"


RECON_KINDS = tuple(k.value for k in Recon)
DATASET_TITLES = {DatasetName.mnist.value: "MNIST", DatasetName.fashion_mnist.value: "Fashion-MNIST"}
DATASETS = tuple(k.value for k in DatasetName)
PRECISIONS = tuple(k.value for k in Precision)
DEVICES = tuple(k.value for k in Device)
STACK_MODES = tuple(k.value for k in StackMode)
OBJECTIVES = tuple(k.value for k in ObjectiveName)
LR_SCHEDULES = tuple(k.value for k in LrSchedule)
# each schedule's learning rate when none is given (the peak of a schedule): "constant" keeps the first
# release's, so `lr_schedule="constant"` alone is that recipe, and its runs keep their names
LEARNING_RATES = {"constant": 1e-3, "cosine": 3e-3, "onecycle": 3e-3}


class _ScheduleLr(float):
    """The type of SCHEDULE_LR, so that the default is told from any number a user gives, nan included; and of
    the rate it resolves to, so that dataclasses.replace(config, lr_schedule=...) takes the new schedule's rate."""


SCHEDULE_LR = _ScheduleLr("nan")  # TrainConfig.lr's default: the schedule's own, from LEARNING_RATES
MAX_K = 5000  # importance samples per training image: K decodes of every image at every step
MAX_N = 100  # the largest --n of a figure: 100 x 100 tiles is already 2800 x 2800 pixels
MAX_MEMBERS = 64  # beyond this a sweep needs an explicit yes
MAX_STACK = 16  # members per stacked group: bounds memory (weights, gradients and Adam state M times over)
MAX_JOBS = 4  # fits side by side by default: each holds the GIL for its Python, about a fifth of a step


def epochs_text(n: int) -> str:
    """'1 epoch', '20 epochs': a count of epochs as every report and title says it."""
    return f"{n} epoch" + ("" if n == 1 else "s")


def _check_int(name: str, value: Any, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(f"{name} must be an integer, got {value!r}")
    if value < minimum:
        raise ConfigError(f"{name} must be at least {minimum}, got {value}")


def _check_float(name: str, value: Any, minimum: float, *, strict: bool = False) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ConfigError(f"{name} must be a finite number, got {value!r}")
    if value < minimum or (strict and value == minimum):
        bound = "greater than" if strict else "at least"
        raise ConfigError(f"{name} must be {bound} {minimum:g}, got {value:g}")


def _check_choice(name: str, value: Any, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ConfigError(f"{name} must be one of {', '.join(choices)}; got {value!r}")


def _check_keys(cls: type, data: Any) -> None:
    if not isinstance(data, dict):
        raise ConfigError(f"{cls.__name__} must be a JSON object, got {type(data).__name__}")
    unknown = set(data) - {f.name for f in fields(cls)}
    if unknown:
        raise ConfigError(f"{cls.__name__} has unknown keys: {', '.join(sorted(unknown))}")


@dataclass(frozen=True)
class ModelConfig:
    """The network: image -> MLP -> (mu, logvar) of size latent_dim -> mirrored MLP -> logits."""

    latent_dim: int = 2
    hidden_layers: tuple[int, ...] = (512, 256)
    image_shape: tuple[int, int] = (28, 28)
    recon: str = "bernoulli"  # likelihood p(x|z): "bernoulli" (BCE) or "gaussian" (squared error)

    def __post_init__(self) -> None:
        _check_int("latent_dim", self.latent_dim, 1)
        if not isinstance(self.hidden_layers, tuple):
            raise ConfigError(f"hidden_layers must be a tuple of sizes, got {self.hidden_layers!r}")
        for size in self.hidden_layers:
            _check_int("each hidden layer size", size, 1)
        if not isinstance(self.image_shape, tuple) or len(self.image_shape) != 2:
            raise ConfigError(f"image_shape must be (height, width), got {self.image_shape!r}")
        for side in self.image_shape:
            _check_int("image side", side, 1)
        _check_choice("recon", self.recon, RECON_KINDS)

    @property
    def input_dim(self) -> int:
        return self.image_shape[0] * self.image_shape[1]

    @classmethod
    def from_dict(cls, data: Any) -> "ModelConfig":
        _check_keys(cls, data)
        data = dict(data)
        for key in ("hidden_layers", "image_shape"):
            if key in data:
                if not isinstance(data[key], list | tuple):
                    raise ConfigError(f"{key} must be a list, got {data[key]!r}")
                data[key] = tuple(data[key])
        return cls(**data)


@dataclass(frozen=True)
class TrainConfig:
    """Everything that decides a trained model; two equal configs give the same run.

    `lr` not given is the schedule's own rate (LEARNING_RATES), and stays so through
    `dataclasses.replace(config, lr_schedule=...)`; a given `lr` stays as given.
    """

    model: ModelConfig = field(default_factory=ModelConfig)
    lam: float = 1.0  # weight of the KL term: loss = recon + lam * KL
    epochs: int = 20
    batch_size: int = 128
    lr: float = SCHEDULE_LR  # Adam's learning rate, the peak of a schedule; by default the schedule's (LEARNING_RATES)
    seed: int = 0
    dataset: str = "mnist"
    binarize: bool = False  # dynamic binarization: a fresh Bernoulli draw of every batch
    # how the arithmetic is done: both change the trained weights (rounding), so both are in the hash
    # "bf16": bfloat16 autocast for the layers; weights and Adam stay fp32. "auto": bf16 where the
    # device multiplies bfloat16 natively (AVX512-BF16 or AMX CPUs, CUDA compute capability 8+), else fp32
    precision: str = "auto"
    compile: bool = False  # torch.compile the training step
    # the objective (core/loss.py); fields added after the first release are left out of the JSON at the
    # value that does what runs before them did (ADDED_LATER), so that those runs keep their names
    objective: str = "elbo"  # "elbo": recon + lam * KL and its variants below; "iwae": the IW-k bound
    k: int = 1  # importance samples per image, for "iwae" (k = 1 is the ELBO)
    kl_warmup: int = 0  # epochs over which the KL weight rises linearly from 0 to lam, step by step
    free_bits: float = 0.0  # nats: each latent dimension's batch-mean KL counts as at least this much
    capacity: float = 0.0  # nats: the KL term becomes lam * |KL - C(t)|, C(t) rising to this (0: off)
    capacity_epochs: int = 0  # epochs over which C(t) rises linearly from 0 to capacity (0: C from the start)
    lr_schedule: str = "cosine"  # Adam's learning rate over the fit (engine/steps.learning_rate)

    def __post_init__(self) -> None:
        if not isinstance(self.model, ModelConfig):
            raise ConfigError(f"model must be a ModelConfig, got {type(self.model).__name__}")
        _check_float("lam", self.lam, 0.0)
        _check_int("epochs", self.epochs, 1)
        _check_int("batch_size", self.batch_size, 1)
        _check_choice("lr_schedule", self.lr_schedule, LR_SCHEDULES)
        if self.lr_follows_schedule:  # not given, here or in the config this one replaces
            object.__setattr__(self, "lr", _ScheduleLr(LEARNING_RATES[self.lr_schedule]))
        _check_float("lr", self.lr, 0.0, strict=True)
        _check_int("seed", self.seed, 0)
        _check_choice("dataset", self.dataset, DATASETS)
        if not isinstance(self.binarize, bool):
            raise ConfigError(f"binarize must be true or false, got {self.binarize!r}")
        _check_choice("precision", self.precision, PRECISIONS)
        if not isinstance(self.compile, bool):
            raise ConfigError(f"compile must be true or false, got {self.compile!r}")
        self._check_objective()
        # 1 and 1.0 are the same lam: keep one spelling so the JSON (and hash) agree
        for name in ("lam", "free_bits", "capacity"):
            object.__setattr__(self, name, float(getattr(self, name)))
        if not self.lr_follows_schedule:
            object.__setattr__(self, "lr", float(self.lr))

    def _check_objective(self) -> None:
        _check_choice("objective", self.objective, OBJECTIVES)
        _check_int("k", self.k, 1)
        if self.k > MAX_K:
            raise ConfigError(f"k must be at most {MAX_K}, got {self.k}")
        _check_int("kl_warmup", self.kl_warmup, 0)
        _check_float("free_bits", self.free_bits, 0.0)
        _check_float("capacity", self.capacity, 0.0)
        _check_int("capacity_epochs", self.capacity_epochs, 0)
        if self.kl_warmup > self.epochs:
            raise ConfigError(f"--kl-warmup ({self.kl_warmup} epochs) must be at most --epochs ({self.epochs})")
        if self.capacity_epochs > self.epochs:
            raise ConfigError(f"--capacity-epochs ({self.capacity_epochs}) must be at most --epochs ({self.epochs})")
        if self.capacity_epochs and not self.capacity:
            raise ConfigError("--capacity-epochs ramps a capacity: give --capacity C too")
        if self.capacity and self.free_bits:
            raise ConfigError("--free-bits and --capacity both hold the KL up; use one of them")
        if self.capacity and self.kl_warmup:
            raise ConfigError("--capacity already ramps what the KL may hold (--capacity-epochs); drop --kl-warmup")
        if self.compile and (self.kl_warmup or self.capacity_epochs):
            # a compiled step is specialized on the KL weight: a ramp would compile it again at every step
            raise ConfigError("--compile cannot follow a ramp (--kl-warmup, --capacity-epochs); drop one of them")
        if self.objective == "elbo" and self.k != 1:
            raise ConfigError(f"--k {self.k} is the importance-weighted bound's: add --objective iwae")
        if self.objective == "iwae":
            refused = [
                ("--lam", self.lam != 1.0, "the bound has no KL weight: it is log p(x) as k grows"),
                ("--kl-warmup", self.kl_warmup > 0, "the bound has no KL term to warm up"),
                ("--free-bits", self.free_bits > 0, "the bound has no KL term to hold up"),
                ("--capacity", self.capacity > 0, "the bound has no KL term to hold"),
            ]
            for flag, given, why in refused:
                if given:
                    raise ConfigError(f"--objective iwae cannot take {flag}: {why}")

    @property
    def lr_follows_schedule(self) -> bool:
        """Whether `lr` is the schedule's own rate because none was given (a stored config's rate counts as
        given)."""
        return isinstance(self.lr, _ScheduleLr)

    @property
    def plain_elbo(self) -> bool:
        """Whether the objective is recon + lam * KL, as before any of its variants existed."""
        return self.objective == "elbo" and not (self.kl_warmup or self.free_bits or self.capacity)

    def describe_objective(self) -> str:
        """'elbo', 'iwae k=50', 'elbo, free bits 1', ...: what a report says was optimised."""
        if self.objective == "iwae":
            return f"iwae k={self.k}"
        parts = ["elbo"]
        if self.kl_warmup:
            parts.append(f"KL warm-up {epochs_text(self.kl_warmup)}")
        if self.free_bits:
            parts.append(f"free bits {self.free_bits:g}")
        if self.capacity:
            ramp = f" over {epochs_text(self.capacity_epochs)}" if self.capacity_epochs else ""
            parts.append(f"capacity {self.capacity:g} nats{ramp}")
        return ", ".join(parts)

    def describe_lr(self) -> str:
        """'lr 0.001' or 'lr 0.003, cosine': Adam's learning rate as a report says it."""
        return f"lr {self.lr:g}" + ("" if self.lr_schedule == "constant" else f", {self.lr_schedule}")

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["model"]["hidden_layers"] = list(self.model.hidden_layers)
        data["model"]["image_shape"] = list(self.model.image_shape)
        for name, default in ADDED_LATER.items():
            if data[name] == default:
                del data[name]
        return data

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))

    def digest(self) -> str:
        """A short hash of the full config: equal configs, equal digests."""
        return hashlib.sha256(self.to_json().encode()).hexdigest()[:8]

    @classmethod
    def from_dict(cls, data: Any) -> "TrainConfig":
        _check_keys(cls, data)
        data = dict(data)
        if "model" in data:
            data["model"] = ModelConfig.from_dict(data["model"])
        data.setdefault("precision", "fp32")  # configs from before the option were trained in fp32
        data.setdefault("lr_schedule", "constant")  # and those from before this one at a constant rate
        return cls(**data)

    @classmethod
    def from_json(cls, text: str) -> "TrainConfig":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as e:
            raise ConfigError(f"config is not valid JSON ({e})") from e
        return cls.from_dict(data)


# fields added to TrainConfig after the first release, and the value that does what runs did before them (the
# default, but for lr_schedule): left out of the JSON (and so of the hash in the run name) at that value, so
# that a run trained before them keeps its name
ADDED_LATER: dict[str, Any] = {
    "objective": "elbo",
    "k": 1,
    "kl_warmup": 0,
    "free_bits": 0.0,
    "capacity": 0.0,
    "capacity_epochs": 0,
    "lr_schedule": "constant",  # not the default: what every run trained before the option did
}
