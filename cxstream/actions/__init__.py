"""Contact policy, action sinks and the webhook signing used by integrators (engine-agnostic)."""

from __future__ import annotations

from cxstream.actions.policy import ContactPolicy, Decision, pick_channel
from cxstream.actions.receiver import WebhookReceiver
from cxstream.actions.signing import SignatureError, sign, sign_headers, verify
from cxstream.actions.store import ClaimStore, MemoryClaimStore, RedisClaimStore
from cxstream.actions.webhook import WebhookSender, cloudevent

__all__ = [
    "ClaimStore",
    "ContactPolicy",
    "Decision",
    "MemoryClaimStore",
    "RedisClaimStore",
    "SignatureError",
    "WebhookReceiver",
    "WebhookSender",
    "cloudevent",
    "pick_channel",
    "sign",
    "sign_headers",
    "verify",
]
