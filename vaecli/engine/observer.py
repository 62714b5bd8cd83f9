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


class Observers(Observer):
    """Several observers as one (a display and a TensorBoard writer, say): every hook goes to each, in order."""

    def __init__(self, *observers: Observer) -> None:
        self.observers = observers

    def on_start(self, config: "TrainConfig", steps_per_epoch: int, device: Any) -> None:
        for observer in self.observers:
            observer.on_start(config, steps_per_epoch, device)

    def on_batch(self, epoch: int, step: int) -> None:
        for observer in self.observers:
            observer.on_batch(epoch, step)

    def on_epoch(self, record: "EpochRecord") -> None:
        for observer in self.observers:
            observer.on_epoch(record)

    def on_resume(self, state: "TrainState") -> None:
        for observer in self.observers:
            observer.on_resume(state)

    def on_member_epoch(self, member: int, record: "EpochRecord") -> None:
        for observer in self.observers:
            observer.on_member_epoch(member, record)

    def on_member_model(self, member: int, record: "EpochRecord", model: "VAE") -> None:
        for observer in self.observers:
            observer.on_member_model(member, record, model)

    def on_member_failed(self, member: int, error: "TrainingDiverged") -> None:
        for observer in self.observers:
            observer.on_member_failed(member, error)

    def close(self) -> None:
        """Close each observer that has a close() (a display's progress bars, a writer's files)."""
        for observer in self.observers:
            close = getattr(observer, "close", None)
            if callable(close):
                close()
