"""The importance-weighted bound on -log p(x) (Burda, Grosse & Salakhutdinov 2016, eq. 8), decoded in blocks.

Nearly all of the bound's time is the decoder's matmuls over k samples of every
image. BlockDecoder decodes several samples of a batch of images per call, a block
of up to ROWS rows, and takes the Bernoulli log-likelihood without a (rows, D)
product with the images (see log_px_z). On the CPU the float32 layers go through
oneDNN, not torch.addmm's MKL, which multiplied these shapes at about half oneDNN's
rate on the AMD Zen 5 of docs/benchmarks.md ("The importance-weighted bound"). They
stay float32: bfloat16 layers gained too little there to be worth moving the bound.
"""

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from vaecli.core import kernels
from vaecli.core.images import ImageRows
from vaecli.core.loss import log_posterior, log_prior
from vaecli.core.model import VAE

# rows per decode: tall blocks keep oneDNN's matmuls fast; a whole chunk of 50 samples of 500 images at once, 78 MB
# of logits, ran slower (benchmarks/bench_iw.py sweeps the sizes). At 500 images a batch: blocks of 16 or 17 samples.
ROWS = 10000


class BlockDecoder:
    """log p(x | z) of blocks of samples of a batch of images: (s, B, H) codes -> (s, B).

    Call `start(x)` with each batch of images (B, D) first. A block holds at most `rows`
    rows (one sample of every image at least).
    """

    def __init__(self, model: VAE, rows: int = ROWS) -> None:
        self.kind = model.config.recon
        self.layers = [m for m in model.decoder if isinstance(m, nn.Linear)]  # a ReLU after all but the last
        self.rows = rows
        self.x = torch.empty(0)
        self.x_weight = self.x_bias = self.x  # the images' parts of x . logits, per image (Bernoulli)
        weight = self.layers[0].weight
        self.onednn = kernels.onednn_linear() if weight.device.type == "cpu" and weight.dtype == torch.float32 else None

    def start(self, x: torch.Tensor) -> None:
        """A new batch of images (B, D)."""
        self.x = x
        if self.kind == "bernoulli":
            last = self.layers[-1]
            # x . logits = x . (h W^T + b) = h . (x W) + x . b: (B, hidden) and (B,) once per batch, so that no
            # (rows, D) product with x is taken per block
            self.x_weight, self.x_bias = x @ last.weight, x @ last.bias

    def blocks(self, batch: int, samples: int) -> int:
        """In how many blocks `samples` samples of `batch` images are decoded: the fewest of at most `rows` rows."""
        return -(-samples // max(1, self.rows // batch))

    def linear(self, layer: nn.Linear, h: torch.Tensor, relu: bool) -> torch.Tensor:
        """h (rows, in) -> (rows, out), through a ReLU if `relu`."""
        return kernels.linear(self.onednn, h, layer.weight, layer.bias, relu)

    def hidden(self, z: torch.Tensor) -> torch.Tensor:
        """(rows, H) codes -> the last hidden layer's output (rows, hidden), or z itself without hidden layers."""
        for layer in self.layers[:-1]:
            z = self.linear(layer, z, relu=True)
        return z

    def __call__(self, z: torch.Tensor) -> torch.Tensor:
        samples, batch = z.shape[:2]
        h = self.hidden(z.reshape(samples * batch, -1))  # (rows, hidden)
        logits = self.linear(self.layers[-1], h, relu=False)  # (rows, D)
        return self.log_px_z(h, logits).view(samples, batch)

    def log_px_z(self, h: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
        """log p(x | z) per row (rows,) from the last hidden layer's output and the logits, which it overwrites.

        bernoulli: x . l - sum softplus(l), the x . l from h and the images' parts (start), and
        softplus(l) = log(1 + exp(l)) in three in-place passes: PyTorch's AVX-512 log1p, which
        F.softplus uses, is several times slower (core/loss._bernoulli_nll_values says more). Where
        1 + exp(l) rounds to 1 it loses under 6e-8 nats a pixel; rows where exp overflowed
        are taken again the stable way.
        gaussian: -sum (sigmoid(l) - x)^2, as core/loss.reconstruction_nll.
        """
        batch = len(self.x)
        if self.kind == "gaussian":
            means = logits.sigmoid_().view(-1, batch, logits.shape[-1]).sub_(self.x)  # (s, B, D)
            return means.square_().sum(-1).neg_().view(-1)
        x_logits = (h.view(-1, batch, h.shape[-1]) * self.x_weight).sum(-1).add_(self.x_bias).view(-1)  # (rows,)
        softplus = logits.exp_().add_(1).log_().sum(-1)  # (rows,)
        overflowed = softplus.isinf()  # a logit above about 88, whose exp is inf in float32
        if bool(overflowed.any()):
            rows = overflowed.nonzero()[:, 0]
            softplus[rows] = F.softplus(self.linear(self.layers[-1], h[rows], relu=False)).sum(-1)
        return x_logits.sub_(softplus)


@torch.inference_mode()
def importance_weighted_nll(
    model: VAE,
    images: ImageRows,
    k: int,
    generator: torch.Generator | None = None,
    batch_size: int = 500,
    chunk: int = 50,
    progress: Callable[[int, int], None] | None = None,
    *,
    decoder: BlockDecoder | None = None,
) -> float:
    """-E_x[log (1/k) sum_i p(x, z_i) / q(z_i | x)], z_i ~ q(z | x): an upper bound on -log p(x).

    k = 1 is the negative ELBO (in expectation); the bound tightens as k grows.
    For the gaussian likelihood it is up to the dropped constant of recon.
    `progress(done, total)` is called after each batch of images. The samples are drawn
    `chunk` at a time for each batch of `batch_size` images, so these two fix the draws;
    `decoder` (BlockDecoder(model) unless given) decodes them in blocks of its own size.
    """
    decoder = decoder or BlockDecoder(model)
    total = 0.0
    for start in range(0, len(images), batch_size):
        x = images[start : start + batch_size]  # (B, D)
        mu, logvar = model.encode(x)  # (B, H)
        std = torch.exp(0.5 * logvar)
        decoder.start(x)
        log_weights = []
        for done in range(0, k, chunk):
            n = min(chunk, k - done)
            eps = torch.randn((n, *mu.shape), generator=generator, device=mu.device, dtype=mu.dtype)
            z = mu + std * eps  # (n, B, H)
            log_px_z = torch.cat([decoder(block) for block in z.tensor_split(decoder.blocks(len(x), n))])  # (n, B)
            log_weights.append(log_px_z + log_prior(z) - log_posterior(eps, logvar))  # (n, B)
        log_px = torch.logsumexp(torch.cat(log_weights), dim=0) - math.log(k)  # (B,)
        total += -log_px.double().sum().item()
        if progress is not None:
            progress(start + len(x), len(images))
    return total / len(images)
