"""User JSON/YAML parsed with bounds: size, aliases, expansion, and no key given twice."""

from __future__ import annotations

import json
import time

import pytest

from diffnas.config_text import (
    MAX_ALIASES,
    MAX_DOCUMENT_BYTES,
    MAX_NODES,
    DocumentTooLarge,
    DuplicateKey,
    load_json,
    load_yaml,
    read_text,
)


def laughs(levels: int, width: int = 9) -> str:
    """The "billion laughs" document: each list holds `width` aliases of the one before."""
    lines = [f"l0: &l0 [{', '.join(['lol'] * width)}]"]
    for i in range(1, levels):
        lines.append(f"l{i}: &l{i} [{', '.join([f'*l{i - 1}'] * width)}]")
    return "\n".join(lines) + "\n"


def expanded(levels: int, width: int = 9) -> int:
    """Nodes of `laughs` with every alias expanded, in closed form: list l_i holds width
    copies of l_{i-1}, so size(l_0) = width + 1, size(l_i) = width * size(l_{i-1}) + 1, plus
    the root mapping, its keys and values."""
    size, total = width + 1, 0
    sizes = [size]
    for _ in range(1, levels):
        size = width * size + 1
        sizes.append(size)
    total = 1 + levels + sum(sizes)
    return total


def test_a_billion_laughs_is_refused_in_milliseconds() -> None:
    start = time.perf_counter()
    with pytest.raises(DocumentTooLarge, match="100,000 values"):
        load_yaml(laughs(9))  # 10**9 nodes once expanded, 81 aliases in the text
    assert time.perf_counter() - start < 1.0


def test_the_expansion_bound_is_exact_in_closed_form() -> None:
    # 5 levels: 1 + 5 + (10 + 91 + 820 + 7381 + 66430) = 74,738 nodes: allowed
    assert expanded(5) == 74_738 < MAX_NODES
    data = load_yaml(laughs(5))
    assert len(data["l4"]) == 9 and data["l4"][0] is data["l3"]  # aliases stay shared
    assert expanded(6) > MAX_NODES
    with pytest.raises(DocumentTooLarge):
        load_yaml(laughs(6))


def test_aliases_are_counted() -> None:
    ok = "x: &x 1\nys: [" + ", ".join(["*x"] * MAX_ALIASES) + "]\n"
    assert len(load_yaml(ok)["ys"]) == MAX_ALIASES
    with pytest.raises(DocumentTooLarge, match=f"more than {MAX_ALIASES} aliases"):
        load_yaml(ok.replace("]", ", *x]"))


def test_a_key_given_twice_is_refused_where_it_is_repeated() -> None:
    with pytest.raises(DuplicateKey, match=r"'b' appears twice in one mapping \(line 3\)"):
        load_yaml("a: 1\nb: 2\nb: 3\n")
    with pytest.raises(DuplicateKey, match="'k' appears twice"):
        load_yaml("outer:\n  k: 1\n  k: 1\n")  # equal values too: the file says it twice
    with pytest.raises(DuplicateKey, match="'base_channels' appears twice"):
        load_json('{"base_channels": 16, "x": {"base_channels": 1}, "base_channels": 4096}')
    # the same key in different mappings is fine, and YAML's merge key may be overridden
    assert load_json('{"a": {"a": 1}}') == {"a": {"a": 1}}
    assert load_yaml("base: &b {k: 1, j: 2}\nx: {<<: *b, k: 3}\n")["x"] == {"k": 3, "j": 2}


def test_size_is_bounded_before_parsing(tmp_path) -> None:
    big = tmp_path / "big.json"
    big.write_text(json.dumps({"a": 1}) + " " * MAX_DOCUMENT_BYTES)
    with pytest.raises(DocumentTooLarge, match="1,000,000 bytes"):
        read_text(big)
    with pytest.raises(DocumentTooLarge):
        load_json(" " * (MAX_DOCUMENT_BYTES + 1))
