"""Exceptions raised by cxstream.

Bad *input* is never an exception: it becomes a :class:`cxstream.events.BadEvent` and goes to the
dead-letter topic. Exceptions are for misconfiguration and for services that cannot be reached::

    CxStreamError
    ├── ConfigError          a settings, policy or mapping file is invalid
    ├── DataError            an input file (a table to load or evaluate on) cannot be used
    ├── ServiceError         a broker, Redis or binary needed at start-up is missing or unreachable
    │   ├── RedisUnanswered  (cxstream.redis_guard) a call refused at once while Redis does not answer
    │   └── RedisPending     (cxstream.redis_guard) part of a batch left undone where Redis did not
    │                        answer: MergePending (updates), ErasurePending (erasures)
    ├── RecoveryError        the recovery directory does not fit this flow (its inputs or offsets)
    ├── ActionError          an action could not be delivered and could not be dead-lettered
    ├── SignatureError       a webhook's signature is missing, malformed, wrong or out of date
    └── IncompatibleCheckpoint   a stored model checkpoint is of another format or schema
        └── UntrustedCheckpoint  ... or is not authenticated by this deployment's key
"""

from __future__ import annotations


class CxStreamError(Exception):
    """Base class of every cxstream exception."""


class ConfigError(CxStreamError, ValueError):
    """A configuration file or value is invalid; the message names the key."""


class ServiceError(CxStreamError, RuntimeError):
    """A service needed to run (Kafka, Redis, a binary) is missing or unreachable."""


class ActionError(CxStreamError):
    """An action could not be delivered nor dead-lettered."""


class DataError(CxStreamError, ValueError):
    """An input file (a table to load or to evaluate on) cannot be used; the message says why."""


class SignatureError(CxStreamError, ValueError):
    """A webhook's signature is missing, malformed, wrong, or too old/new."""


class IncompatibleCheckpoint(CxStreamError, ValueError):
    """A stored model checkpoint of another format or feature schema, or a malformed one."""


class UntrustedCheckpoint(IncompatibleCheckpoint):
    """A stored model checkpoint whose authentication code does not match this deployment's key."""


class RecoveryError(CxStreamError, RuntimeError):
    """The recovery directory does not fit this flow: another flow's inputs, or unreadable offsets."""
