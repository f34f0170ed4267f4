// The link to the server for one room session: the WebSocket of the moment,
// its hello, reconnecting with backoff when it drops, and how all that is
// shown (the status line under the room's name, the banner above the log).
// It knows what close codes mean (protocol.js says which deserve a retry);
// what the frames hold is app.js's business.

import { describeClose, reconnectDelay } from "./protocol.js";

const GHOST_WAIT = 90_000; // ms to retry a name_taken after a reconnect (> PONG_WAIT)

const ui = {
  connection: document.getElementById("connection"),
  banner: document.getElementById("banner"),
  bannerText: document.getElementById("banner-text"),
  bannerAction: document.getElementById("banner-action"),
};

function setConnection(state) {
  const labels = { online: "Connected", reconnecting: "Reconnecting…", offline: "Disconnected" };
  ui.connection.dataset.state = state;
  ui.connection.textContent = labels[state];
}

function showBanner(text, action) {
  ui.bannerText.textContent = text;
  ui.bannerAction.hidden = action === null;
  if (action !== null) ui.bannerAction.textContent = action;
  ui.banner.hidden = false;
}

function hideBanner() {
  ui.banner.hidden = true;
}

/**
 * The connection of the room session `session` ({phase, name, room}; this
 * class moves the phase between "live", "reconnecting" and "stopped").
 * `hooks`:
 * - `since()`: the `since` for the next hello, or null;
 * - `epoch()`: the `epoch` that `since` belongs to, or null;
 * - `resume()`: the last welcome's `resume` secret, or null;
 * - `receive(data)`: a frame from the server;
 * - `lost()`: the socket closed (whatever happens next);
 * - `joinFailed(text)`: the first connection of the session closed before
 *   it was welcomed;
 * - `phaseChanged()`: the phase changed here.
 */
export class Connection {
  socket = null;
  welcomed = false; // on the current socket
  #session;
  #hooks;
  #attempt = 0;
  #reason = ""; // why we are reconnecting, for the banner
  #retryTimer = 0;
  #countdownTimer = 0;
  #ghostSince = 0;

  constructor(session, hooks) {
    this.#session = session;
    this.#hooks = hooks;
    ui.bannerAction.addEventListener("click", () => this.retryNow());
  }

  /** A new room session: no retry pending, no banner. */
  reset() {
    this.clearRetry();
    this.welcomed = false;
    this.#attempt = 0;
    this.#ghostSince = 0;
    hideBanner();
  }

  connect() {
    this.clearRetry();
    const url = new URL("/ws", location.href);
    url.protocol = location.protocol === "https:" ? "wss:" : "ws:";
    url.hash = "";
    url.search = "";
    const socket = new WebSocket(url);
    this.socket = socket;
    this.welcomed = false;
    if (this.#session.phase === "reconnecting") {
      showBanner(`${this.#reason} Reconnecting…`.trim(), null);
    }
    socket.addEventListener("open", () => {
      if (socket !== this.socket) return;
      const hello = { type: "hello", name: this.#session.name, room: this.#session.room };
      const since = this.#hooks.since();
      if (since !== null) {
        hello.since = since;
        const epoch = this.#hooks.epoch(); // the numbering `since` belongs to
        if (epoch !== null) hello.epoch = epoch;
        const resume = this.#hooks.resume(); // our place, given back without leave/join
        if (resume !== null) hello.resume = resume;
      }
      socket.send(JSON.stringify(hello));
    });
    socket.addEventListener("message", (event) => {
      if (socket === this.socket) this.#hooks.receive(event.data);
    });
    socket.addEventListener("close", (event) => {
      if (socket !== this.socket) return;
      this.socket = null;
      this.#closed(event.code);
    });
  }

  /** Let go of the socket (closing it with 1000); its events are ignored from now on. */
  drop() {
    const socket = this.socket;
    this.socket = null;
    this.welcomed = false;
    if (socket && socket.readyState === WebSocket.OPEN) socket.close(1000);
    else if (socket && socket.readyState === WebSocket.CONNECTING) {
      // Closing before the handshake completes makes the browser log an error;
      // let it open and close it then.
      socket.addEventListener("open", () => socket.close(1000));
    }
  }

  /** Send a frame; false when there is no open socket. */
  send(frame) {
    const socket = this.socket;
    if (!socket || socket.readyState !== WebSocket.OPEN) return false;
    socket.send(JSON.stringify(frame));
    return true;
  }

  /** The server welcomed us: the connection is live. */
  online() {
    this.welcomed = true;
    this.#attempt = 0;
    this.#ghostSince = 0;
    this.clearRetry();
    hideBanner();
    setConnection("online");
  }

  #closed(code) {
    const welcomed = this.welcomed;
    this.welcomed = false;
    this.#hooks.lost();
    const phase = this.#session.phase;
    if (phase === "idle" || phase === "stopped") return;
    const { retry, text } = describeClose(code, { welcomed });
    if (phase === "joining") {
      this.#hooks.joinFailed(
        code === 1013
          ? `${text} Try again in a moment.` // it refused our hello
          : "Could not connect to the chat server. Check your connection and try again.",
      );
      return;
    }
    if (!retry) this.stop(text);
    else if (phase === "reconnecting" && (code === 1005 || code === 1006)) {
      // A retry that failed without a word from the server: why the live
      // connection ended still says more.
      this.scheduleReconnect(this.#reason);
    } else this.scheduleReconnect(text);
  }

  scheduleReconnect(reason, options = {}) {
    this.clearRetry();
    this.#session.phase = "reconnecting";
    this.#reason = reason;
    setConnection("reconnecting");
    this.#hooks.phaseChanged();
    const delay = reconnectDelay(this.#attempt, options);
    this.#attempt += 1;
    const due = Date.now() + delay;
    const tick = () => {
      const seconds = Math.max(1, Math.ceil((due - Date.now()) / 1000));
      showBanner(`${reason} Retrying in ${seconds} s.`, "Retry now");
    };
    tick();
    this.#countdownTimer = setInterval(tick, 1000);
    this.#retryTimer = setTimeout(() => this.connect(), delay);
  }

  /**
   * Our hello after a reconnect was refused with name_taken: our previous
   * connection may still be in the room until the server notices it is
   * gone, so try again shortly. Returns false (and does nothing) once that
   * has gone on for longer than the server can take to notice.
   */
  retryAfterGhost() {
    this.#ghostSince ||= Date.now();
    if (Date.now() - this.#ghostSince > GHOST_WAIT) return false;
    this.drop();
    this.scheduleReconnect("Waiting for your previous connection to end.", { cap: 4000 });
    return true;
  }

  clearRetry() {
    clearTimeout(this.#retryTimer);
    clearInterval(this.#countdownTimer);
    this.#retryTimer = 0;
    this.#countdownTimer = 0;
  }

  /** The banner's button: retry at once, or again after a close that was not retried. */
  retryNow() {
    if (this.#session.phase === "stopped") {
      this.#session.phase = "reconnecting";
      this.#reason = "";
      this.#attempt = 0;
      setConnection("reconnecting");
    }
    if (this.#session.phase === "reconnecting" && this.socket === null) this.connect();
  }

  /**
   * The network or the tab came back: if a retry is waiting, do not wait
   * out the backoff (a hidden tab's timers may also have been slowed down).
   */
  reconnectSoon() {
    if (this.#session.phase === "reconnecting" && this.socket === null) this.connect();
  }

  /** Closed for good (until the person presses Reconnect): say why. */
  stop(text) {
    this.clearRetry();
    this.#session.phase = "stopped";
    setConnection("offline");
    this.#hooks.phaseChanged();
    showBanner(text, "Reconnect");
  }
}
