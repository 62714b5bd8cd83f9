"""The hooks a fit calls as it goes: the only way progress leaves the loop (it never prints).

Free of torch at import time, so that the command line's displays can subclass it
and `vaecli --help` stays fast.
"""

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from vaecli.config import TrainConfig
    from vaecli.core.model import VAE
    from vaecli.engine.records import EpochRecord
    from vaecli.engine.state import TrainState
    from vaecli.errors import TrainingDiverged


class Observer:
    """Hooks for progress display; the library's default ignores them all.

    A stacked fit calls on_start, on_resume and on_batch once for the group, and
    on_member_epoch (by default on_epoch) for each member in turn.
    """

    def on_start(self, config: "TrainConfig", steps_per_epoch: int, device: Any) -> None:
        pass

    def on_batch(self, epoch: int, step: int) -> None:
        pass

    def on_epoch(self, record: "EpochRecord") -> None:
        pass

    def on_resume(self, state: "TrainState") -> None:
        """Called after on_start when the fit continues from `state` (a stacked group: its first member's)."""

    def on_member_epoch(self, member: int, record: "EpochRecord") -> None:
        """Member `member` (its index in the fit) finished an epoch; a lone fit's member is 0."""
        self.on_epoch(record)

    def on_member_model(self, member: int, record: "EpochRecord", model: "VAE") -> None:
        """After on_member_epoch: the member's model as it ends the epoch, in eval mode, to draw from.

        Read it only (under torch.inference_mode): for a lone fit it is the model in training.
        """

    def on_member_failed(self, member: int, error: "TrainingDiverged") -> None:
        """A stacked member diverged; the others go on."""
