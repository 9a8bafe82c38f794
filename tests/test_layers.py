"""The layer contract (.importlinter, docs/architecture.md "Layers") holds and covers every module.

An upward import breaks `lint-imports`; a new top-level module that nobody placed in a layer would
escape the contract, so it fails here until it is given its floor.
"""

from __future__ import annotations

import configparser
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def contract_layers() -> list[set[str]]:
    parser = configparser.ConfigParser()
    parser.read(ROOT / ".importlinter")
    layers = []
    for line in parser["importlinter:contract:layers"]["layers"].strip().splitlines():
        layers.append({name.strip() for name in line.replace("|", ":").split(":") if name.strip()})
    return layers


def top_level_modules() -> set[str]:
    names = set()
    for path in (ROOT / "ngb").iterdir():
        if path.suffix == ".py" and path.stem != "__init__":
            names.add(f"ngb.{path.stem}")
        elif path.is_dir() and (path / "__init__.py").exists():
            names.add(f"ngb.{path.name}")
    return names


def test_every_module_of_ngb_has_a_layer() -> None:
    placed = set().union(*contract_layers())
    missing = top_level_modules() - placed
    assert not missing, f"give these a layer in .importlinter (and docs/architecture.md): {sorted(missing)}"
    gone = placed - top_level_modules()
    assert not gone, f".importlinter names modules that no longer exist: {sorted(gone)}"


def test_every_package_of_ngb_is_a_regular_package() -> None:
    # A folder without __init__.py is a namespace package: the wheel leaves it out and the
    # contract cannot name it.
    bare = [p.name for p in (ROOT / "ngb").iterdir() if p.is_dir() and any(p.glob("*.py")) and not (p / "__init__.py").exists()]
    assert not bare, f"add an __init__.py to: {bare}"


def test_no_module_imports_upward() -> None:
    lint = Path(sys.executable).with_name("lint-imports")
    done = subprocess.run([str(lint), "--no-cache"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
