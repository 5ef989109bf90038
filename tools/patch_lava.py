"""Make lava-nc 0.10.0 / lava-dl 0.6.0 import on Python 3.11 (docs/reference.md §4).

Both wheels declare Requires-Python < 3.11; three small source fixes make them work.  Every
patch point is checked: a file already patched is left alone (the script is idempotent), a file
that is neither the original nor the patched text stops the set-up with a loud error, because
then the installed version is not the one these fixes were written for.
"""
from __future__ import annotations

import importlib.util
import pathlib
import sys
from dataclasses import dataclass


@dataclass(frozen=True)
class Patch:
    """Replace ``original`` by ``patched`` in ``module``'s source file."""

    module: str
    why: str
    original: str
    patched: str


PATCHES = [
    Patch(
        "lava.magma.compiler.var_model",
        "Python 3.11 refuses mutable dataclass defaults",
        original="from dataclasses import dataclass, InitVar\n",
        patched="from dataclasses import dataclass, InitVar, field\n",
    ),
    Patch(
        "lava.magma.compiler.var_model",
        "Python 3.11 refuses mutable dataclass defaults",
        original=": ByteEncoder = ByteEncoder()\n",
        patched=": ByteEncoder = field(default_factory=ByteEncoder)\n",
    ),
    Patch(
        "lava.lib.dl.slayer",
        "object_detection needs torchvision, whose PyPI wheel breaks beside the CPU torch",
        original="from . import object_detection as obd\n",
        patched=(
            "try:  # spikeline: needs torchvision, which may be absent or broken\n"
            "    from . import object_detection as obd\n"
            "except Exception:  # noqa: BLE001 - a broken torchvision raises RuntimeError\n"
            "    obd = None\n"
        ),
    ),
    Patch(
        "lava.magma.core.process.ports.ports",
        "numpy >= 2.4 removed np.reshape(newshape=)",
        original="ft.partial(np.reshape, newshape=",
        patched="ft.partial(np.reshape, shape=",
    ),
]


def source_file(module: str) -> pathlib.Path:
    """Locate a module's file without importing it (importing is what fails unpatched)."""
    parts = module.split(".")
    spec = importlib.util.find_spec(parts[0])
    if spec is None or not spec.submodule_search_locations:
        sys.exit(f"patch_lava: package {parts[0]!r} is not installed")
    base = pathlib.Path(list(spec.submodule_search_locations)[0]).joinpath(*parts[1:])
    for candidate in (base / "__init__.py", base.with_suffix(".py")):
        if candidate.is_file():
            return candidate
    sys.exit(f"patch_lava: cannot find the source of {module} (looked at {base})")


def apply(patch: Patch) -> str:
    path = source_file(patch.module)
    text = path.read_text()
    if patch.patched in text:  # checked first: a patched text may contain the original
        return f"already patched {path}"
    if patch.original in text:
        path.write_text(text.replace(patch.original, patch.patched))
        return f"patched {path} ({patch.why})"
    sys.exit(
        f"patch_lava: {path} contains neither the expected original text\n  {patch.original!r}\n"
        f"nor the patched text; this is not the lava version these fixes were written for "
        f"(lava-nc 0.10.0, lava-dl 0.6.0)."
    )


def main() -> None:
    for patch in PATCHES:
        print(apply(patch))
    for path in {source_file(p.module) for p in PATCHES}:  # stale bytecode would hide the fix
        for pyc in path.parent.glob(f"__pycache__/{path.stem}.*.pyc"):
            pyc.unlink()


if __name__ == "__main__":
    main()
