"""YAML as the settings, policy, mapping and users files are read: safe, and strict about keys.

PyYAML's ``safe_load`` keeps the last of two equal keys in one mapping without a word, so a
file that sets ``consent:`` twice, or a policy rule's ``channel`` twice, would run on whichever
came last. :func:`load` refuses such a file instead, naming the key and both lines. And it reads
a key as the text written: YAML 1.1 reads ``no:`` (Norwegian, in a policy's messages) as false
and ``Yes:`` (a CSV value in a mapping) as true, which no key of these files means.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import yaml
from yaml.constructor import ConstructorError
from yaml.nodes import MappingNode, Node, ScalarNode

__all__ = ["load"]


_WORD_KEYS = frozenset(
    f"tag:yaml.org,2002:{kind}" for kind in ("bool", "int", "float", "null", "timestamp")
)


class _StrictLoader(yaml.SafeLoader):
    """``SafeLoader`` that reads every plain key as the text written and refuses a key written
    twice in one mapping."""

    def construct_mapping(self, node: Node, deep: bool = False) -> dict[Any, Any]:
        if isinstance(node, MappingNode):
            seen: dict[Any, Node] = {}
            for key_node, _ in node.value:
                if not isinstance(key_node, ScalarNode):
                    continue
                if key_node.style is None and key_node.tag in _WORD_KEYS:
                    # every key these files hold is a name or a cell's text: `no` (Norwegian),
                    # `Yes` (a CSV value) or `1` stay words, where YAML 1.1 reads true/false/1
                    key_node.tag = "tag:yaml.org,2002:str"
                if key_node.tag == "tag:yaml.org,2002:merge":
                    continue  # a merge (<<) may be overridden by the mapping's own keys
                key = self.construct_object(key_node)
                if key in seen:
                    first = seen[key].start_mark
                    context = "while constructing a mapping"
                    problem = (
                        f"found key {key!r} a second time (first at line {first.line + 1}): "
                        "which value is meant is unclear"
                    )
                    raise ConstructorError(context, node.start_mark, problem, key_node.start_mark)
                seen[key] = key_node
        return super().construct_mapping(node, deep=deep)  # type: ignore[arg-type]


def load(text: str, name: str | Path | None = None) -> Any:
    """The YAML document in ``text``, as ``yaml.safe_load`` reads it, except that a plain key
    is the text written (``no``, not false) and a key written twice in one mapping raises
    :class:`yaml.YAMLError` (a ``ConstructorError``) naming it. ``name`` (the file's path) is
    how an error names the document.

    >>> load("a: 1\\nb: {c: 2}")
    {'a': 1, 'b': {'c': 2}}
    >>> load("base: &b {x: 1, y: 2}\\nd: {<<: *b, x: 5}")["d"]  # a merged key may be overridden
    {'x': 5, 'y': 2}
    >>> load("{en: Hello, no: Hei, Yes: granted, 1: one, on: true}")  # keys as written
    {'en': 'Hello', 'no': 'Hei', 'Yes': 'granted', '1': 'one', 'on': True}
    >>> load("a: 1\\nb: 2\\na: 3", "p.yaml")
    Traceback (most recent call last):
    ...
    yaml.constructor.ConstructorError: while constructing a mapping
      in "p.yaml", line 1, column 1
    found key 'a' a second time (first at line 1): which value is meant is unclear
      in "p.yaml", line 3, column 1
    """
    stream = io.StringIO(text)
    stream.name = str(name) if name is not None else "<unicode string>"
    return yaml.load(stream, Loader=_StrictLoader)  # noqa: S506 - a SafeLoader subclass
