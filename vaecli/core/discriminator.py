"""FactorVAE's discriminator (Kim & Mnih 2018): it tells codes z ~ q(z) from codes whose dimensions were
shuffled apart across the batch (samples of prod_j q(z_j)); its logit gap estimates the total correlation.

The network is the paper's and disentanglement_lib's: six hidden layers of 1000 units with leaky ReLUs
(slope 0.2), two logits out; trained by Adam at lr 1e-4, betas (0.5, 0.9).
"""

import torch
from torch import nn

HIDDEN = (1000,) * 6
LR = 1e-4
BETAS = (0.5, 0.9)


class Discriminator(nn.Module):
    def __init__(self, latent_dim: int, hidden: tuple[int, ...] = HIDDEN) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        width = latent_dim
        for size in hidden:
            layers += [nn.Linear(width, size), nn.LeakyReLU(0.2)]
            width = size
        layers.append(nn.Linear(width, 2))
        self.net = nn.Sequential(*layers)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        """Codes (B, H) -> logits (B, 2): column 0 'from q(z)', column 1 'from the product of marginals'."""
        return self.net(z)


def permute_dims(z: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Each latent dimension shuffled on its own across the batch (Kim & Mnih 2018, algorithm 1)."""
    batch, h = z.shape
    order = torch.argsort(torch.rand(h, batch, generator=generator, device=z.device), dim=1)  # (H, B)
    return torch.gather(z, 0, order.T)


def total_correlation(logits: torch.Tensor) -> torch.Tensor:
    """The density-ratio estimate of TC from the discriminator's logits on z ~ q(z): mean of logit 0 - logit 1."""
    return (logits[:, 0] - logits[:, 1]).mean()


def discriminator_loss(real: torch.Tensor, shuffled: torch.Tensor) -> torch.Tensor:
    """Cross-entropy: codes from q(z) are class 0, shuffled codes class 1."""
    zeros = torch.zeros(len(real), dtype=torch.long, device=real.device)
    ones = torch.ones(len(shuffled), dtype=torch.long, device=shuffled.device)
    return 0.5 * (nn.functional.cross_entropy(real, zeros) + nn.functional.cross_entropy(shuffled, ones))
