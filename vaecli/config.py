"""ModelConfig and TrainConfig: frozen dataclasses that round-trip through JSON.

Loading rejects unknown keys and wrong types, so a config read from a shared
file is as trustworthy as one built in code. Each field that a user sets carries
its Option (help, range, flag, sweep axis) as metadata: vaecli/options.py makes the
table of options from them, and the CLI, the config files and the reproduce lines
all come from that table.
"""

import hashlib
import json
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any

from vaecli.choices import (
    DATASET_TITLES,
    IMAGE_SHAPES,
    LEARNING_RATES,
    MAX_EPOCHS,
    MAX_K,
    MAX_SEED,
    SEEDED_SPLITS,
    DatasetName,
    LrSchedule,
    ObjectiveName,
    Precision,
    Recon,
)
from vaecli.errors import ConfigError
from vaecli.fields import check_field, check_fields, check_int, check_keys, option


class _ScheduleLr(float):
    """The type of SCHEDULE_LR, so that the default is told from any number a user gives, nan included; and of
    the rate it resolves to, so that dataclasses.replace(config, lr_schedule=...) takes the new schedule's rate."""


SCHEDULE_LR = _ScheduleLr("nan")  # TrainConfig.lr's default: the schedule's own, from LEARNING_RATES


def epochs_text(n: int) -> str:
    """'1 epoch', '20 epochs': a count of epochs as every report and title says it."""
    return f"{n} epoch" + ("" if n == 1 else "s")


@dataclass(frozen=True)
class ModelConfig:
    """The network: image -> MLP -> (mu, logvar) of size latent_dim -> mirrored MLP -> logits."""

    latent_dim: int = option(
        2, "Latent size H (mu and logvar each have H units).", flag="--hidden", short="-H", minimum=1, axis=("H", "h")
    )
    hidden_layers: tuple[int, ...] = option(
        (512, 256),
        "Encoder hidden layer sizes (decoder mirrors them), e.g. --layers 512 256.",
        flag="--layers",
        minimum=1,
        metavar="N [N ...]",
        show_default="512 256",
    )
    image_shape: tuple[int, int] = (28, 28)  # the data set's, not an option
    recon: str = option(
        "bernoulli", "Likelihood: bernoulli (BCE on logits) or gaussian (summed squared error).", choices=Recon
    )

    def __post_init__(self) -> None:
        if not isinstance(self.hidden_layers, tuple):
            raise ConfigError(f"`hidden_layers` must be a tuple of sizes, got {self.hidden_layers!r}")
        for size in self.hidden_layers:
            check_int("hidden_layers", size, 1)
        if not isinstance(self.image_shape, tuple) or len(self.image_shape) != 2:
            raise ConfigError(f"image_shape must be (height, width), got {self.image_shape!r}")
        for side in self.image_shape:
            check_int("image side", side, 1)
        check_fields(self)

    @property
    def input_dim(self) -> int:
        return self.image_shape[0] * self.image_shape[1]

    @classmethod
    def from_dict(cls, data: Any) -> "ModelConfig":
        check_keys(cls, data)
        data = dict(data)
        for key in ("hidden_layers", "image_shape"):
            if key in data:
                if not isinstance(data[key], list | tuple):
                    raise ConfigError(f"`{key}` must be a list, got {data[key]!r}")
                data[key] = tuple(data[key])
        return cls(**data)


@dataclass(frozen=True)
class TrainConfig:
    """Everything that decides a trained model; two equal configs give the same run.

    `lr` not given is the schedule's own rate (LEARNING_RATES), and stays so through
    `dataclasses.replace(config, lr_schedule=...)`; a given `lr` stays as given.
    """

    model: ModelConfig = field(default_factory=ModelConfig)
    lam: float = option(  # weight of the KL term: loss = recon + lam * KL
        1.0, "Weight of the KL term (≥ 0): loss = recon + lam * KL.", minimum=0.0, axis=("lam", "lam")
    )
    # the objective (core/loss.py); fields added after the first release are left out of the JSON at the
    # value that does what runs before them did (ADDED_LATER), so that those runs keep their names
    objective: str = option(  # "elbo": recon + lam * KL and its variants below; "iwae": the IW-k bound
        "elbo",
        "elbo: recon + lam * KL, with the variants below; iwae: the importance-weighted bound with --k samples; "
        "betatc: beta-TCVAE, the KL's total correlation weighted by --tc-weight; dip1, dip2: DIP-VAE; "
        "factor: FactorVAE.",
        choices=ObjectiveName,
        axis=("objective", ""),
    )
    tc_weight: float = option(  # beta-TCVAE's beta: the weight of the KL's total-correlation part
        1.0,
        "Weight of the total correlation, for --objective betatc (Chen et al.'s beta; lam weights the KL's "
        "other two parts).",
        minimum=0.0,
        metavar="B",
        axis=("TC weight", "tc"),
    )
    dip_offdiag: float = option(  # DIP-VAE's lambda_od
        10.0,
        "DIP-VAE's weight of the codes' off-diagonal covariance, for --objective dip1 or dip2.",
        minimum=0.0,
        metavar="L",
        axis=("DIP off-diagonal", "od"),
    )
    dip_diag: float = option(  # DIP-VAE's lambda_d
        100.0,
        "DIP-VAE's weight of the diagonal's distance from 1 (Kumar et al.: 10 x --dip-offdiag for dip1, "
        "equal to it for dip2).",
        minimum=0.0,
        metavar="L",
        axis=("DIP diagonal", "d"),
    )
    factor_gamma: float = option(  # FactorVAE's gamma
        10.0,
        "FactorVAE's weight of the discriminator's total-correlation estimate, for --objective factor.",
        minimum=0.0,
        metavar="G",
        axis=("gamma", "g"),
    )
    k: int = option(  # importance samples per image, for "iwae" (k = 1 is the ELBO)
        1,
        "Importance samples per image, for --objective iwae (1: the ELBO).",
        minimum=1,
        maximum=MAX_K,
        axis=("k", "k"),
    )
    kl_warmup: int = option(  # epochs over which the KL weight rises linearly from 0 to lam, step by step
        0,
        "KL warm-up: the KL weight rises linearly from 0 to lam over E epochs.",
        minimum=0,
        maximum=MAX_EPOCHS,
        metavar="E",
        axis=("KL warm-up", "wu"),
    )
    free_bits: float = option(  # nats: each latent dimension's batch-mean KL counts as at least this much
        0.0,
        "Free bits: each latent dimension's KL counts as ≥ F nats.",
        minimum=0.0,
        metavar="F",
        axis=("free bits", "fb"),
    )
    capacity: float = option(  # nats: the KL term becomes lam * |KL - C(t)|, C(t) rising to this (0: off)
        0.0,
        "Capacity: the KL term is lam * |KL - C(t)|, C(t) up to C.",
        minimum=0.0,
        metavar="C",
        axis=("capacity", "cap"),
    )
    capacity_epochs: int = option(  # epochs over which C(t) rises linearly from 0 to capacity (0: at once)
        0,
        "Epochs over which C(t) rises from 0 to --capacity (0: at once).",
        minimum=0,
        maximum=MAX_EPOCHS,
        metavar="E",
        axis=("capacity epochs", "capep"),
    )
    epochs: int = option(20, "Passes over the training set.", minimum=1, maximum=MAX_EPOCHS)
    batch_size: int = option(128, "Images per optimizer step.", minimum=1)
    lr: float = option(  # Adam's learning rate, the peak of a schedule; by default the schedule's (LEARNING_RATES)
        SCHEDULE_LR,
        "Adam's learning rate (> 0), the peak of a schedule.",
        minimum=0.0,
        above=True,
        show_default=f"{LEARNING_RATES['cosine']:g}; {LEARNING_RATES['constant']:g} with --lr-schedule constant",
    )
    lr_schedule: str = option(  # Adam's learning rate over the fit (engine/steps.learning_rate)
        "cosine",
        "Adam's learning rate over the fit: constant; cosine (a short warm-up, then down to 0 at the "
        "last epoch); onecycle (up over 30 % of the fit, then down).",
        choices=LrSchedule,
        axis=("schedule", ""),  # each member at its schedule's own rate unless lr gives one for all
    )
    seed: int = option(
        0, "Seed for init, shuffling and noise; same seed on CPU, same weights.", minimum=0, maximum=MAX_SEED
    )
    dataset: str = option("mnist", "mnist, fashion-mnist or dsprites.", choices=DatasetName)
    # the train/test split of a data set without a test set of its own (SEEDED_SPLITS): in the JSON of such
    # runs only, so that other runs keep their names
    split_seed: int = option(
        0,
        "Seed of the train/test split of dsprites (which has no test set of its own).",
        minimum=0,
        maximum=MAX_SEED,
    )
    binarize: bool = option(False, "Dynamic binarization: a fresh Bernoulli draw of every batch.")
    # how the arithmetic is done: both change the trained weights (rounding), so both are in the hash
    # "bf16": bfloat16 autocast for the layers; weights and Adam stay fp32. "auto": bf16 where the
    # device multiplies bfloat16 natively (AVX512-BF16 or AMX CPUs, CUDA compute capability 8+), else fp32
    precision: str = option(
        "auto",
        "bf16: the layers in bfloat16 autocast (weights and Adam stay fp32); "
        "auto: bf16 where the CPU or GPU has native bfloat16 (AVX512-BF16, AMX, Ampere+), else fp32.",
        choices=Precision,
    )
    compile: bool = option(False, "torch.compile the training step (costs a compilation up front).")

    def __post_init__(self) -> None:
        if not isinstance(self.model, ModelConfig):
            raise ConfigError(f"model must be a ModelConfig, got {type(self.model).__name__}")
        check_field(next(f for f in fields(self) if f.name == "lr_schedule"), self.lr_schedule)
        if self.lr_follows_schedule:  # not given, here or in the config this one replaces
            object.__setattr__(self, "lr", _ScheduleLr(LEARNING_RATES[self.lr_schedule]))
        check_fields(self)
        shape = IMAGE_SHAPES[self.dataset]  # a model left at the default size takes the data set's images
        if self.model.image_shape == ModelConfig.image_shape and shape != ModelConfig.image_shape:
            object.__setattr__(self, "model", replace(self.model, image_shape=shape))
        self._check_objective()
        # 1 and 1.0 are the same lam: keep one spelling so the JSON (and hash) agree
        for name in ("lam", "free_bits", "capacity", "tc_weight", "dip_offdiag", "dip_diag", "factor_gamma"):
            object.__setattr__(self, name, float(getattr(self, name)))
        if not self.lr_follows_schedule:
            object.__setattr__(self, "lr", float(self.lr))

    def _check_objective(self) -> None:
        """The combinations of fields that make no sense, one line each (fields in backquotes: the CLI names
        them by their flags)."""
        if self.split_seed and self.dataset not in SEEDED_SPLITS:
            raise ConfigError(f"`split_seed` draws the split of {', '.join(SEEDED_SPLITS)}; {self.dataset} has its own")
        if self.kl_warmup > self.epochs:
            raise ConfigError(f"`kl_warmup` ({self.kl_warmup} epochs) must be at most `epochs` ({self.epochs})")
        if self.capacity_epochs > self.epochs:
            raise ConfigError(f"`capacity_epochs` ({self.capacity_epochs}) must be at most `epochs` ({self.epochs})")
        if self.capacity_epochs and not self.capacity:
            raise ConfigError("`capacity_epochs` ramps a capacity: give `capacity` C too")
        if self.capacity and self.free_bits:
            raise ConfigError("`free_bits` and `capacity` both hold the KL up; use one of them")
        if self.capacity and self.kl_warmup:
            raise ConfigError("`capacity` already ramps what the KL may hold (`capacity_epochs`); drop `kl_warmup`")
        if self.compile and (self.kl_warmup or self.capacity_epochs):
            # a compiled step is specialized on the KL weight: a ramp would compile it again at every step
            raise ConfigError("`compile` cannot follow a ramp (`kl_warmup`, `capacity_epochs`); drop one of them")
        if self.objective != "iwae" and self.k != 1:
            raise ConfigError(f"`k` {self.k} is the importance-weighted bound's: add `objective` iwae")
        if self.objective != "betatc" and self._given("tc_weight"):
            raise ConfigError("`tc_weight` weights beta-TCVAE's total correlation: add `objective` betatc")
        dip = self.objective in ("dip1", "dip2")
        if not dip and (self._given("dip_offdiag") or self._given("dip_diag")):
            raise ConfigError("`dip_offdiag` and `dip_diag` weight DIP-VAE's penalty: add `objective` dip1 or dip2")
        if self.objective != "factor" and self._given("factor_gamma"):
            raise ConfigError("`factor_gamma` weights FactorVAE's total correlation: add `objective` factor")
        if self.objective in ("betatc", "factor") or dip:
            why = {"betatc": "it weights the KL's parts", "factor": "its discriminator holds the codes apart"}.get(
                self.objective, "it penalises the codes' covariance"
            )
            for name, given in (("free_bits", self.free_bits > 0), ("capacity", self.capacity > 0)):
                if given:
                    raise ConfigError(f"`objective` {self.objective} cannot take `{name}`: {why} instead")
        if self.objective == "iwae":
            refused = [
                ("lam", self.lam != 1.0, "the bound has no KL weight: it is log p(x) as k grows"),
                ("kl_warmup", self.kl_warmup > 0, "the bound has no KL term to warm up"),
                ("free_bits", self.free_bits > 0, "the bound has no KL term to hold up"),
                ("capacity", self.capacity > 0, "the bound has no KL term to hold"),
            ]
            for name, given, why in refused:
                if given:
                    raise ConfigError(f"`objective` iwae cannot take `{name}`: {why}")

    def _given(self, name: str) -> bool:
        """Whether field `name`, added after the first release, is away from the value runs had before it."""
        return bool(getattr(self, name) != ADDED_LATER[name])

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
        head = {
            "betatc": f"betatc TC weight {self.tc_weight:g}",
            "dip1": f"dip1 off-diagonal {self.dip_offdiag:g}, diagonal {self.dip_diag:g}",
            "dip2": f"dip2 off-diagonal {self.dip_offdiag:g}, diagonal {self.dip_diag:g}",
            "factor": f"factor gamma {self.factor_gamma:g}",
        }
        parts = [head.get(self.objective, "elbo")]
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

    def describe(self, long: bool = False, seed: bool = True) -> str:
        """The one description of a run, in words: what every report, title, header and page says.

        Short: 'H=2, lam=1, 20 epochs, MNIST' (the objective after lam when it is not the plain ELBO).
        Long adds the network, the likelihood, the data's binarization, the batch, Adam, the seed and
        the arithmetic: 'H=2, lam=1, iwae k=5, layers 512-256, bernoulli likelihood, MNIST (binarized),
        20 epochs, batch 128, Adam lr 0.003, cosine, seed 0, precision auto' (`seed` False: without the seed,
        for a sweep's members, which vary it).
        """
        model = self.model
        head = f"H={model.latent_dim}, lam={self.lam:g}" + ("" if self.plain_elbo else f", {self.describe_objective()}")
        data = DATASET_TITLES[self.dataset]
        if self.dataset in SEEDED_SPLITS:  # which images were held out: every figure and metric says so
            data += f" (split seed {self.split_seed})"
        if not long:
            return f"{head}, {epochs_text(self.epochs)}, {data}"
        layers = "-".join(map(str, model.hidden_layers)) or "none"
        return (
            f"{head}, layers {layers}, {model.recon} likelihood, {data}"
            + (" (binarized)" if self.binarize else "")
            + f", {epochs_text(self.epochs)}, batch {self.batch_size}, Adam {self.describe_lr()}"
            + (f", seed {self.seed}" if seed else "")
            + f", precision {self.precision}"
            + (", compiled" if self.compile else "")
        )

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["model"]["hidden_layers"] = list(self.model.hidden_layers)
        data["model"]["image_shape"] = list(self.model.image_shape)
        for name, default in ADDED_LATER.items():
            if data[name] == default:
                del data[name]
        if self.dataset not in SEEDED_SPLITS:
            del data["split_seed"]
        return data

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))

    def digest(self) -> str:
        """A short hash of the full config: equal configs, equal digests."""
        return hashlib.sha256(self.to_json().encode()).hexdigest()[:8]

    @classmethod
    def from_dict(cls, data: Any) -> "TrainConfig":
        check_keys(cls, data)
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
    "tc_weight": 1.0,
    "dip_offdiag": 10.0,
    "dip_diag": 100.0,
    "factor_gamma": 10.0,
    "kl_warmup": 0,
    "free_bits": 0.0,
    "capacity": 0.0,
    "capacity_epochs": 0,
    "lr_schedule": "constant",  # not the default: what every run trained before the option did
}
