"""Connecting to a Ray cluster as its driver, every failure in one line and in seconds.

A plain `ray.init` on an address nobody answers waited for more than 150 s, and one
with a missing token retried for 20 s while Ray's C++ core logged each try: here the
address is probed first, the tries are fewer, and the logs of a failed connect are
kept off the terminal.
"""

import contextlib
import logging
import os
import socket
import sys
from collections.abc import Iterator
from typing import Any

from vaecli.errors import ConfigError, MissingExtra, VaeError

PROBE_SECONDS = 3.0  # how long an address may take to answer a TCP connection
# Ray's driver retries a refused connection (a missing token, say) for about 20 s, once a second;
# vaecli gives it this many tries, so that a wrong token fails in seconds, not after 20 s
CONNECT_TRIES = "3"


def import_ray() -> Any:
    try:
        import ray
    except ImportError:
        raise MissingExtra("`address` (a cluster) needs Ray: pip install 'vaecli[ray]'") from None
    return ray


def cluster_address(address: str) -> str | None:
    """HOST:PORT to probe, from `address` or RAY_ADDRESS; None where Ray finds the cluster itself ("auto")."""
    if address == "auto":
        address = os.environ.get("RAY_ADDRESS", "auto")
    if address in ("auto", "local"):
        return None
    address = address.removeprefix("ray://")
    host, sep, port = address.rpartition(":")
    if not sep or not host or not port.isdigit():
        raise ConfigError(f"`address` takes auto or HOST:PORT (a Ray head node's address), got {address!r}")
    return address


def probe(address: str, seconds: float = PROBE_SECONDS) -> None:
    """Fail in one line, within `seconds`, when nothing listens at HOST:PORT (ray.init would wait minutes)."""
    host, _, port = address.rpartition(":")
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=seconds):
            pass
    except OSError as e:
        reason = "no answer" if isinstance(e, TimeoutError) else (e.strerror or str(e)).lower()
        raise ConfigError(
            f"no Ray cluster answers at {address} ({reason}); start one there with "
            f"ray start --head --port {port}, or give the head node's address"
        ) from None


def connect(address: str) -> None:
    """Connect this process to the cluster as its driver; every failure is one line."""
    ray = import_ray()
    target = cluster_address(address)
    if target is not None:
        probe(target)
    os.environ.setdefault("RAY_gcs_server_port_wait_time_s", CONNECT_TRIES)
    try:
        with _quiet_stderr():  # Ray's C++ core logs each refused try there
            ray.init(address=target or "auto", logging_level=logging.ERROR, log_to_driver=False)
    except Exception as e:
        raise _connect_error(e, target or "auto") from None


def _connect_error(error: BaseException, address: str) -> VaeError:
    chain: list[str] = []
    cause: BaseException | None = error
    while cause is not None:
        chain.append(str(cause))
        cause = cause.__cause__ or cause.__context__
    text = " ".join(chain)
    if "InvalidAuthToken" in text or "AuthenticationError" in text or "Unauthenticated" in text:
        return ConfigError(
            f"the Ray cluster at {address} refused the connection: it wants its token. Set RAY_AUTH_MODE=token "
            "and the token in RAY_AUTH_TOKEN (or a file named by RAY_AUTH_TOKEN_PATH, or ~/.ray/auth_token); "
            "ray get-auth-token on the head node prints it"
        )
    if "Could not find any running Ray instance" in text:
        return ConfigError(
            "no Ray cluster found: start one (ray start --head), or give its address: --cluster HOST:PORT "
            "or RAY_ADDRESS=HOST:PORT"
        )
    first = str(error).splitlines()[0] if str(error) else type(error).__name__
    return ConfigError(f"cannot connect to the Ray cluster at {address}: {first}")


@contextlib.contextmanager
def _quiet_stderr() -> Iterator[None]:
    """Send file descriptor 2 to /dev/null within the block (C++ logs bypass Python's sys.stderr)."""
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
