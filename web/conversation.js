// The conversation of one room as the page shows it: the log (messages,
// join and leave lines, notices, day dividers, grouping, scrolling), the "is
// typing" line and the member list. There is one Conversation per joined
// room, each with its own list of lines; the one in view (`show()`) has its
// lines in the log, and draws the typing line and the members. What to show
// comes from the transcript (transcript.js); which stretch of the log is in
// the DOM, from the scrollback window (scrollback.js): a few hundred lines
// around what is on screen, older pages fetched at the top, the newest drawn
// again on a jump. This module only draws, keeping the line the person reads
// where it is on screen while lines come and go above it.
//
// Security: every string from the network reaches the page as text
// (textContent, text nodes) or as the href of a link checked to be http(s)
// (links.js). Nothing is ever parsed as HTML. Every name is shown in its own <bdi>
// (nameElement), so a right-to-left name cannot reorder the text around it.

import { locale, markup, parts, t } from "./i18n.js";
import { linkParts } from "./links.js";
import { mentionParts } from "./mentions.js";
import { leaveReasonText } from "./protocol.js";
import { Scrollback } from "./scrollback.js";

const TYPING_SHOWN_FOR = 5000; // ms a "X is typing" stays without a new one
const GROUP_WINDOW = 5 * 60 * 1000; // messages by one sender within this are grouped
// A message this long (characters, or lines) may be taller than the collapsed
// height (style.css, `.text.collapsed`): it is measured, and folded if so.
const LONG_TEXT = 400;
const LONG_LINES = 8;

const PENDING_STATUS = {
  unavailable: "pendingUnavailable",
  offline: "pendingOffline",
  sending: "pendingSending",
};

const NOTICES = { gap: "noticeGap", lost: "noticeLost", restarted: "noticeRestarted" };

// Times and dates in the page's locale (i18n.js: the browser's language).
const timeFormat = new Intl.DateTimeFormat(locale, { hour: "numeric", minute: "2-digit" });
const fullFormat = new Intl.DateTimeFormat(locale, { dateStyle: "full", timeStyle: "medium" });
const dayFormat = new Intl.DateTimeFormat(locale, {
  weekday: "long",
  month: "long",
  day: "numeric",
});

/** The sender of a stored event as shown ("?" when it has none). */
export function nameOf(event) {
  return typeof event.name === "string" ? event.name : "?";
}

/**
 * A name as text in a <bdi>: isolated from the text around it, so that a
 * right-to-left name (Arabic, Hebrew) cannot move the words or digits next to
 * it, whatever direction the page has.
 */
function nameElement(name, className = "") {
  const element = document.createElement("bdi");
  if (className !== "") element.className = className;
  element.textContent = name;
  return element;
}

/** A stable hue for a name, so each person keeps a colour. */
function hueOf(name) {
  let hash = 0;
  for (const char of name) hash = (hash * 31 + char.codePointAt(0)) >>> 0;
  return hash % 360;
}

/**
 * Append `text` to `parent` as text nodes, with its links (links.js) as <a>
 * and its mentions of `members` (mentions.js) highlighted; those of `me`
 * stand out more.
 */
function appendText(parent, text, members = [], me = "") {
  for (const part of linkParts(text)) {
    if (part.href === undefined) {
      for (const piece of mentionParts(part.text, members)) {
        if (piece.mention === undefined) {
          parent.append(document.createTextNode(piece.text));
          continue;
        }
        const mention = document.createElement("span");
        mention.className = piece.mention === me ? "mention me" : "mention";
        mention.textContent = piece.text;
        parent.append(mention);
      }
      continue;
    }
    const link = document.createElement("a");
    link.href = part.href;
    link.textContent = part.text;
    link.target = "_blank";
    link.rel = "noopener noreferrer nofollow ugc";
    parent.append(link);
  }
}

let textCount = 0; // for the ids that "Show more" buttons point at

/**
 * The message's text bubble `body`, in the log inside `item`: fold it to
 * the collapsed height if it is taller, with a "Show more" / "Show less"
 * button (aria-expanded says which) after it.
 */
function foldIfLong(item, body, text) {
  let lines = 1;
  for (const char of text) if (char === "\n") lines += 1;
  if (text.length < LONG_TEXT && lines < LONG_LINES) return;
  body.classList.add("collapsed");
  if (body.scrollHeight <= body.clientHeight + 1) {
    body.classList.remove("collapsed"); // long, yet not taller than the fold
    return;
  }
  textCount += 1;
  body.id = `text-${textCount}`;
  const button = document.createElement("button");
  button.type = "button";
  button.className = "more";
  button.textContent = t("showMore");
  button.setAttribute("aria-expanded", "false");
  button.setAttribute("aria-controls", body.id);
  button.addEventListener("click", () => {
    const collapsed = body.classList.toggle("collapsed");
    button.textContent = collapsed ? t("showMore") : t("showLess");
    button.setAttribute("aria-expanded", String(!collapsed));
  });
  item.append(button);
}

function eventDate(event) {
  const date = new Date(typeof event.ts === "string" ? event.ts : NaN);
  return Number.isNaN(date.getTime()) ? new Date() : date;
}

function timeElement(date, ts) {
  const time = document.createElement("time");
  if (typeof ts === "string") time.dateTime = ts;
  time.textContent = timeFormat.format(date);
  time.title = fullFormat.format(date);
  return time;
}

/** A day divider: "Today", "Yesterday" or the date. */
function dayItem(date) {
  const key = date.toDateString();
  const today = new Date();
  const yesterday = new Date(today.getFullYear(), today.getMonth(), today.getDate() - 1);
  let label = dayFormat.format(date);
  if (key === today.toDateString()) label = t("today");
  else if (key === yesterday.toDateString()) label = t("yesterday");
  const item = document.createElement("li");
  item.className = "day";
  item.dataset.day = key;
  item.textContent = label;
  return item;
}

// The parts of the page every room's conversation shares: drawn by the one in view.
const ui = {
  log: document.getElementById("log"), // the scroller; its list is the room in view's
  jump: document.getElementById("jump"),
  typing: document.getElementById("typing"),
  membersPanel: document.getElementById("members-panel"),
  membersToggle: document.getElementById("members-toggle"),
  membersToggleCount: document.getElementById("members-toggle-count"),
  membersClose: document.getElementById("members-close"),
  memberCount: document.getElementById("member-count"),
  members: document.getElementById("members"),
};

let inView = null; // the Conversation shown

/**
 * A side panel that is a sheet on phones (members, rooms): its toggle opens
 * and closes it, its close button and Escape close it, and so does a tap
 * outside it. `onOpen(open)` runs on every change.
 */
export class Sheet {
  #panel;
  #toggle;
  #close;

  constructor(panel, toggle, close) {
    this.#panel = panel;
    this.#toggle = toggle;
    this.#close = close;
    toggle.addEventListener("click", () => {
      const open = !this.isOpen;
      this.setOpen(open);
      if (open && getComputedStyle(close).display !== "none") close.focus();
    });
    close.addEventListener("click", () => {
      this.setOpen(false);
      toggle.focus();
    });
    document.addEventListener("click", (event) => {
      if (!this.isOpen) return;
      if (panel.contains(event.target) || toggle.contains(event.target)) return;
      this.setOpen(false);
    });
    document.addEventListener("keydown", (event) => {
      if (event.key === "Escape" && this.isOpen) {
        this.setOpen(false);
        toggle.focus();
      }
    });
  }

  get isOpen() {
    return this.#panel.classList.contains("open");
  }

  setOpen(open) {
    this.#panel.classList.toggle("open", open);
    this.#toggle.setAttribute("aria-expanded", String(open));
  }
}

export const membersSheet = new Sheet(ui.membersPanel, ui.membersToggle, ui.membersClose);

ui.jump.addEventListener("click", () => inView?.toNewest());
ui.log.addEventListener("scroll", () => inView?.scrolled());
// The log gets shorter when the message box grows, an error shows under it,
// or the phone's keyboard opens: keep its last line in view.
new ResizeObserver(() => {
  if (inView?.atBottom) ui.log.scrollTop = ui.log.scrollHeight;
}).observe(ui.log);

const NEAR_EDGE = 400; // px from the top (or bottom) of the log where the next page is fetched

/**
 * The log, typing line and members of one joined room (`session`: {phase,
 * name, room}). The log holds a window of the room's stored events
 * (scrollback.js decides which); `hooks.history(frame)` sends a `history`
 * frame and says whether it went out; `hooks.prefix` makes its refs.
 */
export class Conversation {
  #session; // read here, changed by app.js
  #hooks;
  #model; // the window (scrollback.js)
  #status = document.createElement("p"); // above the lines: loading, or the beginning
  #items = document.createElement("ol"); // the lines
  #tail = { day: "", previous: null }; // the last line's day and message, for what follows it
  #typing = new Map(); // name -> timer
  #members = [];
  #scrollTop = null; // where the log was when another room came into view
  #jumpShown = false;
  #frameStick = null; // whether the log was at the bottom when the frame being handled came
  atBottom = true; // the log was scrolled to its end when last scrolled
  forceScroll = false; // our own message arrived: scroll to it

  constructor(session, hooks) {
    this.#session = session;
    this.#hooks = hooks;
    this.#model = new Scrollback(hooks.prefix);
    this.#items.className = "log-items";
    this.#status.className = "log-status";
    this.#status.setAttribute("role", "status");
  }

  get shown() {
    return inView === this;
  }

  /** Bring this room's conversation into view (and take the last one's out). */
  show() {
    if (inView === this) return;
    inView?.hide();
    inView = this;
    ui.log.replaceChildren(this.#status, this.#items);
    if (this.#scrollTop === null || this.atBottom) ui.log.scrollTop = ui.log.scrollHeight;
    else ui.log.scrollTop = this.#scrollTop;
    this.#renderJump();
    this.#renderTyping();
    this.renderMembers(this.#members);
    this.#fillView();
  }

  hide() {
    if (inView !== this) return;
    this.#scrollTop = ui.log.scrollTop;
    inView = null;
  }

  // -------------------------------------------------------------------------
  // The log

  isNearBottom() {
    if (!this.shown) return this.atBottom;
    const log = ui.log;
    return log.scrollHeight - log.scrollTop - log.clientHeight < 64;
  }

  scrollToBottom() {
    if (!this.#model.following) {
      this.#drawNewest();
      return;
    }
    this.atBottom = true;
    this.#jumpShown = false;
    this.#dropOldest(this.#model.trimOldest()); // a room not in view too
    if (!this.shown) return;
    ui.log.scrollTop = ui.log.scrollHeight;
    ui.jump.hidden = true;
  }

  /** The jump button: to the newest message, drawn again if it was dropped. */
  toNewest() {
    this.scrollToBottom();
    ui.log.focus({ preventScroll: true });
  }

  /**
   * A frame from the server is being handled: its events are appended as
   * if the log were where it is now. Returns whether it is at the bottom.
   */
  startFrame() {
    this.#frameStick = this.isNearBottom();
    return this.#frameStick;
  }

  endFrame() {
    this.#frameStick = null;
  }

  /**
   * The log grew by a frame's worth of events: follow it if it was at the
   * bottom before (`stick`) or our own message arrived, else offer a jump.
   */
  grew(stick) {
    if (stick || this.forceScroll) this.scrollToBottom();
    else {
      this.#jumpShown = true;
      this.#renderJump();
    }
    this.forceScroll = false;
    this.#fillView();
  }

  /**
   * A log too short to scroll gives the reader no top to scroll to: page
   * back at once, and again after each page, until the lines fill the view
   * or the room's history begins (then the log says so).
   */
  #fillView() {
    if (this.shown && ui.log.scrollHeight <= ui.log.clientHeight) this.#loadOlder();
  }

  /** The person scrolled the log (or the page did). */
  scrolled() {
    const log = ui.log;
    this.atBottom = this.isNearBottom();
    if (this.atBottom && this.#model.following) {
      this.#jumpShown = false;
      ui.jump.hidden = true;
      this.#dropOldest(this.#model.trimOldest());
      return;
    }
    if (log.scrollTop < NEAR_EDGE) this.#loadOlder();
    else if (log.scrollHeight - log.scrollTop - log.clientHeight < NEAR_EDGE) this.#loadNewer();
  }

  #loadOlder() {
    const frame = this.#model.older();
    if (frame !== null && !this.#hooks.history(frame)) this.#model.cancel();
    this.#keepInPlace(() => this.#renderStatus());
  }

  #loadNewer() {
    const next = this.#model.newer();
    if (next === null) return;
    if (next.jump) this.#drawNewest();
    else if (next.request) {
      if (!this.#hooks.history(next.request)) this.#model.cancel();
    } else this.#appendEntries(next.append, next.dropOldest);
  }

  /** A `history` event: returns whether it answered our request. */
  page(event) {
    const answer = this.#model.page(event, this.#session.name);
    if (answer === null) return false;
    if (answer.older) {
      this.#keepInPlace(() => {
        this.#prepend(answer.entries);
        this.#dropNewest(answer.dropNewest);
        this.#renderStatus();
      });
      if (answer.dropNewest > 0) {
        this.#jumpShown = true;
        this.#renderJump();
      }
    } else if (answer.jump) this.#drawNewest();
    else this.#appendEntries(answer.entries, answer.dropOldest);
    this.#renderStatus();
    this.#fillView();
    return true;
  }

  /** An `error` answered `ref`: returns whether it was our page request (then forgotten). */
  historyFailed(ref) {
    const ours = this.#model.failed(ref);
    if (ours) this.#renderStatus();
    return ours;
  }

  /** The connection dropped: a page on its way will not come. */
  cancelHistory() {
    this.#model.cancel();
    this.#renderStatus();
  }

  /** Entries in memory, for tests and measurements: `{lines, held}`. */
  get window() {
    return { ids: this.#model.ids, held: this.#model.held, following: this.#model.following };
  }

  #renderStatus() {
    const model = this.#model;
    let text = "";
    if (model.loading === "older") text = t("loadingOlder");
    else if (model.atBeginning) text = t("historyBeginning");
    if (this.#status.textContent !== text) this.#status.textContent = text;
    this.#status.classList.toggle("loading", model.loading === "older");
  }

  #renderJump() {
    if (!this.shown) return;
    const label = t(this.#model.following ? "newMessages" : "jumpToNewest");
    if (ui.jump.textContent !== label) ui.jump.textContent = label;
    ui.jump.hidden = !this.#jumpShown;
  }

  /**
   * Change the lines above or below the view without moving what the
   * person reads: the first line in view stays where it was on screen.
   */
  #keepInPlace(change) {
    if (!this.shown) {
      change();
      return;
    }
    const top = ui.log.getBoundingClientRect().top;
    let anchor = null;
    // A line of a stored event: dividers may be redrawn.
    for (const item of this.#items.querySelectorAll(":scope > [data-id]")) {
      if (item.getBoundingClientRect().bottom > top) {
        anchor = item;
        break;
      }
    }
    const before = anchor?.getBoundingClientRect().top ?? 0;
    change();
    if (anchor !== null && anchor.isConnected) {
      ui.log.scrollTop += anchor.getBoundingClientRect().top - before;
    }
    this.atBottom = this.isNearBottom();
  }

  /** Draw the newest entries again (the window did not hold them). */
  #drawNewest() {
    const entries = this.#model.jump();
    for (const item of [...this.#items.children]) if (!item.classList.contains("pending")) item.remove();
    this.#tail = { day: "", previous: null };
    this.#insert(entries, this.#tail, this.#items.querySelector(":scope > .pending"));
    this.#renderStatus();
    this.atBottom = true;
    this.#jumpShown = false;
    if (this.shown) {
      ui.log.scrollTop = ui.log.scrollHeight;
      ui.jump.hidden = true;
    }
  }

  #appendEntries(entries, dropOldest) {
    this.#keepInPlace(() => {
      this.#insert(entries, this.#tail, this.#items.querySelector(":scope > .pending"));
      this.#dropOldest(dropOldest);
    });
    if (this.#model.following && !this.#jumpShown) ui.jump.hidden = true;
    this.#renderJump();
    this.#renderStatus();
  }

  /**
   * A stored event to show (`entry`: {id, event, own, you, notice}, see
   * scrollback.js): its line goes at the end of the log, before our
   * messages not sent yet, unless the log shows older ones far back.
   */
  add(entry) {
    if (entry.event.type === "message") this.stopTyping(nameOf(entry.event));
    const stick = this.#frameStick ?? this.isNearBottom();
    if (!this.#model.add(entry, { stick })) return;
    this.#insert([entry], this.#tail, this.#items.querySelector(":scope > .pending"));
  }

  /** Draw `entries` in order before `next` (null: at the end), continuing from `context`. */
  #insert(entries, context, next) {
    const fragment = document.createDocumentFragment();
    const folds = [];
    for (const entry of entries) fragment.append(...this.#lines(entry, context, folds));
    this.#items.insertBefore(fragment, next);
    for (const [item, body, text] of folds) foldIfLong(item, body, text);
  }

  /** Draw `entries` (older than every line) at the top of the log. */
  #prepend(entries) {
    if (entries.length === 0) return;
    const context = { day: "", previous: null };
    const first = this.#items.firstElementChild;
    this.#insert(entries, context, first);
    // The day divider the old first line had may now repeat the last one's.
    if (first?.classList.contains("day") && first.dataset.day === context.day) first.remove();
  }

  /** Remove the `count` oldest lines of stored events (and what goes with them). */
  #dropOldest(count) {
    if (count <= 0) return;
    const items = this.#items.querySelectorAll(":scope > [data-id]");
    const last = items[Math.min(count, items.length) - 1];
    while (this.#items.firstElementChild !== null) {
      const item = this.#items.firstElementChild;
      item.remove();
      if (item === last) break;
    }
    const first = this.#items.querySelector(":scope > [data-id]");
    const top = this.#items.firstElementChild;
    if (first !== null && !top.classList.contains("day")) {
      this.#items.insertBefore(dayItem(new Date(Number(first.dataset.time))), top);
    }
  }

  /** Remove the `count` newest lines of stored events (our messages not sent yet stay). */
  #dropNewest(count) {
    if (count <= 0) return;
    const items = this.#items.querySelectorAll(":scope > [data-id]");
    const keep = items.length - count - 1;
    const last = keep >= 0 ? items[keep] : null;
    for (const item of [...this.#items.children].reverse()) {
      if (item === last) break;
      if (!item.classList.contains("pending")) item.remove();
    }
    // What is drawn next follows on from the last line left.
    this.#tail = { day: last?.dataset.day ?? "", previous: null };
    if (last?.classList.contains("msg")) {
      this.#tail.previous = { name: last.dataset.name, time: Number(last.dataset.time) };
    }
  }

  /**
   * The lines of one entry: its notice, a day divider if its day is not
   * `context`'s, and its own line. `context` moves on; long texts to fold
   * once in the page go to `folds`.
   */
  #lines(entry, context, folds) {
    const lines = [];
    const { event } = entry;
    if (entry.notice !== null && entry.notice !== undefined) {
      context.previous = null;
      const notice = document.createElement("li");
      notice.className = "notice";
      notice.textContent = t(NOTICES[entry.notice]);
      lines.push(notice);
    }
    const date = eventDate(event);
    const day = date.toDateString();
    if (day !== context.day) {
      context.day = day;
      context.previous = null;
      lines.push(dayItem(date));
    }
    const item =
      event.type === "message"
        ? this.#messageItem(event, entry.own, date, context, folds)
        : this.#presenceItem(event, entry.you, date, context);
    item.dataset.id = String(event.id);
    item.dataset.day = day;
    item.dataset.time = String(date.getTime());
    lines.push(item);
    return lines;
  }

  /**
   * Show our message `text` (sent with `ref`) as not sent yet, saying why
   * (`why`: "unavailable", the server could not take it; "offline", the
   * connection is down; "sending", sent again, not confirmed yet). It goes
   * by itself; it stays at the end of the log until `unpend(ref)`. Showing
   * it again only updates why.
   */
  pendingMessage(ref, text, why) {
    const shown = this.#pendingItem(ref);
    if (shown !== null) {
      shown.querySelector(".status").textContent = t(PENDING_STATUS[why]);
      return;
    }
    if (!this.#model.following) this.#drawNewest(); // ours go at the end of the newest
    const item = document.createElement("li");
    item.className = "msg own pending";
    item.dataset.ref = ref;
    const meta = document.createElement("div");
    meta.className = "meta";
    const status = document.createElement("span");
    status.className = "status";
    status.textContent = t(PENDING_STATUS[why]);
    meta.append(nameElement(this.#session.name, "sender"), status);
    const body = document.createElement("p");
    body.className = "text";
    appendText(body, text, this.#members, this.#session.name);
    item.append(meta, body);
    this.#items.append(item);
    foldIfLong(item, body, text);
  }

  #pendingItem(ref) {
    for (const item of this.#items.querySelectorAll(":scope > .pending")) {
      if (item.dataset.ref === ref) return item;
    }
    return null;
  }

  /** Whether the stored event `id` has its line in the log. */
  shows(id) {
    for (const item of this.#items.querySelectorAll(":scope > [data-id]")) {
      if (item.dataset.id === String(id)) return true;
    }
    return false;
  }

  /**
   * Our message sent with `ref` is no longer pending (delivered, or given
   * back); returns whether it was shown as pending.
   */
  unpend(ref) {
    const item = this.#pendingItem(ref);
    item?.remove();
    return item !== null;
  }

  /** A `message` event's line (`own`: we sent it). */
  #messageItem(event, own, date, context, folds) {
    const name = nameOf(event);
    const text = typeof event.text === "string" ? event.text : "";
    const item = document.createElement("li");
    item.className = own ? "msg own" : "msg";
    item.dataset.name = name;
    item.style.setProperty("--hue", String(hueOf(name)));
    const previous = context.previous;
    if (previous && previous.name === name && date - previous.time < GROUP_WINDOW) {
      item.classList.add("continued");
    }
    context.previous = { name, time: date.getTime() };
    const meta = document.createElement("div");
    meta.className = "meta";
    meta.append(nameElement(name, "sender"), timeElement(date, event.ts));
    const body = document.createElement("p");
    body.className = "text";
    appendText(body, text, this.#members, this.#session.name);
    item.append(meta, body);
    if (text.length >= LONG_TEXT || text.includes("\n")) folds.push([item, body, text]);
    return item;
  }

  /**
   * A `join` or `leave` event's line. `you`: null, or for our own join
   * "joined" (first connection) or "back" (a resumed one).
   */
  #presenceItem(event, you, date, context) {
    const name = nameOf(event);
    context.previous = null;
    const item = document.createElement("li");
    item.className = `system ${event.type}`;
    const text = document.createElement("span");
    if (event.type === "join") {
      if (you === "back") text.textContent = t("youBack");
      else if (you === "joined") text.textContent = t("youJoined", { room: this.#session.room });
      else text.append(...parts("joined", { name: nameElement(name) }));
    } else {
      const reason = leaveReasonText(event.reason);
      text.append(...parts("left", { name: nameElement(name), reason }));
    }
    item.append(text, " ", timeElement(date, event.ts));
    return item;
  }

  // -------------------------------------------------------------------------
  // Who is typing

  /** `name` is typing: say so for a few seconds. */
  typing(name) {
    clearTimeout(this.#typing.get(name));
    this.#typing.set(
      name,
      setTimeout(() => this.stopTyping(name), TYPING_SHOWN_FOR),
    );
    this.#renderTyping();
  }

  stopTyping(name) {
    if (!this.#typing.has(name)) return;
    clearTimeout(this.#typing.get(name));
    this.#typing.delete(name);
    this.#renderTyping();
  }

  clearTyping() {
    for (const timer of this.#typing.values()) clearTimeout(timer);
    this.#typing.clear();
    this.#renderTyping();
  }

  #renderTyping() {
    if (!this.shown) return;
    const line = ui.typing;
    const names = [...this.#typing.keys()].map((name) => nameElement(name));
    if (names.length === 1) line.replaceChildren(...parts("typingOne", { name: names[0] }));
    else if (names.length === 2) {
      line.replaceChildren(...parts("typingTwo", { first: names[0], second: names[1] }));
    } else if (names.length > 2) line.replaceChildren(t("typingMany"));
    else line.replaceChildren();
  }

  // -------------------------------------------------------------------------
  // Members panel (a sheet on phones, a column on wide screens)

  renderMembers(members) {
    this.#members = [...members];
    if (!this.shown) return;
    const me = this.#session.name;
    const sorted = [...members].sort((a, b) => {
      if (a === me) return -1;
      if (b === me) return 1;
      return a.localeCompare(b, locale, { sensitivity: "base" });
    });
    ui.members.replaceChildren(
      ...sorted.map((name) => {
        const item = document.createElement("li");
        item.style.setProperty("--hue", String(hueOf(name)));
        const avatar = document.createElement("span");
        avatar.className = "avatar";
        avatar.setAttribute("aria-hidden", "true");
        avatar.textContent = [...name][0]?.toUpperCase() ?? "?";
        const shown = nameElement(name, "member-name");
        shown.title = name; // long names wrap; the whole name is also a tooltip
        item.append(avatar, shown);
        if (name === me) {
          const you = document.createElement("span");
          you.className = "you";
          you.textContent = t("you");
          item.append(" ", you);
        }
        return item;
      }),
    );
    const count = String(sorted.length);
    ui.memberCount.textContent = count;
    ui.membersToggleCount.textContent = count;
  }
}

/** Put the page's language into its static text: `data-i18n` keys, `[[kbd]]` marks drawn. */
export function translatePage(root = document) {
  for (const element of root.querySelectorAll("[data-i18n]")) {
    const nodes = markup(t(element.dataset.i18n)).map((part) => {
      if (part.text !== undefined) return document.createTextNode(part.text);
      const kbd = document.createElement("kbd");
      kbd.textContent = part.kbd;
      return kbd;
    });
    // An element that holds a badge keeps it after its text.
    const badge = element.querySelector(":scope > .badge");
    element.replaceChildren(...nodes, ...(badge ? [" ", badge] : []));
  }
  for (const element of root.querySelectorAll("[data-i18n-label]")) {
    element.setAttribute("aria-label", t(element.dataset.i18nLabel));
  }
  for (const element of root.querySelectorAll("[data-i18n-placeholder]")) {
    element.setAttribute("placeholder", t(element.dataset.i18nPlaceholder));
  }
}
