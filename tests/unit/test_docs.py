"""The user's documentation: a README that stays a guide, pages that exist, links that resolve,
every metric and command documented, and no development history in the text."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from prometheus_client.metrics import MetricWrapperBase

from cxstream import metrics
from cxstream.cli import main

ROOT = Path(__file__).parents[2]
PAGES = ["architecture", "configuration", "integration", "operations", "evaluation", "performance"]
DOCS = [ROOT / "README.md", *(ROOT / "docs" / f"{page}.md" for page in PAGES)]


def test_the_readme_is_at_most_25_kb_and_every_page_exists():
    assert (ROOT / "README.md").stat().st_size <= 25_000
    for page in DOCS:
        assert page.is_file(), page


@pytest.mark.parametrize("page", DOCS, ids=lambda p: p.name)
def test_relative_links_and_their_anchors_resolve(page):
    text = page.read_text(encoding="utf-8")
    for target in re.findall(r"\]\(([^)#:]+\.(?:md|png|yaml|yml))(#[^)]*)?\)", text):
        path, anchor = target
        linked = (page.parent / path).resolve()
        assert linked.exists(), f"{page.name} links to missing {path}"
        if anchor and path.endswith(".md"):
            assert anchor[1:] in _anchors(linked), f"{page.name}: no {anchor} in {path}"
    own = _anchors(page)
    for anchor in re.findall(r"\]\(#([^)]+)\)", text):
        assert anchor in own, f"{page.name}: no #{anchor} on the page itself"


def _anchors(page: Path) -> set[str]:
    headings = re.findall(r"^#+ (.+)$", page.read_text(encoding="utf-8"), flags=re.MULTILINE)
    return {re.sub(r"[^a-z0-9 -]", "", h.lower()).replace(" ", "-") for h in headings}


def test_every_metric_is_documented_in_operations():
    text = (ROOT / "docs" / "operations.md").read_text(encoding="utf-8")
    names = [m._name for m in vars(metrics).values() if isinstance(m, MetricWrapperBase)]
    assert len(names) > 20
    missing = [name for name in names if name not in text]
    assert not missing


def test_every_command_is_in_the_readme():
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    for name in main.commands:
        assert f"`cxstream {name}" in text, name


@pytest.mark.parametrize(
    "pattern",
    [r"\bsteps? \d+\b", r"\b\w+(?:th|st|nd|rd) session\b", r"\bacceptance run", r"\bsets? [A-Z]\b"],
)
def test_no_development_history_in_the_docs(pattern):
    for page in DOCS:
        found = re.findall(pattern, page.read_text(encoding="utf-8"))
        assert not found, f"{page.name}: {found}"


def _commands(group, prefix=""):
    import click

    for name, command in group.commands.items():
        if isinstance(command, click.Group):
            yield from _commands(command, f"{prefix}{name} ")
        else:
            yield f"{prefix}{name}", command


def test_every_option_has_help_and_every_command_an_example():
    import click

    commands = dict(_commands(main))
    assert len(commands) >= 10
    for name, command in commands.items():
        undocumented = [
            p.name for p in command.params if isinstance(p, click.Option) and not p.help
        ]
        assert not undocumented, f"{name}: {undocumented}"
        assert f"Example: cxstream {name}" in (command.help or ""), name
