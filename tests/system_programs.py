"""Programs from the system's packages that some tests need.

Where one is missing its tests are skipped, except under CI (`CI` set, as
`.ci/run` does), where that fails them: there `.ci/run` installs it, and a
skip would hide a missing install step.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest


def system_program(name: str, package: str, *, also_at: tuple[str, ...] = ()) -> str:
    """The path of program `name` (on PATH, or at one of `also_at`), from the
    Debian package `package`; skip the test (fail it under CI) without it."""
    found = shutil.which(name) or next((path for path in also_at if Path(path).exists()), None)
    if found is None:
        reason = f"{name} is not installed (Debian: apt-get install {package})"
        if os.environ.get("CI"):
            pytest.fail(f"CI is set but {reason}: .ci/run installs it", pytrace=False)
        pytest.skip(reason)
    return found
