"""One shape for every data set, whatever its source: compact images, labels and, where known, factors.

A source module (core/idx.py for MNIST and Fashion-MNIST, core/dsprites.py)
reads its files into this shape; the engine, the store and every view see only
it. Images stay compact (core/images.py) and turn into floats a batch at a time.
"""

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors.torch import load as load_tensors
from safetensors.torch import save as save_tensors

from vaecli.core.images import Images, as_images
from vaecli.errors import DataError


@dataclass(frozen=True)
class Split:
    images: Images  # N images; a float tensor (N, D) in [0, 1] given here is kept as float Images
    labels: torch.Tensor  # (N,) int64: the class (a digit; for a data set of factors, its first factor)
    factors: torch.Tensor | None = None  # (N, K) int64: each image's factor classes, where the data set has them

    def __post_init__(self) -> None:
        object.__setattr__(self, "images", as_images(self.images))

    def to(self, device: torch.device | str) -> "Split":
        factors = None if self.factors is None else self.factors.to(device)
        return Split(self.images.to(device), self.labels.to(device), factors)


@dataclass(frozen=True)
class Factors:
    """The generative factors of a data set that has them: every combination once, in `index_of`'s order."""

    names: tuple[str, ...]
    sizes: tuple[int, ...]
    values: tuple[tuple[float, ...], ...]  # per factor, the value of each class
    images: Images  # all combinations, row `where[index_of(classes)]`
    where: torch.Tensor  # (prod(sizes),) int64: the row of `images` holding each combination

    @property
    def complete(self) -> bool:
        """Whether every combination of the factors is here (the metrics need them all)."""
        return bool((self.where >= 0).all())

    @staticmethod
    def index(classes: torch.Tensor, sizes: tuple[int, ...]) -> torch.Tensor:
        """Factor classes (B, K) -> the combination's index (B,), the last factor fastest."""
        index = torch.zeros(len(classes), dtype=torch.long, device=classes.device)
        for k, size in enumerate(sizes):
            index = index * size + classes[:, k].long()
        return index

    def images_of(self, classes: torch.Tensor) -> torch.Tensor:
        """The images (B, D) float32 of these factor classes (B, K)."""
        rows = self.where[self.index(classes.cpu(), self.sizes)]
        if bool((rows < 0).any()):
            held = int((self.where >= 0).sum())
            raise DataError(
                f"the data set holds {held:,} of the {len(self.where):,} factor combinations, and a metric asked "
                "for a missing one; use the whole data set"
            )
        return self.images[rows]


@dataclass(frozen=True)
class Dataset:
    name: str
    train: Split
    test: Split
    image_shape: tuple[int, int]
    source: Path
    origin: str = ""  # how the images were obtained, where it matters ("rendered", "original file")
    split_seed: int | None = None  # the seed of the train/test split, where the source has no test set of its own
    factors: Factors | None = field(default=None, repr=False)

    def to(self, device: torch.device | str) -> "Dataset":
        return Dataset(
            self.name,
            self.train.to(device),
            self.test.to(device),
            self.image_shape,
            self.source,
            self.origin,
            self.split_seed,
            self.factors,
        )

    @property
    def split(self) -> str:
        """Which train and test images: 'the test set of MNIST', 'split seed 0: 727,280 train, 10,000 test images'."""
        if self.split_seed is None:
            return f"the test set of {self.name}"
        return f"split seed {self.split_seed}: {len(self.train.images):,} train, {len(self.test.images):,} test images"

    @property
    def nbytes(self) -> int:
        """Bytes of the images held (train and test; their factor table shares them)."""
        return self.train.images.nbytes + self.test.images.nbytes


def data_digest(data: Dataset) -> str:
    """A hash of the data set's images, labels and factors: equal digests, the same training data."""
    digest = hashlib.sha256(data.name.encode())
    for split in (data.train, data.test):
        digest.update(split.images.stored.contiguous().cpu().numpy().tobytes())
        digest.update(split.images.kind.encode())
        for tensor in (split.labels, split.factors):
            if tensor is not None:
                digest.update(tensor.contiguous().cpu().numpy().tobytes())
    return digest.hexdigest()[:16]


def dataset_bytes(data: Dataset) -> bytes:
    """The data set as safetensors bytes, to send to another process (no pickles); its factor table included."""
    tensors, splits = {}, {}
    for name, split in (("train", data.train), ("test", data.test)):
        tensors[f"{name}_images"] = split.images.stored.contiguous()
        tensors[f"{name}_labels"] = split.labels.contiguous()
        if split.factors is not None:
            tensors[f"{name}_factors"] = split.factors.contiguous()
        splits[name] = {"kind": split.images.kind, "pixels": split.images.pixels}
    about: dict = {"name": data.name, "image_shape": list(data.image_shape), "source": str(data.source)}
    about |= {"origin": data.origin, "split_seed": data.split_seed, "splits": splits}
    if data.factors is not None:
        f = data.factors
        tensors["factor_rows"] = f.where.contiguous()
        about["factors"] = {"names": f.names, "sizes": f.sizes, "values": f.values}
    return save_tensors(tensors, metadata={"dataset": json.dumps(about)})


def dataset_from_bytes(raw: bytes) -> Dataset:
    """dataset_bytes read back."""
    header = json.loads(raw[8 : 8 + int.from_bytes(raw[:8], "little")])  # safetensors: length, JSON, tensors
    about, tensors = json.loads(header["__metadata__"]["dataset"]), load_tensors(raw)

    def split(name: str) -> Split:
        form = about["splits"][name]
        images = Images(tensors[f"{name}_images"], form["kind"], form["pixels"])
        return Split(images, tensors[f"{name}_labels"], tensors.get(f"{name}_factors"))

    train, test = split("train"), split("test")
    factors = None
    if "factors" in about:
        f = about["factors"]
        stored = torch.cat([train.images.stored, test.images.stored])  # the factor table's rows: train, then test
        table = Images(stored, train.images.kind, train.images.pixels)
        values = tuple(tuple(v) for v in f["values"])
        factors = Factors(tuple(f["names"]), tuple(f["sizes"]), values, table, tensors["factor_rows"])
    shape = (int(about["image_shape"][0]), int(about["image_shape"][1]))
    source = Path(about["source"])
    return Dataset(about["name"], train, test, shape, source, about["origin"], about["split_seed"], factors)
