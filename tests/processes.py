"""trio-chat as a real child process, for tests of the program as users run it."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from functools import partial

import trio

TRIO_CHAT = [sys.executable, "-m", "trio_chat"]
SERVING = re.compile(rb"serving on http://127\.0\.0\.1:(\d+)/")
Served = tuple[trio.Process, int, list[bytes]]  # the process, its port, its stderr so far


def clean_env(**extra: str) -> dict[str, str]:
    """The environment without trio-chat settings, history kept in memory."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("TRIO_CHAT_")}
    for bare in ("PORT", "WRITE_WAIT", "PONG_WAIT", "PING_PERIOD", "DEBUG"):
        env.pop(bare, None)
    env["TRIO_CHAT_DB"] = ":memory:"
    env["TRIO_CHAT_PRESENCE_GRACE"] = "0"  # a closed client leaves at once, unless asked
    env.update(extra)
    return env


def run_trio_chat(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    """`trio-chat ARGS` to its end (30 s at most), in the clean environment."""
    return subprocess.run(
        [*TRIO_CHAT, *args],
        capture_output=True,
        text=True,
        env=clean_env(**env),
        timeout=30,
        check=False,
    )


def serving(*args: str, **env: str) -> AbstractAsyncContextManager[Served]:
    """`trio-chat serve --port 0` as a child process; yields it, its port and its stderr."""
    return serving_until(SERVING, 20, *args, **env)


@asynccontextmanager
async def serving_until(
    ready: re.Pattern[bytes], start_wait: float, *args: str, **env: str
) -> AsyncIterator[Served]:
    """`serving`, taken as serving once its stderr matches `ready` (whose
    first group is the port), within `start_wait` seconds."""
    async with trio.open_nursery() as nursery:
        process: trio.Process = await nursery.start(
            partial(
                trio.run_process,
                [*TRIO_CHAT, "serve", "--port", "0", *args],
                stderr=subprocess.PIPE,
                env=clean_env(**env),
                check=False,
            )
        )
        assert process.stderr is not None
        output: list[bytes] = []
        with trio.fail_after(start_wait):
            while (match := ready.search(b"".join(output))) is None:
                chunk = await process.stderr.receive_some()
                assert chunk, b"".join(output)
                output.append(bytes(chunk))

        async def drain() -> None:
            assert process.stderr is not None
            async for chunk in process.stderr:
                output.append(bytes(chunk))

        nursery.start_soon(drain)
        try:
            yield process, int(match.group(1)), output
        finally:
            if process.returncode is None:
                process.kill()
