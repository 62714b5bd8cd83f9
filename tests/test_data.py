import numpy as np
import pytest
import torch

from tests.conftest import write_dataset, write_idx
from vaecli.core import data, idx
from vaecli.core.images import Images
from vaecli.errors import DataError


def test_reads_torchvision_layout(tiny_mnist):
    ds = data.load_dataset("mnist", tiny_mnist)
    assert ds.train.images.shape == (64, 784) and ds.test.images.shape == (32, 784)
    assert ds.train.images.kind == "bytes" and ds.train.images.stored.dtype == torch.uint8  # one byte a pixel
    pixels = ds.train.images.float()
    assert pixels.dtype == torch.float32 and 0.0 <= pixels.min() and pixels.max() <= 1.0
    assert ds.train.labels.dtype == torch.int64 and ds.image_shape == (28, 28)
    assert ds.source == tiny_mnist / "MNIST" / "raw"


def test_reads_gzipped_files_in_a_bare_folder(tmp_path):
    write_dataset(tmp_path / "fashion", gz=True)
    ds = data.load_dataset("fashion-mnist", tmp_path / "fashion")
    assert ds.train.images.shape == (64, 784)
    plain = write_dataset(tmp_path / "plain")
    assert torch.equal(data.load_dataset("mnist", plain).train.images.stored, ds.train.images.stored)


def test_explicit_folder_without_data_names_where_it_looked(tmp_path):
    with pytest.raises(DataError) as info:
        data.load_dataset("mnist", tmp_path / "nowhere")
    message = str(info.value)
    assert str(tmp_path / "nowhere" / "MNIST" / "raw") in message
    assert "`data_dir`" in message and "VAECLI_DATA_DIR" in message


def test_default_folder_downloads_and_reports_failure(monkeypatch, tmp_path):
    calls = []

    def offline(name, root):
        calls.append((name, root))
        raise DataError(f"could not download {name} into {root}")

    monkeypatch.setattr(idx, "download", offline)
    with pytest.raises(DataError, match="could not download"):
        data.load_dataset("mnist")
    assert calls == [("mnist", tmp_path / "cache" / "vaecli" / "data")]


def test_explicit_folder_downloads_only_when_asked(monkeypatch, tmp_path):
    def fake_download(name, root):
        write_dataset(root / "MNIST" / "raw")

    monkeypatch.setattr(idx, "download", fake_download)
    with pytest.raises(DataError, match="not found"):
        data.load_dataset("mnist", tmp_path / "d")
    assert data.load_dataset("mnist", tmp_path / "d", download_missing=True).train.images.shape == (64, 784)


def _corrupt(raw, name, transform):
    path = raw / name
    path.write_bytes(transform(path.read_bytes()))
    return path


@pytest.mark.parametrize(
    "name, transform, message",
    [
        ("train-images-idx3-ubyte", lambda b: b"\x00\x00\x09\x03" + b[4:], "wrong IDX magic number"),
        ("train-labels-idx1-ubyte", lambda b: b"\x00\x00\x08\x03" + b[4:], "wrong IDX magic number"),
        ("train-images-idx3-ubyte", lambda b: b[:-10], "body holds"),
        ("t10k-images-idx3-ubyte", lambda b: b[:9], "truncated IDX header"),
        ("train-images-idx3-ubyte", lambda b: b[:4] + b"\xff\xff\xff\xff" + b[8:], "need"),
        ("train-labels-idx1-ubyte", lambda b: b[:-1] + b"\x0c", "not a digit class"),
    ],
)
def test_broken_files_are_named(tiny_mnist, name, transform, message):
    path = _corrupt(tiny_mnist / "MNIST" / "raw", name, transform)
    with pytest.raises(DataError, match=message) as info:
        data.load_dataset("mnist", tiny_mnist)
    assert str(path) in str(info.value)


def test_image_and_label_counts_must_agree(tiny_mnist):
    raw = tiny_mnist / "MNIST" / "raw"
    write_idx(raw / "train-labels-idx1-ubyte", torch.zeros(10, dtype=torch.uint8))
    with pytest.raises(DataError, match="64 images but train-labels-idx1-ubyte has 10 labels"):
        data.load_dataset("mnist", tiny_mnist)


def test_bad_gzip_is_an_error_not_a_traceback(tmp_path):
    raw = write_dataset(tmp_path / "z", gz=True)
    (raw / "train-images-idx3-ubyte.gz").write_bytes(b"not gzip at all")
    with pytest.raises(DataError, match="cannot read"):
        data.load_dataset("mnist", raw)


def test_missing_single_file_means_not_found(tiny_mnist):
    (tiny_mnist / "MNIST" / "raw" / "t10k-labels-idx1-ubyte").unlink()
    with pytest.raises(DataError, match="not found"):
        data.load_dataset("mnist", tiny_mnist)


def test_real_mnist_reads_fully(mnist_dir):
    ds = data.load_dataset("mnist", mnist_dir)
    assert ds.train.images.shape == (60000, 784) and ds.test.images.shape == (10000, 784)
    assert ds.train.labels.bincount().tolist()[:2] == [5923, 6742]


@pytest.mark.skipif(
    not idx.SYSTEM_DIRS["fashion-mnist"][0].is_dir(), reason="Debian's dataset-fashion-mnist is not installed"
)
def test_fashion_mnist_from_debian_package(tmp_path):
    ds = data.load_dataset("fashion-mnist", tmp_path / "empty-but-explicit")
    assert ds.train.images.shape == (60000, 784) and ds.test.images.shape == (10000, 784)
    assert ds.source == idx.SYSTEM_DIRS["fashion-mnist"][0]


def test_images_read_as_floats_a_batch_at_a_time(tiny_mnist):
    ds = data.load_dataset("mnist", tiny_mnist)
    images = ds.train.images
    floats = images.float()
    index = torch.tensor([5, 0, 63])
    assert torch.equal(images[index], floats[index]) and torch.equal(images[2:9], floats[2:9])
    assert torch.equal(images[3], floats[3]) and torch.equal(images[-1], floats[-1])
    assert torch.equal(floats, images.stored.float() / 255)  # as MNIST was always read, bit for bit


def test_packed_bits_round_trip_and_take_an_eighth_of_bytes():
    binary = torch.rand(50, 4096, generator=torch.Generator().manual_seed(0)) < 0.3
    packed = torch.from_numpy(np.packbits(binary.numpy(), axis=1))
    images = Images.from_bits(packed, 4096)
    assert torch.equal(images.float(), binary.float())
    assert torch.equal(images[torch.tensor([7, 2])], binary[[7, 2]].float())
    assert images.nbytes == 50 * 512 and Images.binary(binary).float().equal(binary.float())
    odd = torch.rand(4, 20) < 0.5  # a row length that is not a multiple of 8
    assert torch.equal(Images.from_bits(torch.from_numpy(np.packbits(odd.numpy(), axis=1)), 20).float(), odd.float())


def test_digest_depends_on_pixels_not_on_storage(tiny_mnist):
    images = data.load_dataset("mnist", tiny_mnist).test.images
    assert images.digest() == Images.from_float(images.float()).digest()
    assert images.digest() != images.select(torch.arange(len(images) - 1)).digest()
