"""YAML as the settings, policy, mapping and users files are read: safe, and strict about keys.

PyYAML's ``safe_load`` keeps the last of two equal keys in one mapping without a word, so a
file that sets ``consent:`` twice, or a policy rule's ``channel`` twice, would run on whichever
came last. :func:`load` refuses such a file instead, naming the key and both lines.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import yaml
from yaml.constructor import ConstructorError
from yaml.nodes import MappingNode, Node, ScalarNode

__all__ = ["load"]


class _StrictLoader(yaml.SafeLoader):
    """``SafeLoader`` that refuses a key written twice in one mapping."""

    def construct_mapping(self, node: Node, deep: bool = False) -> dict[Any, Any]:
        if isinstance(node, MappingNode):
            seen: dict[Any, Node] = {}
            for key_node, _ in node.value:
                if (
                    not isinstance(key_node, ScalarNode)
                    or key_node.tag == "tag:yaml.org,2002:merge"
                ):
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
    """The YAML document in ``text``, as ``yaml.safe_load`` reads it, except that a key written
    twice in one mapping raises :class:`yaml.YAMLError` (a ``ConstructorError``) naming it.
    ``name`` (the file's path) is how an error names the document.

    >>> load("a: 1\\nb: {c: 2}")
    {'a': 1, 'b': {'c': 2}}
    >>> load("base: &b {x: 1, y: 2}\\nd: {<<: *b, x: 5}")["d"]  # a merged key may be overridden
    {'x': 5, 'y': 2}
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
