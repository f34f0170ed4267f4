"""`trio-chat connect`: the terminal client.

Modules: `run` (the arguments, and the client's run: connecting, the
reader and the writer, reconnecting), `screen` (the terminal's key-by-key
mode and the live area at its bottom), `streams` (standard input in a
thread, frames split into events).

Theory of operation: one `_Client` per run holds everything that outlives a
connection: the highest event id shown (a `Transcript`), the lines typed and
not yet confirmed (an `Outbox`, each line with its `ref` from the moment it
was typed), the pace the server allows (a `Pacer`) and the welcome's
`resume` secret. Each connection says `hello` (with `since` = the highest id
seen, once there is one, the `epoch` it belongs to and the `resume` secret),
takes the replay up to its own `join` (or, on a resume, up to the room's
last id), then runs two tasks in a nursery of its own: the reader handles
events, the writer sends lines. When either ends, the other is cancelled,
the WebSocket is closed, and the loop decides: done, give up, or reconnect
(`reconnect_delay`: the first attempt within half a second, then a capped,
jittered backoff).

Invariants:

* Events are printed in arrival order, each numbered id at most once: an id
  at or below the highest shown is a repeat (replays overlap, and the server
  answers a `say` it already stored with the original event). A `welcome`
  with a new `epoch`, or whose own `join` id is not above the highest shown,
  means the room was renumbered (a restarted server lost its history), so
  counting restarts.
* Stop-and-wait: one `say` is in flight at a time, matched to its echo by
  its `ref`. So lines arrive in the order typed even when one is rate
  limited and sent again; after a reconnect whose replay did not echo it,
  it goes again with the same `ref`, which the server's dedupe makes safe.
* Nothing from the server reaches the terminal raw (`client.display`).

Two faces: when standard input and output are a terminal, the client edits
the line itself (`client.lineedit`: the terminal's echo is off) and prints
incoming lines above it, with the lines still pending under them; otherwise
(a pipe, a file) it reads lines, and prints what `--print` asks for: by
default everything for a terminal, nothing for a pipe.

This module keeps to the house style: the formatting, editing, pacing and
numbering are in the pure `trio_chat.client` modules; tasks live in
nurseries opened here; the caller owns stdin, stdout and stderr and none of
them is closed (the terminal's mode is put back as it was).
"""

from __future__ import annotations

from .run import DRAIN_WAIT, NAME_TAKEN_PATIENCE, RECONNECT_CAP, add_connect_arguments, run_connect

__all__ = [
    "DRAIN_WAIT",
    "NAME_TAKEN_PATIENCE",
    "RECONNECT_CAP",
    "add_connect_arguments",
    "run_connect",
]
