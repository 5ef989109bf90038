"""The README stays what issue 19 asks of it, and its Python example stays true to the API.

The documentation site itself is checked by `mkdocs build --strict` in .ci/run (every link and
anchor between its pages, every API reference); these tests cover what mkdocs does not read.
"""
from __future__ import annotations

import ast
import inspect
import re
from pathlib import Path

import spikeline as sl

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()


def test_readme_is_at_most_250_lines():
    assert len(README.splitlines()) <= 250


def test_readme_keeps_the_two_setup_commands():
    makefile = (ROOT / "Makefile").read_text()
    for target in ("demo", "test"):
        assert f"make {target}" in README
        assert re.search(rf"^{target}:", makefile, re.M), f"Makefile has no {target!r} target"


def test_readme_links_lead_to_files():
    links = re.findall(r"\]\(((?:docs|examples)/[^)#]+)", README)
    assert links, "the README links into the docs"
    missing = [link for link in links if not (ROOT / link).exists()]
    assert not missing, f"README links to missing files: {missing}"


def _readme_example() -> str:
    section = README[README.index("## From Python"):]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def test_readme_python_example_calls_the_api_as_it_is():
    """Every ``sl.NAME(...)`` of the example exists in ``sl.__all__`` and accepts the
    arguments given (bound against its signature, not run: the notebooks and
    tests/test_api.py run the same calls)."""
    source = _readme_example()
    assert len(source.strip().splitlines()) <= 10
    calls = [node for node in ast.walk(ast.parse(source)) if isinstance(node, ast.Call)
             and isinstance(node.func, ast.Attribute) and isinstance(node.func.value, ast.Name)
             and node.func.value.id == "sl"]
    assert {c.func.attr for c in calls} >= {"TrainConfig", "train", "export", "verify", "energy"}
    for call in calls:
        name = call.func.attr
        assert name in sl.__all__, f"sl.{name} is not in spikeline.__all__"
        signature = inspect.signature(getattr(sl, name))
        signature.bind(*[None] * len(call.args), **{k.arg: None for k in call.keywords})
