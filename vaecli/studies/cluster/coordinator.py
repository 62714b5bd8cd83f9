"""The small actor between a cluster sweep's driver and its tasks.

Free of torch, so that the actor's process (a Ray worker of its own) starts in a
moment and stays small.
"""


class Coordinator:
    """A small actor between the driver and its tasks: tasks report progress, the driver asks them to stop.

    Calls from one task arrive in the order it made them; the driver drains the events.
    """

    def __init__(self) -> None:
        self.events: list[tuple] = []
        self.attempts: dict[tuple[int, int], int] = {}  # (member, submission) -> tries begun
        self.stopping = False

    def started(self, index: int, submission: int, node: str, host: str, pid: int) -> bool:
        """A task began on a worker; returns whether the sweep is stopping (then the task does not train).

        Ray runs a task again after its worker died: its second start is its second try.
        """
        key = (index, submission)
        self.attempts[key] = self.attempts.get(key, 0) + 1
        self.events.append(("running", index, node, host, pid, self.attempts[key]))
        return self.stopping

    def report(self, event: tuple) -> None:
        self.events.append(event)

    def stop(self) -> None:
        self.stopping = True

    def stop_requested(self) -> bool:
        return self.stopping

    def drain(self) -> list[tuple]:
        events, self.events = self.events, []
        return events
