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
// - The event whose id is the welcome's `last_id` ends the replay: our own
//   join, or, when the server gave us our place back (`resume`, below),
//   whatever came last; with nothing to replay, the welcome ends it. After
//   a resume that recovered everything, our messages still not echoed by
//   then never reached the server (see Pending).
// - The member list is the welcome's snapshot, then changed only by live
//   join/leave events (id > the welcome's `last_id`), never by history.
// - A welcome may carry `resume`, an opaque secret: the next hello to the
//   room sends it back (with `since` and `epoch`), and the server then gives
//   us our place back without leave or join lines. A server that sends it
//   also takes each `say` ref once per member (a repeat gets the original
//   `message` back, to us only), so sending a message again is safe there.

import { backoffDelay } from "./protocol.js";

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

const MAX_RESUME_LENGTH = 64; // what a server takes in a hello's `resume`
const NO_ID = Object.freeze({ show: false, why: "no id" });
const DUPLICATE = Object.freeze({ show: false, why: "duplicate" });

/** The stored events of one room session, as far as this client has shown them. */
export class Transcript {
  #lastId = null; // highest event id shown
  #joinId = null; // the welcome's last_id on the current connection: the replay's end
  #name = null; // the welcome's name: ours
  #resume = null; // the last welcome's `resume` secret, or null
  #dedupes = false; // the current welcome's server takes a `say` ref once
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

  /** The `resume` to send beside `since()`: the last welcome's secret, or null for none. */
  resume() {
    return this.#resume;
  }

  /**
   * A reloaded page takes its place back: the first hello carries this
   * `resume` secret (kept in sessionStorage), without `since`, so that the
   * replay is the room's recent history for the new, empty log.
   */
  restoreResume(resume) {
    if (typeof resume === "string" && resume.length > 0 && resume.length <= MAX_RESUME_LENGTH) {
      this.#resume = resume;
    }
  }

  /** The server refused a hello: the next one goes without `resume`. */
  forgetResume() {
    this.#resume = null;
  }

  /**
   * Whether the server of the current connection takes each `say` ref once
   * per member (it sent `resume`: both came in the same protocol change), so
   * that a message we cannot tell was stored may be sent again.
   */
  get dedupesRefs() {
    return this.#dedupes;
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
   * Take in a `welcome`. Returns `{first, resumed, recovered, replayOver}`:
   * `first` when it is the session's first (the page enters the chat
   * screen), `resumed` when an earlier connection was welcomed (our hello
   * carried `since()` if anything was shown), `recovered` false when the
   * server said some events after `since` were no longer retained,
   * `replayOver` when there is nothing to replay (the server gave us our
   * place back, and we had seen its last event): what `stored()` says with
   * `replayEnd` is true already.
   */
  welcome(event) {
    const first = !this.#welcomed;
    this.#welcomed = true;
    const since = this.#lastId;
    this.#joinId = Number.isInteger(event.last_id) ? event.last_id : null;
    this.#name = typeof event.name === "string" ? event.name : null;
    const resume = event.resume;
    this.#dedupes = typeof resume === "string";
    this.#resume =
      typeof resume === "string" && resume.length > 0 && resume.length <= MAX_RESUME_LENGTH
        ? resume
        : null;
    this.#members = Array.isArray(event.members)
      ? event.members.filter((name) => typeof name === "string")
      : [];
    this.#resumed = !first;
    const epoch = typeof event.epoch === "string" ? event.epoch : null;
    this.#renumbered = this.#epoch !== null && epoch !== null && epoch !== this.#epoch;
    if (epoch !== null) this.#epoch = epoch;
    this.#recovered = event.recovered !== false;
    this.#checkRecovery = this.#resumed && !this.#recovered;
    const replayOver =
      this.#resumed &&
      (this.#joinId === null ||
        (this.#recovered && !this.#renumbered && since !== null && since >= this.#joinId));
    return { first, resumed: this.#resumed, recovered: this.#recovered, replayOver };
  }

  /**
   * Take in a stored event (`message`, `join` or `leave`) and say what to do
   * with it. The transcript counts it as shown, and a live join or leave as
   * changing the member list, before returning:
   * - `{show: false, why}`: do not show it; `why` is "no id" (no integer id,
   *   so not a stored event) or "duplicate" (its id was shown already: the
   *   replay overlapped what we had).
   * - `{show: true, notice, live, replayEnd, ownJoin, initial, pendingLost}`:
   *   show it, after a notice if `notice` is not null: "gap" (ids jumped,
   *   events are missing just before it), "lost" (the resume could not
   *   recover all that was sent while we were away), "restarted" (ids began
   *   again: the server lost its history). `live`: it came after the
   *   replay, so a join or leave changed `members`. `replayEnd`: the last
   *   event of the replay. `ownJoin`: it is that, and our own join.
   *   `initial`: it came with the session's first history replay (nothing
   *   new to the person). `pendingLost`: the end of the replay after a
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
    const replayEnd = id === this.#joinId;
    const ownJoin =
      replayEnd && event.type === "join" && (this.#name === null || event.name === this.#name);
    const initial = this.#initial;
    if (replayEnd) this.#initial = false;
    if (live && (event.type === "join" || event.type === "leave")) {
      const name = typeof event.name === "string" ? event.name : "?";
      if (event.type === "leave") this.#members = this.#members.filter((member) => member !== name);
      else if (!this.#members.includes(name)) this.#members.push(name);
    }
    const pendingLost = replayEnd && this.#resumed && this.#recovered;
    return { show: true, notice, live, replayEnd, ownJoin, initial, pendingLost };
  }
}

/** Backoff (ms) between resends of messages the server could not take (protocol.js backoffDelay). */
export const RESEND_BACKOFF = Object.freeze({ base: 1000, cap: 10_000 });

/**
 * Our `say` frames that the server has not echoed yet, by `ref`, in the
 * order typed: an outbox. A message it refused goes back to the message box;
 * one it could not take now (`unavailable`: not stored, not delivered), one
 * typed while the connection is down, and one on its way when the
 * connection dropped go (again) by themselves, same text and same ref,
 * until their echo arrives. Refs are `<prefix>-<n>`: the prefix (random per
 * page) tells this page's messages from those of another page with the
 * same name.
 *
 * Theory of operation:
 * - An entry is on its way (sent on the current connection) or waiting
 *   (to go with the next resend). A waiting entry is shown in the log as not
 *   sent yet (`retrying`) until its echo; a message typed while any waits,
 *   or while there is no connection, waits behind them (`held()`/`hold()`),
 *   so ours keep their order.
 * - A waiting message goes again only when nothing says it may have been
 *   stored: the server answered `unavailable`, or it never went out, or the
 *   replay of a new connection ended without its echo. One on its way when
 *   the connection dropped (`disconnected()`) may have been stored: after
 *   the next replay it goes again only if that replay recovered everything
 *   (its echo would be in it) or the server takes a ref once (a repeat gets
 *   the original back); else it goes back to the message box. So a message
 *   is never stored twice, and never dropped while shown as not sent.
 * - Resends after `unavailable` wait out a capped, jittered backoff, one for
 *   all, oldest first. An echo of ours means the server takes messages
 *   again: the backoff starts over. `unavailable` is not counted by the
 *   server as abuse.
 * The page asks `retryAt` when to call `resend(now)`, calls `rejoined()` at
 * the end of each new connection's replay, and sends what they return.
 */
export class Pending {
  #prefix;
  #count = 0;
  // ref -> {text, retrying (shown as not sent yet), waiting (goes with the
  // next resend), unsure (it was on its way when the connection dropped)}
  #entries = new Map();
  #attempt = 0; // backoff rounds since the last echo
  #retryAt = null; // when the waiting messages go again (ms, as `now`), or null

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
    this.#entries.set(ref, { text, retrying: false, waiting: false, unsure: false });
  }

  /**
   * Whether a message waits for a resend: a new one must queue behind it
   * (`hold`), as must one typed while the connection is down.
   */
  held() {
    for (const entry of this.#entries.values()) if (entry.waiting) return true;
    return false;
  }

  /** A new message, not sent: it goes with the next resend, after those waiting. */
  hold(ref, text) {
    this.#entries.set(ref, { text, retrying: true, waiting: true, unsure: false });
  }

  /**
   * The echo of one of our messages arrived (live, in a replay, or again:
   * a server that takes a ref once sends the original back); returns
   * whether this page sent it. Echoes of a ref no longer pending change
   * nothing.
   */
  echoed(ref) {
    if (this.#entries.delete(ref)) this.#attempt = 0;
    return ref.startsWith(`${this.#prefix}-`);
  }

  /**
   * An `error` other than `unavailable` answered this ref: the text it
   * refused (forgotten from now on), or undefined if none is pending.
   */
  refused(ref) {
    const entry = this.#entries.get(ref);
    this.#entries.delete(ref);
    return entry?.text;
  }

  /**
   * `unavailable` answered this ref (at time `now`, ms): it waits for a
   * resend, at `retryAt`. Returns its text, or undefined if none is pending
   * (then nothing changes).
   */
  unavailable(ref, now, random = Math.random) {
    const entry = this.#entries.get(ref);
    if (entry === undefined) return undefined;
    entry.retrying = true;
    entry.waiting = true;
    entry.unsure = false;
    if (this.#retryAt === null) {
      this.#retryAt = now + backoffDelay(this.#attempt, { ...RESEND_BACKOFF, random });
      this.#attempt += 1;
    }
    return entry.text;
  }

  /** When to call `resend()` (ms, as `now`), or null when nothing waits. */
  get retryAt() {
    return this.#retryAt;
  }

  /**
   * The messages to send again now (`[{ref, text}]`, oldest first; send
   * them all, in order, as `say` with that ref), or [] before `retryAt`.
   * They count as sent from now on.
   */
  resend(now) {
    if (this.#retryAt === null || now < this.#retryAt) return [];
    this.#retryAt = null;
    const out = [];
    for (const [ref, entry] of this.#entries) {
      if (entry.waiting && !entry.unsure) out.push(this.#send(ref, entry));
    }
    return out;
  }

  /**
   * The connection dropped: every message on its way waits now, as one that
   * may have been stored, until the next connection's replay says
   * (`rejoined`). Returns every waiting message (`[{ref, text}]`, oldest
   * first), to show as not sent yet.
   */
  disconnected() {
    this.#retryAt = null; // they go after the next replay, not on a timer
    const out = [];
    for (const [ref, entry] of this.#entries) {
      if (!entry.waiting) Object.assign(entry, { retrying: true, waiting: true, unsure: true });
      out.push({ ref, text: entry.text });
    }
    return out;
  }

  /**
   * The replay of a new connection is over (our own join, or the server's
   * last event when it gave us our place back): what it did not echo was not
   * stored before it. `unechoedLost`: the replay recovered every event since
   * the last one shown (Transcript.stored's `pendingLost`); `dedupesRefs`:
   * the server takes each ref once (Transcript's `dedupesRefs`). Returns
   * `{resend, lost}`: `resend`, the waiting messages to send now (as from
   * `resend()`); `lost`, those that may have been stored and cannot safely
   * go again (`[{ref, text}]`, forgotten from now on: give them back).
   */
  rejoined({ unechoedLost, dedupesRefs = false }) {
    this.#retryAt = null;
    const resend = [];
    const lost = [];
    for (const [ref, entry] of this.#entries) {
      if (!entry.waiting) continue; // sent on this connection
      if (entry.unsure && !unechoedLost && !dedupesRefs) {
        lost.push({ ref, text: entry.text });
        this.#entries.delete(ref);
      } else resend.push(this.#send(ref, entry));
    }
    return { resend, lost };
  }

  #send(ref, entry) {
    entry.waiting = false;
    entry.unsure = false;
    return { ref, text: entry.text };
  }

  get size() {
    return this.#entries.size;
  }

  /** A new room session: nothing pending, no backoff. */
  clear() {
    this.#entries.clear();
    this.#attempt = 0;
    this.#retryAt = null;
  }
}
