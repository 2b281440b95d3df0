"""Bytewax dataflows: the only package that imports bytewax."""

from __future__ import annotations

from cxstream.flows.cx import FlowIO, build_flow, get_flow, pipeline_from_settings

__all__ = ["FlowIO", "build_flow", "get_flow", "pipeline_from_settings"]
