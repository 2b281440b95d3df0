"""The ``cxstream`` command line: one module per group of commands, all on the group in
:mod:`cxstream.cli.app`.

Every command takes ``--config FILE`` (YAML; environment variables ``CXSTREAM_*`` override it)
and ``-h``. Exit codes: 0 success, 1 runtime failure, 2 bad configuration or usage.
"""

from __future__ import annotations

from cxstream.cli import bench, data, deliver, demo, evaluate, flow  # noqa: F401 - they add their commands
from cxstream.cli.app import main

__all__ = ["main"]
