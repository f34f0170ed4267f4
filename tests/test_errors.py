"""Every exception trio-chat defines shares one root, `TrioChatError`."""

from __future__ import annotations

import importlib
import inspect
import pkgutil

import trio_chat
from trio_chat.core.errors import TrioChatError


def test_every_exception_of_the_package_derives_from_trio_chat_error() -> None:
    found: list[type[BaseException]] = []
    for module_info in pkgutil.walk_packages(trio_chat.__path__, "trio_chat."):
        if module_info.name.endswith(".__main__"):  # importing it runs the program
            continue
        module = importlib.import_module(module_info.name)
        for _name, value in inspect.getmembers(module, inspect.isclass):
            if issubclass(value, BaseException) and value.__module__ == module.__name__:
                found.append(value)
    assert len(found) >= 9  # the scan really walked the package
    strays = [f"{cls.__module__}.{cls.__qualname__}" for cls in found]
    assert [
        s for s, cls in zip(strays, found, strict=True) if not issubclass(cls, TrioChatError)
    ] == []
