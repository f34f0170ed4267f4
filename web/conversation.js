// The conversation as the page shows it: the log (messages, join and leave
// lines, notices, day dividers, grouping, scrolling), the "is typing" line,
// the member list and its panel, and the unread count in the tab's title.
// What to show comes from the transcript (transcript.js); this module only
// draws it.
//
// Security: every string from the network reaches the page as text
// (textContent, text nodes) or as the href of a link checked to be http(s)
// (links.js). Nothing is ever parsed as HTML. Every name is shown in its own <bdi>
// (nameElement), so a right-to-left name cannot reorder the text around it.

import { linkParts } from "./links.js";
import { leaveReasonText } from "./protocol.js";

const TYPING_SHOWN_FOR = 5000; // ms a "X is typing" stays without a new one
const GROUP_WINDOW = 5 * 60 * 1000; // messages by one sender within this are grouped
// A message this long (characters, or lines) may be taller than the collapsed
// height (style.css, `.text.collapsed`): it is measured, and folded if so.
const LONG_TEXT = 400;
const LONG_LINES = 8;

const PENDING_STATUS = {
  unavailable: "Not sent yet, retrying…",
  offline: "Not sent yet: waiting for the connection…",
  sending: "Sending…",
};

const NOTICES = {
  gap: "Some messages are missing here.",
  lost: "Some messages sent while you were away could not be recovered.",
  restarted:
    "The server restarted without its history: messages sent while you were away could not be recovered.",
};

const timeFormat = new Intl.DateTimeFormat(undefined, { hour: "numeric", minute: "2-digit" });
const fullFormat = new Intl.DateTimeFormat(undefined, { dateStyle: "full", timeStyle: "medium" });
const dayFormat = new Intl.DateTimeFormat(undefined, {
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

/** Append `text` to `parent` as text nodes, with its links (links.js) as <a>. */
function appendText(parent, text) {
  for (const part of linkParts(text)) {
    if (part.href === undefined) {
      parent.append(document.createTextNode(part.text));
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
  button.textContent = "Show more";
  button.setAttribute("aria-expanded", "false");
  button.setAttribute("aria-controls", body.id);
  button.addEventListener("click", () => {
    const collapsed = body.classList.toggle("collapsed");
    button.textContent = collapsed ? "Show more" : "Show less";
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

/** The log, typing line, members and title of the room `session` is in. */
export class Conversation {
  #session; // {phase, name, room}: read here, changed by app.js
  #ui = {
    log: document.getElementById("log"), // the scroller
    items: document.getElementById("log-items"), // the lines
    jump: document.getElementById("jump"),
    typing: document.getElementById("typing"),
    membersPanel: document.getElementById("members-panel"),
    membersToggle: document.getElementById("members-toggle"),
    membersToggleCount: document.getElementById("members-toggle-count"),
    membersClose: document.getElementById("members-close"),
    memberCount: document.getElementById("member-count"),
    members: document.getElementById("members"),
  };
  #previous = null; // {name, time} of the last message, for grouping
  #lastDay = "";
  #unread = 0;
  #typing = new Map(); // name -> timer
  #atBottom = true; // the log was scrolled to its end when last scrolled
  forceScroll = false; // our own message arrived: scroll to it

  constructor(session) {
    this.#session = session;
    const ui = this.#ui;
    ui.jump.addEventListener("click", () => this.scrollToBottom());
    ui.log.addEventListener("scroll", () => {
      this.#atBottom = this.isNearBottom();
      if (this.#atBottom) ui.jump.hidden = true;
    });
    // The log gets shorter when the message box grows, an error shows
    // under it, or the phone's keyboard opens: keep its last line in view.
    new ResizeObserver(() => {
      if (this.#atBottom) ui.log.scrollTop = ui.log.scrollHeight;
    }).observe(ui.log);
    ui.membersToggle.addEventListener("click", () => {
      const open = !ui.membersPanel.classList.contains("open");
      this.setMembersOpen(open);
      if (open && getComputedStyle(ui.membersClose).display !== "none") ui.membersClose.focus();
    });
    ui.membersClose.addEventListener("click", () => {
      this.setMembersOpen(false);
      ui.membersToggle.focus();
    });
    // On phones the member sheet closes with a tap anywhere outside it.
    document.addEventListener("click", (event) => {
      if (!ui.membersPanel.classList.contains("open")) return;
      if (ui.membersPanel.contains(event.target) || ui.membersToggle.contains(event.target)) return;
      this.setMembersOpen(false);
    });
    document.addEventListener("keydown", (event) => {
      if (event.key === "Escape" && ui.membersPanel.classList.contains("open")) {
        this.setMembersOpen(false);
        ui.membersToggle.focus();
      }
    });
  }

  /** Start a new room session: an empty log, no members, nothing unread. */
  reset() {
    this.clearTyping();
    this.#ui.items.replaceChildren();
    this.#previous = null;
    this.#lastDay = "";
    this.#unread = 0;
    this.renderMembers([]);
    this.#ui.jump.hidden = true;
  }

  // -------------------------------------------------------------------------
  // The log

  isNearBottom() {
    const log = this.#ui.log;
    return log.scrollHeight - log.scrollTop - log.clientHeight < 64;
  }

  scrollToBottom() {
    this.#ui.log.scrollTop = this.#ui.log.scrollHeight;
    this.#atBottom = true;
    this.#ui.jump.hidden = true;
  }

  /**
   * The log grew by a frame's worth of events: follow it if it was at the
   * bottom before (`stick`) or our own message arrived, else offer a jump.
   */
  grew(stick) {
    if (stick || this.forceScroll) this.scrollToBottom();
    else this.#ui.jump.hidden = false;
    this.forceScroll = false;
  }

  /**
   * Add a stored event's line (or a divider, a notice) to the log: after
   * every stored one, before our messages not sent yet, which stay last.
   */
  #append(item) {
    this.#ui.items.insertBefore(item, this.#ui.items.querySelector(":scope > .pending"));
  }

  #pendingItem(ref) {
    for (const item of this.#ui.items.querySelectorAll(":scope > .pending")) {
      if (item.dataset.ref === ref) return item;
    }
    return null;
  }

  /** Whether the stored event `id` has its line in the log. */
  shows(id) {
    for (const item of this.#ui.items.querySelectorAll(":scope > [data-id]")) {
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
      shown.querySelector(".status").textContent = PENDING_STATUS[why];
      return;
    }
    const item = document.createElement("li");
    item.className = "msg own pending";
    item.dataset.ref = ref;
    const meta = document.createElement("div");
    meta.className = "meta";
    const status = document.createElement("span");
    status.className = "status";
    status.textContent = PENDING_STATUS[why];
    meta.append(nameElement(this.#session.name, "sender"), status);
    const body = document.createElement("p");
    body.className = "text";
    appendText(body, text);
    item.append(meta, body);
    this.#ui.items.append(item);
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
    if (key === today.toDateString()) label = "Today";
    else if (key === yesterday.toDateString()) label = "Yesterday";
    const item = document.createElement("li");
    item.className = "day";
    item.textContent = label;
    this.#append(item);
  }

  /**
   * Show a `message` event. `own`: we sent it; `initial`: it came with the
   * first history replay, so it never counts as unread.
   */
  message(event, { own, initial }) {
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
    appendText(body, text);
    item.append(meta, body);
    this.#append(item);
    foldIfLong(item, body, text);

    if (!own && !initial && document.hidden) {
      this.#unread += 1;
      this.updateTitle();
    }
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
      if (you === "back") text.textContent = "You are back";
      else if (you === "joined") text.textContent = `You joined #${this.#session.room}`;
      else text.append(nameElement(name), " joined");
    } else {
      text.append(nameElement(name), ` left${leaveReasonText(event.reason)}`);
    }
    item.append(text, " ", timeElement(date, event.ts));
    this.#append(item);
  }

  /** A line saying events are missing: `kind` is a transcript notice ("gap", "lost", "restarted"). */
  notice(kind) {
    this.#previous = null;
    const item = document.createElement("li");
    item.className = "notice";
    item.textContent = NOTICES[kind];
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
    const line = this.#ui.typing;
    const names = [...this.#typing.keys()].map((name) => nameElement(name));
    if (names.length === 1) line.replaceChildren(names[0], " is typing…");
    else if (names.length === 2) {
      line.replaceChildren(names[0], " and ", names[1], " are typing…");
    } else if (names.length > 2) line.replaceChildren("Several people are typing…");
    else line.replaceChildren();
  }

  // -------------------------------------------------------------------------
  // Members panel (a sheet on phones, a column on wide screens)

  renderMembers(members) {
    const me = this.#session.name;
    const sorted = [...members].sort((a, b) => {
      if (a === me) return -1;
      if (b === me) return 1;
      return a.localeCompare(b, undefined, { sensitivity: "base" });
    });
    this.#ui.members.replaceChildren(
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
          you.textContent = "(you)";
          item.append(" ", you);
        }
        return item;
      }),
    );
    const count = String(sorted.length);
    this.#ui.memberCount.textContent = count;
    this.#ui.membersToggleCount.textContent = count;
  }

  setMembersOpen(open) {
    this.#ui.membersPanel.classList.toggle("open", open);
    this.#ui.membersToggle.setAttribute("aria-expanded", String(open));
  }

  // -------------------------------------------------------------------------
  // The tab's title

  /** The person looked at the tab: nothing is unread any more. */
  seen() {
    this.#unread = 0;
    this.updateTitle();
  }

  updateTitle() {
    if (this.#session.phase === "idle") {
      document.title = "trio-chat";
      return;
    }
    const unread = this.#unread > 0 ? `(${this.#unread}) ` : "";
    document.title = `${unread}#${this.#session.room} · trio-chat`;
  }
}
