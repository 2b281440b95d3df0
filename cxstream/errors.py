"""Exceptions raised by cxstream.

Bad *input* is never an exception: it becomes a :class:`cxstream.events.BadEvent` and goes to the
dead-letter topic. Exceptions are for misconfiguration and for services that cannot be reached::

    CxStreamError
    ├── ConfigError          a settings, policy or mapping file is invalid
    ├── ServiceError         a broker, Redis or binary needed at start-up is missing or unreachable
    └── ActionError          an action could not be delivered and could not be dead-lettered
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
