// The trio-chat browser client (protocol v1, see docs/protocol.md): the entry
// point. It holds the rooms this page has joined, follows each from Join to
// Leave, and hands every event from the server to that room's transcript,
// which says what to show, then to the module that shows it.
//
// Modules, one concern each:
// - transcript.js: event ids, `since`, dedupe of replays, gaps, the member
//   list, our messages not echoed yet and when to send again those the
//   server could not take. Pure (no DOM, no timers), tested on its own.
// - rooms.js: recent rooms, the server's active rooms, what a reload keeps.
//   Pure.
// - mentions.js: which `@name`s in a text are mentions of members. Pure.
// - protocol.js: the protocol's rules and codes as text for people. Pure.
// - i18n.js: every string, in English and Spanish; the page's language. Pure.
// - connection.js: one room's socket, its hello, reconnecting with backoff,
//   and what its status line and banner say.
// - scrollback.js: which stretch of a room's log is in the page, older
//   pages and the newest drawn again, and what is kept in memory. Pure.
// - conversation.js: one room's log, "is typing" line and members.
// - composer.js: the message box and our `typing` frames.
// - sidebar.js: the rooms sidebar.
// - join.js: the join screen.
//
// Theory of operation:
// - A hello binds a connection to one room, so each joined room has its own
//   connection, Transcript, outbox (Pending) and Conversation: a Room. The
//   rooms not in view stay connected, which is what gives their unread
//   counts and mentions; switching rooms only changes which one is drawn
//   (and `#room` in the address bar). Leave closes the room in view (1000:
//   the others see us leave).
// - One room session runs from Join to Leave: one Transcript, many
//   connections. Each connection says `hello` (with `since` = the last id
//   shown, after the first welcome) and the server answers `welcome`, then
//   history, then live events; the transcript decides which stored events
//   to show (never one twice; a loss always with a notice).
// - A message the server could not take (`unavailable`: its backplane is
//   down), one typed while the connection is down, and one on its way when
//   it dropped stay at the end of the log as not sent yet, and go (again),
//   by themselves, with their first ref, when Pending says (one timer per
//   room), or at the end of the next connection's replay; the echo confirms
//   each. A server may send an echo twice (a repeated ref gets the original
//   back): the transcript shows an id once. Leaving forgets them.
// - A welcome's `resume` goes back in the next hello to the room, which
//   then takes our place back: no leave and join lines, and the replay ends
//   with the room's last event instead of our join (Transcript). It is also
//   kept in sessionStorage (rooms.js, encodeSaved) with `since` and `epoch`:
//   a reloaded page (the browser closes its sockets with 1001, which keeps
//   our places for the server's grace period) joins its rooms again with
//   it, and nobody sees us leave or join.
// - `session.phase`, per room: "joining" (first connection of a room
//   session, not welcomed yet), "live", "reconnecting", "stopped" (closed
//   for good; the person may press Reconnect), "idle" (left). app.js moves
//   it in and out of a session; connection.js between live, reconnecting
//   and stopped.
// - Security: strings from the network reach the page only as text, and
//   every name in its own <bdi> (see conversation.js).

import { Composer } from "./composer.js";
import { Connection } from "./connection.js";
import { Conversation, membersSheet, nameOf, translatePage } from "./conversation.js";
import { language, t } from "./i18n.js";
import * as joinScreen from "./join.js";
import { mentions } from "./mentions.js";
import { checkRoom, errorText, roomFromHash, tokenFromHash, tokenName } from "./protocol.js";
import {
  addRecent,
  decodeSaved,
  encodeSaved,
  parseActiveRooms,
  parseRecent,
  sidebar as sidebarLists,
} from "./rooms.js";
import * as sidebar from "./sidebar.js";
import { Pending, Transcript, splitFrame } from "./transcript.js";

const SAVED_KEY = "trio-chat.rooms"; // sessionStorage: what a reload takes back
const RECENT_KEY = "trio-chat.recent"; // localStorage: the person's recent rooms
const NOTIFY_KEY = "trio-chat.notify"; // localStorage: "on" when mentions notify
const ROOMS_REFRESH = 20_000; // ms between two looks at the server's active rooms

const prefix = Math.random().toString(36).slice(2, 8); // our refs, told from another page's
const rooms = new Map(); // room name -> Room, in the order joined
let current = null; // the Room in view
let ourName = ""; // as the server last welcomed us
let activeRooms = []; // /api/rooms, as last read
let recentRooms = parseRecent(readStorage(localStorage, RECENT_KEY));

const ui = {
  connection: document.getElementById("connection"),
  banner: document.getElementById("banner"),
  bannerText: document.getElementById("banner-text"),
  bannerAction: document.getElementById("banner-action"),
};

function readStorage(storage, key) {
  try {
    return storage.getItem(key);
  } catch {
    return null; // storage may be disabled: it is a convenience
  }
}

function writeStorage(storage, key, value) {
  try {
    if (value === null) storage.removeItem(key);
    else storage.setItem(key, value);
  } catch {
    // storage may be full or disabled
  }
}

const composer = new Composer(() => current);

// ---------------------------------------------------------------------------
// Token mode (see the README): a server that requires a signed token gets
// one from the page's address (`#token=…`, taken out of the address bar at
// once, so that it is not bookmarked or shared) or, before every hello,
// from the embedding page's hook `window.trioChatToken` (a function that
// returns a token, or a promise of one), which can hand out fresh ones.

const TOKEN_KEY = "trio-chat.token"; // sessionStorage: this tab's link token, for a reload
const fromHash = tokenFromHash(location.hash);
const linkToken = fromHash.token ?? readStorage(sessionStorage, TOKEN_KEY);
if (fromHash.token !== null) {
  const rest = fromHash.rest === "" ? "" : `#${fromHash.rest}`;
  history.replaceState(null, "", `${location.pathname}${location.search}${rest}`);
  writeStorage(sessionStorage, TOKEN_KEY, fromHash.token);
}

function pageHook() {
  return typeof window.trioChatToken === "function" ? window.trioChatToken : null;
}

/** The token for the next hello (the hook's first), or null in open mode. */
async function currentToken() {
  const hook = pageHook();
  if (hook !== null) {
    const token = await hook();
    if (typeof token === "string" && token !== "") return token;
  }
  return linkToken;
}

async function setUpTokenMode() {
  if (linkToken !== null) joinScreen.useToken(tokenName(linkToken));
  else if (pageHook() !== null) {
    let name = null;
    try {
      name = tokenName(await pageHook()());
    } catch {
      // the hook is asked again at the hello; the welcome names us anyway
    }
    joinScreen.useToken(name);
  }
}

// ---------------------------------------------------------------------------
// One joined room

class Room {
  unread = 0; // messages while another room was in view
  mentions = 0; // mentions of us among them
  hiddenUnread = 0; // messages while in view in a hidden tab
  #resendTimer = 0;

  constructor(room, { show }) {
    this.session = { phase: "joining", name: ourName, room };
    this.transcript = new Transcript();
    this.pending = new Pending(prefix);
    this.conversation = new Conversation(this.session, {
      prefix,
      history: (frame) => this.connection.welcomed && this.connection.send(frame),
    });
    this.showOnWelcome = show; // bring it into view once welcomed
    this.connection = new Connection(this.session, {
      since: () => this.transcript.since(),
      epoch: () => this.transcript.epoch(),
      resume: () => this.transcript.resume(),
      token: () => currentToken(),
      canRefresh: () => pageHook() !== null,
      receive: (data) => this.receive(data),
      lost: () => this.lost(),
      joinFailed: (text) => failJoin(this, null, text),
      phaseChanged: () => {
        if (this === current) composer.update();
      },
      displayChanged: () => {
        if (this === current) renderConnection();
      },
    });
  }

  get name() {
    return this.session.room;
  }

  send(frame) {
    return this.connection.send(frame);
  }

  held(ref, text) {
    this.conversation.pendingMessage(
      ref,
      text,
      this.session.phase === "live" ? "unavailable" : "offline",
    );
    this.conversation.scrollToBottom();
  }

  /** Close for good (Leave, or refused): 1000, no retry, nothing sent again. */
  close() {
    this.session.phase = "idle";
    clearTimeout(this.#resendTimer);
    this.connection.clearRetry();
    this.connection.drop();
    this.conversation.clearTyping();
  }

  // -------------------------------------------------------------------------
  // Events from the server

  receive(data) {
    const stick = this.conversation.startFrame();
    let grew = false;
    for (const event of splitFrame(data)) {
      grew = this.#handle(event) || grew;
      if (this.connection.socket === null) break; // this event ended the connection
    }
    if (grew) this.conversation.grew(stick);
    this.conversation.endFrame();
  }

  /** Handle one event; returns whether the log grew. */
  #handle(event) {
    switch (event.type) {
      case "welcome":
        this.#onWelcome(event);
        return false;
      case "error":
        this.#onError(event);
        return false;
      case "typing":
        if (typeof event.name === "string" && event.name !== this.session.name) {
          this.conversation.typing(event.name);
        }
        return false;
      case "message":
      case "join":
      case "leave":
        return this.#onStored(event);
      case "history":
        this.conversation.page(event);
        return false;
      default:
        return false;
    }
  }

  #onWelcome(event) {
    if (typeof event.name === "string") this.session.name = event.name;
    ourName = this.session.name;
    const { first, replayOver } = this.transcript.welcome(event);
    this.session.phase = "live";
    this.connection.online();
    this.conversation.renderMembers(this.transcript.members);
    if (first) welcomed(this);
    if (this === current) composer.update();
    save();
    if (replayOver) this.#replayed({ unechoedLost: true }); // nothing was missed: nothing to replay
  }

  #onStored(event) {
    const shown = this.transcript.stored(event);
    if (!shown.show) {
      if (shown.why === "duplicate") this.#echoedAgain(event);
      return false;
    }
    const conversation = this.conversation;
    const name = nameOf(event);
    const entry = { id: event.id, event, own: false, you: null, notice: shown.notice };
    if (event.type === "message") {
      const own = name === this.session.name;
      if (own && typeof event.ref === "string" && this.pending.echoed(event.ref)) {
        conversation.unpend(event.ref);
        conversation.forceScroll = true;
      }
      entry.own = own;
      conversation.add(entry);
      if (!own && !shown.initial) this.#arrived(event);
    } else {
      if (shown.ownJoin) entry.you = this.transcript.resumed ? "back" : "joined";
      conversation.add(entry);
      if (shown.live) {
        if (event.type === "leave") conversation.stopTyping(name);
        conversation.renderMembers(this.transcript.members);
      }
    }
    if (shown.replayEnd && this.transcript.resumed) {
      this.#replayed({ unechoedLost: shown.pendingLost });
    }
    return true;
  }

  /** Someone else's new message: count it where the person is not looking. */
  #arrived(event) {
    const text = typeof event.text === "string" ? event.text : "";
    const mentioned = mentions(text, this.session.name, this.transcript.members);
    if (this !== current) {
      this.unread += 1;
      if (mentioned) this.mentions += 1;
      renderSidebar();
    } else if (document.hidden) this.hiddenUnread += 1;
    else return;
    updateTitle();
    if (mentioned && document.hidden) notify(this, nameOf(event), text);
  }

  /**
   * A stored event the log shows already: a replay overlapping what we saw,
   * or the original `message` a server sends back for a ref we used again.
   * If it is ours and still shown as not sent, it was delivered after all.
   */
  #echoedAgain(event) {
    if (event.type !== "message" || typeof event.ref !== "string") return;
    if (nameOf(event) !== this.session.name) return;
    this.pending.echoed(event.ref);
    if (this.conversation.unpend(event.ref) && !this.conversation.shows(event.id)) {
      // Stored in a stretch of the log we never got (after a loss notice):
      // show it rather than let it vanish.
      this.conversation.add({ id: event.id, event, own: true, you: null, notice: null });
    }
  }

  /** The replay of a new connection is over: what it did not echo was not stored. */
  #replayed({ unechoedLost }) {
    const { resend, lost } = this.pending.rejoined({
      unechoedLost,
      dedupesRefs: this.transcript.dedupesRefs,
    });
    for (const { ref, text } of resend) this.conversation.pendingMessage(ref, text, "sending");
    this.#sendAgain(resend);
    if (lost.length > 0) {
      for (const { ref } of lost) this.conversation.unpend(ref);
      if (this === current) {
        composer.restore(lost.map(({ text }) => text).join("\n"));
        composer.showError(t("maybeLost"));
      }
    }
  }

  /** The socket closed: what was on its way waits, shown as not sent yet. */
  lost() {
    this.conversation.clearTyping();
    this.conversation.cancelHistory();
    if (this.session.phase === "idle") return;
    const stick = this.conversation.isNearBottom();
    for (const { ref, text } of this.pending.disconnected()) {
      this.conversation.pendingMessage(ref, text, "offline");
    }
    if (stick) this.conversation.scrollToBottom();
  }

  // -------------------------------------------------------------------------
  // Our messages not confirmed yet, sent again

  #sendAgain(messages) {
    for (const { ref, text } of messages) {
      // On a closed socket nothing goes: it waits again, for the next replay.
      if (!this.connection.send({ type: "say", text, ref })) this.pending.hold(ref, text);
    }
  }

  #scheduleResend() {
    clearTimeout(this.#resendTimer);
    const at = this.pending.retryAt;
    if (at === null) return;
    this.#resendTimer = setTimeout(
      () => {
        if (this.session.phase !== "live" || !this.connection.welcomed) return; // after the next join
        this.#sendAgain(this.pending.resend(Date.now()));
        this.#scheduleResend(); // in case the timer fired a little early
      },
      Math.max(0, at - Date.now()),
    );
  }

  /** `unavailable` answered our message `ref`: show it as not sent yet; it goes again. */
  #onUnavailable(ref) {
    const text = this.pending.unavailable(ref, Date.now());
    if (text === undefined) return false;
    const stick = this.conversation.isNearBottom();
    this.conversation.pendingMessage(ref, text, "unavailable");
    if (stick) this.conversation.scrollToBottom();
    this.#scheduleResend();
    return true;
  }

  #onError(event) {
    const code = typeof event.code === "string" ? event.code : "";
    const text = errorText(code, event.message);
    const connection = this.connection;
    if (!connection.welcomed) {
      // The answer to our hello.
      if (this.session.phase === "joining") {
        failJoin(this, joinScreen.fieldForError(code), text);
      } else if (code === "name_taken") {
        // After a reconnect our previous connection may still be in the room.
        if (!connection.retryAfterGhost()) leaveRoom(this, { field: "name", text });
      } else if (code === "bad_name" || code === "bad_room") {
        leaveRoom(this, { field: joinScreen.fieldForError(code), text });
      } else if (code === "unauthorized" && pageHook() === null) {
        // Our token no longer admits us, and no new one can be had.
        leaveRoom(this, { field: null, text });
      } else {
        if (code === "bad_request") this.transcript.forgetResume(); // it may not take ours
        connection.drop();
        connection.scheduleReconnect(text);
      }
      return;
    }
    if (typeof event.ref === "string") {
      if (this.conversation.historyFailed(event.ref)) return; // scrolling up asks again
      if (code === "unavailable" && this.#onUnavailable(event.ref)) return; // the log says it
      const lost = this.pending.refused(event.ref);
      this.conversation.unpend(event.ref);
      if (lost !== undefined && this === current) composer.restore(lost);
    }
    if (this === current) composer.showError(text);
  }
}

// ---------------------------------------------------------------------------
// Joining, switching and leaving rooms

/** The join screen's form was submitted: the first room. */
function joinFromForm() {
  if (rooms.size > 0) return;
  const form = joinScreen.readForm();
  if (form === null) return;
  ourName = form.name;
  composer.reset();
  joinScreen.showConnecting();
  openRoom(form.room, { show: true });
}

/** Join `room` (a checked name) on a connection of its own. */
function openRoom(room, { show, resume = null }) {
  const opened = new Room(room, { show });
  if (resume !== null) opened.transcript.restoreResume(resume);
  rooms.set(room, opened);
  opened.connection.connect();
  return opened;
}

/** The sidebar's field: join another room, or show it if joined already. */
function joinFromSidebar(typed) {
  const checked = checkRoom(typed);
  if (checked.error) {
    sidebar.setJoinError(checked.error);
    sidebar.focusJoin();
    return;
  }
  sidebar.clearJoin();
  sidebar.roomsSheet.setOpen(false);
  goTo(checked.value);
}

/** Show `room`, joining it first if this page is not in it. */
function goTo(room) {
  const joined = rooms.get(room);
  if (joined === undefined) openRoom(room, { show: true });
  else if (joined.session.phase !== "joining") showRoom(joined);
  else joined.showOnWelcome = true;
}

/** A room's first welcome. */
function welcomed(room) {
  recentRooms = addRecent(recentRooms, room.name);
  writeStorage(localStorage, RECENT_KEY, JSON.stringify(recentRooms));
  if (current === null) joinScreen.showChat(room.session.name);
  if (current === null || room.showOnWelcome) showRoom(room);
  else renderSidebar();
  room.showOnWelcome = false;
  refreshRooms();
}

/** Bring `room` into view. */
function showRoom(room) {
  const changed = current !== room;
  current = room;
  room.unread = 0;
  room.mentions = 0;
  room.conversation.show();
  joinScreen.showRoom(room.name);
  composer.enter(room.name, { focus: changed });
  renderConnection();
  renderSidebar();
  updateTitle();
  save();
}

/** Joining `room` failed before its first welcome: say why where it was asked. */
function failJoin(room, field, text) {
  room.close();
  rooms.delete(room.name);
  if (current === null) {
    if (rooms.size > 0) return; // a reloaded page's other rooms may still come
    joinScreen.showJoinFailed(field, text);
    save();
    return;
  }
  sidebar.setJoinError(text);
  renderSidebar();
  save();
}

/** Leave `room` (the Leave button, or refused on a reconnect: then `error`). */
function leaveRoom(room, error = null) {
  room.close();
  rooms.delete(room.name);
  composer.forget(room.name);
  if (room !== current) {
    if (error !== null) sidebar.setJoinError(error.text);
    renderSidebar();
    save();
    return;
  }
  room.conversation.hide();
  current = null;
  const next = [...rooms.values()].find((other) => other.session.phase !== "joining");
  if (next !== undefined) {
    showRoom(next);
    if (error !== null) sidebar.setJoinError(error.text);
    return;
  }
  // The last room: back to the join screen.
  for (const other of rooms.values()) other.close();
  rooms.clear();
  membersSheet.setOpen(false);
  sidebar.roomsSheet.setOpen(false);
  ui.banner.hidden = true;
  joinScreen.showJoin();
  updateTitle();
  save();
  if (error === null) joinScreen.focusName();
  else if (error.field) joinScreen.setFieldError(error.field, error.text);
  else joinScreen.showStatus(error.text);
}

// ---------------------------------------------------------------------------
// What the page shows beside the conversation

function renderConnection() {
  if (current === null) return;
  const { state, banner } = current.connection.display;
  const labels = { online: "connected", reconnecting: "reconnecting", offline: "disconnected" };
  ui.connection.dataset.state = state;
  ui.connection.textContent = t(labels[state]);
  if (banner === null) {
    ui.banner.hidden = true;
    return;
  }
  ui.bannerText.textContent = banner.text;
  ui.bannerAction.hidden = banner.action === null;
  if (banner.action !== null) ui.bannerAction.textContent = banner.action;
  ui.banner.hidden = false;
}

function renderSidebar() {
  const joined = [...rooms.values()]
    .filter((room) => room.session.phase !== "joining" || room === current)
    .map((room) => ({ name: room.name, unread: room.unread, mentions: room.mentions }));
  sidebar.render(
    sidebarLists({ joined, current: current?.name ?? null, active: activeRooms, recent: recentRooms }),
  );
}

/**
 * The tab's title: the room in view, after a count of what waits for the
 * person: messages there while the tab was hidden, and mentions of us in
 * the other rooms.
 */
function updateTitle() {
  if (current === null) {
    document.title = "trio-chat";
    return;
  }
  let count = current.hiddenUnread;
  for (const room of rooms.values()) if (room !== current) count += room.mentions;
  document.title = `${count > 0 ? `(${count}) ` : ""}#${current.name} · trio-chat`;
}

/** Look at the server's active rooms again (not while we cannot reach it). */
function refreshRooms() {
  if (current === null || current.session.phase !== "live" || document.hidden) return;
  fetch("/api/rooms", { cache: "no-store" })
    .then((response) => (response.ok ? response.json() : null))
    .then((body) => {
      if (body === null) return;
      activeRooms = parseActiveRooms(body);
      renderSidebar();
    })
    .catch(() => {}); // the connection's banner says what is wrong
}

/** Keep what a reload needs to take our places back (sessionStorage: this tab only). */
function save() {
  const joined = [...rooms.values()].filter((room) => room.session.phase !== "joining");
  if (joined.length === 0 && current === null && rooms.size === 0) {
    writeStorage(sessionStorage, SAVED_KEY, null);
    return;
  }
  const saved = encodeSaved({
    name: ourName,
    current: current?.name ?? null,
    rooms: [...rooms.values()].map((room) => ({
      room: room.name,
      since: room.transcript.since(),
      epoch: room.transcript.epoch(),
      resume: room.transcript.resume(),
    })),
  });
  writeStorage(sessionStorage, SAVED_KEY, saved);
}

// ---------------------------------------------------------------------------
// Notifications of mentions (only if the person asked, with a gesture)

const canNotify = typeof Notification === "function";

function notifyOn() {
  return canNotify && Notification.permission === "granted" && readStorage(localStorage, NOTIFY_KEY) === "on";
}

function renderNotify() {
  const blocked = !canNotify || Notification.permission === "denied";
  sidebar.setNotify({ on: notifyOn(), status: blocked ? t("notifyBlocked") : "" });
}

async function toggleNotify() {
  if (notifyOn()) {
    writeStorage(localStorage, NOTIFY_KEY, null);
  } else if (canNotify && Notification.permission !== "denied") {
    // Asked here only: on the person's click.
    const permission =
      Notification.permission === "granted" ? "granted" : await Notification.requestPermission();
    if (permission === "granted") writeStorage(localStorage, NOTIFY_KEY, "on");
  }
  renderNotify();
}

function notify(room, name, text) {
  if (!notifyOn()) return;
  const shown = new Notification(t("mentionedYou", { name, room: room.name }), {
    body: text.length > 200 ? `${text.slice(0, 200)}…` : text,
    tag: `trio-chat-${room.name}`,
    icon: "/favicon.svg",
    lang: language,
  });
  shown.addEventListener("click", () => {
    window.focus();
    if (rooms.get(room.name) === room) showRoom(room);
    shown.close();
  });
}

// ---------------------------------------------------------------------------
// Wiring

document.documentElement.lang = language;
translatePage();

document.getElementById("leave-button").addEventListener("click", () => {
  if (current !== null) leaveRoom(current);
});
ui.bannerAction.addEventListener("click", () => current?.connection.retryNow());
document.addEventListener("visibilitychange", () => {
  if (document.hidden) return;
  if (current !== null) current.hiddenUnread = 0;
  updateTitle();
  for (const room of rooms.values()) room.connection.reconnectSoon();
  refreshRooms();
});
window.addEventListener("online", () => {
  for (const room of rooms.values()) room.connection.reconnectSoon();
});
window.addEventListener("pagehide", save); // the last `since` of each room
window.addEventListener("hashchange", () => {
  const room = roomFromHash(location.hash);
  if (rooms.size === 0) {
    joinScreen.fillRoom(room);
    joinScreen.setFieldError("room", "");
    return;
  }
  const checked = checkRoom(room);
  if (checked.error || checked.value === current?.name) return;
  goTo(checked.value); // a room from the sidebar or the address bar
});
setInterval(refreshRooms, ROOMS_REFRESH);

sidebar.setUp({ onJoin: joinFromSidebar, onNotify: toggleNotify });
joinScreen.setUp(joinFromForm);
setUpTokenMode();
composer.hideError();
composer.update();
renderNotify();

// A reloaded page takes its rooms back; otherwise start on the join screen,
// filled in from the URL and the last visit.
const saved = decodeSaved(readStorage(sessionStorage, SAVED_KEY));
if (saved === null) {
  joinScreen.focusName();
} else {
  ourName = saved.name;
  const wanted = checkRoom(roomFromHash(location.hash)).value;
  const shown = saved.rooms.some((entry) => entry.room === wanted) ? wanted : saved.current;
  joinScreen.showConnecting();
  for (const entry of saved.rooms) {
    openRoom(entry.room, { show: entry.room === shown, resume: entry.resume });
  }
}
