"""The steps of the CEM pipeline, each plain Python, batch in and batch out, with only its own
dependencies: :class:`Ingest`, :class:`Detect`, :class:`Demarcate`, :class:`ChurnRisk`,
:class:`Decide`, :class:`Outcomes`. :class:`cxstream.pipeline.Pipeline` builds them for a
process; :mod:`cxstream.flows` wires them into the dataflow."""

from __future__ import annotations

from cxstream.steps.churn_risk import ChurnRisk
from cxstream.steps.common import Candidate, CellOutput, RedisTrouble
from cxstream.steps.decide import Decide
from cxstream.steps.demarcate import Demarcate
from cxstream.steps.detect import Detect
from cxstream.steps.ingest import Ingest
from cxstream.steps.outcomes import Outcomes

__all__ = [
    "Candidate",
    "CellOutput",
    "ChurnRisk",
    "Decide",
    "Demarcate",
    "Detect",
    "Ingest",
    "Outcomes",
    "RedisTrouble",
]
