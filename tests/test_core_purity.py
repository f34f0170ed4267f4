"""The pure folders import no I/O or concurrency library, and no layer imports
from one above it (house style: a pure core inside a thin Trio shell).

The pure code is two folders, `trio_chat/core/` (the chat) and
`trio_chat/client/` (what every client shares): every module in them is
checked, so a new one cannot be forgotten in a list. The layers are checked
for every module of the package.
"""

from __future__ import annotations

import ast
import tomllib
from pathlib import Path

import pytest

import trio_chat

PACKAGE = Path(trio_chat.__file__).parent
CORE = PACKAGE / "core"
PURE_MODULES = sorted(path.stem for path in CORE.glob("*.py") if path.stem != "__init__")
CLIENT = PACKAGE / "client"
PURE_CLIENT_MODULES = sorted(path.stem for path in CLIENT.glob("*.py"))
BACKPLANE = PACKAGE / "backplane"
# The backplane's pure modules; `redis` is its Trio shell.
PURE_BACKPLANE_MODULES = ["__init__", "errors", "keys", "scripts", "url"]
FORBIDDEN = {
    "trio",
    "trio_websocket",
    "socket",
    "asyncio",
    "threading",
    "multiprocessing",
    "selectors",
    "subprocess",
    "anyio",
    "glide",
    "glide_shared",
}


def imported_modules(source: str) -> set[str]:
    """Absolute names of the modules `source` imports (relative ones as `.name`)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = "." * node.level + (node.module or "")
            if node.module is None:  # from . import x
                found.update(base + alias.name for alias in node.names)
            else:
                found.add(base)
                found.update(f"{base}.{alias.name}" for alias in node.names)
    return found


def forbidden_imports(source: str) -> set[str]:
    """The forbidden packages (and `time.sleep`) that `source` imports."""
    found: set[str] = set()
    for name in imported_modules(source):
        root = name.split(".")[0]
        if root in FORBIDDEN:
            found.add(root)
        elif name == "time.sleep":
            found.add(name)
    return found


def sleeps(source: str) -> list[int]:
    """Lines that call a `sleep` (time.sleep and the like block the event loop)."""
    return [
        node.lineno
        for node in ast.walk(ast.parse(source))
        if isinstance(node, ast.Call)
        and (
            (isinstance(node.func, ast.Attribute) and node.func.attr == "sleep")
            or (isinstance(node.func, ast.Name) and node.func.id == "sleep")
        )
    ]


def read(module: str) -> str:
    return (CORE / f"{module}.py").read_text(encoding="utf-8")


@pytest.mark.parametrize("module", PURE_MODULES)
def test_pure_module_imports_no_io(module: str) -> None:
    assert forbidden_imports(read(module)) == set()
    assert sleeps(read(module)) == []


@pytest.mark.parametrize("module", PURE_MODULES)
def test_pure_module_imports_only_pure_siblings(module: str) -> None:
    relative = {name for name in imported_modules(read(module)) if name.startswith(".")}
    assert not any(name.startswith("..") for name in relative)  # never up a layer
    siblings = {name.lstrip(".").split(".")[0] for name in relative}
    assert siblings <= set(PURE_MODULES)
    assert "trio_chat" not in {name.split(".")[0] for name in imported_modules(read(module))}


def test_the_core_folder_holds_the_core() -> None:
    assert {"protocol", "rooms", "history", "limits", "websocket", "errors"} <= set(PURE_MODULES)


@pytest.mark.parametrize("module", PURE_CLIENT_MODULES)
def test_pure_client_module_imports_no_io(module: str) -> None:
    source = (CLIENT / f"{module}.py").read_text(encoding="utf-8")
    assert forbidden_imports(source) == set()
    assert sleeps(source) == []


def test_the_client_folder_holds_the_client_core() -> None:
    assert {"url", "websocket", "events", "transcript"} <= set(PURE_CLIENT_MODULES)


@pytest.mark.parametrize("module", PURE_BACKPLANE_MODULES)
def test_pure_backplane_module_imports_no_io(module: str) -> None:
    source = (BACKPLANE / f"{module}.py").read_text(encoding="utf-8")
    assert forbidden_imports(source) == set()
    assert sleeps(source) == []
    relative = {name for name in imported_modules(source) if name.startswith(".")}
    siblings = {name.lstrip(".").split(".")[0] for name in relative if not name.startswith("..")}
    assert siblings <= set(PURE_BACKPLANE_MODULES)  # never the shell


def test_the_backplane_folder_holds_its_pure_modules_and_its_shell() -> None:
    found = {path.stem for path in BACKPLANE.glob("*.py")}
    assert found == {*PURE_BACKPLANE_MODULES, "redis"}, "a new module: pure or shell?"


# -- layers ----------------------------------------------------------------------

# What each layer may import from the package, besides itself. `cli` is the
# top: it wires everything (and loads the clients only for their commands).
LAYERS: dict[str, set[str]] = {
    "core": set(),
    "client": {"core"},
    "stores": {"core"},
    "config": {"core", "backplane"},
    "backplane": {"core", "__init__"},
    "server": {"core", "stores", "config", "backplane", "__init__"},
    "terminal": {"core", "client", "config", "__init__"},
    "bench": {"core", "client", "config", "__init__"},
    "cli": {"core", "config", "server", "stores", "backplane", "terminal", "bench", "__init__"},
    "__main__": {"cli"},
    "__init__": set(),
}


def layer_of(path: Path) -> str:
    """The layer of a module: its folder under the package, or its own name."""
    parts = path.relative_to(PACKAGE).parts
    return parts[0] if len(parts) > 1 else path.stem


def package_imports(path: Path) -> set[str]:
    """The layers of `trio_chat` that the module at `path` imports."""
    here = ("trio_chat", *path.relative_to(PACKAGE).parent.parts)
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = list(here[: len(here) - node.level + 1]) if node.level else []
            module = [*base, *(node.module or "").split(".")] if node.module else base
            names = (
                [".".join(module)]
                if node.module
                else [".".join([*module, alias.name]) for alias in node.names]
            )
        for name in names:
            parts = name.split(".")
            if parts[0] == "trio_chat":
                top = parts[1] if len(parts) > 1 else "__init__"
                is_module = (PACKAGE / top).is_dir() or (PACKAGE / f"{top}.py").is_file()
                found.add(top if is_module else "__init__")  # e.g. `__version__`
    return found


MODULES = sorted(PACKAGE.rglob("*.py"))


@pytest.mark.parametrize("path", MODULES, ids=lambda path: str(path.relative_to(PACKAGE)))
def test_no_module_imports_from_a_layer_above_it(path: Path) -> None:
    layer = layer_of(path)
    assert layer in LAYERS, f"{layer}: a new layer; say what it may import in LAYERS"
    assert package_imports(path) - {layer} <= LAYERS[layer]


def test_the_layer_scanner_resolves_relative_imports() -> None:
    server = PACKAGE / "server" / "session.py"
    assert {"core", "server", "config"} <= package_imports(server)
    assert package_imports(PACKAGE / "cli.py") >= {"server", "stores", "config"}


@pytest.mark.parametrize(
    ("source", "found"),
    [
        ("import trio", {"trio"}),
        ("import trio.lowlevel as ll", {"trio"}),
        ("from trio_websocket import serve_websocket", {"trio_websocket"}),
        ("import os, socket", {"socket"}),
        ("from asyncio import sleep", {"asyncio"}),
        ("def f():\n    import threading", {"threading"}),
        ("from time import sleep", {"time.sleep"}),
        ("import time, json\nfrom . import history", set()),
    ],
)
def test_the_scanner_finds_forbidden_imports(source: str, found: set[str]) -> None:
    assert forbidden_imports(source) == found


def test_the_scanner_finds_sleeps_and_relative_imports() -> None:
    assert sleeps("import time\n\ntime.sleep(1)\n") == [3]
    assert imported_modules("from .hub import Hub") == {".hub", ".hub.Hub"}
    assert imported_modules("from . import hub") == {".hub"}


def test_every_package_folder_is_in_the_wheel() -> None:
    """A folder missing from pyproject.toml's explicit package list is left out
    of the wheel: the tests, run from the checkout, would not notice."""
    checkout = Path(__file__).resolve().parent.parent  # the tests may run on an install
    config = tomllib.loads((checkout / "pyproject.toml").read_text(encoding="utf-8"))
    listed = set(config["tool"]["setuptools"]["packages"]) - {"trio_chat.web"}
    source = checkout / "trio_chat"
    folders = {
        ".".join(("trio_chat", *init.parent.relative_to(source).parts))
        for init in source.rglob("__init__.py")
    }
    assert folders == listed


def uses_trio_lowlevel(source: str) -> bool:
    """Whether `source` imports `trio.lowlevel` or reaches it as `trio.lowlevel`."""
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import) and any(
            alias.name.startswith("trio.lowlevel") for alias in node.names
        ):
            return True
        if isinstance(node, ast.ImportFrom) and (
            (node.module or "").startswith("trio.lowlevel")
            or (node.module == "trio" and any(a.name == "lowlevel" for a in node.names))
        ):
            return True
        if (
            isinstance(node, ast.Attribute)
            and node.attr == "lowlevel"
            and isinstance(node.value, ast.Name)
            and node.value.id == "trio"
        ):
            return True
    return False


def test_only_the_debug_module_uses_trio_lowlevel() -> None:
    """House style: `trio.lowlevel` in one place only, the module that walks
    the live task tree for `/debug/tasks`."""
    users = {
        path.relative_to(PACKAGE).as_posix()
        for path in MODULES
        if uses_trio_lowlevel(path.read_text(encoding="utf-8"))
    }
    assert users == {"server/debug.py"}


@pytest.mark.parametrize(
    ("source", "uses"),
    [
        ("import trio.lowlevel", True),
        ("from trio import lowlevel", True),
        ("from trio.lowlevel import current_task", True),
        ("import trio\ntrio.lowlevel.checkpoint()", True),
        ("import trio\nawait_ = trio.sleep(0)  # trio.lowlevel: no", False),
    ],
)
def test_the_scanner_finds_trio_lowlevel(source: str, uses: bool) -> None:
    assert uses_trio_lowlevel(source) is uses
