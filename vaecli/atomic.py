"""Atomic file writes: bytes go to a temp file in the same folder, then os.replace.

A crash at any moment leaves either the old complete file or the new complete one.
"""

import contextlib
import json
import os
import tempfile
import threading
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from vaecli.errors import OutputError


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def writable(folder: Path) -> bool:
    """Whether files can be written into `folder` (False on a read-only mount or a share without write
    permission, even for root)."""
    return os.access(folder, os.W_OK)


def write_bytes(path: Path, data: bytes) -> Path:
    """Write `data` to `path` atomically and return `path`."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as e:
        raise OutputError(f"cannot write {path}: {e.strerror or e}") from e
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        # mkstemp makes the file 0600; give it the permissions a plain open() would
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except BaseException as e:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        if isinstance(e, OSError):
            raise OutputError(f"cannot write {path}: {e.strerror or e}") from e
        raise
    return path


def write_text(path: Path, text: str) -> Path:
    return write_bytes(path, text.encode("utf-8"))


def write_json(path: Path, obj: Any) -> Path:
    return write_text(path, json.dumps(obj, indent=2) + "\n")


class BackgroundWriter:
    """write_bytes in a worker thread, one file at a time, so the caller goes on while the disk works.

    write() first waits for the write before it, so at most one is in flight and they
    land in order. A write's error (an OutputError, say) is raised in the caller's
    thread by the next write() or wait(). A process killed mid-write leaves the old
    file whole, and a temp file that remove_leftovers clears.
    """

    def __init__(self) -> None:
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None

    def write(self, path: Path, make: Callable[[], bytes]) -> None:
        """Write `make()` to `path` atomically, in the background; `make` runs in the worker too."""
        self.wait()

        def work() -> None:
            try:
                write_bytes(path, make())
            except BaseException as e:  # handed to the caller's thread by wait()
                self._error = e

        # not a daemon: a process that exits (say on a second Ctrl-C) still finishes the write
        self._thread = threading.Thread(target=work, name=f"vaecli: write {Path(path).name}")
        self._thread.start()

    def wait(self, reraise: bool = True) -> None:
        """Return once the pending write is on disk; raise its error if it failed (unless not `reraise`)."""
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        error, self._error = self._error, None
        if error is not None and reraise:
            raise error


def remove_leftovers(folder: Path, names: Iterable[str]) -> list[Path]:
    """Delete the temp files that writes of `names` killed midway (SIGKILL, power loss) left in `folder`.

    Only the `.<name>.<random>.tmp` files that write_bytes makes for those names are
    touched. Call it where no other process writes them, e.g. before a run trains there.
    """
    removed = []
    for name in names:
        for path in Path(folder).glob(f".{name}.*.tmp"):
            with contextlib.suppress(OSError):
                path.unlink()
                removed.append(path)
    return removed
