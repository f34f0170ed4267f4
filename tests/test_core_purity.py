"""The pure core imports no I/O or concurrency library (house style: a pure core).

The core is a folder, `trio_chat/core/`: every module in it is checked, so a
new one cannot be forgotten in a list.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import trio_chat

CORE = Path(trio_chat.__file__).parent / "core"
PURE_MODULES = sorted(path.stem for path in CORE.glob("*.py") if path.stem != "__init__")
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
