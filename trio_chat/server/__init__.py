"""The Trio server: sockets, tasks, timeouts and signals around the pure core.

* `app` -- the listener and the one port: routes each HTTP request to the
  web client, `/healthz`, `/readyz`, `/metrics` or a WebSocket session, and
  runs the shutdown sequence;
* `workers` and `reuseport` -- `serve --workers N`: the parent that keeps N
  server processes on one shared port;
* `http` -- the small h11 front that reads one request and answers it;
* `hub` -- the one task that orders the whole chat: it applies register,
  unregister and broadcast commands to `core.rooms.Chat` in FIFO order;
* `shared_hub` -- the hub for rooms shared by several processes through
  the backplane (`--backplane`); `shared_state`, what it holds and the
  messages its tasks post back; `backplane_link`, those tasks: its round
  trips to the backplane;
* `session` -- one WebSocket client: its reader and writer tasks, in one
  sub-nursery, speaking wsproto;
* `outbox` -- a client's bounded send queue of encoded frames;
* `socket_writer` -- where bytes hit the socket: the direct write and the
  writer task's `send_all`.

It imports from `trio_chat.core`, `trio_chat.stores` and `trio_chat.backplane`, never from the
clients (`trio_chat.terminal`, `trio_chat.bench`).
"""
