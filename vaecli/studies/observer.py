"""What a sweep tells its display as it goes: one protocol in place of loose callbacks.

Free of torch at import time, so that the command line's displays can subclass it.
"""

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from vaecli.engine.observer import Observer

if TYPE_CHECKING:
    from pathlib import Path

    from vaecli.config import TrainConfig
    from vaecli.errors import VaeError
    from vaecli.store.lock import Holder


@dataclass(frozen=True)
class Placement:
    """Where a member's fit runs on a cluster: the node, the worker process, and which try it is."""

    node: str  # the node's address, e.g. 10.0.0.7
    host: str  # its host name
    pid: int  # the worker process
    attempt: int  # 1 for the first try; more after a worker died and the cluster retried the member

    def __str__(self) -> str:
        where = self.host if self.host == self.node else f"{self.host} ({self.node})"
        return f"{where}, pid {self.pid}"


class SweepObserver:
    """Hooks for a sweep's progress; the library's default ignores them all.

    Indices are the members' places in Sweep.members(). An executor announces how
    it trains a set of members (on_fits), then asks for the Observer of each fit:
    one index for a fit alone, several for a stacked group (whose Observer gets
    on_member_epoch with the member's place in `indices`).
    """

    def on_fits(self, indices: Sequence[int], how: str, jobs: int) -> None:
        """`indices` are about to train `how` ("one by one", "side by side", "stacked"), `jobs` at a time."""

    def observer(self, indices: Sequence[int], configs: Sequence["TrainConfig"]) -> Observer:
        """The Observer of the fit of these members (called in the thread that trains them)."""
        return Observer()

    def on_failed(self, index: int, error: "VaeError") -> None:
        """Member `index` failed (it diverged, say): it is not saved; the sweep goes on."""

    def on_waiting(self, index: int, holder: "Holder") -> None:
        """Member `index` is being trained by another process (`holder`); this one waits for it, then reuses it."""

    def on_reused(self, index: int, path: "Path") -> None:
        """Member `index` was found finished in the store at `path`: nothing was trained."""

    def on_scoring(self, index: int, config: "TrainConfig") -> None:
        """Member `index` (trained or reused) is being scored on the test set."""

    def on_queued(self, index: int, config: "TrainConfig") -> None:
        """Member `index` waits on a cluster for a worker (executors that place fits say so)."""

    def on_running(self, index: int, placement: Placement) -> None:
        """Member `index` started on a cluster's worker: a retry when placement.attempt > 1."""

    def on_finished(self, index: int, path: "Path") -> None:
        """Member `index` came back from a cluster's worker and was saved at `path`."""

    def on_message(self, text: str) -> None:
        """Something the user should know about how the sweep runs (data sent to a cluster, say)."""
