"""cxstream: real-time contextual intelligence for telecom customer-experience management.

Network QoS events are joined with customer context, experience degradation is detected as it
happens, and proactive, consent-aware actions are fired to Kafka and to signed webhooks.
"""

from __future__ import annotations

__version__ = "0.1.0"
