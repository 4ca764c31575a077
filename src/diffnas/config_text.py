"""JSON and YAML text of the files a user hands us (architectures, spaces), parsed with bounds.

PyYAML's `safe_load` builds no objects it should not, but it follows every alias: a
"billion laughs" document (nine lists each of nine aliases to the one before) is a few
hundred bytes that expands to 10**9 nodes, and the first thing to walk it (a validator, an
error message quoting the input) ran 100 s and 2.9 GB before a MemoryError. Both parsers
here also resolve a repeated key last-wins, silently: `{"base_channels": 16, ...,
"base_channels": 4096}` would train the second value from a file whose first line says the
first. So every document is:

- at most `MAX_DOCUMENT_BYTES` long (an architecture or a space is a few hundred bytes);
- YAML: at most `MAX_ALIASES` aliases, and at most `MAX_NODES` nodes once every alias is
  expanded — counted on the composed node graph, before any object is built;
- without a key that appears twice in one mapping (JSON object or YAML mapping).

A violation is a `ValueError` whose text names the line (YAML) and what was too much; the
callers turn it into their `UserError` naming the file.
"""

from __future__ import annotations

import json
from collections.abc import Hashable
from pathlib import Path
from typing import Any

import yaml

MAX_DOCUMENT_BYTES = 1_000_000  # 1 MB: the bundled cifar10-iddpm space is 1.3 kB
MAX_ALIASES = 1_000  # YAML anchors may be reused, but not to build an exponential tree
MAX_NODES = 100_000  # scalars, lists and mappings after alias expansion


class DocumentTooLarge(ValueError):
    """The document is over one of the bounds above."""


class DuplicateKey(ValueError):
    """A key appears twice in one mapping."""


def check_size(text: str | bytes) -> None:
    """Refuse a document longer than `MAX_DOCUMENT_BYTES`."""
    size = len(text.encode("utf-8") if isinstance(text, str) else text)
    if size > MAX_DOCUMENT_BYTES:
        raise DocumentTooLarge(f"it is over the {MAX_DOCUMENT_BYTES:,} bytes allowed")


def read_text(path: str | Path) -> str:
    """A file's UTF-8 text, never reading more than `MAX_DOCUMENT_BYTES` + 1 bytes of it (a
    multi-gigabyte file is refused, not read). Raises OSError and UnicodeDecodeError as
    `Path.read_text` does, `DocumentTooLarge` over the bound."""
    with open(path, "rb") as f:
        data = f.read(MAX_DOCUMENT_BYTES + 1)
    check_size(data)
    return data.decode("utf-8")


def _refuse_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise DuplicateKey(f"key {key!r} appears twice in one object")
        out[key] = value
    return out


def load_json(text: str) -> Any:
    """`json.loads` with the size bound and duplicate keys refused."""
    check_size(text)
    return json.loads(text, object_pairs_hook=_refuse_duplicates)


class _BoundedSafeLoader(yaml.SafeLoader):
    """PyYAML's safe loader, counting aliases and refusing repeated keys."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self.aliases = 0

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.check_event(yaml.AliasEvent):
            self.aliases += 1
            if self.aliases > MAX_ALIASES:
                mark = self.peek_event().start_mark
                raise DocumentTooLarge(
                    f"it uses more than {MAX_ALIASES} aliases (line {mark.line + 1})"
                )
        return super().compose_node(parent, index)

    def construct_mapping(self, node: Any, deep: bool = False) -> Any:
        if isinstance(node, yaml.MappingNode):
            seen: set[Any] = set()
            for key_node, _ in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge":
                    continue  # `<<: *base` merges; its keys may be overridden on purpose
                key = self.construct_object(key_node, deep=True)
                if isinstance(key, Hashable):
                    if key in seen:
                        raise DuplicateKey(
                            f"key {key!r} appears twice in one mapping "
                            f"(line {key_node.start_mark.line + 1})"
                        )
                    seen.add(key)
        return super().construct_mapping(node, deep=deep)


def _expanded_nodes(root: yaml.Node) -> int:
    """Nodes of the document with every alias expanded, counted without expanding: an alias
    is the same node object, so each node's count is computed once (memoised by identity)."""
    counts: dict[int, int] = {}
    # iterative post-order: a deep document must not hit Python's recursion limit here
    stack: list[tuple[yaml.Node, bool]] = [(root, False)]
    while stack:
        node, children_done = stack.pop()
        if id(node) in counts:
            continue
        children: list[yaml.Node] = []
        if isinstance(node, yaml.SequenceNode):
            children = list(node.value)
        elif isinstance(node, yaml.MappingNode):
            children = [n for pair in node.value for n in pair]
        if children_done or not children:
            total = 1 + sum(counts[id(c)] for c in children)
            counts[id(node)] = min(total, MAX_NODES + 1)  # saturate: the bound is all we need
            continue
        stack.append((node, True))
        stack.extend((c, False) for c in children if id(c) not in counts)
    return counts[id(root)]


def load_yaml(text: str) -> Any:
    """`yaml.safe_load` with the size, alias and expansion bounds and duplicate keys refused."""
    check_size(text)
    loader = _BoundedSafeLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        nodes = _expanded_nodes(node)
        if nodes > MAX_NODES:
            raise DocumentTooLarge(
                f"its aliases expand to more than {MAX_NODES:,} values (a 'billion laughs' "
                "document?)"
            )
        return loader.construct_document(node)
    finally:
        loader.dispose()
