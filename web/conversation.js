// The conversation as the page shows it: the log (messages, join and leave
// lines, notices, day dividers, grouping, scrolling), the "is typing" line,
// the member list and its panel, and the unread count in the tab's title.
// What to show comes from the transcript (transcript.js); this module only
// draws it.
//
// Security: every string from the network reaches the page as text
// (textContent, text nodes) or as the href of a link checked to be http(s).
// Nothing is ever parsed as HTML. Every name is shown in its own <bdi>
// (nameElement), so a right-to-left name cannot reorder the text around it.

import { leaveReasonText } from "./protocol.js";

const TYPING_SHOWN_FOR = 5000; // ms a "X is typing" stays without a new one
const GROUP_WINDOW = 5 * 60 * 1000; // messages by one sender within this are grouped

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

const URL_PATTERN = /\bhttps?:\/\/[^\s<>"'`]+/giu;
const TRAILING_PUNCTUATION = /[.,;:!?)\]}'"]+$/u;

/** Append `text` to `parent` as text nodes, with http(s) URLs as links. */
function appendText(parent, text) {
  let at = 0;
  for (const match of text.matchAll(URL_PATTERN)) {
    const raw = match[0].replace(TRAILING_PUNCTUATION, "");
    let url = null;
    try {
      url = new URL(raw);
    } catch {
      url = null;
    }
    if (url === null || (url.protocol !== "http:" && url.protocol !== "https:")) continue;
    parent.append(document.createTextNode(text.slice(at, match.index)));
    const link = document.createElement("a");
    link.href = url.href;
    link.textContent = raw;
    link.target = "_blank";
    link.rel = "noopener noreferrer nofollow ugc";
    parent.append(link);
    at = match.index + raw.length;
  }
  parent.append(document.createTextNode(text.slice(at)));
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
    log: document.getElementById("log"),
    jump: document.getElementById("jump"),
    typing: document.getElementById("typing"),
    membersPanel: document.getElementById("members-panel"),
    membersToggle: document.getElementById("members-toggle"),
    membersToggleCount: document.getElementById("members-toggle-count"),
    memberCount: document.getElementById("member-count"),
    members: document.getElementById("members"),
  };
  #previous = null; // {name, time} of the last message, for grouping
  #lastDay = "";
  #unread = 0;
  #typing = new Map(); // name -> timer
  forceScroll = false; // our own message arrived: scroll to it

  constructor(session) {
    this.#session = session;
    const ui = this.#ui;
    ui.jump.addEventListener("click", () => this.scrollToBottom());
    ui.log.addEventListener("scroll", () => {
      if (this.isNearBottom()) ui.jump.hidden = true;
    });
    ui.membersToggle.addEventListener("click", () => {
      this.setMembersOpen(!ui.membersPanel.classList.contains("open"));
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
    this.#ui.log.replaceChildren();
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
    this.#ui.log.insertBefore(item, this.#ui.log.querySelector(":scope > .pending"));
  }

  #pendingItem(ref) {
    for (const item of this.#ui.log.querySelectorAll(":scope > .pending")) {
      if (item.dataset.ref === ref) return item;
    }
    return null;
  }

  /**
   * Show our message `text` (sent with `ref`) as not sent yet: the server
   * could not take it, and it goes again by itself. It stays at the end of
   * the log until `unpend(ref)`. Showing it twice changes nothing.
   */
  pendingMessage(ref, text) {
    if (this.#pendingItem(ref) !== null) return;
    const item = document.createElement("li");
    item.className = "msg own pending";
    item.dataset.ref = ref;
    const meta = document.createElement("div");
    meta.className = "meta";
    const status = document.createElement("span");
    status.className = "status";
    status.textContent = "Not sent yet, retrying…";
    meta.append(nameElement(this.#session.name, "sender"), status);
    const body = document.createElement("p");
    body.className = "text";
    appendText(body, text);
    item.append(meta, body);
    this.#ui.log.append(item);
  }

  /** Our message sent with `ref` is no longer pending (delivered, or given back). */
  unpend(ref) {
    this.#pendingItem(ref)?.remove();
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
        item.append(avatar, nameElement(name, "member-name"));
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
