"""The health figures of every process of a Bytewax cluster, for the dashboard's health line.

Every process counts its own events, webhook deliveries, Kafka lag, health and input silence in
its own Prometheus registry. The dashboard runs in process 0 only, so on its own it would show a
third of a three-process cluster's events per second, and never a peer that stalled. :class:`Peers`
reads the other processes' ``/metrics`` in the background (each at most every ``interval_s``,
``timeout_s`` to answer), and :func:`figures` takes from a registry, or a scraped page, the samples
the health line is made of. A peer whose page was not read for ``stale_s`` counts as unanswered:
the health line names it, and its figures are left out rather than shown stale.

A scraped page is parsed as Prometheus' text format, numbers only; one longer than
:data:`MAX_PAGE_BYTES` is not read (its process counts as unanswered).

>>> page = '''
... cxstream_events_total{outcome="processed"} 1200.0
... cxstream_events_total{outcome="dead_letter"} 3.0
... bytewax_kafka_consumer_lag{partition="0"} 40.0
... bytewax_kafka_consumer_lag{partition="1"} 2.0
... cxstream_flow_health{cxstream_flow_health="ok"} 0.0
... cxstream_flow_health{cxstream_flow_health="stalled"} 1.0
... '''
>>> f = figures(text_string_to_metric_families(page))
>>> f.done["processed"], f.lag, f.state
(1200.0, 42.0, 'stalled')
"""

from __future__ import annotations

import logging
import threading
import time
import urllib.request
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from prometheus_client.metrics_core import Metric
from prometheus_client.parser import text_string_to_metric_families

__all__ = ["MAX_PAGE_BYTES", "Figures", "Peers", "figures", "peer_urls", "worst"]

log = logging.getLogger(__name__)

MAX_PAGE_BYTES = 4 << 20
"""A process's metrics page is a few tens of kB; more than this is not read."""

_MAX_THREADS = 16  # peers read at the same time

_STATES = ("ok", "lagging", "stalled")  # cxstream.health.FlowHealth, from best to worst


@dataclass
class Figures:
    """One process's health figures: events done by outcome and webhook deliveries by outcome
    (counters, ``webhook_``-prefixed), its input lag, its flow health and how long its input's
    broker has not answered."""

    done: dict[str, float] = field(default_factory=dict)
    lag: float = 0.0
    state: str = "ok"
    silent_s: float = 0.0


def figures(families: Iterable[Metric]) -> Figures:
    """The health figures among a registry's (or a scraped page's) metric families."""
    f = Figures()
    for family in families:
        for sample in family.samples:
            if sample.name == "cxstream_events_total":
                f.done[sample.labels["outcome"]] = sample.value
            elif sample.name == "cxstream_webhook_deliveries_total":
                f.done[f"webhook_{sample.labels['outcome']}"] = sample.value
            elif sample.name == "bytewax_kafka_consumer_lag":
                f.lag += sample.value
            elif sample.name == "cxstream_flow_health" and sample.value == 1:
                f.state = sample.labels["cxstream_flow_health"]
            elif sample.name == "cxstream_kafka_input_silent_seconds":
                f.silent_s = sample.value
    return f


def worst(states: Iterable[str]) -> str:
    """The worst of flow health states (``stalled`` over ``lagging`` over ``ok``).

    >>> worst(["ok", "stalled", "lagging"])
    'stalled'
    """
    return max(states, key=lambda s: _STATES.index(s) if s in _STATES else 0, default="ok")


def peer_urls(
    addresses: list[str], process_id: int, metrics_port: int, *, per_process: bool
) -> dict[int, str]:
    """The other processes' ``/metrics`` URLs: each on its cluster address's host, at
    ``metrics_port`` (plus its process id where ``per_process``, as
    :func:`cxstream.flows.run.serve_metrics` serves them). Empty when metrics are off (port 0).

    >>> peer_urls(["cx-0.cx:2101", "cx-1.cx:2101"], 0, 3030, per_process=False)
    {1: 'http://cx-1.cx:3030/metrics'}
    >>> peer_urls(["127.0.0.1:2101", "127.0.0.1:2102"], 0, 3030, per_process=True)
    {1: 'http://127.0.0.1:3031/metrics'}
    """
    if not metrics_port:
        return {}
    urls = {}
    for i, address in enumerate(addresses):
        if i != process_id:
            host = address.rsplit(":", 1)[0]
            port = metrics_port + (i if per_process else 0)
            urls[i] = f"http://{host}:{port}/metrics"
    return urls


def _fetch(url: str, timeout_s: float) -> str:
    with urllib.request.urlopen(url, timeout=timeout_s) as response:  # noqa: S310 - http URLs we built
        page: bytes = response.read(MAX_PAGE_BYTES + 1)
    if len(page) > MAX_PAGE_BYTES:
        msg = f"a metrics page of more than {MAX_PAGE_BYTES} bytes"
        raise ValueError(msg)
    return page.decode("utf-8", "replace")


class Peers:
    """Reads the other processes' health figures in a background thread.

    ``processes`` is the cluster's size; ``urls`` maps each other process's id to its
    ``/metrics`` URL (a process without one is always unanswered: its metrics are off). This
    process, the dashboard's, is process 0."""

    def __init__(
        self,
        processes: int,
        urls: dict[int, str],
        *,
        interval_s: float = 1.0,
        timeout_s: float = 2.0,
        stale_s: float = 5.0,
        fetch: Callable[[str, float], str] = _fetch,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.processes = processes
        self._others = list(range(1, processes))
        self.urls = dict(urls)
        self._interval_s = interval_s
        self._timeout_s = timeout_s
        self._stale_s = stale_s
        self._fetch = fetch
        self._clock = clock
        self._read: dict[int, tuple[float, Figures]] = {}
        self._failed: set[int] = set()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._pool: ThreadPoolExecutor | None = None

    def poll(self) -> None:
        """Read every peer's page once, all at the same time: peers that hang cost one
        ``timeout_s`` together, and the others' figures stay fresh meanwhile."""
        if self._pool is None:
            self._pool = ThreadPoolExecutor(
                max_workers=min(_MAX_THREADS, max(1, len(self.urls))),
                thread_name_prefix="dashboard-peer",
            )
        for _ in self._pool.map(self._read_one, self.urls.items()):
            pass

    def _read_one(self, peer: tuple[int, str]) -> None:
        i, url = peer
        try:
            read = figures(text_string_to_metric_families(self._fetch(url, self._timeout_s)))
        except Exception as exc:  # a peer down, or answering garbage, is a state
            if i not in self._failed:
                log.warning("process %d's metrics (%s) not read: %s", i, url, exc)
                self._failed.add(i)
            return
        if i in self._failed:
            log.info("process %d's metrics read again", i)
            self._failed.discard(i)
        with self._lock:
            self._read[i] = (self._clock(), read)

    def read(self) -> tuple[dict[int, Figures], list[int]]:
        """The peers' latest figures (those read within ``stale_s``) and the ids of the others."""
        now = self._clock()
        with self._lock:
            fresh = {i: f for i, (at, f) in self._read.items() if now - at <= self._stale_s}
        return fresh, [i for i in self._others if i not in fresh]

    def start(self) -> Peers:
        self._thread = threading.Thread(target=self._run, name="dashboard-peers", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=self._timeout_s + 1)
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            started = self._clock()
            self.poll()
            self._stop.wait(max(0.0, self._interval_s - (self._clock() - started)))
