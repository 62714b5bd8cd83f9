"""dSprites (Matthey et al. 2017): rendered offline from its published definition, cached, or read from the original.

The definition: 64 x 64 binary images of one white shape on black, every
combination of shape (square, ellipse, heart), scale (np.linspace(0.5, 1, 6)),
orientation (np.linspace(0, 2 pi, 40), endpoint included as in the original),
position x and y (np.linspace(0, 1, 32) each) exactly once: 737,280 images in
the original's order (position y fastest, shape slowest), so that index i has
the factor classes of the original's `latents_classes[i, 1:]` (its constant
color column dropped, as disentanglement_lib's latent_factor_indices 1..5).
The shape's value is 1, 2 or 3, as in the original's `latents_values`.

vaecli's rendering of that definition (RENDER_VERSION 1):
- centre (pixels, x right, y down) = 16 + 32 * position, so centres run 16..48;
- one unit of the shape's frame is 10 px * scale: the square has half-side 10 px
  at scale 1 (its corners 14.1 px from the centre), so no shape ever reaches the
  frame's outer pixels;
- orientation turns the shape counter-clockwise as seen on screen (y down) about
  its centre;
- pixel (r, c) is white where its centre (c + 0.5, r + 0.5), taken to the shape's
  frame (minus the centre, y flipped to point up, turned by -orientation, divided
  by 10 px * scale) gives (u, v) inside the unit shape: square max(|u|, |v|) <= 1;
  ellipse (u / 1.3)^2 + (v / 0.65)^2 <= 1 (long axis horizontal at orientation 0);
  heart (x^2 + y^2 - 1)^3 - x^2 y^3 <= 0 with x = u, y = v + 0.29 (the curve's
  centroid is its centre; area 3.66 against the square's 4), upright at
  orientation 0: mirror-symmetric about its vertical axis, its point at the bottom.
Everything is float64 numpy arithmetic, and the 40 cosines and sines are rounded
to multiples of 2^-32, so the images are the same bit for bit on every machine.
Each shape is evaluated only in a window around its centre that holds it whole (18 to 32 px a side).
"""

import hashlib
import math
import os
import urllib.request
import zipfile
import zlib
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view
from safetensors import safe_open
from safetensors.numpy import save as save_tensors

from vaecli import atomic
from vaecli.choices import CLASS_NAMES
from vaecli.errors import DataError, OutputError

FACTOR_NAMES = ("shape", "scale", "orientation", "position_x", "position_y")
FACTOR_SIZES = (3, 6, 40, 32, 32)
SHAPES = CLASS_NAMES["dsprites"]  # ("square", "ellipse", "heart"), as figures name dSprites' labels
N_IMAGES = 737_280
IMAGE_SHAPE = (64, 64)
FILE_NAME = "dsprites_ndarray_co1sh3sc6or40x32y32_64x64.npz"
URL = f"https://raw.githubusercontent.com/deepmind/dsprites-dataset/master/{FILE_NAME}"
RENDER_VERSION = 1  # bump whenever a rendered pixel changes

MARGIN, SPAN, UNIT = 16.0, 32.0, 10.0  # centre = MARGIN + SPAN * position (px); UNIT px per unit at scale 1
ELLIPSE_AXES = (1.3, 0.65)
HEART_LIFT = 0.29  # the heart curve's centroid lies this far above its origin
RADIUS = {"square": math.sqrt(2.0), "ellipse": ELLIPSE_AXES[0], "heart": 1.0 + HEART_LIFT}  # farthest point (units)
CACHE_FORMAT = "vaecli-dsprites-packed"
ROW_BYTES = IMAGE_SHAPE[0] * IMAGE_SHAPE[1] // 8
CHUNK = 2048  # images rendered (or read) at a time: ~130 MB of float64 temporaries per worker

Progress = Callable[[int, int], None]


def factor_values() -> tuple[np.ndarray, ...]:
    """Each factor's values, class by class (float64), as the original's latents_values."""
    return (
        np.arange(1.0, 4.0),
        np.linspace(0.5, 1.0, 6),
        np.linspace(0.0, 2 * np.pi, 40),
        np.linspace(0.0, 1.0, 32),
        np.linspace(0.0, 1.0, 32),
    )


_VALUES = factor_values()
_COS = np.round(np.cos(_VALUES[2]) * 2.0**32) / 2.0**32  # rounded: the same bits whatever the libm
_SIN = np.round(np.sin(_VALUES[2]) * 2.0**32) / 2.0**32


def classes_of(indices: np.ndarray) -> np.ndarray:
    """Image indices (n,) -> their factor classes (n, 5) int64, position y fastest."""
    rest = np.asarray(indices, dtype=np.int64).reshape(-1)
    if rest.size and (rest.min() < 0 or rest.max() >= N_IMAGES):
        raise ValueError(f"dSprites indices must lie in [0, {N_IMAGES})")
    classes = np.empty((len(rest), len(FACTOR_SIZES)), dtype=np.int64)
    for k in reversed(range(len(FACTOR_SIZES))):
        rest, classes[:, k] = np.divmod(rest, FACTOR_SIZES[k])
    return classes


def index_of(classes: np.ndarray) -> np.ndarray:
    """Factor classes (n, 5) -> image indices (n,) int64: classes_of's inverse."""
    classes = np.asarray(classes, dtype=np.int64)
    if classes.ndim != 2 or classes.shape[1] != len(FACTOR_SIZES):
        raise ValueError(f"dSprites classes must be (n, {len(FACTOR_SIZES)}), not {classes.shape}")
    if ((classes < 0) | (classes >= np.array(FACTOR_SIZES))).any():
        raise ValueError(f"dSprites classes must lie below {FACTOR_SIZES}")
    index = np.zeros(len(classes), dtype=np.int64)
    for k, size in enumerate(FACTOR_SIZES):
        index = index * size + classes[:, k]
    return index


def values_of(classes: np.ndarray) -> np.ndarray:
    """Factor classes (n, 5) -> factor values (n, 5) float64."""
    classes = np.asarray(classes, dtype=np.int64)
    index_of(classes)  # checks the shape and the range
    return np.stack([_VALUES[k][classes[:, k]] for k in range(len(FACTOR_SIZES))], axis=1)


def _inside(shape: int, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Whether each point (u, v) of the shape's frame (v up) lies inside the unit shape."""
    if SHAPES[shape] == "square":
        return np.maximum(np.abs(u), np.abs(v)) <= 1.0
    if SHAPES[shape] == "ellipse":
        return (u / ELLIPSE_AXES[0]) ** 2 + (v / ELLIPSE_AXES[1]) ** 2 <= 1.0
    x2, y = u * u, v + HEART_LIFT
    t = x2 + y * y - 1.0
    return t * t * t <= x2 * (y * y * y)


def window_size(shape: int, scale: int) -> int:
    """The side (even, px) of the window that holds this shape at this scale class, at any orientation and
    position, with at least a black pixel all round."""
    return 2 * math.ceil(UNIT * _VALUES[1][scale] * RADIUS[SHAPES[shape]] + 1.5)


def windows(classes: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The size x size pixels around each shape's centre (n, size, size) bool, all of one shape, and each window's
    top row and left column in the frame (n,) int64."""
    cx = MARGIN + SPAN * _VALUES[3][classes[:, 3]]
    cy = MARGIN + SPAN * _VALUES[4][classes[:, 4]]
    left = np.floor(cx).astype(np.int64) - size // 2
    top = np.floor(cy).astype(np.int64) - size // 2
    centres = np.arange(size) + 0.5
    dx = ((left[:, None] + centres) - cx[:, None])[:, None, :]  # (n, 1, size): right of the centre
    dy = (cy[:, None] - (top[:, None] + centres))[:, :, None]  # (n, size, 1): above the centre
    per_unit = 1.0 / (UNIT * _VALUES[1][classes[:, 1]])
    cos = (_COS[classes[:, 2]] * per_unit)[:, None, None]
    sin = (_SIN[classes[:, 2]] * per_unit)[:, None, None]
    return _inside(int(classes[0, 0]), cos * dx + sin * dy, cos * dy - sin * dx), top, left  # turned by -orientation


def render(indices: np.ndarray) -> np.ndarray:
    """The images (n, 64, 64) bool of these image indices (n,)."""
    classes = classes_of(indices)
    images = np.zeros((len(classes), *IMAGE_SHAPE), dtype=bool)
    groups = classes[:, 0] * FACTOR_SIZES[1] + classes[:, 1]  # one window size per shape and scale
    for group in np.unique(groups):
        rows = np.flatnonzero(groups == group)
        size = window_size(*divmod(int(group), FACTOR_SIZES[1]))
        pixels, top, left = windows(classes[rows], size)
        view = sliding_window_view(images, (size, size), axis=(1, 2), writeable=True)  # (n, 65-size, 65-size, ...)
        view[rows, top, left] = pixels
    return images


def pack(images: np.ndarray) -> np.ndarray:
    """Binary images (n, 64, 64) -> (n, 512) uint8, each flattened row np.packbits'd (bitorder "big")."""
    return np.packbits(np.asarray(images).reshape(len(images), -1).astype(bool), axis=1, bitorder="big")


def unpack(packed: np.ndarray) -> np.ndarray:
    """pack's inverse: (n, 512) uint8 -> (n, 64, 64) bool."""
    bits = np.unpackbits(np.asarray(packed, dtype=np.uint8), axis=1, count=ROW_BYTES * 8, bitorder="big")
    return bits.reshape(len(packed), *IMAGE_SHAPE).astype(bool)


def render_all(progress: Progress | None = None) -> np.ndarray:
    """All N_IMAGES images, packed (N, 512) uint8, rendered CHUNK at a time on every core."""
    packed = np.empty((N_IMAGES, ROW_BYTES), dtype=np.uint8)

    def chunk(start: int) -> int:
        stop = min(start + CHUNK, N_IMAGES)
        packed[start:stop] = pack(render(np.arange(start, stop)))
        return stop - start

    done = 0
    with ThreadPoolExecutor(max_workers=max(1, min(4, os.cpu_count() or 1))) as pool:  # numpy frees the GIL
        for n in pool.map(chunk, range(0, N_IMAGES, CHUNK)):
            done += n
            if progress is not None:
                progress(done, N_IMAGES)
    return packed


@dataclass(frozen=True)
class DSprites:
    packed: np.ndarray  # (N, 512) uint8: each image's 4096 pixels, np.packbits'd
    classes: np.ndarray  # (N, 5) int64: each image's class of every factor in FACTOR_NAMES
    values: np.ndarray  # (N, 5) float64: each image's value of every factor
    origin: str  # "rendered" or "original file"
    path: Path  # the render cache, or the original file read


def cache_path(data_dir: Path) -> Path:
    return Path(data_dir) / "dsprites" / f"dsprites-rendered-v{RENDER_VERSION}.safetensors"


def _digest(packed: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(packed).data).hexdigest()


def write_cache(path: Path, packed: np.ndarray) -> None:
    """Write packed images atomically as a safetensors file whose metadata names and digests them."""
    packed = np.ascontiguousarray(packed, dtype=np.uint8)
    metadata = {
        "format": CACHE_FORMAT,
        "render_version": str(RENDER_VERSION),
        "count": str(len(packed)),
        "sha256": _digest(packed),
    }
    atomic.write_bytes(path, save_tensors({"packed": packed}, metadata=metadata))


def read_cache(path: Path, expected_count: int) -> np.ndarray | None:
    """The packed images of a cache written by write_cache, or None for anything else: missing, truncated,
    corrupt, foreign, of another render version or count, or whose bytes do not match their digest."""
    try:
        with safe_open(str(path), framework="numpy") as f:
            meta = f.metadata() or {}
            expected = {"format": CACHE_FORMAT, "render_version": str(RENDER_VERSION), "count": str(expected_count)}
            if any(meta.get(k) != v for k, v in expected.items()) or list(f.keys()) != ["packed"]:
                return None
            packed = f.get_tensor("packed")
    except Exception:  # safetensors' own errors, OSError, a malformed header: all mean "render it again"
        return None
    if packed.dtype != np.uint8 or packed.shape != (expected_count, ROW_BYTES) or _digest(packed) != meta["sha256"]:
        return None
    return np.asarray(packed)


def _stream_images(npz: np.lib.npyio.NpzFile, path: Path) -> np.ndarray:
    """The archive's imgs (N, 64, 64) uint8 of 0/1, read and packed CHUNK images at a time: (N, 512) uint8."""
    if npz.zip is None:  # an NpzFile always has its archive open until closed
        raise DataError(f"{path}: the archive is closed")
    member = "imgs.npy" if "imgs.npy" in npz.zip.namelist() else "imgs"
    with npz.zip.open(member) as fh:
        version = np.lib.format.read_magic(fh)
        if version not in ((1, 0), (2, 0)):
            raise DataError(f"{path}: imgs is a .npy of version {version}, not 1.0 or 2.0")
        read_header = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
        shape, fortran, dtype = read_header(fh)
        if dtype != np.uint8 or fortran or len(shape) != 3 or tuple(shape[1:]) != IMAGE_SHAPE:
            raise DataError(f"{path}: imgs is {shape} {dtype}, not (N, 64, 64) uint8")
        packed = np.empty((shape[0], ROW_BYTES), dtype=np.uint8)
        for start in range(0, shape[0], CHUNK):
            rows = min(CHUNK, shape[0] - start)
            raw = fh.read(rows * ROW_BYTES * 8)
            if len(raw) != rows * ROW_BYTES * 8:
                raise DataError(f"{path}: imgs is truncated after {start + len(raw) // (ROW_BYTES * 8)} images")
            images = np.frombuffer(raw, dtype=np.uint8).reshape(rows, *IMAGE_SHAPE)
            if images.max(initial=0) > 1:
                raise DataError(f"{path}: imgs holds pixel values other than 0 and 1")
            packed[start : start + rows] = pack(images)
    return packed


def read_original(path: Path) -> DSprites:
    """The original file's images and factors (its color column dropped); any flaw is a one-line DataError."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: not found")
    if not zipfile.is_zipfile(path):
        raise DataError(f"{path}: not a .npz (zip) archive; truncated, or not the dSprites file {FILE_NAME}")
    try:
        npz = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as e:
        raise DataError(f"{path}: not a readable .npz archive ({' '.join(str(e).split())})") from e
    if not isinstance(npz, np.lib.npyio.NpzFile):
        raise DataError(f"{path}: a single .npy array, not the dSprites .npz archive")
    with npz:
        missing = [k for k in ("imgs", "latents_values", "latents_classes") if k not in npz.files]
        if missing:
            raise DataError(f"{path}: missing {', '.join(missing)}; is it the dSprites file {FILE_NAME}?")
        try:
            values, classes = npz["latents_values"], npz["latents_classes"]  # never 'metadata': it is pickled
            packed = _stream_images(npz, path)
        except (OSError, ValueError, EOFError, zipfile.BadZipFile, zlib.error) as e:
            raise DataError(f"{path}: cannot read ({' '.join(str(e).split())})") from e
    n, width = len(packed), len(FACTOR_SIZES) + 1
    for name, array, dtype in (("latents_values", values, np.float64), ("latents_classes", classes, np.int64)):
        if array.dtype != dtype or array.shape != (n, width):
            raise DataError(f"{path}: {name} is {array.shape} {array.dtype}, not ({n}, {width}) {np.dtype(dtype)}")
    if not 0 < n <= N_IMAGES:
        raise DataError(f"{path}: holds {n} images, not 1 to {N_IMAGES}")
    if (classes[:, 0] != 0).any() or ((classes[:, 1:] < 0) | (classes[:, 1:] >= np.array(FACTOR_SIZES))).any():
        raise DataError(f"{path}: latents_classes out of range (color 0, then below {FACTOR_SIZES})")
    if not np.isfinite(values).all():
        raise DataError(f"{path}: latents_values holds NaN or infinite values")
    return DSprites(packed, classes[:, 1:].copy(), values[:, 1:].copy(), "original file", path)


def download_original(folder: Path) -> Path:
    """Fetch the original file from URL into `folder` atomically; offline or failed -> DataError."""
    target = Path(folder) / FILE_NAME
    try:
        with urllib.request.urlopen(URL, timeout=60) as response:
            data = response.read()
        atomic.write_bytes(target, data)
    except (OSError, OutputError) as e:  # URLError, timeouts, HTTP errors, a folder not writable
        reason = " ".join(str(e).split())
        raise DataError(
            f"could not download dSprites from {URL} ({reason}); if you are offline, put {FILE_NAME} into "
            f"{folder}, or leave out `download` to render the images instead"
        ) from e
    return target


def load(data_dir: Path, *, download: bool = False, progress: Progress | None = None) -> DSprites:
    """dSprites from the original file in `data_dir` (or data_dir/dsprites), downloaded there if `download`,
    else rendered from the definition and cached in data_dir/dsprites (rendered again unless the cache checks)."""
    data_dir = Path(data_dir)
    for path in (data_dir / FILE_NAME, data_dir / "dsprites" / FILE_NAME):
        if path.is_file():
            return read_original(path)
    if download:
        path = download_original(data_dir / "dsprites")
        try:
            return read_original(path)
        except DataError:
            path.unlink(missing_ok=True)
            raise
    cache = cache_path(data_dir)
    packed = read_cache(cache, N_IMAGES)
    if packed is None:
        packed = render_all(progress)
        try:
            write_cache(cache, packed)
        except OutputError:
            pass  # a read-only data folder: use the images rendered in memory, uncached
    classes = classes_of(np.arange(N_IMAGES))
    return DSprites(packed, classes, values_of(classes), "rendered", cache)
