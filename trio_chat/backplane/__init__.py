"""The backplane: several trio-chat processes sharing rooms through Redis or Valkey.

Each room keeps one total order across processes: a server-side script
numbers, stores and publishes each of its events in one atomic step, and
every process delivers a room's events from the room's channel, in id order.

The modules, each importing only those listed before it (`url`, `keys` and
`scripts` do no I/O, and a test scans them):

- `url`: `redis://` and `rediss://` URLs, parsed; the password never shown;
- `keys`: the names of the keys and channels, one hash slot per room;
- `scripts`: the Lua scripts (`JOIN`, `SAY_MANY`, `LEAVE`), the
  arguments they take and the replies they give, the cut of an event line
  around its id, and `event_id_of`, which reads the id of a line heard on a
  channel (None for a typing notice);
- `redis`: the Trio shell on valkey-glide: `open_backplane` and `Backplane`
  (a burst of says as one script call per room in one pipeline, typing
  notices as plain unnumbered publishes, per-room subscriptions into a
  bounded channel, the node's lease, reaping the members of dead nodes, and
  `room_states`, what a process checks after the server may have lost its
  state).
"""
