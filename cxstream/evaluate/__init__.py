"""Evaluation against labelled data: NAB for the series detector, simulated incidents for the flow."""

from __future__ import annotations
