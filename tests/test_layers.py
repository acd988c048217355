"""The package's import contract: layers depend one way (core <- wire <- config <- app <- store <- ops <- edge <-
runtime <- cli), the core does no I/O, and the package root imports nothing."""

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "asterisk_sendsms"
# The last are entry points: `python -m asterisk_sendsms`, and the module the AGI launchers import (its path
# never moves, so launchers installed by an earlier version keep working).
LAYERS = ("core", "wire", "config", "app", "store", "ops", "edge", "runtime", "cli", "__main__", "agi_script")
# The core is pure: these standard modules would bring a loop, a socket or a file into it.
IO_MODULES = frozenset({"asyncio", "socket", "selectors", "subprocess", "threading", "sqlite3", "aiohttp"})


def _layer(module: str) -> str:
    return module.split(".")[1] if "." in module else ""


def _imports(path: Path) -> set[str]:
    """Every module of the package the file imports, at its top or inside a function (a late import is still a
    dependency); `from asterisk_sendsms import X` counts as importing asterisk_sendsms.X."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.ImportFrom):
            assert node.level == 0, f"{path}:{node.lineno}: a relative import (the layers are checked on absolute ones)"
            if node.module == "asterisk_sendsms":
                names.update(f"asterisk_sendsms.{alias.name}" for alias in node.names if alias.name != "__version__")
            elif node.module:
                names.add(node.module)
        elif isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
    return names


def _modules() -> dict[str, Path]:
    found = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


def test_every_module_sits_in_a_layer() -> None:
    strays = [name for name in _modules() if name != "asterisk_sendsms" and _layer(name) not in LAYERS]
    assert strays == []


def test_layers_depend_one_way() -> None:
    crossings = set()
    for name, path in _modules().items():
        if name == "asterisk_sendsms":
            continue
        rank = LAYERS.index(_layer(name))
        for target in _imports(path):
            if target.startswith("asterisk_sendsms.") and LAYERS.index(_layer(target)) > rank:
                crossings.add((name, target))
    assert sorted(crossings) == [], "a module imports from a layer above its own"


@pytest.mark.parametrize("name", [name for name in _modules() if _layer(name) == "core"])
def test_the_core_does_no_io(name: str) -> None:
    imported = {target.split(".")[0] for target in _imports(_modules()[name])}
    assert imported & IO_MODULES == set()


def test_the_package_root_imports_nothing() -> None:
    probe = ("import sys, asterisk_sendsms; "
             "print(sorted(m for m in sys.modules if m.startswith('asterisk_sendsms.')))")
    loaded = subprocess.run([sys.executable, "-c", probe], check=True, capture_output=True, text=True,
                            cwd=PACKAGE.parent).stdout
    assert loaded.strip() == "[]"


def test_every_module_says_what_it_owns() -> None:
    unsaid = [name for name, path in _modules().items()
              if path.stat().st_size and ast.get_docstring(ast.parse(path.read_text())) is None]
    assert unsaid == []
