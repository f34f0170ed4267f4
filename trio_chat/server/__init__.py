"""The Trio server: sockets, tasks, timeouts and signals around the pure core.

* `app` -- the listener and the one port: routes each HTTP request to the
  web client, `/healthz`, `/metrics` or a WebSocket session, and runs the
  shutdown sequence;
* `http` -- the small h11 front that reads one request and answers it;
* `hub` -- the one task that orders the whole chat: it applies register,
  unregister and broadcast commands to `core.rooms.Chat` in FIFO order;
* `shared_hub` -- the hub for rooms shared by several processes through
  the backplane (not wired into `app` yet);
* `session` -- one WebSocket client: its reader and writer tasks, in one
  sub-nursery, speaking wsproto;
* `outbox` -- a client's bounded send queue of encoded frames;
* `socket_writer` -- where bytes hit the socket: the direct write and the
  writer task's `send_all`.

It imports from `trio_chat.core`, `trio_chat.stores` and `trio_chat.backplane`, never from the
clients (`trio_chat.terminal`, `trio_chat.bench`).
"""
