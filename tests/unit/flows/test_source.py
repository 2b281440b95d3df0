"""BatchKafkaSource's partitions: recovery state and the poll processor (no broker needed:
a consumer connects lazily, and these tests never poll)."""

from __future__ import annotations

import json

import pytest
from confluent_kafka import OFFSET_BEGINNING

from cxstream.errors import RecoveryError
from cxstream.flows.source import BatchKafkaSource, longest_input_silence

NOWHERE = ["127.0.0.1:9"]  # no broker: building a partition needs none (librdkafka's own
# thread tries this closed port in the background and is refused)


class Processor:
    def __init__(self):
        self.made = 0

    def new_state(self):
        self.made += 1
        return {"table": self.made}

    def process(self, items, state):
        return [(len(items), state)]


def test_a_partition_resumes_offset_and_state_together():
    processor = Processor()
    source = BatchKafkaSource(NOWHERE, ["qos"], processor=processor)
    fresh = source.build_part("qos_in", "3-qos", None)
    assert fresh.snapshot() == (OFFSET_BEGINNING, {"table": 1})
    resumed = source.build_part("qos_in", "3-qos", (42, {"table": "restored"}))
    assert resumed.snapshot() == (42, {"table": "restored"})
    assert processor.made == 1  # restored state is used, not replaced
    # a snapshot from a source without a processor (an offset alone) still resumes
    upgraded = source.build_part("qos_in", "3-qos", 17)
    assert upgraded.snapshot() == (17, {"table": 2})
    for part in (fresh, resumed, upgraded):
        part.close()


def test_without_a_processor_the_state_is_the_offset():
    source = BatchKafkaSource(NOWHERE, ["qos"])
    part = source.build_part("qos_in", "0-qos", 99)
    assert part.snapshot() == 99
    part.close()


def test_a_partition_of_a_topic_no_longer_read_is_refused_clearly():
    source = BatchKafkaSource(NOWHERE, ["qos"])
    with pytest.raises(RecoveryError, match="topic 'old' is no longer an input"):
        source.build_part("qos_in", "0-old", 5)


def test_brokers_or_topics_as_a_plain_string_are_refused():
    with pytest.raises(TypeError, match="lists of strings"):
        BatchKafkaSource("127.0.0.1:9092", ["qos"])  # type: ignore[arg-type]


def test_a_start_without_a_snapshot_begins_where_the_first_start_began(tmp_path):
    # the first start recorded the end of actions[2] as 120; the topic has grown since
    (tmp_path / "actions-2").write_text("120")
    source = BatchKafkaSource(NOWHERE, ["actions"], from_end=True, start_dir=tmp_path)
    again = source.build_part("actions_in", "2-actions", None)
    assert again.snapshot() == 120  # not the end as it is now (no broker is asked)
    resumed = source.build_part("actions_in", "2-actions", 130)
    assert resumed.snapshot() == 130  # a snapshot wins over the record
    for part in (again, resumed):
        part.close()


@pytest.mark.parametrize("damage", [b"garbage", "\u00b2".encode(), b"\xff\xfe\x00"])
def test_a_damaged_start_record_is_refused_naming_the_file(tmp_path, damage):
    (tmp_path / "actions-0").write_bytes(damage)
    source = BatchKafkaSource(NOWHERE, ["actions"], from_end=True, start_dir=tmp_path)
    with pytest.raises(RecoveryError, match="actions-0 should hold the offset"):
        source.build_part("actions_in", "0-actions", None)


def report(at_s, *, leader=1, state="UP", idle_s=0.3, ls_offset=None):
    """A librdkafka statistics report (the fields the partition reads)."""
    part = {"leader": leader} if ls_offset is None else {"leader": leader, "ls_offset": ls_offset}
    broker = {"nodeid": 1, "state": state, "rxidle": int(idle_s * 1e6)}
    return json.dumps(
        {
            "ts": int(at_s * 1e6),
            "brokers": {"kafka-0:9092/1": broker},
            "topics": {"qos": {"partitions": {"0": part}}},
        }
    )


def test_a_broker_that_stops_answering_shows_in_the_input_silence_gauge():
    part = BatchKafkaSource(NOWHERE, ["qos"]).build_part("qos_in", "0-qos", 99)
    try:
        part._stats(report(100.0, ls_offset=120))
        assert longest_input_silence() == pytest.approx(0.3)
        part._stats(report(130.0, idle_s=30.3))  # the connection is up, nothing comes back
        assert longest_input_silence() == pytest.approx(30.3)
        # librdkafka gave up on the connection and is reconnecting: the silence goes on
        part._stats(report(170.0, state="CONNECT", idle_s=-1e-6))
        assert longest_input_silence() == pytest.approx(70.3)
        part._stats(report(171.0, idle_s=0.1))
        assert longest_input_silence() == pytest.approx(0.1)
    finally:
        part.close()
    assert longest_input_silence() == 0.0  # a closed partition is no longer watched


def test_a_report_without_the_partition_does_not_break_the_poll():
    # the report is read inside consume(): an exception there would end the poll
    part = BatchKafkaSource(NOWHERE, ["qos"]).build_part("qos_in", "0-qos", 99)
    try:
        part._stats(json.dumps({"ts": 5_000_000, "brokers": {}, "topics": {}}))
        part._stats(json.dumps({"ts": 9_000_000}))
        assert longest_input_silence() == pytest.approx(4.0)  # no leader known: silent since
    finally:
        part.close()
