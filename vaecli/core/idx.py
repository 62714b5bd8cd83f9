"""MNIST and Fashion-MNIST: their IDX files found, checked and read (or downloaded), pixels kept as bytes.

Where the files are looked for, in order: `data_dir/<Folder>/raw` (torchvision's
layout), `data_dir/raw`, `data_dir` itself, then the system folders of Debian's
data set packages. Plain and gzipped IDX files are read alike. Only the default
data folder is filled by downloading when empty; an explicit folder is
downloaded into only when asked (`download=True`), so a typo stays an error.
"""

import gzip
import struct
from pathlib import Path

import torch

from vaecli.choices import DATASET_TITLES as TITLES
from vaecli.core.dataset import Dataset, Split
from vaecli.core.images import Images
from vaecli.errors import DataError

# torchvision's folder name for each data set, and what it downloads into
FOLDERS = {"mnist": "MNIST", "fashion-mnist": "FashionMNIST"}
SYSTEM_DIRS = {"fashion-mnist": (Path("/usr/share/datasets/fashion-mnist"),)}
SPLIT_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
_UBYTE = 0x08  # IDX type code of unsigned bytes, the only one MNIST uses


def _file_in(folder: Path, name: str) -> Path | None:
    for candidate in (folder / name, folder / f"{name}.gz"):
        if candidate.is_file():
            return candidate
    return None


def _existing_file(folder: Path, name: str) -> Path:
    path = _file_in(folder, name)
    if path is None:  # find_raw_dir saw it, so it went missing since
        raise DataError(f"{folder / name}: not found (nor {name}.gz)")
    return path


def _has_all_files(folder: Path) -> bool:
    names = [n for pair in SPLIT_FILES.values() for n in pair]
    return all(_file_in(folder, n) for n in names)


def candidate_dirs(name: str, data_dir: Path) -> list[Path]:
    """Every folder searched for the four IDX files, in order."""
    local = [data_dir / FOLDERS[name] / "raw", data_dir / "raw", data_dir]
    return local + list(SYSTEM_DIRS.get(name, ()))


def find_raw_dir(name: str, data_dir: Path) -> Path | None:
    return next((d for d in candidate_dirs(name, data_dir) if _has_all_files(d)), None)


def _read_bytes(path: Path) -> bytes:
    try:
        if path.suffix == ".gz":
            with gzip.open(path, "rb") as f:
                return f.read()
        return path.read_bytes()
    except (OSError, EOFError, gzip.BadGzipFile) as e:
        raise DataError(f"{path}: cannot read ({e})") from e


def read_idx(path: Path, ndim: int) -> torch.Tensor:
    """Read an IDX file of unsigned bytes with `ndim` dimensions, checking every size."""
    raw = _read_bytes(path)
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise DataError(f"{path}: truncated IDX header ({len(raw)} bytes)")
    zero, dtype, dims = struct.unpack(">HBB", raw[:4])
    if zero != 0 or dtype != _UBYTE or dims != ndim:
        raise DataError(
            f"{path}: wrong IDX magic number 0x{raw[:4].hex()} "
            f"(expected 0x0000080{ndim}: unsigned bytes, {ndim} dimensions)"
        )
    shape = struct.unpack(f">{ndim}I", raw[4:header])
    expected = 1
    for size in shape:
        expected *= size
    if len(raw) - header != expected:
        raise DataError(
            f"{path}: body holds {len(raw) - header} bytes but the header's sizes "
            f"{'x'.join(map(str, shape))} need {expected}"
        )
    # bytearray: torch.frombuffer wants a writable buffer
    return torch.frombuffer(bytearray(raw[header:]), dtype=torch.uint8).reshape(shape)


def _read_split(folder: Path, split: str) -> tuple[torch.Tensor, torch.Tensor]:
    image_name, label_name = SPLIT_FILES[split]
    image_path, label_path = _existing_file(folder, image_name), _existing_file(folder, label_name)
    images, labels = read_idx(image_path, 3), read_idx(label_path, 1)
    if len(images) != len(labels):
        raise DataError(f"{image_path}: {len(images)} images but {label_path.name} has {len(labels)} labels")
    if len(images) == 0:
        raise DataError(f"{image_path}: holds no images")
    if int(labels.max()) > 9:
        raise DataError(f"{label_path}: label {int(labels.max())} is not a digit class 0-9")
    return images, labels


def download(name: str, root: Path) -> None:
    """Fetch the data set into `root/<Folder>/raw` with torchvision's checksummed downloader."""
    from torchvision import datasets

    cls = {"mnist": datasets.MNIST, "fashion-mnist": datasets.FashionMNIST}[name]
    try:
        for train in (True, False):
            cls(str(root), train=train, download=True)
    except Exception as e:  # urllib, checksum and file errors all mean the same to the user
        reason = " ".join(str(e).split())  # torchvision's message spans lines: the error is one
        raise DataError(
            f"could not download {TITLES[name]} into {root} ({reason}); if you are offline, point "
            f"`data_dir` or VAECLI_DATA_DIR at a folder holding {FOLDERS[name]}/raw/*-ubyte"
        ) from e


def load(name: str, root: Path, explicit: bool, download_missing: bool | None) -> Dataset:
    """The data set `name` from the IDX files under `root`, downloaded first if allowed and missing.

    `download_missing=None` downloads only into the default folder (`explicit` False).
    """
    if download_missing is None:
        download_missing = not explicit
    folder = find_raw_dir(name, root)
    if folder is None and download_missing:
        download(name, root)
        folder = find_raw_dir(name, root)
    if folder is None:
        looked = ", ".join(str(d) for d in candidate_dirs(name, root))
        raise DataError(
            f"{TITLES[name]} not found (looked in {looked}); point `data_dir` or VAECLI_DATA_DIR "
            f"at a folder holding {FOLDERS[name]}/raw/*-ubyte, or add `download` to fetch it"
        )
    train_images, train_labels = _read_split(folder, "train")
    test_images, test_labels = _read_split(folder, "test")
    if train_images.shape[1:] != test_images.shape[1:]:
        raise DataError(
            f"{folder}: train images are {tuple(train_images.shape[1:])}, test images {tuple(test_images.shape[1:])}"
        )
    shape = (int(train_images.shape[1]), int(train_images.shape[2]))
    train = Split(Images.from_bytes(train_images), train_labels.long())
    test = Split(Images.from_bytes(test_images), test_labels.long())
    return Dataset(name, train, test, shape, folder)
