"""How the browser client holds up in a busy room: DOM size, JS heap, and
the time from Enter to one's own message in the log.

    python benchmarks/web_client.py [--messages 10000] [--rate 1000] [--trials 5]
                                    [--python PYTHON]

Starts `PYTHON -m trio_chat serve` (default: this interpreter; point it at
another installation to measure another version of the client, which the
server serves) on a free port with `--rate-limit 0 --db :memory:`, opens the
page in Debian's Chromium (headless, 1280x800), joins `alice` to a room,
then a raw client (`bot`) says `--messages` messages at `--rate` per second.
Once the page shows the last one, it reads the page's DOM node count, its
`<li>` count and its JS heap (`performance.memory.usedJSHeapSize` after a
forced garbage collection), then types a message `--trials` times and times
each from the Enter keydown to the MutationObserver seeing its line added
to the log (measured in the page). Prints one JSON object. A measurement,
never a test: nothing is asserted.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import threading
import time
from typing import Any

from playwright.sync_api import sync_playwright
from websockets.sync.client import connect

CHROMIUM = "/usr/bin/chromium"
ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--js-flags=--expose-gc",
]

# Each Enter's keydown time, and the time the MutationObserver saw our line added.
TIMER = """() => {
    window.enterTimes = [];
    window.shownTimes = [];
    let pressed = null;
    document.getElementById("message").addEventListener("keydown", (event) => {
        if (event.key === "Enter") pressed = performance.now();
    }, { capture: true });
    new MutationObserver((records) => {
        if (pressed === null) return;
        for (const record of records) {
            for (const node of record.addedNodes) {
                if (node.nodeType === 1 && node.matches(".msg.own:not(.pending)")) {
                    window.shownTimes.push(performance.now() - pressed);
                    pressed = null;
                    return;
                }
            }
        }
    }).observe(document.getElementById("log"), { childList: true, subtree: true });
}"""


def serve(python: str) -> tuple[subprocess.Popen[str], int]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TRIO_CHAT_")}
    command = [python, "-m", "trio_chat", "serve", "--port", "0", "--rate-limit", "0"]
    command += ["--db", ":memory:"]
    process = subprocess.Popen(  # noqa: S603 (our own server, from the command line)
        command, stderr=subprocess.PIPE, text=True, env=env
    )
    assert process.stderr is not None
    for line in process.stderr:
        if match := re.search(r"serving on http://127\.0\.0\.1:(\d+)/", line):
            threading.Thread(target=process.stderr.read, daemon=True).start()  # drain
            return process, int(match.group(1))
    raise SystemExit("the server did not start")


def say_many(port: int, room: str, count: int, rate: float) -> None:
    """The bot says `count` messages at `rate` per second, in batches of 10 ms."""
    with connect(f"ws://127.0.0.1:{port}/ws", max_size=None) as ws:
        ws.send(json.dumps({"type": "hello", "name": "bot", "room": room}))
        start = time.monotonic()
        sent = 0
        while sent < count:
            due = min(count, int((time.monotonic() - start) * rate) + 1)
            for i in range(sent, due):
                ws.send(json.dumps({"type": "say", "text": f"m{i}"}))
            sent = due
            time.sleep(0.01)
            while True:  # keep the bot's own socket drained
                try:
                    ws.recv(timeout=0)
                except TimeoutError:
                    break


def page_figures(page: Any) -> dict[str, Any]:
    figures: dict[str, Any] = page.evaluate(
        """() => {
            gc();
            return {
                dom_nodes: document.getElementsByTagName("*").length,
                log_lines: document.querySelectorAll("#log li").length,
                js_heap_mb: performance.memory.usedJSHeapSize / 2 ** 20,
            };
        }"""
    )
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=10_000)
    parser.add_argument("--rate", type=float, default=1000.0)
    parser.add_argument("--trials", type=int, default=5)
    parser.add_argument("--python", default=sys.executable)
    args = parser.parse_args()
    server, port = serve(args.python)
    try:
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=CHROMIUM, args=ARGS)
            page = browser.new_page(viewport={"width": 1280, "height": 800})
            page.set_default_timeout(600_000)
            page.goto(f"http://127.0.0.1:{port}/#busy")
            page.get_by_label("Name").fill("alice")
            page.get_by_role("button", name="Join").click()
            page.get_by_role("textbox", name="Message").wait_for()
            result: dict[str, Any] = {"messages": args.messages, "rate": args.rate}

            page.evaluate(TIMER)

            def own_message_ms(label: str) -> list[float]:
                box = page.get_by_role("textbox", name="Message")
                for trial in range(args.trials):
                    box.fill(f"{label} {trial}")
                    box.press("Enter")
                    page.wait_for_function("(n) => window.shownTimes.length >= n", arg=trial + 1)
                times: list[float] = page.evaluate("window.shownTimes.splice(0)")
                return [round(t, 1) for t in times]

            result["before"] = page_figures(page) | {"enter_ms": own_message_ms("early")}
            began = time.monotonic()
            say_many(port, "busy", args.messages, args.rate)
            last = f"m{args.messages - 1}"
            page.wait_for_function(
                "(last) => [...document.querySelectorAll('#log .msg .text')]"
                ".some((item) => item.textContent === last)",
                arg=last,
            )
            result["shown_after_s"] = round(time.monotonic() - began, 2)
            after = page_figures(page)
            times = own_message_ms("late")
            median = statistics.median(times)
            result["after"] = after | {"enter_ms": times, "enter_median_ms": median}
            browser.close()
    finally:
        server.terminate()
        server.wait(20)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
