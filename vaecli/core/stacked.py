"""Members of one architecture as one stacked model, for training side by side in one matmul.

Every linear layer holds all M members' weights, (M, in, out), and runs as one
batched matrix product over the member axis (torch.baddbmm). Member m's loss
term reaches only its own slice of the weights; Adam is elementwise, so one Adam
over the stack is M Adams (vaecli/engine/steps.py trains it). Each member
therefore ends where training it alone ends, up to float rounding (the products
add in another order).

Members may differ in lam, seed and latent size; a smaller latent size is
zero-padded to the largest (see StackedVAE), everything else must be equal.
"""

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING

import torch
from torch import nn

from vaecli.core.loss import kl_divergence, kl_divergence_per_dim, log_posterior, log_prior, reconstruction_nll
from vaecli.core.model import VAE, VAEOutput

if TYPE_CHECKING:
    from vaecli.config import TrainConfig


class StackedLinear(nn.Module):
    """M linear layers as one: (M, B, in) -> (M, B, out) in one batched matrix product."""

    def __init__(self, layers: Sequence[nn.Linear]) -> None:
        super().__init__()
        n_in, n_out = max(la.in_features for la in layers), max(la.out_features for la in layers)
        weight, bias = torch.zeros(len(layers), n_in, n_out), torch.zeros(len(layers), 1, n_out)
        for m, layer in enumerate(layers):  # a smaller layer fills the top-left corner, zeros elsewhere
            weight[m, : layer.in_features, : layer.out_features] = layer.weight.detach().T
            bias[m, 0, : layer.out_features] = layer.bias.detach()
        self.weight, self.bias = nn.Parameter(weight), nn.Parameter(bias)  # (M, in, out), (M, 1, out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.baddbmm(self.bias, x, self.weight)

    @torch.no_grad()
    def copy_into(self, m: int, layer: nn.Linear) -> None:
        """Member m's weights into a plain linear layer of its own size."""
        layer.weight.copy_(self.weight[m, : layer.in_features, : layer.out_features].T)
        layer.bias.copy_(self.bias[m, 0, : layer.out_features])


class StackedVAE(nn.Module):
    """M VAEs of one architecture as one model: inputs, outputs and noise carry a leading member axis.

    Latent sizes are padded to the largest, H: the padded units of mu and logvar
    have zero weights and bias, so they output 0; their eps is 0, so z is 0
    there, and the decoder's first layer has zero weights for them. Every
    gradient reaching a padded weight is a product with one of these zeros, the
    KL of N(0, 1) is 0 with gradient 0, and Adam makes zero gradients zero
    steps: the padding stays exactly zero and changes no real unit.
    """

    def __init__(self, models: Sequence[VAE]) -> None:
        super().__init__()
        self.configs = [m.config for m in models]
        self.latent_dim = max(c.latent_dim for c in self.configs)
        layers = [StackedLinear(group) for group in zip(*(m.linears() for m in models), strict=True)]
        depth = len(self.configs[0].hidden_layers)
        self.encoder = nn.ModuleList(layers[:depth])
        self.mu, self.logvar = layers[depth], layers[depth + 1]
        self.decoder = nn.ModuleList(layers[depth + 2 :])

    def __len__(self) -> int:
        return len(self.configs)

    def forward(self, x: torch.Tensor, eps: torch.Tensor) -> VAEOutput:
        """(M, B, D) images and (M, B, H) noise -> VAEOutput with a leading member axis.

        (M, k, B, H) noise: k samples of every image, decoded as one batch of k * B; logits (M, k, B, D).
        """
        h = x
        for layer in self.encoder:
            h = torch.relu_(layer(h))  # in place, as model.py: baddbmm's backward needs its input, not its output
        mu, logvar = self.mu(h), self.logvar(h)
        samples = eps.dim() == 4
        z = (
            VAE.reparameterize(mu.unsqueeze(1), logvar.unsqueeze(1), eps=eps)
            if samples
            else (VAE.reparameterize(mu, logvar, eps=eps))
        )
        h = z.flatten(1, 2) if samples else z  # (M, k * B, H)
        for layer in self.decoder[:-1]:
            h = torch.relu_(layer(h))
        logits = self.decoder[-1](h)
        return VAEOutput(logits.view(*eps.shape[:3], -1) if samples else logits, mu, logvar, z)

    def member(self, m: int) -> VAE:
        """Member m as a plain VAE of its own latent size, on the stack's device (a copy)."""
        with torch.device("meta"):  # no initialization: no global RNG draws, no wasted work
            model = VAE(self.configs[m])
        model.to_empty(device=self.mu.weight.device)
        for stacked, layer in zip(self.layers(), model.linears(), strict=True):
            stacked.copy_into(m, layer)
        return model

    def layers(self) -> list[StackedLinear]:
        return [*self.encoder, self.mu, self.logvar, *self.decoder]

    def member_views(self, m: int, tensors: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        """Member m's part of tensors shaped like the stack's parameters (the weights, or Adam's moments of
        them), in the plain VAE's parameter order and shapes: views, so writing one writes the stack."""
        with torch.device("meta"):
            sizes = [(la.in_features, la.out_features) for la in VAE(self.configs[m]).linears()]
        views = []
        for (n_in, n_out), weight, bias in zip(sizes, tensors[0::2], tensors[1::2], strict=True):
            views += [weight[m, :n_in, :n_out].T, bias[m, 0, :n_out]]  # (out, in) and (out,), as nn.Linear's
        return views


def member_terms(out: VAEOutput, x: torch.Tensor, kind: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Each member's recon and KL, means over its batch as in loss.vae_loss: (M,), (M,)."""
    members, batch = x.shape[:2]
    recon = reconstruction_nll(out.logits.flatten(0, 1), x.flatten(0, 1), kind)
    kl = kl_divergence(out.mu.flatten(0, 1), out.logvar.flatten(0, 1))
    return recon.view(members, batch).mean(1), kl.view(members, batch).mean(1)


def member_objectives(
    out: VAEOutput, x: torch.Tensor, eps: torch.Tensor, config: "TrainConfig", lam: torch.Tensor, capacity: float,
    latent_dims: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:  # fmt: skip
    """Each member's objective, recon and KL, as loss.objective_terms gives them for the member alone: (M,) each.

    `config`: what the members share (the objective); `lam` (M,): each member's KL weight at this
    step; `latent_dims` (M,): each member's own latent size, so that free bits skip the padding.
    """
    kind = config.model.recon
    if config.objective == "iwae":  # eps (M, k, B, H); the padding's log prior and posterior cancel
        log_px_z = -reconstruction_nll(out.logits, x.unsqueeze(1), kind)  # (M, k, B)
        log_w = log_px_z + log_prior(out.z) - log_posterior(eps, out.logvar.unsqueeze(1))
        bound = torch.logsumexp(log_w, dim=1) - math.log(eps.shape[1])  # (M, B)
        return -bound.mean(1), -log_px_z.mean((1, 2)), kl_divergence(out.mu, out.logvar).mean(1)
    recon, kl = member_terms(out, x, kind)
    if config.free_bits:
        per_dim = kl_divergence_per_dim(out.mu, out.logvar).mean(1)  # (M, H): batch means
        own = torch.arange(per_dim.shape[1], device=per_dim.device) < latent_dims.unsqueeze(1)
        held = torch.where(own, per_dim.clamp_min(config.free_bits), 0.0).sum(1)
    elif config.capacity:
        held = (kl - capacity).abs()
    else:
        held = kl
    return recon + lam * held, recon, kl
