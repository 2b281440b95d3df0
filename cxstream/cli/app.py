"""The ``cxstream`` command group and what its commands share: logging, settings, progress
lines, and the options several commands take.

Exit codes: 0 success, 1 runtime failure (a service unreachable, a delivery error, a demo that did
not drain), 2 bad configuration or usage.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from cxstream.errors import ConfigError
from cxstream.settings import Settings, load_settings

__all__ = [
    "Bar",
    "Progress",
    "bad_ratio_option",
    "broker_rotation_option",
    "cells_option",
    "config_option",
    "json_option",
    "main",
    "seed_option",
    "settings_from",
    "subscribers_option",
    "truth_option",
]

F = TypeVar("F", bound=Callable[..., Any])

log = logging.getLogger("cxstream")


def setup_logging(verbose: bool) -> None:
    root = logging.getLogger()
    if root.handlers:  # someone (a test, an embedding app) already configured logging
        return
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per request is noise here


def settings_from(config: Path | None, overrides: dict[str, Any] | None = None) -> Settings:
    try:
        return load_settings(config, overrides=overrides)
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from exc


class Progress:
    """One self-rewriting status line on stderr (plain lines when not a terminal)."""

    def __init__(self) -> None:
        self._tty = sys.stderr.isatty()
        self._last = 0.0

    def __call__(self, text: str) -> None:
        if self._tty:
            click.echo(f"\r{text}", nl=False, err=True)
        elif time.monotonic() - self._last >= 5.0:
            self._last = time.monotonic()
            click.echo(text, err=True)

    def done(self) -> None:
        if self._tty:
            click.echo("", err=True)


config_option = click.option(
    "--config",
    "config",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=None,
    help="Settings file (YAML); see config/cxstream.yaml.",
)


broker_rotation_option = click.option(
    "--broker-rotation",
    type=click.FloatRange(min=0),
    default=600.0,
    show_default=True,
    help="Replace the embedded broker with an empty one this often (seconds; 0: never): it "
    "has no retention, and the flow resumes from its recovery snapshot. See docs/operations.md.",
)

json_option = click.option(
    "--json", "as_json", is_flag=True, help="One JSON object on the last line of stdout."
)


def seed_option(default: int) -> Callable[[F], F]:
    """``--seed``: the random seed of the simulated network (the same seed, the same events)."""
    return click.option(
        "--seed",
        type=int,
        default=default,
        show_default=True,
        help="Random seed of the simulated network: the same seed gives the same subscribers, "
        "cells, events and incidents.",
    )


def bad_ratio_option(default: float) -> Callable[[F], F]:
    """``--bad-ratio``: the share of deliberately malformed records the simulator sends."""
    return click.option(
        "--bad-ratio",
        type=click.FloatRange(0, 1),
        default=default,
        show_default=True,
        help="Share of deliberately malformed records (each must end in the dead-letter topic).",
    )


def truth_option(help_text: str) -> Callable[[F], F]:
    """``--truth``: where the injected incidents (the ground truth, JSON lines) are written."""
    return click.option(
        "--truth",
        type=click.Path(dir_okay=False, path_type=Path),
        default=None,
        help=help_text,
    )


def subscribers_option(default: int, *, minimum: int = 1) -> Callable[[F], F]:
    """``--subscribers``: how many simulated subscribers."""
    return click.option(
        "--subscribers",
        type=click.IntRange(min=minimum),
        default=default,
        show_default=True,
        help="Simulated subscribers (each with a customer profile), spread over --cells.",
    )


def cells_option(default: int, *, minimum: int = 1) -> Callable[[F], F]:
    """``--cells``: how many simulated radio cells."""
    return click.option(
        "--cells",
        type=click.IntRange(min=minimum),
        default=default,
        show_default=True,
        help="Simulated radio cells the subscribers are spread over.",
    )


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("-v", "--verbose", is_flag=True, help="Debug logging.")
@click.version_option(package_name="cxstream")
def main(verbose: bool) -> None:
    """Real-time customer-experience stream processor for telecom operators."""
    setup_logging(verbose)
    one_blas_thread()


_THREAD_VARIABLES = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")


def one_blas_thread() -> None:
    """Keep numpy's BLAS to one thread, unless one of :data:`_THREAD_VARIABLES` says otherwise.

    A process of ours is one core's work (Bytewax scales out with workers and processes); the
    matrix products of churn scoring are small, and a second BLAS thread only competes with the
    flow and the trees' background refits for the cores (with both cores busy, IBM's churn score
    path runs at 15,700-16,000 predictions/s with two BLAS threads, 24,500-27,500 with one)."""
    if any(name in os.environ for name in _THREAD_VARIABLES):
        return
    import numpy  # noqa: F401  (loads its BLAS: a limit reaches only the libraries loaded)
    from threadpoolctl import threadpool_limits

    threadpool_limits(1, user_api="blas")


class Bar:
    """A progress bar on stderr: ``stage [#####.....] done/total``, redrawn in place on a
    terminal, a plain line every few seconds otherwise."""

    def __init__(self, width: int = 30) -> None:
        self._tty = sys.stderr.isatty()
        self._width = width
        self._last = 0.0
        self._stage = ""

    def __call__(self, stage: str, done: int, total: int) -> None:
        now = time.monotonic()
        if stage == self._stage and now - self._last < (0.2 if self._tty else 5.0):
            return
        self._stage, self._last = stage, now
        filled = int(self._width * min(done / total, 1.0)) if total else 0
        bar = "#" * filled + "." * (self._width - filled)
        text = f"{stage:<24s} [{bar}] {done:,}/{total:,}"
        if self._tty:
            click.echo(f"\r{text}", nl=False, err=True)
        else:
            click.echo(text, err=True)

    def done(self) -> None:
        if self._tty:
            click.echo("", err=True)
