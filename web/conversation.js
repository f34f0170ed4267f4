// The conversation of one room as the page shows it: the log (messages,
// join and leave lines, notices, day dividers, grouping, scrolling), the "is
// typing" line and the member list. There is one Conversation per joined
// room, each with its own list of lines; the one in view (`show()`) has its
// lines in the log, and draws the typing line and the members. What to show
// comes from the transcript (transcript.js); this module only draws it.
//
// Security: every string from the network reaches the page as text
// (textContent, text nodes) or as the href of a link checked to be http(s)
// (links.js). Nothing is ever parsed as HTML. Every name is shown in its own <bdi>
// (nameElement), so a right-to-left name cannot reorder the text around it.

import { locale, markup, parts, t } from "./i18n.js";
import { linkParts } from "./links.js";
import { mentionParts } from "./mentions.js";
import { leaveReasonText } from "./protocol.js";

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

ui.jump.addEventListener("click", () => inView?.scrollToBottom());
ui.log.addEventListener("scroll", () => {
  if (inView === null) return;
  inView.atBottom = inView.isNearBottom();
  if (inView.atBottom) ui.jump.hidden = true;
});
// The log gets shorter when the message box grows, an error shows under it,
// or the phone's keyboard opens: keep its last line in view.
new ResizeObserver(() => {
  if (inView?.atBottom) ui.log.scrollTop = ui.log.scrollHeight;
}).observe(ui.log);

/** The log, typing line and members of one joined room (`session`: {phase, name, room}). */
export class Conversation {
  #session; // read here, changed by app.js
  #items = document.createElement("ol"); // the lines
  #previous = null; // {name, time} of the last message, for grouping
  #lastDay = "";
  #typing = new Map(); // name -> timer
  #members = [];
  #scrollTop = null; // where the log was when another room came into view
  #jumpShown = false;
  atBottom = true; // the log was scrolled to its end when last scrolled
  forceScroll = false; // our own message arrived: scroll to it

  constructor(session) {
    this.#session = session;
    this.#items.className = "log-items";
  }

  get shown() {
    return inView === this;
  }

  /** Bring this room's conversation into view (and take the last one's out). */
  show() {
    if (inView === this) return;
    inView?.hide();
    inView = this;
    ui.log.replaceChildren(this.#items);
    if (this.#scrollTop === null || this.atBottom) ui.log.scrollTop = ui.log.scrollHeight;
    else ui.log.scrollTop = this.#scrollTop;
    ui.jump.hidden = !this.#jumpShown;
    this.#renderTyping();
    this.renderMembers(this.#members);
  }

  hide() {
    if (inView !== this) return;
    this.#scrollTop = ui.log.scrollTop;
    this.#jumpShown = !ui.jump.hidden;
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
    this.atBottom = true;
    this.#jumpShown = false;
    if (!this.shown) return;
    ui.log.scrollTop = ui.log.scrollHeight;
    ui.jump.hidden = true;
  }

  /**
   * The log grew by a frame's worth of events: follow it if it was at the
   * bottom before (`stick`) or our own message arrived, else offer a jump.
   */
  grew(stick) {
    if (stick || this.forceScroll) this.scrollToBottom();
    else {
      this.#jumpShown = true;
      if (this.shown) ui.jump.hidden = false;
    }
    this.forceScroll = false;
  }

  /**
   * Add a stored event's line (or a divider, a notice) to the log: after
   * every stored one, before our messages not sent yet, which stay last.
   */
  #append(item) {
    this.#items.insertBefore(item, this.#items.querySelector(":scope > .pending"));
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

  /**
   * Our message sent with `ref` is no longer pending (delivered, or given
   * back); returns whether it was shown as pending.
   */
  unpend(ref) {
    const item = this.#pendingItem(ref);
    item?.remove();
    return item !== null;
  }

  #dayDivider(date) {
    const key = date.toDateString();
    if (key === this.#lastDay) return;
    this.#lastDay = key;
    this.#previous = null;
    const today = new Date();
    const yesterday = new Date(today.getFullYear(), today.getMonth(), today.getDate() - 1);
    let label = dayFormat.format(date);
    if (key === today.toDateString()) label = t("today");
    else if (key === yesterday.toDateString()) label = t("yesterday");
    const item = document.createElement("li");
    item.className = "day";
    item.textContent = label;
    this.#append(item);
  }

  /** Show a `message` event (`own`: we sent it). */
  message(event, { own }) {
    const name = nameOf(event);
    const text = typeof event.text === "string" ? event.text : "";
    this.stopTyping(name);
    const date = eventDate(event);
    this.#dayDivider(date);

    const item = document.createElement("li");
    item.className = own ? "msg own" : "msg";
    item.dataset.id = String(event.id);
    item.style.setProperty("--hue", String(hueOf(name)));
    const previous = this.#previous;
    if (previous && previous.name === name && date - previous.time < GROUP_WINDOW) {
      item.classList.add("continued");
    }
    this.#previous = { name, time: date };

    const meta = document.createElement("div");
    meta.className = "meta";
    meta.append(nameElement(name, "sender"), timeElement(date, event.ts));
    const body = document.createElement("p");
    body.className = "text";
    appendText(body, text, this.#members, this.#session.name);
    item.append(meta, body);
    this.#append(item);
    foldIfLong(item, body, text);
  }

  /**
   * Show a `join` or `leave` event. `you`: null, or for our own join
   * "joined" (first connection) or "back" (a resumed one).
   */
  presence(event, { you }) {
    const name = nameOf(event);
    const date = eventDate(event);
    this.#dayDivider(date);
    this.#previous = null;
    const item = document.createElement("li");
    item.className = `system ${event.type}`;
    item.dataset.id = String(event.id);
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
    this.#append(item);
  }

  /** A line saying events are missing: `kind` is a transcript notice ("gap", "lost", "restarted"). */
  notice(kind) {
    this.#previous = null;
    const item = document.createElement("li");
    item.className = "notice";
    item.textContent = t(NOTICES[kind]);
    this.#append(item);
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
