"""Ctrl-C as a request: the first one asks training to stop after the current batch.

A KeyboardInterrupt can land anywhere, even between a gradient and the optimizer
step, which would leave a state that cannot be resumed exactly. While
`stop_on_sigint()` is active, SIGINT only sets a flag that the trainer reads
between batches; a second Ctrl-C raises KeyboardInterrupt at once, for a user
who will not wait.
"""

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType


class StopRequest:
    """A flag the trainer checks after every batch."""

    def __init__(self) -> None:
        self.requested = False

    def request(self) -> None:
        self.requested = True


@contextmanager
def stop_on_sigint() -> Iterator[StopRequest]:
    """Within the block, Ctrl-C sets the yielded request instead of raising.

    Outside the main thread (where signal handlers cannot be set) the request
    is simply never set by a signal.
    """
    request = StopRequest()
    if threading.current_thread() is not threading.main_thread():
        yield request
        return

    def handler(signum: int, frame: FrameType | None) -> None:
        if request.requested:
            raise KeyboardInterrupt
        request.request()

    previous = signal.signal(signal.SIGINT, handler)
    try:
        yield request
    finally:
        signal.signal(signal.SIGINT, previous)
