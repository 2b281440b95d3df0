"""SIGKILL before the first recovery snapshot: the restart has no snapshot to resume from, and its
replay decides differently, yet every action the killed run put on the actions topic is still
delivered or dead-lettered (the webhook's read-back of the topic begins where the first start
began, not at the topic's end as it is at the restart)."""

from __future__ import annotations

import signal
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from cxstream.actions.receiver import WebhookReceiver
from cxstream.devtools.flowprocess import FlowProcess
from cxstream.events import Channel, ConsentStatus
from tests.faults.conftest import (
    SECRET,
    actions_on_topic,
    daytime_policy,
    outage_stream,
    parked_actions,
    wait_until,
)
from tests.integration.kafka_helpers import produce

pytestmark = [pytest.mark.integration, pytest.mark.faults, pytest.mark.slow]


class Stuck(BaseHTTPRequestHandler):
    """An endpoint that takes every POST and never answers: deliveries stay in flight."""

    release = threading.Event()
    ids: list[str] = []

    def do_POST(self):
        type(self).ids.append(self.headers["webhook-id"])
        self.release.wait(60)

    def log_message(self, *args):
        return


def test_a_restart_before_the_first_snapshot_still_settles_the_dead_runs_actions(
    live_settings, tmp_path
):
    settings = live_settings.model_copy(
        update={
            "flow": live_settings.flow.model_copy(
                # no snapshot is taken while this test runs: the restart starts afresh
                update={"recovery_dir": str(tmp_path / "recovery"), "snapshot_interval_s": 3600.0}
            ),
            "policy": live_settings.policy.model_copy(
                update={"file": str(daytime_policy(tmp_path))}
            ),
            # at most once: what was in flight at the kill is resolved as outcome unknown
            "webhook": live_settings.webhook.model_copy(update={"resend_unknown": False}),
        }
    )
    sim, store, records = outage_stream(settings, 73, 20_000, outage_s=(5, 40))
    produce(settings, settings.kafka.topics.qos, records)

    server = ThreadingHTTPServer(("127.0.0.1", 0), Stuck)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    stuck = settings.model_copy(
        update={
            "webhook": settings.webhook.model_copy(
                update={
                    "url": f"http://127.0.0.1:{server.server_address[1]}/hook",
                    "timeout_s": 30.0,
                }
            )
        }
    )
    (tmp_path / "run1").mkdir()
    first = FlowProcess(stuck, tmp_path / "run1", SECRET)
    try:
        first.wait_ready()
        wait_until(lambda: len(Stuck.ids) >= 2, 60, "deliveries in flight")
        wait_until(lambda: len(actions_on_topic(settings)) >= 8, 60, "actions on the topic")
    finally:
        first.proc.send_signal(signal.SIGKILL)
        first.proc.wait(10)
        Stuck.release.set()
        server.shutdown()
    before = actions_on_topic(settings)
    in_flight = set(Stuck.ids)
    assert (tmp_path / "recovery" / "actions-start").is_dir()

    # The replay must not decide these actions again: every customer withdraws consent.
    revoked = {c: ConsentStatus.REVOKED for c in Channel}
    store.put_many([p.model_copy(update={"consent": revoked}) for p in sim.profiles()])

    with WebhookReceiver(SECRET) as receiver:
        live = settings.model_copy(
            update={"webhook": settings.webhook.model_copy(update={"url": receiver.url})}
        )
        (tmp_path / "run2").mkdir()
        second = FlowProcess(live, tmp_path / "run2", SECRET)
        try:
            second.wait_ready()
            wait_until(
                lambda: set(before) <= set(receiver.delivered) | set(parked_actions(settings)),
                60,
                "the killed run's actions delivered or dead-lettered",
                every=1.0,
            )
        finally:
            second.stop()
        stats = receiver.stats()

    parked = parked_actions(settings)
    print(f"{len(before)} actions before the kill, {len(in_flight)} in flight; receiver {stats}")
    assert set(actions_on_topic(settings)) == set(before)  # the replay decided none of them again
    # the POSTs cut off by the kill are not sent again (outcome unknown), the rest are delivered
    assert in_flight <= set(parked)
    assert all("outcome unknown" in parked[i] for i in in_flight)
    assert not in_flight & set(receiver.delivered)
    assert set(before) - in_flight <= set(receiver.delivered) | set(parked)
    assert stats["duplicates"] == 0
