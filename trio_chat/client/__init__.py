"""The pure client core: what every trio-chat client does that is not I/O.

Nothing in this folder imports Trio or sockets (the purity test scans it, as
it scans `trio_chat.core`), and nothing imports from the server. The
terminal client (`trio_chat.terminal`), the load generator
(`trio_chat.bench`) and the test suite's raw client all build on it:

* `url` -- what a user may type for the server, parsed into one `ServerUrl`;
* `websocket` -- the client side of RFC 6455 for clients that do their own
  I/O: the opening handshake, masked frames out, an incremental reader in;
* `events` -- a server frame split into its events (one JSON object a line);
* `transcript` -- the event-id bookkeeping: which ids a connection has seen,
  what to send as `since` on a reconnect, duplicates and order violations.
"""
