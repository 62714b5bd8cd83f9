"""The fully connected VAE: encode -> (mu, logvar), reparameterize, decode."""

from typing import NamedTuple

import torch
from torch import nn

from vaecli.config import ModelConfig
from vaecli.core import kernels


class VAEOutput(NamedTuple):
    logits: torch.Tensor  # (B, D) decoder output before the sigmoid
    mu: torch.Tensor  # (B, H)
    logvar: torch.Tensor  # (B, H)
    z: torch.Tensor  # (B, H) the sample that was decoded


def _mlp(sizes: list[int]) -> nn.Sequential:
    """Linear layers through `sizes` with a ReLU after each."""
    layers: list[nn.Module] = []
    for n_in, n_out in zip(sizes, sizes[1:], strict=False):
        # in place: a linear layer's backward needs its input, not its output, so this is safe and saves a copy
        layers += [nn.Linear(n_in, n_out), nn.ReLU(inplace=True)]
    return nn.Sequential(*layers)


class VAE(nn.Module):
    """Encoder MLP -> two linear heads (mu, logvar) -> z -> mirrored decoder MLP -> logits."""

    def __init__(self, config: ModelConfig | None = None) -> None:
        super().__init__()
        self.config = config = config or ModelConfig()
        widths = [config.input_dim, *config.hidden_layers]
        self.encoder = _mlp(widths)
        self.mu = nn.Linear(widths[-1], config.latent_dim)
        self.logvar = nn.Linear(widths[-1], config.latent_dim)
        back = [config.latent_dim, *reversed(config.hidden_layers)]  # e.g. H, 256, 512
        self.decoder = nn.Sequential(*_mlp(back), nn.Linear(back[-1], config.input_dim))

    def linears(self) -> list[nn.Linear]:
        """Every linear layer in order: the encoder's, mu, logvar, then the decoder's."""
        return [m for m in self.modules() if isinstance(m, nn.Linear)]

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, D) images in [0, 1] -> mu, logvar, each (B, H)."""
        h = kernels.sequential(self.encoder, x)
        return self.mu(h), self.logvar(h)

    @staticmethod
    def reparameterize(
        mu: torch.Tensor,
        logvar: torch.Tensor,
        generator: torch.Generator | None = None,
        eps: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """z = mu + sigma * eps with eps ~ N(0, I): a sample that gradients flow through.

        `eps` given: that noise is used and `generator` is not (the trainer draws it
        outside a compiled step).
        """
        if eps is None:
            eps = torch.randn(mu.shape, generator=generator, device=mu.device, dtype=mu.dtype)
        return mu + torch.exp(0.5 * logvar) * eps

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """(B, H) latent codes -> (B, D) logits."""
        return kernels.sequential(self.decoder, z)

    def decode_mean(self, z: torch.Tensor) -> torch.Tensor:
        """(B, H) latent codes -> (B, D) pixel means in [0, 1], never thresholded."""
        return torch.sigmoid(self.decode(z))

    def forward(
        self, x: torch.Tensor, generator: torch.Generator | None = None, eps: torch.Tensor | None = None
    ) -> VAEOutput:
        mu, logvar = self.encode(x)
        z = self.reparameterize(mu, logvar, generator, eps)
        return VAEOutput(self.decode(z), mu, logvar, z)
