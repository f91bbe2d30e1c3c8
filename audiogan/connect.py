"""Where a command's Ray comes from: a cluster named on purpose, or a local instance of its own.

`ray.init()` with no address joins the cluster a machine's last `ray start` recorded in
/tmp/ray/ray_current_cluster, even one that died long ago, and then waits for it without end.
audiogan never asks Ray to guess: without RAY_ADDRESS (or --address) it starts a new local
instance in a temp dir of its own, which no other `ray.init()` looks in; with one, it checks
that something answers there, and gives up after CONNECT_TIMEOUT_S with one line naming it.
"""

from __future__ import annotations

import os
import socket
import sys
import threading
from urllib.parse import urlsplit

from audiogan.errors import AudioganError

# The addresses that mean "a new local instance", as Ray reads them too.
LOCAL = ("", "local")
# How long joining a cluster that answers may take, all told, before the command gives up.
CONNECT_TIMEOUT_S = 60.0
# How long the first TCP connection to the cluster's address may take.
PROBE_TIMEOUT_S = 5.0
# Ray Train starts a PreemptionWatcher actor with every worker group, to notice a cluster node
# that is being drained (a spot node's notice). No node of a local instance is ever drained, and
# on a laptop the watcher's process, started at each run and each restart, made a 2-worker run
# of the tests 8% slower; a local instance goes without it unless the environment says otherwise.
LOCAL_RAY_ENV = {"RAY_TRAIN_ENABLE_PREEMPTION_WATCHER": "0"}


class RayAddressError(AudioganError):
    """A cluster address that names nothing, or a cluster that does not answer."""


def local_temp_dir() -> str:
    """Where audiogan's local Ray instances keep their sessions: audiogan-ray/ beside Ray's own
    ray/, in the folder Ray picks (RAY_TMPDIR, else TMPDIR on Linux, else /tmp, which keeps
    its Unix socket paths short on macOS too)."""
    from ray._common.utils import get_default_system_temp_dir

    return os.path.join(get_default_system_temp_dir(), "audiogan-ray")


def start_ray(
    address: str | None = None,
    num_cpus: int | None = None,
    dashboard: bool = False,
    log_to_driver: bool = True,
) -> str:
    """Joins the cluster at `address` (else RAY_ADDRESS), or starts a local Ray instance.

    A local instance gets `num_cpus` CPUs (default: all) and, when asked, its dashboard on
    127.0.0.1; it is Ray's state API, which Ray Train polls to free a stopped trial's workers.
    Returns what was joined or started, for the log.

    Raises:
        RayAddressError: the address is malformed or nothing answers there; the message names it
            and where it came from (--address or RAY_ADDRESS).
    """
    import ray

    if ray.is_initialized():
        return "the Ray instance this process already uses"
    origin = "--address" if address else "RAY_ADDRESS"
    address = (address or os.environ.get("RAY_ADDRESS") or "").strip()
    if address in LOCAL:
        # The instance's processes (its raylet, and so Ray Train's controller) inherit these;
        # this process's own environment is left as it was.
        added = {name: value for name, value in LOCAL_RAY_ENV.items() if name not in os.environ}
        os.environ.update(added)
        try:
            ray.init(
                address="local",
                num_cpus=num_cpus,
                include_dashboard=dashboard,
                dashboard_host="127.0.0.1",
                log_to_driver=log_to_driver,
                _temp_dir=local_temp_dir(),
            )
        finally:
            for name in added:
                del os.environ[name]
        return "a local Ray instance"
    host, port, said = cluster_endpoint(address, origin)
    probe(host, port, said)
    # (Ray Client, ray://, takes no log_to_driver.)
    options = {} if address.startswith("ray://") else {"log_to_driver": log_to_driver}
    try:
        with _give_up_after(CONNECT_TIMEOUT_S, said):
            ray.init(address=address, **options)
    except Exception as error:  # noqa: BLE001 - a version mismatch, a client that gave up, ...
        text = " ".join(str(error).split())[:300] or type(error).__name__
        raise RayAddressError(f"joining the Ray cluster at {said} failed: {text}") from None
    return f"the Ray cluster at {address}"


def cluster_endpoint(address: str, origin: str = "RAY_ADDRESS") -> tuple[str, int, str]:
    """(host, port) that the cluster address `address` makes Ray connect to, and how to name it
    in a message."""
    said = f"{origin}={address}"
    scheme = urlsplit(address).scheme if "://" in address else ""
    if scheme in ("http", "https"):
        raise RayAddressError(
            f"{said} is a dashboard address, the one `ray job submit` takes; a command joins a "
            "cluster at its GCS address (HOST:6379, or auto). Submit it with `ray job submit`, "
            "or unset RAY_ADDRESS to run on a local Ray instance"
        )
    if address == "auto":
        # The cluster `ray start` last recorded on this machine. (Ray's own "auto" falls back
        # to any GCS process it sees, which would join another command's private instance.)
        from ray._private.services import find_bootstrap_address

        address = find_bootstrap_address(None) or ""
        if not address:
            raise RayAddressError(
                f"{said}: no Ray cluster is recorded on this machine; start one with "
                "`ray start --head`, or give its address (HOST:6379)"
            )
        said = f"{said} (the cluster recorded at {address})"
    hostport = address.split("://", 1)[1] if scheme == "ray" else address
    host, _, port = hostport.rpartition(":")
    if not host or not port.isdigit():
        raise RayAddressError(
            f"{said} is not a cluster address: give HOST:PORT (the head's GCS, port 6379 by "
            "default), ray://HOST:PORT, auto, or local"
        )
    return host.strip("[]"), int(port), said


def probe(host: str, port: int, said: str, timeout_s: float = PROBE_TIMEOUT_S) -> None:
    """Refuses an address where nothing accepts a connection (a head that is gone)."""
    try:
        with socket.create_connection((host, port), timeout=timeout_s):
            pass
    except OSError as error:
        reason = "timed out" if isinstance(error, TimeoutError) else error.strerror or str(error)
        raise RayAddressError(
            f"no Ray cluster answers at {said} ({reason}); unset RAY_ADDRESS (or set "
            "RAY_ADDRESS=local) to run on a local Ray instance"
        ) from None


class _give_up_after:  # noqa: N801 - used as a context manager, like contextlib's
    """Ends the process with one line if the block takes longer than `seconds`.

    ray.init() retries a cluster that accepts connections but never answers for minutes, in C++
    that no Python exception interrupts; the watchdog makes that wait bounded."""

    def __init__(self, seconds: float, said: str):
        self._timer = threading.Timer(seconds, self._give_up, args=(seconds, said))
        self._timer.daemon = True

    @staticmethod
    def _give_up(seconds: float, said: str) -> None:
        message = (
            f"audiogan: error: the Ray cluster at {said} accepts connections but did not let "
            f"this command join within {seconds:g} s; check that its head is running, or unset "
            "RAY_ADDRESS to run on a local Ray instance"
        )
        print(message, file=sys.stderr, flush=True)
        os._exit(2)

    def __enter__(self) -> None:
        self._timer.start()

    def __exit__(self, *exc) -> None:
        self._timer.cancel()
