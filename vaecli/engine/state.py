"""What a fit leaves behind: a TrainState to continue from, or a TrainResult when it finished."""

from dataclasses import dataclass

import torch

from vaecli.config import TrainConfig
from vaecli.core.model import VAE
from vaecli.engine.records import EpochRecord
from vaecli.errors import TrainingDiverged


@dataclass
class TrainState:
    """Everything needed to continue a fit exactly where it stopped.

    `epoch` is the epoch in progress (1-based) and `step` the batches of it done;
    at an epoch boundary `step` is 0 and `order` is empty (the next shuffle is not drawn yet).
    Tensors are CPU copies. A stacked member's state has the same form as a lone fit's,
    so either can continue it.
    """

    config: TrainConfig
    epoch: int
    step: int
    history: list[EpochRecord]
    model: dict[str, torch.Tensor]  # the state_dict
    optimizer: dict[str, torch.Tensor]  # Adam's state per parameter: "<index>.step|exp_avg|exp_avg_sq"
    order: torch.Tensor  # (N,) int64: the epoch's shuffle of the training images, or (0,)
    sums: torch.Tensor  # (3,) float64: recon, KL and the objective summed over the epoch's images so far
    shuffle_rng: torch.Tensor  # uint8 generator states
    noise_rng: torch.Tensor
    seconds: float  # wall time of the fit so far (a stacked member's: its share)
    epoch_seconds: float  # training-pass time of the epoch in progress so far
    device: str  # the device type it ran on: the noise generator's state only fits that type


class Stopped(Exception):
    """Raised when a fit's StopRequest was set: `states` continue its members (member index -> state).

    A member that diverged before the stop has no state; its error is in `failed`.
    """

    def __init__(self, states: dict[int, TrainState], failed: dict[int, TrainingDiverged] | None = None) -> None:
        first = next(iter(states.values()), None)
        where = f" at epoch {first.epoch}, step {first.step}" if first is not None else ""
        super().__init__(f"training stopped{where}")
        self.states = states
        self.failed = failed or {}

    @property
    def state(self) -> TrainState:
        """The state of a lone fit (member 0)."""
        return self.states[0]


@dataclass
class TrainResult:
    """A finished fit: its config, the trained model (on the CPU, in eval mode) and one EpochRecord per epoch."""

    config: TrainConfig
    model: VAE
    history: list[EpochRecord]
    device: str
    seconds: float  # wall time of the whole fit, evaluations included (a stacked member's: its share)
    dataset_source: str = ""
    precision: str = "fp32"  # the arithmetic used: config.precision with "auto" resolved

    @property
    def final(self) -> EpochRecord:
        return self.history[-1]
