"""The lock of a run folder: a run trains only in the process that holds its folder's lock.

Two processes asking for the same config at once (a student's two terminals, two users
of a lab's store) would otherwise both train it. The lock is the OS's (flock, through
filelock) on `<folder>/.lock`: the kernel lets go of it when its process ends, however
it ends (SIGKILL, an out-of-memory kill), so a killed fit never blocks its run and there
is no stale lock to clear by hand. The file stays when the lock is let go: removing it
would let a waiter and a newcomer lock two different files. Beside it, `.lock.json` says
who holds the lock (pid, host, user, since), for the waiting line and `vaecli runs`; it
is read only while someone holds the lock, and one left by a killed holder is not believed.

Whoever asks for a run that another process is training waits for it, told so once, and
then reuses the finished run (or continues it, if its trainer was interrupted). Waiting,
not failing, because the store's promise is "ask for a config, get its finished run": a
second terminal, a figure command that needs the model and a sweep member all get exactly
that, without the work done twice and without a retry to script. `wait` bounds the wait
(`vaecli train --wait 0`: not at all) for whoever would rather be told at once.
"""

import contextlib
import errno
import getpass
import json
import os
import socket
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from filelock import FileLock, Timeout

from vaecli import atomic
from vaecli.errors import Interrupted, OutputError, RunBusy, RunStoreError, VaeError

if TYPE_CHECKING:
    from vaecli.engine.interrupt import StopRequest

LOCK_FILE = ".lock"
HOLDER_FILE = ".lock.json"
POLL_SECONDS = 0.2  # between tries while waiting: a try is an open and a non-blocking flock


@dataclass(frozen=True)
class Holder:
    """Who holds a run folder's lock; the fields are None where its `.lock.json` does not say."""

    folder: Path
    pid: int | None = None
    host: str | None = None
    user: str | None = None
    since: float | None = None  # when it took the lock, seconds since the epoch

    def __str__(self) -> str:
        """'pid 4242 on lab-3 (alice), since 2026-12-01 14:03:05', or 'another process'."""
        if self.pid is None:
            return self.process
        who = f" ({self.user})" if self.user else ""
        when = f", since {time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(self.since))}" if self.since else ""
        return f"{self.process}{who}{when}"

    @property
    def process(self) -> str:
        """'pid 4242 on lab-3', or 'another process'."""
        if self.pid is None:
            return "another process"
        return f"pid {self.pid}" + (f" on {self.host}" if self.host else "")

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "folder": str(self.folder)}


def holder(folder: Path) -> Holder | None:
    """Who holds `folder`'s lock, None when nobody does; it never waits and never makes a lock file."""
    path = Path(folder) / LOCK_FILE
    if not path.is_file():
        return None  # never locked: no run trained here since vaecli had locks
    probe = _file_lock(path)
    try:
        probe.acquire(blocking=False)
    except Timeout:
        return _recorded(Path(folder))
    except OSError:  # a store this user cannot write to (a shared, read-only one): the holder's own record tells
        if not (Path(folder) / HOLDER_FILE).is_file():
            return None
        recorded = _recorded(Path(folder))
        return recorded if recorded.pid is not None else None  # a dead process's record: nobody
    probe.release()
    return None


class RunLock:
    """`folder`'s lock, for one holder: acquire() it (waiting, or not), then release()."""

    def __init__(self, folder: Path) -> None:
        self.folder = Path(folder)
        self._lock = _file_lock(self.folder / LOCK_FILE)
        self._key = self.folder.resolve()

    def try_acquire(self) -> bool:
        """Take the lock if nobody holds it; False at once if somebody does."""
        with _HELD_GUARD:
            if _HELD.get(self._key) == threading.get_ident():
                # a second flock of one folder in one thread would wait for itself forever
                raise RunStoreError(f"{self.folder}: this thread is already training this run (asked for twice)")
        try:
            self._lock.acquire(blocking=False)
        except Timeout:
            return False
        except OSError as e:
            raise _lock_error(self.folder, e) from e
        try:
            atomic.remove_leftovers(self.folder, [HOLDER_FILE])
            me = Holder(self.folder, os.getpid(), socket.gethostname(), _user(), time.time())
            atomic.write_json(self.folder / HOLDER_FILE, {k: v for k, v in me.to_dict().items() if k != "folder"})
        except BaseException:
            self._lock.release()
            raise
        with _HELD_GUARD:
            _HELD[self._key] = threading.get_ident()
        return True

    def acquire(
        self,
        wait: float | None = None,
        on_wait: Callable[[Holder], None] | None = None,
        stop: "StopRequest | None" = None,
    ) -> bool:
        """Take the lock, waiting up to `wait` seconds (None: as long as it takes) for its holder.

        `on_wait(holder)` is told once, when the wait begins. Raises RunBusy when the
        wait runs out, Interrupted on Ctrl-C or on `stop` (the request of a fit in a
        thread). Returns whether it waited, that is, whether another holder may have
        changed the folder since the caller last looked.
        """
        deadline = None if wait is None else time.monotonic() + wait
        tries = 0
        try:
            while not self.try_acquire():
                tries += 1
                # two tries at least: a `vaecli runs` probing the lock holds it for a moment
                if deadline is not None and tries >= 2 and time.monotonic() >= deadline:
                    raise RunBusy(_busy(self.folder, wait))
                if tries == 1 and on_wait is not None and (wait is None or wait > 0):
                    on_wait(_recorded(self.folder))
                if stop is not None and stop.requested:
                    raise Interrupted(f"stopped waiting for {self.folder}; nothing was trained")
                time.sleep(POLL_SECONDS if wait is None else min(POLL_SECONDS, max(wait, 0.01)))
        except KeyboardInterrupt:
            raise Interrupted(f"stopped waiting for {self.folder}; nothing was trained") from None
        return tries > 0

    def release(self) -> None:
        """Let go: the holder's record first, while the lock still keeps the next holder from writing its own."""
        with _HELD_GUARD:
            _HELD.pop(self._key, None)
        try:
            with contextlib.suppress(OSError):
                (self.folder / HOLDER_FILE).unlink(missing_ok=True)
        finally:
            self._lock.release()


@contextlib.contextmanager
def held(
    folder: Path,
    wait: float | None = None,
    on_wait: Callable[[Holder], None] | None = None,
    stop: "StopRequest | None" = None,
) -> Iterator[bool]:
    """`folder`'s lock for the block, as RunLock.acquire takes it; yields whether it waited."""
    lock = RunLock(folder)
    waited = lock.acquire(wait, on_wait, stop)
    try:
        yield waited
    finally:
        lock.release()


@contextlib.contextmanager
def held_all(folders: Sequence[Path]) -> Iterator[bool]:
    """Every folder's lock for the block, taken at once without waiting; yields False, holding none,
    when another holder has one of them.

    They are taken in the order of their paths, so that two processes taking the same
    folders this way never each hold one the other waits for.
    """
    locks: list[RunLock] = []
    try:
        for folder in sorted({Path(f) for f in folders}, key=lambda f: str(f.resolve())):
            lock = RunLock(folder)
            if not lock.try_acquire():
                break
            locks.append(lock)
        else:
            yield True
            return
        for lock in reversed(locks):
            lock.release()
        locks = []
        yield False
    finally:
        for lock in reversed(locks):
            lock.release()


# the folders this process holds the lock of, and the thread holding each (flock is per open file, so a
# thread of this process waiting for another's folder just waits; only the same thread twice must not)
_HELD: dict[Path, int] = {}
_HELD_GUARD = threading.Lock()


def _file_lock(path: Path) -> FileLock:
    # the OS lock only: a soft lock (a marker file) would outlive a killed holder
    return FileLock(path, thread_local=False, fallback_to_soft=False)


def _recorded(folder: Path) -> Holder:
    """The holder `.lock.json` names, or an unnamed one (not yet written, unreadable, or a dead process's)."""
    try:
        record = json.loads((folder / HOLDER_FILE).read_text())
        pid, host, user, since = (record.get(k) for k in ("pid", "host", "user", "since"))
    except (OSError, ValueError, AttributeError):
        return Holder(folder)
    if not isinstance(pid, int) or pid <= 0 or (host == socket.gethostname() and not _alive(pid)):
        return Holder(folder)  # a killed holder's record, before the new holder wrote its own
    return Holder(
        folder,
        pid,
        host if isinstance(host, str) else None,
        user if isinstance(user, str) else None,
        float(since) if isinstance(since, int | float) else None,
    )


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True  # another user's process: alive
    return True


def _user() -> str | None:
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no login name and no passwd entry (a container's uid)
        return None


def _busy(folder: Path, wait: float | None) -> str:
    waited = "not waiting for it (`wait` 0)" if not wait else f"gave up after waiting {wait:g} s (`wait`)"
    return (
        f"{folder} is being trained by {_recorded(folder)}; {waited}; run the same command again once it is done "
        "to reuse the run, or without `wait` to wait for it"
    )


def _lock_error(folder: Path, error: OSError) -> VaeError:
    if error.errno == errno.ENOSYS:  # a file system without flock (some network ones)
        return RunStoreError(
            f"{folder}: its file system cannot lock files; keep the run store on a local disk (`store`, VAECLI_RUNS)"
        )
    return OutputError(f"cannot lock {folder / LOCK_FILE}: {error.strerror or error}")
