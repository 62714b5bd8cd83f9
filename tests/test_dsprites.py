"""dSprites: the factor order, the renderer's geometry and bits, the render cache and the original file's reader.

Never renders all 737,280 images: a few thousand at most, and the cache functions on small arrays.
"""

import hashlib
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import save as save_tensors

from vaecli.core import dsprites as ds
from vaecli.errors import DataError, OutputError

# sha256 of render(SAMPLE): a change to any pixel fails this test, and must bump ds.RENDER_VERSION with it
SAMPLE = np.arange(200) * 3671 + 17
SAMPLE_SHA256 = "49f5a2a29e3d51e0b6fc8d615ef2816ea032a950a234501de57be394a10856af"
RENDERED_VERSION = 1  # the version SAMPLE_SHA256 was pinned under


def index(shape: int = 2, scale: int = 5, orientation: int = 0, x: int = 16, y: int = 16) -> int:
    return int(ds.index_of(np.array([[shape, scale, orientation, x, y]]))[0])


def image(**classes: int) -> np.ndarray:
    return ds.render(np.array([index(**classes)]))[0]


def centroid(img: np.ndarray) -> tuple[float, float]:
    rows, cols = np.nonzero(img)
    return float(rows.mean()), float(cols.mean())


def one_line_error(error: pytest.ExceptionInfo[DataError], *parts: str) -> None:
    message = str(error.value)
    assert "\n" not in message and message, message
    for part in parts:
        assert part in message, message


# --- factors and their order ---


def test_index_and_classes_round_trip_in_the_original_order() -> None:
    every = np.arange(ds.N_IMAGES)
    classes = ds.classes_of(every)
    assert classes.dtype == np.int64 and classes.shape == (ds.N_IMAGES, 5)
    np.testing.assert_array_equal(ds.index_of(classes), every)
    assert ds.N_IMAGES == int(np.prod(ds.FACTOR_SIZES)) and len(ds.FACTOR_NAMES) == len(ds.FACTOR_SIZES) == 5
    for k, size in enumerate(ds.FACTOR_SIZES):
        np.testing.assert_array_equal(np.bincount(classes[:, k]), np.full(size, ds.N_IMAGES // size))
    # position y fastest, then x, orientation, scale, shape slowest
    for i, expected in [
        (0, [0, 0, 0, 0, 0]),
        (1, [0, 0, 0, 0, 1]),
        (32, [0, 0, 0, 1, 0]),
        (32 * 32, [0, 0, 1, 0, 0]),
        (40 * 32 * 32, [0, 1, 0, 0, 0]),
        (6 * 40 * 32 * 32, [1, 0, 0, 0, 0]),
        (ds.N_IMAGES - 1, [2, 5, 39, 31, 31]),
    ]:
        assert ds.classes_of(np.array([i])).tolist() == [expected]
    with pytest.raises(ValueError):
        ds.classes_of(np.array([ds.N_IMAGES]))
    with pytest.raises(ValueError):
        ds.index_of(np.array([[0, 6, 0, 0, 0]]))


def test_values_are_the_original_linspaces() -> None:
    shape, scale, orientation, x, y = ds.factor_values()
    np.testing.assert_array_equal(shape, [1.0, 2.0, 3.0])
    np.testing.assert_array_equal(scale, np.linspace(0.5, 1, 6))
    np.testing.assert_array_equal(orientation, np.linspace(0, 2 * np.pi, 40))
    assert orientation[-1] == 2 * np.pi and np.allclose(np.diff(orientation), 2 * np.pi / 39)
    np.testing.assert_array_equal(x, np.linspace(0, 1, 32))
    np.testing.assert_array_equal(y, np.linspace(0, 1, 32))
    assert tuple(len(v) for v in ds.factor_values()) == ds.FACTOR_SIZES
    classes = ds.classes_of(SAMPLE)
    values = ds.values_of(classes)
    assert values.dtype == np.float64 and values.shape == (len(SAMPLE), 5)
    for k, column in enumerate(ds.factor_values()):
        np.testing.assert_array_equal(values[:, k], column[classes[:, k]])


# --- rendering ---


def test_render_is_pinned_bit_for_bit() -> None:
    images = ds.render(SAMPLE)
    assert images.dtype == np.bool_ and images.shape == (len(SAMPLE), 64, 64)
    assert hashlib.sha256(ds.pack(images).tobytes()).hexdigest() == SAMPLE_SHA256
    assert ds.RENDER_VERSION == RENDERED_VERSION, "re-pin SAMPLE_SHA256 under the new version"
    # the same in any batch: one image at a time, or the sample reversed
    np.testing.assert_array_equal(ds.render(SAMPLE[:1])[0], images[0])
    np.testing.assert_array_equal(ds.render(SAMPLE[::-1])[::-1], images)


def test_every_image_has_white_pixels_and_touches_no_frame_edge() -> None:
    rng = np.random.default_rng(0)
    corners = [index(s, 5, o, x, y) for s in range(3) for o in range(40) for x in (0, 31) for y in (0, 31)]
    images = ds.render(np.concatenate([rng.choice(ds.N_IMAGES, 2000, replace=False), corners]))
    assert images.reshape(len(images), -1).any(axis=1).all()
    edges = images[:, 0, :] | images[:, -1, :] | images[:, :, 0] | images[:, :, -1]
    assert not edges.any()


def test_each_window_holds_its_shape_whole() -> None:
    for shape in range(3):
        for scale in range(6):
            size = ds.window_size(shape, scale)
            assert size <= 32
            classes = np.array([[shape, scale, o, x, y] for o in range(40) for x in (0, 7, 20) for y in (0, 13, 31)])
            pixels, top, left = ds.windows(classes, size)
            border = pixels[:, 0, :] | pixels[:, -1, :] | pixels[:, :, 0] | pixels[:, :, -1]
            assert not border.any(), (shape, scale)
            assert top.min() >= 0 and left.min() >= 0 and top.max() + size <= 64 and left.max() + size <= 64


@pytest.mark.parametrize("shape", range(3))
def test_centroid_follows_position_x_and_y(shape: int) -> None:
    along_x = ds.render(np.array([index(shape, 5, 7, x, 16) for x in range(32)]))
    along_y = ds.render(np.array([index(shape, 5, 7, 16, y) for y in range(32)]))
    x_rows, x_cols = np.array([centroid(img) for img in along_x]).T
    y_rows, y_cols = np.array([centroid(img) for img in along_y]).T
    assert (np.diff(x_cols) > 0).all() and np.ptp(x_rows) < 0.5  # x moves right, along columns only
    assert (np.diff(y_rows) > 0).all() and np.ptp(y_cols) < 0.5  # y moves down, along rows only
    assert x_cols[-1] - x_cols[0] == pytest.approx(32, abs=1) and y_rows[-1] - y_rows[0] == pytest.approx(32, abs=1)


@pytest.mark.parametrize("shape", range(3))
def test_area_grows_with_scale_squared(shape: int) -> None:
    for orientation in (0, 6, 13):
        areas = [image(shape=shape, scale=s, orientation=orientation, x=11, y=20).sum() for s in range(6)]
        assert (np.diff(areas) > 0).all()
        assert areas[-1] / areas[0] == pytest.approx(4, rel=0.08)  # (1 / 0.5)^2, within pixel rounding


def test_one_orientation_step_changes_the_heart_and_the_ellipse() -> None:
    for shape in (1, 2):
        turns = ds.render(np.array([index(shape, 5, o, 16, 16) for o in range(40)]))
        changed = (turns[1:] != turns[:-1]).reshape(39, -1).sum(axis=1)
        assert changed.min() >= 4, (shape, changed)
        np.testing.assert_array_equal(turns[0], turns[39])  # 0 and 2 pi, as in the original


def test_heart_is_upright_mirror_symmetric_and_not_half_turn_symmetric() -> None:
    # at position 0 the centre is pixel corner (16, 16): the 32 x 32 crop around it turns and mirrors about it
    heart = image(shape=2, scale=5, orientation=0, x=0, y=0)[:32, :32]
    assert (heart != np.fliplr(heart)).sum() <= 4  # its vertical axis
    assert (heart != np.rot90(heart, 2)).sum() > 0.15 * heart.sum()  # a half-turn puts its point on top
    rows, cols = np.nonzero(heart)
    assert rows.max() + 1 - 16 > 16 - rows.min() + 2  # the point reaches further down than the lobes up
    ellipse = image(shape=1, scale=5, orientation=3, x=0, y=0)[:32, :32]
    assert (ellipse != np.rot90(ellipse, 2)).sum() <= 4


def test_orientation_turns_counter_clockwise_on_screen() -> None:
    heart = image(shape=2, scale=5, orientation=10, x=0, y=0)[:32, :32]  # 10 steps: about a quarter turn
    rows, cols = np.nonzero(heart)
    assert cols.max() + 1 - 16 > 16 - cols.min() + 2  # the point, at the bottom upright, now on the right
    assert abs((rows.max() + 1 - 16) - (16 - rows.min())) <= 2
    ellipse = image(shape=1, scale=5, orientation=5, x=0, y=0)[:32, :32]  # long axis turned up on the right
    rows, cols = np.nonzero(ellipse)
    assert np.corrcoef(cols, -rows)[0, 1] > 0.4


def test_pack_and_unpack_round_trip() -> None:
    images = ds.render(SAMPLE[:50])
    packed = ds.pack(images)
    assert packed.dtype == np.uint8 and packed.shape == (50, 512)
    np.testing.assert_array_equal(ds.unpack(packed), images)
    one = np.zeros((1, 64, 64), dtype=bool)
    one[0, 0, 0] = True
    assert ds.pack(one)[0, 0] == 128 and ds.pack(one)[0, 1:].sum() == 0  # np.packbits' "big" order


# --- the render cache ---


@pytest.fixture
def packed() -> np.ndarray:
    return ds.pack(ds.render(SAMPLE))


def test_cache_round_trip(tmp_path: Path, packed: np.ndarray) -> None:
    path = tmp_path / "cache.safetensors"
    assert ds.read_cache(path, len(packed)) is None  # missing
    ds.write_cache(path, packed)
    np.testing.assert_array_equal(ds.read_cache(path, len(packed)), packed)
    assert ds.read_cache(path, len(packed) + 1) is None  # another count
    assert not list(tmp_path.glob(".*.tmp"))
    assert ds.cache_path(tmp_path) == tmp_path / "dsprites" / f"dsprites-rendered-v{ds.RENDER_VERSION}.safetensors"


@pytest.mark.parametrize("damage", ["truncated", "flipped data byte", "flipped header byte", "empty", "garbage"])
def test_a_damaged_cache_is_never_trusted(tmp_path: Path, packed: np.ndarray, damage: str) -> None:
    path = tmp_path / "cache.safetensors"
    ds.write_cache(path, packed)
    raw = bytearray(path.read_bytes())
    if damage == "truncated":
        raw = raw[: len(raw) // 2]
    elif damage == "flipped data byte":
        raw[-100] ^= 0x10
    elif damage == "flipped header byte":
        raw[20] ^= 0x01
    elif damage == "empty":
        raw = bytearray()
    else:
        raw = bytearray(b"not a safetensors file at all" * 10)
    path.write_bytes(bytes(raw))
    assert ds.read_cache(path, len(packed)) is None


def test_a_cache_of_another_version_or_foreign_is_rejected(
    tmp_path: Path, packed: np.ndarray, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "cache.safetensors"
    monkeypatch.setattr(ds, "RENDER_VERSION", ds.RENDER_VERSION + 1)
    ds.write_cache(path, packed)
    monkeypatch.undo()
    assert ds.read_cache(path, len(packed)) is None
    digest = hashlib.sha256(packed.tobytes()).hexdigest()
    meta = {"format": ds.CACHE_FORMAT, "render_version": str(ds.RENDER_VERSION), "count": str(len(packed))}
    for tensors, metadata in [
        ({"packed": packed}, None),  # no metadata
        ({"packed": packed}, {**meta, "format": "someone-else"}),
        ({"packed": packed}, {**meta, "sha256": "0" * 64}),
        ({"packed": packed.astype(np.int16)}, {**meta, "sha256": digest}),
        ({"other": packed}, {**meta, "sha256": digest}),
        ({"packed": packed, "more": packed[:1]}, {**meta, "sha256": digest}),
    ]:
        path.write_bytes(save_tensors(tensors, metadata=metadata))
        assert ds.read_cache(path, len(packed)) is None, (list(tensors), metadata)
    path.write_bytes(save_tensors({"packed": packed}, metadata={**meta, "sha256": digest}))
    np.testing.assert_array_equal(ds.read_cache(path, len(packed)), packed)  # the same, made by hand, is good


def test_load_renders_and_caches_then_reads_the_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # the cache functions are tested above on small arrays; here only load's use of them, without a full render
    full = np.zeros((ds.N_IMAGES, 512), dtype=np.uint8)
    stored: dict[Path, np.ndarray] = {}
    renders: list[int] = []
    monkeypatch.setattr(ds, "render_all", lambda progress=None: renders.append(1) or full)
    monkeypatch.setattr(ds, "write_cache", lambda path, packed: stored.__setitem__(path, packed))
    monkeypatch.setattr(ds, "read_cache", lambda path, n: stored.get(path) if n == ds.N_IMAGES else None)
    first = ds.load(tmp_path)
    assert renders == [1] and list(stored) == [ds.cache_path(tmp_path)]
    second = ds.load(tmp_path)
    assert renders == [1] and second.packed is full
    for data in (first, second):
        assert data.origin == "rendered" and data.path == ds.cache_path(tmp_path)
        assert data.classes.shape == (ds.N_IMAGES, 5) and data.values.shape == (ds.N_IMAGES, 5)
        np.testing.assert_array_equal(data.classes[SAMPLE], ds.classes_of(SAMPLE))

    def unwritable(path: Path, packed: np.ndarray) -> None:
        raise OutputError(f"cannot write {path}: read-only file system")

    monkeypatch.setattr(ds, "write_cache", unwritable)
    assert ds.load(tmp_path / "read-only").origin == "rendered"  # rendered in memory, uncached
    assert renders == [1, 1]


# --- the original file ---


def write_original(path: Path, indices: np.ndarray = SAMPLE, compressed: bool = False, **override: object) -> Path:
    """A file in the original's format: imgs, latents_values and latents_classes with their color column, and a
    pickled metadata entry that the reader must never open."""
    classes = ds.classes_of(indices)
    arrays: dict[str, object] = {
        "imgs": ds.render(indices).astype(np.uint8),
        "latents_values": np.hstack([np.ones((len(indices), 1)), ds.values_of(classes)]),
        "latents_classes": np.hstack([np.zeros((len(indices), 1), dtype=np.int64), classes]),
        "metadata": np.array({"latents_sizes": np.array([1, *ds.FACTOR_SIZES])}, dtype=object),
    }
    arrays.update(override)
    arrays = {k: v for k, v in arrays.items() if v is not None}
    with path.open("wb") as f:
        (np.savez_compressed if compressed else np.savez)(f, **arrays)  # type: ignore[operator]
    return path


@pytest.mark.parametrize("compressed", [False, True])
def test_read_original_gives_back_what_was_written(tmp_path: Path, compressed: bool) -> None:
    path = write_original(tmp_path / ds.FILE_NAME, compressed=compressed)
    data = ds.read_original(path)
    assert data.origin == "original file" and data.path == path
    np.testing.assert_array_equal(data.packed, ds.pack(ds.render(SAMPLE)))
    np.testing.assert_array_equal(data.classes, ds.classes_of(SAMPLE))
    np.testing.assert_array_equal(data.values, ds.values_of(ds.classes_of(SAMPLE)))
    assert data.classes.dtype == np.int64 and data.values.dtype == np.float64 and data.packed.dtype == np.uint8


def test_read_original_reads_in_chunks(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ds, "CHUNK", 64)
    path = write_original(tmp_path / ds.FILE_NAME, compressed=True)
    np.testing.assert_array_equal(ds.read_original(path).packed, ds.pack(ds.render(SAMPLE)))


def bad_files(tmp_path: Path) -> dict[str, Path]:
    n = len(SAMPLE)
    good = write_original(tmp_path / "good.npz", compressed=True)
    raw = good.read_bytes()
    imgs = ds.render(SAMPLE).astype(np.uint8)
    classes = np.hstack([np.zeros((n, 1), dtype=np.int64), ds.classes_of(SAMPLE)])
    files = {
        "truncated": tmp_path / "truncated.npz",
        "not a zip": tmp_path / "text.npz",
        "corrupt": tmp_path / "corrupt.npz",
        "missing key": write_original(tmp_path / "missing.npz", latents_classes=None),
        "classes int32": write_original(tmp_path / "int32.npz", latents_classes=classes.astype(np.int32)),
        "imgs float": write_original(tmp_path / "float.npz", imgs=imgs.astype(np.float32)),
        "imgs 2": write_original(tmp_path / "two.npz", imgs=imgs * 2),
        "imgs 32x32": write_original(tmp_path / "small.npz", imgs=imgs[:, :32, :32]),
        "scale 6": write_original(tmp_path / "scale.npz", latents_classes=classes + [0, 0, 6, 0, 0, 0]),
        "color 1": write_original(tmp_path / "color.npz", latents_classes=classes + [1, 0, 0, 0, 0, 0]),
        "rows": write_original(tmp_path / "rows.npz", latents_values=np.ones((n - 1, 6))),
        "values nan": write_original(tmp_path / "nan.npz", latents_values=np.full((n, 6), np.nan)),
        "single npy": tmp_path / "single.npz",
    }
    files["truncated"].write_bytes(raw[: len(raw) // 2])
    files["not a zip"].write_text("hello\n")
    middle = bytearray(raw)
    middle[len(raw) // 3] ^= 0xFF  # inside imgs' compressed bytes
    files["corrupt"].write_bytes(bytes(middle))
    with files["single npy"].open("wb") as f:
        np.save(f, imgs)
    return files


FLAWS = ["truncated", "not a zip", "corrupt", "missing key", "classes int32", "imgs float", "imgs 2", "imgs 32x32"]
FLAWS += ["scale 6", "color 1", "rows", "values nan", "single npy"]


@pytest.mark.parametrize("flaw", FLAWS)
def test_read_original_rejects_every_flaw_with_one_line(tmp_path: Path, flaw: str) -> None:
    path = bad_files(tmp_path)[flaw]
    with pytest.raises(DataError) as error:
        ds.read_original(path)
    one_line_error(error, str(path))


def test_load_prefers_the_original_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ds, "render_all", lambda progress=None: pytest.fail("rendered despite the original file"))
    ds.write_cache(ds.cache_path(tmp_path), ds.pack(ds.render(SAMPLE[:3])))  # a cache there does not matter
    nested = write_original(tmp_path / "dsprites" / ds.FILE_NAME)
    data = ds.load(tmp_path)
    assert data.origin == "original file" and data.path == nested and len(data.packed) == len(SAMPLE)
    top = write_original(tmp_path / ds.FILE_NAME, SAMPLE[:10])
    data = ds.load(tmp_path, download=True)  # the file is there: nothing to download
    assert data.origin == "original file" and data.path == top and len(data.packed) == 10


def test_download_offline_is_one_line_and_leaves_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ds, "URL", "http://127.0.0.1:9/x.npz")
    monkeypatch.setattr(ds, "render_all", lambda progress=None: pytest.fail("rendered instead of downloading"))
    with pytest.raises(DataError) as error:
        ds.load(tmp_path, download=True)
    one_line_error(error, "http://127.0.0.1:9/x.npz", ds.FILE_NAME)
    assert not [p for p in tmp_path.rglob("*") if p.is_file()]
