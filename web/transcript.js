// The client's protocol bookkeeping (docs/protocol.md: event ids, `since`,
// the history replay), kept out of the DOM code so that tests can import it
// and feed it events. No DOM, no WebSocket, no timers: each method takes what
// arrived and returns what to do; the page (app.js) does it.
//
// Theory of operation:
// - A room session runs from Join to Leave and has one Transcript.
//   Connections come and go within it; each says `hello` with `since()`
//   (null on the first, then the last id shown) and gets `welcome`
//   (welcome()), then history, then live events (stored(), for every
//   message, join and leave).
// - Stored events carry ids that rise by exactly 1 per room. stored() shows
//   an event only if its id is above the last one shown, so a replay never
//   duplicates; a jump in ids, or a resume the server could not recover
//   (`recovered: false`), comes with a notice, so a loss is never silent.
// - The event whose id is the welcome's `last_id` is our own join: the
//   replay is over. After a resume that recovered everything, our messages
//   still not echoed by then never reached the server (see Pending).
// - The member list is the welcome's snapshot, then changed only by live
//   join/leave events (id > the welcome's `last_id`), never by history.

/**
 * The events in one frame from the server, in order. The server batches
 * whatever is queued for us into one frame, one JSON object per line; blank
 * lines and lines that are not JSON objects are left out (the protocol
 * promises JSON lines, so anything else is not ours to show).
 */
export function splitFrame(data) {
  if (typeof data !== "string") return [];
  const events = [];
  for (const line of data.split("\n")) {
    if (line === "") continue;
    let event;
    try {
      event = JSON.parse(line);
    } catch {
      continue;
    }
    if (event === null || typeof event !== "object" || Array.isArray(event)) continue;
    events.push(event);
  }
  return events;
}

const NO_ID = Object.freeze({ show: false, why: "no id" });
const DUPLICATE = Object.freeze({ show: false, why: "duplicate" });

/** The stored events of one room session, as far as this client has shown them. */
export class Transcript {
  #lastId = null; // highest event id shown
  #joinId = null; // the welcome's last_id on the current connection: our own join
  #welcomed = false; // at least once in this room session
  #resumed = false; // the current connection said hello after an earlier welcome
  #recovered = true; // the current welcome's `recovered` (true when absent)
  #checkRecovery = false; // decide, on the next stored event, how history was lost
  #epoch = null; // the welcome's `epoch`: the numbering `#lastId` belongs to
  #renumbered = false; // the current welcome named another epoch than the last one
  #initial = true; // within the history replay of the session's first welcome
  #members = [];

  /** The `since` for the next hello: the last id shown, or null for none. */
  since() {
    return this.#lastId;
  }

  /** The `epoch` to send beside `since()`: the last welcome's, or null for none. */
  epoch() {
    return this.#epoch;
  }

  /** The members of the room, as the welcome listed them and live events changed them. */
  get members() {
    return [...this.#members];
  }

  /** Whether the current connection resumed an earlier one of this session. */
  get resumed() {
    return this.#resumed;
  }

  /**
   * Take in a `welcome`. Returns `{first, resumed, recovered}`: `first` when
   * it is the session's first (the page enters the chat screen), `resumed`
   * when an earlier connection was welcomed (our hello carried `since()` if
   * anything was shown), `recovered` false when the server said some events
   * after `since` were no longer retained.
   */
  welcome(event) {
    const first = !this.#welcomed;
    this.#welcomed = true;
    this.#joinId = Number.isInteger(event.last_id) ? event.last_id : null;
    this.#members = Array.isArray(event.members)
      ? event.members.filter((name) => typeof name === "string")
      : [];
    this.#resumed = !first;
    const epoch = typeof event.epoch === "string" ? event.epoch : null;
    this.#renumbered = this.#epoch !== null && epoch !== null && epoch !== this.#epoch;
    if (epoch !== null) this.#epoch = epoch;
    this.#recovered = event.recovered !== false;
    this.#checkRecovery = this.#resumed && !this.#recovered;
    return { first, resumed: this.#resumed, recovered: this.#recovered };
  }

  /**
   * Take in a stored event (`message`, `join` or `leave`) and say what to do
   * with it. The transcript counts it as shown, and a live join or leave as
   * changing the member list, before returning:
   * - `{show: false, why}`: do not show it; `why` is "no id" (no integer id,
   *   so not a stored event) or "duplicate" (its id was shown already: the
   *   replay overlapped what we had).
   * - `{show: true, notice, live, ownJoin, initial, pendingLost}`: show it,
   *   after a notice if `notice` is not null: "gap" (ids jumped, events are
   *   missing just before it), "lost" (the resume could not recover all that
   *   was sent while we were away), "restarted" (ids began again: the server
   *   lost its history). `live`: it came after our join, so a join or leave
   *   changed `members`. `ownJoin`: it is our own join, the end of the
   *   replay. `initial`: it came with the session's first history replay
   *   (nothing new to the person). `pendingLost`: our own join after a
   *   resume that recovered everything, so our messages still not echoed
   *   never reached the server.
   */
  stored(event) {
    const id = event.id;
    if (!Number.isInteger(id)) return NO_ID;
    let notice = null;
    if (this.#checkRecovery) {
      this.#checkRecovery = false;
      // Another epoch, or an id at or below the last one shown (a server
      // that sends no epoch): the server lost its history, and its ids began
      // again. Either way the notice stands for the loss, and numbering
      // starts over from this event.
      const restarted = this.#renumbered || (this.#lastId !== null && id <= this.#lastId);
      notice = restarted ? "restarted" : "lost";
      this.#lastId = null;
    }
    if (this.#lastId !== null) {
      if (id <= this.#lastId) return DUPLICATE;
      if (id > this.#lastId + 1) notice = "gap";
    }
    this.#lastId = id;
    const live = this.#joinId !== null && id > this.#joinId;
    const ownJoin = id === this.#joinId;
    const initial = this.#initial;
    if (ownJoin) this.#initial = false;
    if (live && (event.type === "join" || event.type === "leave")) {
      const name = typeof event.name === "string" ? event.name : "?";
      if (event.type === "leave") this.#members = this.#members.filter((member) => member !== name);
      else if (!this.#members.includes(name)) this.#members.push(name);
    }
    const pendingLost = ownJoin && this.#resumed && this.#recovered;
    return { show: true, notice, live, ownJoin, initial, pendingLost };
  }
}

/**
 * Our `say` frames that the server has not echoed yet, by `ref`, so that a
 * message it refused, or one lost with a connection, can go back to the
 * message box. Refs are `<prefix>-<n>`: the prefix (random per page) tells
 * this page's messages from those of another page with the same name.
 */
export class Pending {
  #prefix;
  #count = 0;
  #texts = new Map(); // ref -> text, in the order sent

  constructor(prefix) {
    this.#prefix = prefix;
  }

  /** A new ref for the next `say` (counted even if the frame cannot go out). */
  nextRef() {
    this.#count += 1;
    return `${this.#prefix}-${this.#count}`;
  }

  /** The `say` with this ref went out. */
  sent(ref, text) {
    this.#texts.set(ref, text);
  }

  /** The echo of one of our messages arrived; returns whether this page sent it. */
  echoed(ref) {
    this.#texts.delete(ref);
    return ref.startsWith(`${this.#prefix}-`);
  }

  /** An `error` answered this ref: the text it refused, or undefined if none is pending. */
  refused(ref) {
    const text = this.#texts.get(ref);
    this.#texts.delete(ref);
    return text;
  }

  /** Every text still pending, oldest first, forgotten from now on. */
  takeAll() {
    const texts = [...this.#texts.values()];
    this.#texts.clear();
    return texts;
  }

  get size() {
    return this.#texts.size;
  }

  clear() {
    this.#texts.clear();
  }
}
