"""The data sets by name: where their files are looked for, and each source's reader behind one call.

    from vaecli.core.data import load_dataset
    data = load_dataset("dsprites", split_seed=0)
    x = data.train.images[:128]  # float32 (128, 4096), the rest stays packed

MNIST and Fashion-MNIST come from IDX files (core/idx.py), with their own train
and test sets. dSprites (core/dsprites.py) is read from the original file when
the data folder has it, else rendered from its definition and cached; its
train/test split is drawn with a seed recorded in the run's config.
"""

import math
import os
from pathlib import Path

import numpy as np
import torch

from vaecli.choices import DATASET_TITLES as TITLES
from vaecli.choices import SEEDED_SPLITS
from vaecli.config import TrainConfig
from vaecli.core import idx
from vaecli.core.dataset import Dataset, Factors, Split
from vaecli.core.images import Images
from vaecli.errors import DataError

__all__ = ["Dataset", "Split", "Factors", "load_dataset", "load_for", "default_data_dir", "binarize", "SEEDED_SPLITS"]

TEST_IMAGES = 10_000  # held out of a seeded split, as many as MNIST's test set


def default_data_dir() -> Path:
    """VAECLI_DATA_DIR if set, else a cache folder under the user's home."""
    if os.environ.get("VAECLI_DATA_DIR"):
        return Path(os.environ["VAECLI_DATA_DIR"]).expanduser()
    cache = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(cache) / "vaecli" / "data"


def binarize(images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """A Bernoulli draw of every pixel, 1 with probability its value in [0, 1]: new 0/1 tensor of the same dtype.

    Drawn as u < x with u ~ U[0, 1): on the CPU, torch.bernoulli's pixels and generator
    state, bit for bit, at about a third of its cost.
    """
    return torch.rand(images.shape, generator=generator, device=images.device, dtype=images.dtype).lt_(images)


def split_rows(n: int, seed: int, n_test: int = TEST_IMAGES) -> tuple[torch.Tensor, torch.Tensor]:
    """A seeded split of n rows: (train rows, test rows), each sorted, the test set n_test rows."""
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    return order[n_test:].sort().values, order[:n_test].sort().values


def factor_dataset(
    name: str,
    images: Images,
    classes: np.ndarray,
    factors: tuple[tuple[str, ...], tuple[int, ...], tuple[tuple[float, ...], ...]],
    source: Path,
    origin: str,
    split_seed: int,
) -> Dataset:
    """A data set of factors (each image's classes in `classes`, (N, K)) split by `split_seed` into train and test.

    `factors`: names, sizes and the value of each class. The images are reordered
    once, train rows first, so that both splits and the factor table are views of
    one compact copy.
    """
    n = len(images)
    n_test = min(TEST_IMAGES, n // 5)
    train_rows, test_rows = split_rows(n, split_seed, n_test)
    order = torch.cat([train_rows, test_rows])
    rows = images.select(order)
    ordered = torch.from_numpy(classes).long()[order]
    names, sizes, values = factors
    where = torch.full((math.prod(sizes),), -1, dtype=torch.long)  # a partial file lacks some combinations
    where[Factors.index(ordered, sizes)] = torch.arange(n)
    cut = n - n_test

    def split(a: int, b: int) -> Split:
        return Split(Images(rows.stored[a:b], rows.kind, rows.pixels), ordered[a:b, 0].clone(), ordered[a:b])

    table = Factors(names, sizes, values, rows, where)
    side = int(round(images.pixels**0.5))
    return Dataset(name, split(0, cut), split(cut, n), (side, side), source, origin, split_seed, table)


def _dsprites(name: str, root: Path, explicit: bool, download_missing: bool | None, split_seed: int) -> Dataset:
    from vaecli.core import dsprites  # its renderer, only where asked for

    data = dsprites.load(root, download=bool(download_missing))
    packed = Images.from_bits(torch.from_numpy(np.ascontiguousarray(data.packed)), 64 * 64)
    values = tuple(tuple(float(v) for v in column) for column in dsprites.factor_values())
    factors = (dsprites.FACTOR_NAMES, dsprites.FACTOR_SIZES, values)
    return factor_dataset(name, packed, data.classes, factors, data.path, data.origin, split_seed)


def _idx(name: str, root: Path, explicit: bool, download_missing: bool | None, split_seed: int) -> Dataset:
    return idx.load(name, root, explicit, download_missing)


# each data set's reader: (name, root, explicit folder?, download_missing, split_seed) -> Dataset
SOURCES = {"mnist": _idx, "fashion-mnist": _idx, "dsprites": _dsprites}


def load_dataset(
    name: str = "mnist",
    data_dir: Path | str | None = None,
    *,
    download_missing: bool | None = None,
    split_seed: int = 0,
) -> Dataset:
    """Load a data set, downloading it if allowed and missing; its images stay compact until batched.

    `download_missing=None` downloads only into the default folder, never into
    a folder the caller named. `split_seed` draws the train/test split of a data
    set without a test set of its own (SEEDED_SPLITS); the others ignore it.
    """
    if name not in TITLES:
        raise DataError(f"unknown data set {name!r}; choose one of {', '.join(TITLES)}")
    explicit = data_dir is not None or bool(os.environ.get("VAECLI_DATA_DIR"))
    root = Path(data_dir).expanduser() if data_dir is not None else default_data_dir()
    return SOURCES[name](name, root, explicit, download_missing, split_seed)


def load_for(config: TrainConfig, data_dir: Path | str | None = None, download_missing: bool | None = None) -> Dataset:
    """The data set a run of `config` trains on: its data set, split as it says."""
    return load_dataset(config.dataset, data_dir, download_missing=download_missing, split_seed=config.split_seed)
