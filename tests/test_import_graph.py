"""The import graph: no cycles between files (imports inside functions included, so none is
hidden), and layers that import only what docs/design.md's table allows."""
from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# installed name -> folder (pyproject.toml's package-dir)
PACKAGES = {"spikeline": ROOT / "spikeline", "spikeline.pipeline": ROOT / "pipeline",
            "spikeline.datasets": ROOT / "datasets", "spikeline.deploy": ROOT / "deploy"}


def modules() -> dict[str, Path]:
    found = {}
    for prefix, folder in PACKAGES.items():
        for file in folder.rglob("*.py"):
            parts = list(file.relative_to(folder).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            found[".".join([prefix, *parts])] = file
    return found


def _absolute(module: str, level: int, name: str | None, is_package: bool) -> str:
    if level == 0:
        return name or ""
    base = module.split(".")[: None if is_package else -1]
    base = base[: len(base) - (level - 1)]
    return ".".join(base + ([name] if name else []))


def import_graph() -> dict[str, set[str]]:
    """Module -> the project's modules it imports anywhere in its file."""
    mods = modules()
    graph = {m: set() for m in mods}
    for module, file in mods.items():
        for node in ast.walk(ast.parse(file.read_text())):
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = _absolute(module, node.level, node.module, file.name == "__init__.py")
                targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in mods else base
                           for a in node.names]
            else:
                continue
            for target in targets:
                while target and target not in mods:  # a name inside a module: the module
                    target = target.rpartition(".")[0]
                if target and target != module:
                    graph[module].add(target)
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index, low, stack, on, found, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                found.append(sorted(comp))

    for v in graph:
        if v not in index:
            visit(v)
    return found


def layer_rules() -> dict[str, tuple[list[str], set[str]]]:
    """docs/design.md's table: layer -> (its modules' prefixes, the layers it may import)."""
    text = (ROOT / "docs" / "design.md").read_text()
    rows = re.findall(r"^\| `(\w+)` \| ([^|]+) \| ([^|]+) \|$", text, flags=re.M)
    assert rows, "docs/design.md has no layer table"
    return {name: ([p.strip(" `") for p in mods.split(",")],
                   {v.strip(" `") for v in allowed.split(",")} | {name})
            for name, mods, allowed in rows}


def layer_of(module: str, rules) -> str:
    best = max(((len(p), name) for name, (prefixes, _) in rules.items() for p in prefixes
                if module == p or module.startswith(p + ".")), default=None)
    assert best is not None, f"{module} is in no layer of docs/design.md"
    return best[1]


def test_no_import_cycles_between_files():
    assert cycles(import_graph()) == []


def test_cycle_finder_finds_a_planted_cycle():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert cycles(graph) == [["a", "b", "c"]]


def test_layers_import_only_what_docs_design_allows():
    rules = layer_rules()
    wrong = [f"{m} ({layer_of(m, rules)}) imports {t} ({layer_of(t, rules)})"
             for m, targets in import_graph().items() for t in targets
             if layer_of(t, rules) not in rules[layer_of(m, rules)][1]]
    assert wrong == []
