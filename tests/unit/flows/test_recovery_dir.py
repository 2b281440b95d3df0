"""The recovery directory: created on first use whatever else it holds, by process 0 alone in a
cluster, resumed after."""

from __future__ import annotations

import logging
import threading
import time

import pytest

from cxstream.errors import ConfigError, ServiceError
from cxstream.flows.run import _recovery


def test_a_new_volume_with_lost_and_found_is_a_first_start(tmp_path, caplog):
    # a freshly formatted persistent volume, mounted as the directory, holds lost+found: Bytewax
    # then found no partitions to resume and the flow failed at every start
    (tmp_path / "lost+found").mkdir()
    with caplog.at_level(logging.INFO, logger="cxstream.flows.run"):
        _recovery(tmp_path, 3)
        assert sorted(p.name for p in tmp_path.glob("part-*.sqlite3")) == [
            "part-0.sqlite3",
            "part-1.sqlite3",
            "part-2.sqlite3",
        ]
        _recovery(tmp_path, 3)  # the next start resumes; nothing is created twice
    said = [r.getMessage() for r in caplog.records]
    assert any("created 3 recovery partitions" in m for m in said)
    assert any("resuming from the recovery snapshots" in m for m in said)
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


def test_a_directory_holding_something_else_starts_fresh_and_says_so(tmp_path, caplog):
    (tmp_path / "actions-start").mkdir()  # the snapshots were deleted, not the whole directory
    with caplog.at_level(logging.WARNING, logger="cxstream.flows.run"):
        _recovery(tmp_path, 1)
    assert (tmp_path / "part-0.sqlite3").exists()
    assert "holds no recovery partitions but actions-start" in caplog.text


def test_in_a_cluster_process_0_creates_the_partitions_and_the_others_wait_for_them(tmp_path):
    # a StatefulSet's parallel pods start together on one shared volume: each created the
    # partitions at once and all but one failed
    (tmp_path / ".creating-999").mkdir()  # left by a process 0 that died while creating
    waited: list[float] = []

    def other_process():
        start = time.monotonic()
        _recovery(tmp_path, 4, create=False, wait_s=30)
        waited.append(time.monotonic() - start)

    other = threading.Thread(target=other_process)
    other.start()
    time.sleep(1.0)
    assert not waited  # nothing to resume yet
    _recovery(tmp_path, 4)  # process 0
    other.join(10)
    assert waited and waited[0] >= 1.0
    assert len(list(tmp_path.glob("part-*.sqlite3"))) == 4
    assert not list(tmp_path.glob(".creating-*"))


def test_a_process_that_never_sees_the_partitions_names_the_shared_directory(tmp_path):
    with pytest.raises(ServiceError, match="must see the same directory"):
        _recovery(tmp_path, 2, create=False, wait_s=0.6)


def test_a_directory_the_process_cannot_write_is_named_with_its_setting(tmp_path, monkeypatch):
    (tmp_path / "file").write_text("")
    with pytest.raises(ConfigError, match=r"flow.recovery_dir .*file/rec: Not a directory"):
        _recovery(tmp_path / "file" / "rec", 1)

    # a volume owned by root, mounted where an unprivileged image writes (the tests may run
    # as root, whom permissions do not stop, so the refusal is the file system's answer)
    def refuse(self, *args, **kwargs):
        raise PermissionError(13, "Permission denied", str(self))

    monkeypatch.setattr("pathlib.Path.mkdir", refuse)
    with pytest.raises(
        ConfigError, match=r"volume: Permission denied; this process \(uid \d+\) must be able"
    ):
        _recovery(tmp_path / "volume", 1)
