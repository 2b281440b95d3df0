"""Experience scoring and online detectors: engine-agnostic, River-compatible, picklable."""

from __future__ import annotations

from cxstream.detectors.degradation import Detection, ExperienceDropDetector, SubscriberMonitor
from cxstream.detectors.experience import experience_score, radio_score, voice_mos

__all__ = [
    "Detection",
    "ExperienceDropDetector",
    "SubscriberMonitor",
    "experience_score",
    "radio_score",
    "voice_mos",
]
