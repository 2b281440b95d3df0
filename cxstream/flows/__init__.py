"""Bytewax dataflows: the only package that imports bytewax."""

from __future__ import annotations

from cxstream.flows.connect import FlowIO, kafka_io, pipeline_from_settings
from cxstream.flows.cx import build_flow, get_flow

__all__ = ["FlowIO", "build_flow", "get_flow", "kafka_io", "pipeline_from_settings"]
