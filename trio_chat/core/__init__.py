"""The pure core: everything about chat that does no I/O.

Nothing in this folder imports Trio, sockets, threads or any other I/O or
concurrency library (a test scans the folder), so hypothesis can drive it
one call at a time: thousands of interleavings a second, no clock.

* `protocol` -- where a client frame is parsed and validated, and where
  events are encoded (once, for every recipient and for history);
* `rooms` -- the chat state: membership, where an event gets its id, who
  receives what;
* `history` -- retained events per room, the replay rules, and the seam to
  where histories are stored;
* `feed` -- one room's events heard from a shared backplane, put back in id
  order, gaps filled from the room's log;
* `limits` -- rate limit, typing throttle and error budget arithmetic;
* `websocket` -- upgrade checks, Host and origin policy, text-frame encoding;
* `forwarded` -- who the client is behind a trusted reverse proxy
  (`X-Forwarded-For`);
* `errors` -- `TrioChatError`, the root of the package's exceptions.

The Trio shell around it (hub, sessions, HTTP front, stores) lives one level
up and imports from here; nothing here imports from there.
"""
