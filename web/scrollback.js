// The stretch of a room's log the page keeps in its DOM (the window), and
// the stored events the client keeps in memory for it. Pure (no DOM, no
// socket, no timers): each method takes what happened and says what to draw
// or what to ask the server; conversation.js draws it, app.js sends it.
//
// Theory of operation:
// - Every stored event the transcript shows becomes an entry
//   `{id, event, own, you, notice}`: the event and how its line is drawn
//   (ours; our own join, "joined" or "back"; the notice before it).
// - `window`: the entries whose lines are in the DOM, oldest first, at most
//   `limit` long once a change is over (it may hold one `page` more for a
//   reader scrolled up while live events arrive). `recent`: the newest
//   `limit` entries that arrived (live or in a join's replay), whatever the
//   window shows: what "jump to newest" draws again. Nothing else is kept,
//   so memory stays bounded however long the session.
// - The window follows (ends with the newest entry) or not. While it
//   follows, new entries are appended; a reader at the bottom keeps it at
//   `limit` by dropping the oldest (`trimOldest`); a reader scrolled up lets
//   it grow by a page, then it stops following: new entries go to `recent`
//   only, and the page offers a jump to the newest.
// - Scrolled to the top, `older()` asks for the page before the window's
//   first id (the `history` command); `page()` prepends the answer and drops
//   the newest lines beyond `limit` (the window stops following). `more`
//   false, or an empty page, is the beginning of the room's history.
// - Scrolled to the bottom of a window that does not follow, `newer()`
//   appends what `recent` holds after the window's last id, or asks for the
//   page after it (`before` = last + 1 + page) when `recent` does not reach
//   back that far; once the window ends with the newest entry it follows.
// - One request at a time; its `ref` ties the answer to it, and `cancel()`
//   (the connection dropped) or `jump()` forgets it, so a late answer is
//   ignored. After the server's ids started over (a "restarted" notice),
//   the window no longer pages: its ids belong to two numberings.

export const WINDOW_LIMIT = 300; // lines of stored events in the DOM
export const PAGE_SIZE = 100; // events asked for at a time (the protocol's most)

/** An entry for a stored event from a history page (drawn as any other). */
function pageEntry(event, me) {
  const own = event.type === "message" && event.name === me;
  return { id: event.id, event, own, you: null, notice: null };
}

function isStored(event) {
  return (
    event !== null &&
    typeof event === "object" &&
    Number.isInteger(event.id) &&
    (event.type === "message" || event.type === "join" || event.type === "leave")
  );
}

/** The window of one room's log and the memory behind it (see the module comment). */
export class Scrollback {
  #limit;
  #page;
  #prefix;
  #count = 0;
  #window = [];
  #recent = [];
  #following = true;
  #more = null; // whether older events are retained before the window: null until asked
  #pageable = true;
  #loading = null; // {ref, older, edge}: the request on its way

  /** `prefix` makes our `ref`s; `limit` and `page` as in the module comment. */
  constructor(prefix, { limit = WINDOW_LIMIT, page = PAGE_SIZE } = {}) {
    this.#prefix = prefix;
    this.#limit = limit;
    this.#page = page;
  }

  /** Whether the window ends with the newest entry (live ones are drawn). */
  get following() {
    return this.#following;
  }

  /** "older", "newer" or null: the page on its way. */
  get loading() {
    if (this.#loading === null) return null;
    return this.#loading.older ? "older" : "newer";
  }

  /** Whether the window starts with the room's oldest retained event. */
  get atBeginning() {
    return this.#more === false && this.#pageable;
  }

  /** The ids in the window, oldest first. */
  get ids() {
    return this.#window.map((entry) => entry.id);
  }

  /** Entries held in memory (the window's and `recent`'s, each once). */
  get held() {
    return new Set([...this.#window, ...this.#recent]).size;
  }

  /**
   * A stored event the transcript said to show (`entry`); `stick`: the
   * reader was at the bottom. Returns whether to draw its line now (at the
   * end of the log).
   */
  add(entry, { stick }) {
    if (entry.notice === "restarted") this.#pageable = false;
    this.#recent.push(entry);
    if (this.#recent.length > this.#limit) this.#recent.shift();
    if (!this.#following) return false;
    if (!stick && this.#window.length >= this.#limit + this.#page) {
      this.#following = false;
      return false;
    }
    this.#window.push(entry);
    return true;
  }

  /**
   * The reader is at the bottom of the window (which follows): the number
   * of its oldest lines to drop, to keep it at `limit`.
   */
  trimOldest() {
    return this.#dropOldest();
  }

  #request(before, older, edge) {
    this.#count += 1;
    const ref = `${this.#prefix}-h${this.#count}`;
    this.#loading = { ref, older, edge };
    return { type: "history", before, limit: this.#page, ref };
  }

  /**
   * The reader reached the top: the `history` frame to send for the page
   * before the window, or null (one is on its way, this is the beginning,
   * or the window cannot page).
   */
  older() {
    if (this.#loading !== null || !this.#pageable || this.#more === false) return null;
    if (this.#window.length === 0) return null;
    const first = this.#window[0].id;
    if (first <= 1) {
      this.#more = false; // ids start at 1: nothing is older
      return null;
    }
    return this.#request(first, true, first);
  }

  /**
   * The reader reached the bottom of a window that does not follow. Returns
   * null (nothing to do, or a page is on its way); `{append, dropOldest}`
   * (draw the entries `append` at the end, then drop the `dropOldest`
   * oldest lines); `{request}` (send that `history` frame: `page()` takes
   * the answer); or `{jump: true}` (draw the newest again: `jump()`).
   */
  newer() {
    if (this.#following || this.#loading !== null) return null;
    const recent = this.#recent;
    const last = this.#window.at(-1);
    let next = recent.indexOf(last) + 1; // the first entry of `recent` after the window
    if (next === 0) {
      if (!this.#pageable) return { jump: true };
      if (recent.length > 0 && recent[0].id > last.id + 1) {
        return { request: this.#request(last.id + 1 + this.#page, false, last.id) };
      }
      next = recent.findIndex((entry) => entry.id > last.id);
      if (next < 0) next = recent.length;
    }
    const entries = recent.slice(next, next + this.#page);
    this.#window.push(...entries);
    if (next + entries.length >= recent.length) this.#following = true;
    return { append: entries, dropOldest: this.#dropOldest() };
  }

  #dropOldest() {
    const extra = this.#window.length - this.#limit;
    if (extra <= 0) return 0;
    this.#window.splice(0, extra);
    this.#more = true;
    return extra;
  }

  /**
   * A `history` event (`me`: our name, for drawing ours). Returns null when
   * it is not the answer to the request on its way; else
   * `{older: true, entries, dropNewest, beginning}` (draw `entries` at the
   * top, oldest first, and drop the `dropNewest` newest lines) or
   * `{older: false, entries, dropOldest, jump}` (draw them at the end, drop
   * the `dropOldest` oldest; `jump`: the server had nothing that reaches the
   * newest, draw the newest again).
   */
  page(event, me) {
    const loading = this.#loading;
    if (loading === null || event.ref !== loading.ref) return null;
    this.#loading = null;
    const events = Array.isArray(event.events) ? event.events.filter(isStored) : [];
    events.sort((a, b) => a.id - b.id);
    if (loading.older) {
      const first = this.#window.length > 0 ? this.#window[0].id : loading.edge;
      const edge = Math.min(first, loading.edge);
      const entries = events.filter((e) => e.id < edge).map((e) => pageEntry(e, me));
      this.#window.unshift(...entries);
      this.#more = event.more === true && entries.length > 0;
      let dropNewest = 0;
      if (this.#window.length > this.#limit) {
        dropNewest = this.#window.length - this.#limit;
        this.#window.length = this.#limit;
        this.#following = false;
      }
      return { older: true, entries, dropNewest, beginning: this.#more === false };
    }
    const last = this.#window.length > 0 ? this.#window.at(-1).id : loading.edge;
    const entries = events.filter((e) => e.id > last).map((e) => pageEntry(e, me));
    this.#window.push(...entries);
    const newest = this.#recent.at(-1);
    let jump = false;
    if (newest === undefined || (entries.length > 0 && entries.at(-1).id >= newest.id)) {
      this.#following = true;
      // Live entries that came meanwhile are newer than the page: draw those too.
      const after = this.#recent.filter((entry) => entry.id > this.#window.at(-1).id);
      this.#window.push(...after);
      entries.push(...after);
    } else if (entries.length === 0) jump = true;
    return { older: false, entries, dropOldest: this.#dropOldest(), jump };
  }

  /**
   * An `error` answered `ref`: true (and the request is forgotten, so that
   * scrolling asks again) when it was our page request.
   */
  failed(ref) {
    if (this.#loading === null || this.#loading.ref !== ref) return false;
    this.#loading = null;
    return true;
  }

  /** The connection dropped: the request on its way will not be answered. */
  cancel() {
    this.#loading = null;
  }

  /** Draw the newest again: the entries the window now holds (it follows). */
  jump() {
    this.#loading = null;
    this.#window = [...this.#recent];
    this.#following = true;
    this.#more = null;
    return [...this.#window];
  }
}
