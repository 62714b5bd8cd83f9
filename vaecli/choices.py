"""The choices and limits of vaecli's options, defined once (free of torch, so `--help` shows them fast).

The CLI takes the Enums; configs hold their values, plain strings.
"""

from enum import Enum


class Recon(str, Enum):
    """The likelihood p(x|z)."""

    bernoulli = "bernoulli"
    gaussian = "gaussian"


class DatasetName(str, Enum):
    mnist = "mnist"
    fashion_mnist = "fashion-mnist"
    dsprites = "dsprites"


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
    """What training maximizes: the ELBO (with lam and its variants), the importance-weighted bound, or
    beta-TCVAE's ELBO with its total correlation weighted, DIP-VAE's with a covariance penalty, or
    FactorVAE's with a discriminator's estimate of the total correlation."""

    elbo = "elbo"
    iwae = "iwae"
    betatc = "betatc"
    dip1 = "dip1"
    dip2 = "dip2"
    factor = "factor"


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
DATASET_TITLES = {
    DatasetName.mnist.value: "MNIST",
    DatasetName.fashion_mnist.value: "Fashion-MNIST",
    DatasetName.dsprites.value: "dSprites",
}
DATASETS = tuple(k.value for k in DatasetName)
# objectives whose loss of an image depends on the batch's other images: autograd's step, never stacked
BATCH_COUPLED = (ObjectiveName.betatc.value, ObjectiveName.dip1.value, ObjectiveName.dip2.value)
# objectives the written-out step and stacking do not hold: those, and FactorVAE with its discriminator
AUTOGRAD_ONLY = (*BATCH_COUPLED, ObjectiveName.factor.value)
# the disentanglement metrics' seven numbers (studies/disentanglement.py), as eval --json and ablate name them
DISENTANGLEMENT_METRICS = (
    "beta_vae",
    "factor_vae",
    "mig",
    "sap",
    "dci_disentanglement",
    "dci_completeness",
    "dci_informativeness",
)
# what a data set's label is, and its classes' names where they are not numbers
LABEL_NAMES = {"mnist": "digit", "fashion-mnist": "class", "dsprites": "shape"}
CLASS_NAMES = {"dsprites": ("square", "ellipse", "heart")}
IMAGE_SHAPES = {"mnist": (28, 28), "fashion-mnist": (28, 28), "dsprites": (64, 64)}  # each data set's
SEEDED_SPLITS = (DatasetName.dsprites.value,)  # no test set of their own: split with TrainConfig.split_seed
PRECISIONS = tuple(k.value for k in Precision)
DEVICES = tuple(k.value for k in Device)
STACK_MODES = tuple(k.value for k in StackMode)
OBJECTIVES = tuple(k.value for k in ObjectiveName)
LR_SCHEDULES = tuple(k.value for k in LrSchedule)
# each schedule's learning rate when none is given (the peak of a schedule): "constant" keeps the first
# release's, so `lr_schedule="constant"` alone is that recipe, and its runs keep their names
LEARNING_RATES = {"constant": 1e-3, "cosine": 3e-3, "onecycle": 3e-3}


MAX_K = 5000  # importance samples per training image: K decodes of every image at every step
MAX_N = 100  # the largest --n of a figure: 100 x 100 tiles is already 2800 x 2800 pixels
MAX_MEMBERS = 64  # beyond this a sweep needs an explicit yes
MAX_STACK = 16  # members per stacked group: bounds memory (weights, gradients and Adam state M times over)
MAX_JOBS = 4  # fits side by side by default: each holds the GIL for its Python, about a fifth of a step
MAX_EPOCHS = 100_000  # passes over the data; beyond this a fit would not end in a lifetime
MAX_SEED = 2**32 - 1  # numpy's and most tools' range; torch takes the seed and small offsets from it
