"""mkdocs hook: let mkdocstrings find spikeline.pipeline, spikeline.datasets and spikeline.deploy.

pyproject.toml installs the top-level folders pipeline/, datasets/ and deploy/ as subpackages of
spikeline (`package-dir`). Python's import system follows that mapping; griffe, which reads the
source statically for mkdocstrings, does not (it maps only top-level packages of an editable
install). So before the build this writes build/api-src/spikeline: a tree of symlinks laid out
as the installed package is (its .py files linked), and mkdocs.yml points the python handler at it. Nothing is
imported: the API reference is read from the source, as it is written.
"""
from __future__ import annotations

import shutil
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TREE = ROOT / "build" / "api-src"
# spikeline.<name> -> the folder it is installed from (pyproject.toml [tool.setuptools])
SUBPACKAGES = {"pipeline": "pipeline", "datasets": "datasets", "deploy": "deploy"}


def _mirror(src: Path, dst: Path) -> None:
    """Real folders, symlinked files: griffe does not descend into symlinked folders."""
    dst.mkdir(parents=True)
    for entry in sorted(src.iterdir()):
        if entry.is_dir():
            if (entry / "__init__.py").exists():
                _mirror(entry, dst / entry.name)
        elif entry.suffix == ".py":
            (dst / entry.name).symlink_to(entry)


def build_tree() -> Path:
    if TREE.exists():
        shutil.rmtree(TREE)
    _mirror(ROOT / "spikeline", TREE / "spikeline")
    for name, folder in SUBPACKAGES.items():
        _mirror(ROOT / folder, TREE / "spikeline" / name)
    return TREE


def on_startup(command, dirty):
    # before any plugin's on_config: mkdocstrings-python drops a search path that does not
    # exist yet when it sets up its handler there (a fresh clone's first build)
    build_tree()
