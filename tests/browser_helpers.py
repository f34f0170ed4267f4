"""What the browser tests drive: `trio-chat serve` as a child process, and
Chromium pages that record every JavaScript error.

The tests are plain synchronous functions (Playwright's sync API), so they
stay out of pytest-trio's way; the server is a real process on a real port,
as users run it, so a test can stop it and start it again on the same port.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from axe_playwright_python.sync_playwright import Axe
from playwright.sync_api import (
    Browser,
    BrowserContext,
    ConsoleMessage,
    Dialog,
    Locator,
    Page,
    ViewportSize,
    WebSocket,
    WebSocketRoute,
    expect,
    sync_playwright,
)

CHROMIUM = Path("/usr/bin/chromium")
# The network is closed where the tests run, and nothing but the page may
# use it: no background requests, no component updates, no QUIC probing.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
]
DESKTOP: ViewportSize = {"width": 1280, "height": 800}
PHONE: ViewportSize = {"width": 360, "height": 740}
TIMEOUT_MS = 10_000  # for every wait on a condition
SCREENSHOTS_VARIABLE = "TRIO_CHAT_SCREENSHOTS"


@contextmanager
def chromium(*args: str) -> Iterator[Browser]:
    """Debian's Chromium, driven by Playwright, for one test module, with
    `args` added to its command line.

    Where it is missing the module's tests are skipped, except under CI,
    where that fails them: there the browser tests must run.
    """
    if not CHROMIUM.exists():
        if os.environ.get("CI"):
            pytest.fail(
                f"CI is set but {CHROMIUM} is missing: the browser tests must run "
                "(.ci/run installs Debian's chromium)",
                pytrace=False,
            )
        pytest.skip(f"{CHROMIUM} not found: apt-get install chromium to run the browser tests")
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(
            executable_path=str(CHROMIUM), args=[*CHROMIUM_ARGS, *args]
        )
        yield launched
        launched.close()


_SERVING = re.compile(r"serving on http://127\.0\.0\.1:(\d+)/")


class ServerProcess:
    """`python -m trio_chat serve` on 127.0.0.1, started and stopped by a test.

    `stop()` sends SIGTERM (the graceful shutdown) and returns the exit
    status; `start()` again reuses the port the first start was given, so a
    test can restart the server under its clients.
    """

    def __init__(self, *args: str, db: Path | str) -> None:
        self.args = args
        self.db = str(db)
        self.port = 0
        self.output: list[str] = []  # the server's log, for failure reports
        self._process: subprocess.Popen[str] | None = None
        self._reader: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/"

    @property
    def running(self) -> bool:
        return self._process is not None

    def start(self, timeout: float = 20.0) -> None:
        """Start the server and wait until it logs the port it serves on."""
        assert self._process is None, "already running"
        env = {k: v for k, v in os.environ.items() if not k.startswith("TRIO_CHAT_")}
        command = [
            sys.executable,
            "-m",
            "trio_chat",
            "serve",
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--db",
            self.db,
            *self.args,
        ]
        process = subprocess.Popen(
            command, stdin=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env
        )
        self._process = process
        serving = threading.Event()
        found: list[int] = []

        def read_log() -> None:
            assert process.stderr is not None
            for line in process.stderr:
                self.output.append(line.rstrip("\n"))
                if not found and (match := _SERVING.search(line)):
                    found.append(int(match.group(1)))
                    serving.set()
            serving.set()  # the log ended: the process is gone

        self._reader = threading.Thread(target=read_log, name="trio-chat log", daemon=True)
        self._reader.start()
        if not serving.wait(timeout) or not found:
            status = self._finish(kill=True)
            log = "\n".join(self.output)
            raise AssertionError(
                f"trio-chat did not start (exit status {status}): {' '.join(command)}\n{log}"
            )
        assert self.port in (0, found[0]), (self.port, found[0])
        self.port = found[0]

    def stop(self, timeout: float = 20.0) -> int | None:
        """SIGTERM, then the exit status (None if it had to be killed)."""
        self.send_signal(signal.SIGTERM)
        return self.wait(timeout)

    def send_signal(self, signum: int) -> None:
        assert self._process is not None, "not running"
        self._process.send_signal(signum)

    def wait(self, timeout: float = 20.0) -> int | None:
        """The exit status once the process ends (None if it had to be
        killed after `timeout` seconds)."""
        assert self._process is not None, "not running"
        try:
            self._process.wait(timeout)
        except subprocess.TimeoutExpired:
            self._finish(kill=True)
            return None
        return self._finish(kill=False)

    def _finish(self, *, kill: bool) -> int | None:
        process, self._process = self._process, None
        assert process is not None
        if kill:
            process.kill()
        status = process.wait()
        if self._reader is not None:
            self._reader.join(5)
        if process.stderr is not None:
            process.stderr.close()
        return None if kill else status


@dataclass
class ErrorLog:
    """JavaScript errors, console errors and dialogs seen by the test's pages.

    Any of them fails the test, except console messages matching a pattern
    the test has explicitly allowed (the browser's own log line for a refused
    WebSocket connection while the server is down on purpose).
    """

    errors: list[str] = field(default_factory=list)
    allowed: list[re.Pattern[str]] = field(default_factory=list)

    def watch(self, page: Page, who: str) -> None:
        def console(message: ConsoleMessage) -> None:
            if message.type not in ("error", "assert"):
                return
            if any(pattern.search(message.text) for pattern in self.allowed):
                return
            self.errors.append(f"{who}: console {message.type}: {message.text}")

        def page_error(error: Exception) -> None:
            self.errors.append(f"{who}: page error: {error}")

        def dialog(opened: Dialog) -> None:
            self.errors.append(f"{who}: a {opened.type} dialog opened: {opened.message!r}")
            opened.dismiss()

        page.on("console", console)
        page.on("pageerror", page_error)
        page.on("dialog", dialog)

    def allow_refused_connections(self, server: ServerProcess) -> None:
        """While the server is down, Chromium logs each refused WebSocket, and
        any resource the page asks for again meanwhile (switching the colour
        scheme for a screenshot or an axe run may fetch the icon again)."""
        self.allowed.append(
            re.compile(
                rf"^WebSocket connection to 'ws://127\.0\.0\.1:{server.port}/ws' failed: "
                r"Error in connection establishment: net::ERR_CONNECTION_REFUSED$"
            )
        )
        self.allowed.append(re.compile(r"^Failed to load resource: net::ERR_CONNECTION_REFUSED$"))

    def check(self) -> None:
        assert not self.errors, "\n".join(self.errors)


class Pages:
    """Opens pages, each in its own browser context (its own person)."""

    def __init__(self, browser: Browser, errors: ErrorLog) -> None:
        self.browser = browser
        self.errors = errors
        self.contexts: list[BrowserContext] = []

    def open(
        self,
        url: str,
        *,
        phone: bool = False,
        who: str = "page",
        route_ws: Callable[[WebSocketRoute], Any] | None = None,
        locale: str | None = None,
        init_script: str | None = None,
        fake_clock: bool = False,
    ) -> Page:
        """A new person's page at `url`; `locale` sets the browser's language,
        `init_script` runs in the page before its own scripts, and
        `fake_clock` gives the page Playwright's clock (running as usual
        until a test pauses it) so that a test can stop its timers."""
        options: dict[str, Any] = {"color_scheme": "light"}
        if locale is not None:
            options["locale"] = locale
        if phone:
            context = self.browser.new_context(
                viewport=PHONE, device_scale_factor=2, is_mobile=True, has_touch=True, **options
            )
        else:
            context = self.browser.new_context(viewport=DESKTOP, **options)
        if init_script is not None:
            context.add_init_script(init_script)
        if fake_clock:
            context.clock.install()
        context.set_default_timeout(TIMEOUT_MS)
        self.contexts.append(context)
        page = context.new_page()
        self.errors.watch(page, who)
        if route_ws is not None:
            page.route_web_socket(re.compile(r"/ws$"), route_ws)
        response = page.goto(url)
        assert response is not None
        assert response.ok, response.status
        return page

    def close(self) -> None:
        for context in self.contexts:
            context.close()
        self.contexts.clear()


# ---------------------------------------------------------------------------
# Reading and driving the page, the way a person sees it


def log(page: Page) -> Locator:
    return page.get_by_role("log")


def message_texts(page: Page) -> Locator:
    return log(page).locator(".msg .text")


def connection(page: Page) -> Locator:
    return page.locator("#connection")


def message_box(page: Page) -> Locator:
    return page.get_by_role("textbox", name="Message")


def join(page: Page, name: str, room: str | None = None) -> None:
    """Fill in the join screen and wait for the chat screen."""
    page.get_by_label("Name").fill(name)
    if room is not None:
        page.get_by_label("Room", exact=True).fill(room)
    page.get_by_role("button", name="Join").click()
    expect(message_box(page)).to_be_visible()
    expect(connection(page)).to_have_text("Connected")


def say(page: Page, text: str) -> None:
    """Type a message and press Enter; wait for its echo in the log."""
    box = message_box(page)
    box.fill(text)
    box.press("Enter")
    expect(box).to_have_value("")
    expect(log(page).locator(".msg.own .text").last).to_have_text(text)


def shown_ids(page: Page) -> list[int]:
    """The ids of the stored events in the log, in the order shown."""
    ids: list[int] = page.locator("#log [data-id]").evaluate_all(
        "items => items.map((item) => Number(item.dataset.id))"
    )
    return ids


def assert_complete_log(page: Page) -> None:
    """Every stored event since the first shown, once each and in order."""
    ids = shown_ids(page)
    assert ids, "nothing in the log"
    assert ids == list(range(ids[0], ids[0] + len(ids))), ids


def set_tab_hidden(page: Page, *, hidden: bool) -> None:
    """Pretend the tab went to the background (headless tabs are always visible)."""
    page.evaluate(
        """(hidden) => {
            Object.defineProperty(document, "hidden", { configurable: true, get: () => hidden });
            Object.defineProperty(document, "visibilityState", {
                configurable: true,
                get: () => (hidden ? "hidden" : "visible"),
            });
            document.dispatchEvent(new Event("visibilitychange"));
        }""",
        hidden,
    )


def screenshots(page: Page, name: str) -> None:
    """Save `name-light.png` and `name-dark.png` where TRIO_CHAT_SCREENSHOTS says."""
    folder = os.environ.get(SCREENSHOTS_VARIABLE)
    if not folder:
        return
    Path(folder).mkdir(parents=True, exist_ok=True)
    for scheme in ("light", "dark"):
        page.emulate_media(color_scheme=scheme)
        page.screenshot(path=Path(folder) / f"{name}-{scheme}.png")
    page.emulate_media(color_scheme="light")


_AXE = Axe()


def accessibility_violations(page: Page, context: str | None = None) -> list[str]:
    """What axe-core (every rule it runs by default, any impact) finds wrong
    with the page as it is now, in the light and then the dark theme: one
    line per rule and theme, with the elements it found, for an assertion
    message. `context`: a CSS selector to check only that part."""
    found: list[str] = []
    for scheme in ("light", "dark"):
        page.emulate_media(color_scheme=scheme)
        results = _AXE.run(page, context=context)
        for violation in results.response["violations"]:
            nodes = "\n".join(
                f"    {' '.join(node['target'])}: {node.get('failureSummary', '')}"
                for node in violation["nodes"]
            )
            rule = f"{violation['id']} ({violation['impact']}): {violation['help']}"
            found.append(f"{scheme}: {rule}\n{nodes}")
    page.emulate_media(color_scheme="light")
    return found


def wait_until(page: Page, condition: Callable[[], bool], what: str) -> None:
    """Wait for a condition on the test's side (Playwright events keep flowing)."""
    deadline = time.monotonic() + TIMEOUT_MS / 1000
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        page.wait_for_timeout(20)


def frames_sent(page: Page) -> list[dict[str, Any]]:
    """Record every JSON frame the page sends over its WebSockets from now on."""
    sent: list[dict[str, Any]] = []

    def on_socket(socket: WebSocket) -> None:
        socket.on("framesent", lambda payload: sent.append(json.loads(payload)))

    page.on("websocket", on_socket)
    return sent
