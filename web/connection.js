// The link to the server for one room session: the WebSocket of the moment,
// its hello, reconnecting with backoff when it drops, and what to show for
// it (the status line under the room's name, the banner above the log),
// kept as `display` so that the page draws it while the room is in view.
// It knows what close codes mean (protocol.js says which deserve a retry);
// what the frames hold is app.js's business.

import { t } from "./i18n.js";
import { describeClose, reconnectDelay, tokenExpired } from "./protocol.js";

const GHOST_WAIT = 90_000; // ms to retry a name_taken after a reconnect (> PONG_WAIT)

/**
 * The connection of the room session `session` ({phase, name, room}; this
 * class moves the phase between "live", "reconnecting" and "stopped").
 * `hooks`:
 * - `since()`: the `since` for the next hello, or null;
 * - `epoch()`: the `epoch` that `since` belongs to, or null;
 * - `resume()`: the last welcome's `resume` secret, or null;
 * - `token()`: (async) the token for this hello in token mode, or null
 *   (then the hello carries our name instead: the token names us);
 * - `canRefresh()`: whether a new token can be had (the page's hook),
 *   so that an expired one means reconnecting, not stopping;
 * - `receive(data)`: a frame from the server;
 * - `lost()`: the socket closed (whatever happens next);
 * - `joinFailed(text)`: the first connection of the session closed before
 *   it was welcomed;
 * - `phaseChanged()`: the phase changed here;
 * - `displayChanged()`: `display` changed: draw it if the room is in view.
 * `display` is `{state, banner}`: `state` "online", "reconnecting" or
 * "offline"; `banner` null or `{text, action}` (`action`: the button's
 * label, or null for none; the button calls `retryNow()`).
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
  display = { state: "online", banner: null };

  constructor(session, hooks) {
    this.#session = session;
    this.#hooks = hooks;
  }

  #show(state, banner) {
    this.display = { state: state ?? this.display.state, banner };
    this.#hooks.displayChanged();
  }

  /** A new room session: no retry pending, no banner. */
  reset() {
    this.clearRetry();
    this.welcomed = false;
    this.#attempt = 0;
    this.#ghostSince = 0;
    this.#show("online", null);
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
      this.#show(null, { text: `${this.#reason} ${t("reconnecting")}`.trim(), action: null });
    }
    socket.addEventListener("open", async () => {
      if (socket !== this.socket) return;
      let token = null;
      try {
        token = await this.#hooks.token();
      } catch {
        token = null; // the page's hook failed: the server will say what is missing
      }
      if (socket !== this.socket || socket.readyState !== WebSocket.OPEN) return;
      const hello = { type: "hello", room: this.#session.room };
      if (typeof token === "string" && token !== "") hello.token = token;
      else hello.name = this.#session.name;
      const since = this.#hooks.since();
      if (since !== null) {
        hello.since = since;
        const epoch = this.#hooks.epoch(); // the numbering `since` belongs to
        if (epoch !== null) hello.epoch = epoch;
      }
      // Our place, given back without leave/join; without `since` (a
      // reloaded page) the replay is the room's recent history.
      const resume = this.#hooks.resume();
      if (resume !== null) hello.resume = resume;
      socket.send(JSON.stringify(hello));
    });
    socket.addEventListener("message", (event) => {
      if (socket === this.socket) this.#hooks.receive(event.data);
    });
    socket.addEventListener("close", (event) => {
      if (socket !== this.socket) return;
      this.socket = null;
      this.#closed(event.code, event.reason);
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
    this.#show("online", null);
  }

  #closed(code, reason) {
    const welcomed = this.welcomed;
    this.welcomed = false;
    this.#hooks.lost();
    const phase = this.#session.phase;
    if (phase === "idle" || phase === "stopped") return;
    if (welcomed && tokenExpired(code, reason)) {
      // The page can give us a new token: come back with it (and our resume
      // secret, which takes our place back). Otherwise only a new link can.
      if (this.#hooks.canRefresh()) this.scheduleReconnect(t("tokenRefreshing"));
      else this.stop(t("tokenExpired"));
      return;
    }
    const { retry, text } = describeClose(code, { welcomed });
    if (phase === "joining") {
      this.#hooks.joinFailed(
        code === 1013
          ? t("tryAgainSoon", { reason: text }) // it refused our hello
          : t("couldNotConnect"),
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
    this.#show("reconnecting", this.display.banner);
    this.#hooks.phaseChanged();
    const delay = reconnectDelay(this.#attempt, options);
    this.#attempt += 1;
    const due = Date.now() + delay;
    const tick = () => {
      const seconds = Math.max(1, Math.ceil((due - Date.now()) / 1000));
      this.#show(null, { text: t("retryingIn", { reason, seconds }).trim(), action: t("retryNow") });
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
    this.scheduleReconnect(t("waitingForGhost"), { cap: 4000 });
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
      this.#show("reconnecting", this.display.banner);
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
    this.#hooks.phaseChanged();
    this.#show("offline", { text, action: t("reconnect") });
  }
}
