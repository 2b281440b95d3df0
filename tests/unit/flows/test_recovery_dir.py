"""The recovery directory: created on first use whatever else it holds, resumed after."""

from __future__ import annotations

import logging

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
