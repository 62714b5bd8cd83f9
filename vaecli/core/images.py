"""Images stored compactly, turned into floats a batch at a time.

A data set's pixels stay in the form they came in: bytes (IDX files, value / 255),
packed bits (binary images such as dSprites': 8 pixels a byte, so its 737,280
images of 64 x 64 take 377 MB instead of 12 GB of float32), or float32 for
arrays a caller made. Indexing gives float32 rows (N, D) in [0, 1], so the
training loop, the evaluation and every figure read `images[index]` alike and
never hold more than a batch of floats:

    images = Images.from_bytes(idx_pixels)   # (N, H, W) uint8
    x = images[torch.tensor([3, 1, 4])]      # (3, H*W) float32
"""

import hashlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Literal

import torch

Kind = Literal["float", "bytes", "bits"]
_BITS = torch.tensor([128, 64, 32, 16, 8, 4, 2, 1], dtype=torch.uint8)  # numpy.packbits' order ("big")


@dataclass(frozen=True)
class Images:
    """N images of `pixels` values each, stored as `kind`; `images[i]`, `images[a:b]`, `images[index]` are float32."""

    stored: torch.Tensor  # float: (N, D) float32; bytes: (N, D) uint8, value/255; bits: (N, ceil(D/8)) uint8
    kind: Kind
    pixels: int  # D

    @staticmethod
    def from_float(images: torch.Tensor) -> "Images":
        """Float pixels in [0, 1], kept as they are (N, ...) -> (N, D)."""
        flat = images.reshape(len(images), -1)
        return Images(flat if flat.dtype == torch.float32 else flat.float(), "float", flat.shape[1])

    @staticmethod
    def from_bytes(pixels: torch.Tensor) -> "Images":
        """uint8 pixels (N, ...), 0-255."""
        flat = pixels.reshape(len(pixels), -1)
        return Images(flat, "bytes", flat.shape[1])

    @staticmethod
    def from_bits(packed: torch.Tensor, pixels: int) -> "Images":
        """Binary pixels packed 8 to a byte as numpy.packbits packs each row (N, ceil(D/8))."""
        if packed.dtype != torch.uint8 or packed.ndim != 2 or packed.shape[1] != -(-pixels // 8):
            raise ValueError(f"packed bits of {pixels} pixels must be (N, {-(-pixels // 8)}) uint8")
        return Images(packed, "bits", pixels)

    @staticmethod
    def binary(images: torch.Tensor) -> "Images":
        """0/1 pixels of any dtype (N, D), stored as bytes (exactly 0.0 and 1.0 when read back)."""
        return Images.from_bytes(images.reshape(len(images), -1).to(torch.uint8).mul_(255))

    def __len__(self) -> int:
        return len(self.stored)

    @property
    def shape(self) -> tuple[int, int]:
        return (len(self.stored), self.pixels)

    @property
    def device(self) -> torch.device:
        return self.stored.device

    @property
    def nbytes(self) -> int:
        return self.stored.numel() * self.stored.element_size()

    def __getitem__(self, key: int | slice | torch.Tensor) -> torch.Tensor:
        """Float32 pixels: (D,) for an int, (B, D) for a slice or an index tensor."""
        if isinstance(key, torch.Tensor):
            rows = self.stored.index_select(0, key.to(self.stored.device).long())
        elif isinstance(key, int):
            return self._floats(self.stored[key].unsqueeze(0))[0]
        else:
            rows = self.stored[key]
        return self._floats(rows)

    def _floats(self, rows: torch.Tensor) -> torch.Tensor:
        if self.kind == "float":
            return rows
        if self.kind == "bytes":
            return rows.float().div_(255.0)  # as MNIST was always read: the same floats, bit for bit
        bits = _BITS.to(rows.device)
        unpacked = (rows.unsqueeze(-1) & bits).ne_(0).reshape(len(rows), -1)[:, : self.pixels]
        return unpacked.float()

    def float(self) -> torch.Tensor:
        """Every image as float32 (N, D): only for sets small enough to hold so (MNIST's test split: 31 MB)."""
        return self[0 : len(self)]

    def to(self, device: torch.device | str) -> "Images":
        return Images(self.stored.to(device), self.kind, self.pixels)

    def select(self, index: torch.Tensor) -> "Images":
        """The images at `index`, still compact."""
        return Images(self.stored.index_select(0, index.to(self.stored.device).long()), self.kind, self.pixels)

    def batches(self, size: int) -> Iterator[tuple[int, torch.Tensor]]:
        """(start, float rows) for consecutive batches of at most `size` images, one batch of floats at a time."""
        for start in range(0, len(self), size):
            yield start, self[start : start + size]

    def digest(self) -> str:
        """sha256 of the images' float32 bytes, batch by batch: equal pixels, equal digests, whatever the kind."""
        h = hashlib.sha256()
        for _, rows in self.batches(4096):
            h.update(rows.detach().cpu().contiguous().numpy().tobytes())
        return h.hexdigest()


def as_images(images: "Images | torch.Tensor") -> Images:
    """Images as given, or a float tensor (N, D) of a caller's own pixels in [0, 1]."""
    return images if isinstance(images, Images) else Images.from_float(images)


# what a function that reads images a batch at a time takes: compact Images, or a float tensor (N, D) of a
# caller's own (a notebook's); both give float rows by `images[a:b]` and `images[index]`
ImageRows = Images | torch.Tensor
