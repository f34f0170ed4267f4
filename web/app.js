// The trio-chat browser client (protocol v1, see docs/protocol.md).
//
// Theory of operation:
// - One "room session" runs from Join to Leave. Within it, connections come
//   and go; each one sends `hello` (with `since` = the last id shown, after
//   the first) and the server answers `welcome`, then history, then live events.
// - Stored events carry ids that rise by exactly 1 per room. The log shows an
//   event only if its id is above the last id shown (so a replay never
//   duplicates), and a jump in ids, or `recovered: false`, adds a notice
//   (so a loss is never silent).
// - The member list is the welcome's snapshot, then changed only by live
//   join/leave events (id > the welcome's `last_id`), never by history.
// - Security: every string from the network reaches the page as text
//   (textContent, text nodes) or as the href of a link checked to be http(s).
//   Nothing is ever parsed as HTML. Every name is shown in its own <bdi>
//   (nameElement), so a right-to-left name cannot reorder the text around it.

import {
  MAX_TEXT_LENGTH,
  backoffDelay,
  charCount,
  checkName,
  checkRoom,
  describeClose,
  errorText,
  leaveReasonText,
  roomFromHash,
} from "./protocol.js";

const NAME_KEY = "trio-chat.name";
const TYPING_SEND_EVERY = 3000; // ms between our `typing` frames while typing
const TYPING_AFTER_SEND = 1250; // ms, after sending a message (the server allows 1 s)
const TYPING_STILL = 2000; // ms since the last keystroke that still counts as typing
const TYPING_SHOWN_FOR = 5000; // ms a "X is typing" stays without a new one
const GHOST_WAIT = 90_000; // ms to retry a name_taken after a reconnect (> PONG_WAIT)
const ERROR_SHOWN_FOR = 5000; // ms an error under the message box stays
const GROUP_WINDOW = 5 * 60 * 1000; // messages by one sender within this are grouped
const COUNTER_FROM = MAX_TEXT_LENGTH - 500; // show the character counter from here

const $ = (id) => document.getElementById(id);
const ui = {
  joinScreen: $("join-screen"),
  joinForm: $("join-form"),
  name: $("name"),
  room: $("room"),
  nameError: $("name-error"),
  roomError: $("room-error"),
  joinButton: $("join-button"),
  joinStatus: $("join-status"),
  chatScreen: $("chat-screen"),
  roomTitle: $("room-title"),
  connection: $("connection"),
  membersToggle: $("members-toggle"),
  membersToggleCount: $("members-toggle-count"),
  leaveButton: $("leave-button"),
  banner: $("banner"),
  bannerText: $("banner-text"),
  bannerAction: $("banner-action"),
  log: $("log"),
  jump: $("jump"),
  typing: $("typing"),
  composer: $("composer"),
  message: $("message"),
  sendButton: $("send-button"),
  composerError: $("composer-error"),
  counter: $("counter"),
  membersPanel: $("members-panel"),
  memberCount: $("member-count"),
  members: $("members"),
};

const timeFormat = new Intl.DateTimeFormat(undefined, { hour: "numeric", minute: "2-digit" });
const fullFormat = new Intl.DateTimeFormat(undefined, { dateStyle: "full", timeStyle: "medium" });
const dayFormat = new Intl.DateTimeFormat(undefined, {
  weekday: "long",
  month: "long",
  day: "numeric",
});

// phase: "idle" (join screen), "joining" (first connection of a room session,
// not welcomed yet), "live", "reconnecting", "stopped" (closed for good; the
// person may press Reconnect).
const chat = {
  phase: "idle",
  name: "",
  room: "",
  socket: null,
  welcomed: false, // on the current connection
  everWelcomed: false, // in this room session
  lastId: null, // highest event id shown in the log
  joinId: null, // the welcome's last_id on the current connection
  firstReplay: true, // the history replay of the very first welcome
  resumed: false, // the current connection resumed with `since`
  recovered: true, // the current welcome's `recovered` (true when absent)
  checkRecovery: false, // decide, on the next stored event, how history was lost
  attempt: 0,
  reconnectReason: "",
  retryTimer: 0,
  countdownTimer: 0,
  ghostSince: 0,
  pending: new Map(), // ref -> text of our messages not echoed yet
  refPrefix: Math.random().toString(36).slice(2, 8),
  refCount: 0,
  members: [],
  typing: new Map(), // name -> timer
  lastTypingSent: 0, // when our last `typing` frame went out
  typingGap: TYPING_SEND_EVERY, // ms to leave after it
  typingTimer: 0,
  lastKeystroke: 0,
  unread: 0,
  previous: null, // {name, time, day} of the last message, for grouping
  lastDay: "",
  errorTimer: 0,
  forceScroll: false, // our own message arrived: scroll to it
};

// ---------------------------------------------------------------------------
// Join screen

function storedName() {
  try {
    return localStorage.getItem(NAME_KEY) ?? "";
  } catch {
    return "";
  }
}

function rememberName(name) {
  try {
    localStorage.setItem(NAME_KEY, name);
  } catch {
    // storage may be disabled; remembering the name is a convenience
  }
}

function setFieldError(field, text) {
  const input = field === "room" ? ui.room : ui.name;
  const slot = field === "room" ? ui.roomError : ui.nameError;
  slot.textContent = text;
  if (text) input.setAttribute("aria-invalid", "true");
  else input.removeAttribute("aria-invalid");
}

function join() {
  if (chat.phase !== "idle") return;
  setFieldError("name", "");
  setFieldError("room", "");
  ui.joinStatus.textContent = "";
  ui.joinStatus.classList.remove("error");
  const name = checkName(ui.name.value);
  const room = checkRoom(ui.room.value);
  if (name.error) setFieldError("name", name.error);
  if (room.error) setFieldError("room", room.error);
  if (name.error || room.error) {
    (name.error ? ui.name : ui.room).focus();
    return;
  }
  resetConversation();
  chat.name = name.value;
  chat.room = room.value;
  chat.phase = "joining";
  ui.joinButton.disabled = true;
  ui.joinStatus.textContent = "Connecting…";
  connect();
}

function failJoin(field, text) {
  dropSocket();
  chat.phase = "idle";
  ui.joinButton.disabled = false;
  ui.joinStatus.textContent = "";
  if (field) {
    setFieldError(field, text);
    (field === "room" ? ui.room : ui.name).focus();
  } else {
    ui.joinStatus.textContent = text;
    ui.joinStatus.classList.add("error");
  }
}

function fieldForError(code) {
  if (code === "name_taken" || code === "bad_name") return "name";
  if (code === "bad_room") return "room";
  return null;
}

function enterChat() {
  rememberName(ui.name.value.trim());
  ui.name.value = chat.name;
  ui.room.value = chat.room;
  if (roomFromHash(location.hash) !== chat.room) {
    history.replaceState(null, "", `#${chat.room}`);
  }
  ui.joinButton.disabled = false;
  ui.joinStatus.textContent = "";
  ui.roomTitle.textContent = `#${chat.room}`;
  ui.message.placeholder = `Message #${chat.room}`;
  ui.joinScreen.hidden = true;
  ui.chatScreen.hidden = false;
  ui.message.focus();
}

function leave() {
  chat.phase = "idle";
  clearRetry();
  dropSocket();
  clearTyping();
  setMembersOpen(false);
  ui.chatScreen.hidden = true;
  ui.joinScreen.hidden = false;
  ui.joinButton.disabled = false;
  updateTitle();
  ui.name.focus();
}

function backToJoin(field, text) {
  leave();
  if (field) setFieldError(field, text);
  else ui.joinStatus.textContent = text;
}

// ---------------------------------------------------------------------------
// Connection

function connect() {
  clearRetry();
  const url = new URL("/ws", location.href);
  url.protocol = location.protocol === "https:" ? "wss:" : "ws:";
  url.hash = "";
  url.search = "";
  const socket = new WebSocket(url);
  chat.socket = socket;
  chat.welcomed = false;
  if (chat.phase === "reconnecting") {
    showBanner(`${chat.reconnectReason} Reconnecting…`.trim(), null);
  }
  socket.addEventListener("open", () => {
    if (socket !== chat.socket) return;
    const hello = { type: "hello", name: chat.name, room: chat.room };
    if (chat.lastId !== null) hello.since = chat.lastId;
    socket.send(JSON.stringify(hello));
  });
  socket.addEventListener("message", (event) => {
    if (socket === chat.socket) receive(event.data);
  });
  socket.addEventListener("close", (event) => {
    if (socket !== chat.socket) return;
    chat.socket = null;
    onClosed(event.code);
  });
}

function dropSocket() {
  const socket = chat.socket;
  chat.socket = null;
  chat.welcomed = false;
  if (socket && socket.readyState === WebSocket.OPEN) socket.close(1000);
  else if (socket && socket.readyState === WebSocket.CONNECTING) {
    // Closing before the handshake completes makes the browser log an error;
    // let it open and close it then.
    socket.addEventListener("open", () => socket.close(1000));
  }
}

function sendFrame(frame) {
  const socket = chat.socket;
  if (!socket || socket.readyState !== WebSocket.OPEN) return false;
  socket.send(JSON.stringify(frame));
  return true;
}

function onClosed(code) {
  chat.welcomed = false;
  clearTyping();
  if (chat.phase === "idle" || chat.phase === "stopped") return;
  if (chat.phase === "joining") {
    failJoin(null, "Could not connect to the chat server. Check your connection and try again.");
    return;
  }
  const { retry, text } = describeClose(code);
  if (!retry) stop(text);
  else if (chat.phase === "reconnecting") scheduleReconnect(chat.reconnectReason);
  else scheduleReconnect(text); // why the live connection ended says more than a failed retry
}

function scheduleReconnect(reason, options = {}) {
  clearRetry();
  chat.phase = "reconnecting";
  chat.reconnectReason = reason;
  setConnection("reconnecting");
  updateComposer();
  const delay = backoffDelay(chat.attempt, options);
  chat.attempt += 1;
  const due = Date.now() + delay;
  const tick = () => {
    const seconds = Math.max(1, Math.ceil((due - Date.now()) / 1000));
    showBanner(`${reason} Retrying in ${seconds} s.`, "Retry now");
  };
  tick();
  chat.countdownTimer = setInterval(tick, 1000);
  chat.retryTimer = setTimeout(connect, delay);
}

function clearRetry() {
  clearTimeout(chat.retryTimer);
  clearInterval(chat.countdownTimer);
  chat.retryTimer = 0;
  chat.countdownTimer = 0;
}

function retryNow() {
  if (chat.phase === "stopped") {
    chat.phase = "reconnecting";
    chat.reconnectReason = "";
    chat.attempt = 0;
    setConnection("reconnecting");
  }
  if (chat.phase === "reconnecting" && chat.socket === null) connect();
}

function stop(text) {
  clearRetry();
  chat.phase = "stopped";
  setConnection("offline");
  updateComposer();
  showBanner(text, "Reconnect");
}

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

// ---------------------------------------------------------------------------
// Events from the server

function receive(data) {
  if (typeof data !== "string") return;
  const stick = isNearBottom();
  let grew = false;
  for (const line of data.split("\n")) {
    if (line === "") continue;
    let event;
    try {
      event = JSON.parse(line);
    } catch {
      continue; // not ours to show; the protocol promises JSON lines
    }
    if (event === null || typeof event !== "object") continue;
    grew = handle(event) || grew;
    if (chat.socket === null) break; // this event ended the connection
  }
  if (!grew) return;
  if (stick || chat.forceScroll) scrollToBottom();
  else ui.jump.hidden = false;
  chat.forceScroll = false;
}

/** Handle one event; returns whether the log grew. */
function handle(event) {
  switch (event.type) {
    case "welcome":
      onWelcome(event);
      return false;
    case "error":
      onError(event);
      return false;
    case "typing":
      onTyping(event);
      return false;
    case "message":
    case "join":
    case "leave":
      return onStored(event);
    default:
      return false;
  }
}

function onWelcome(event) {
  chat.welcomed = true;
  chat.name = typeof event.name === "string" ? event.name : chat.name;
  chat.joinId = Number.isInteger(event.last_id) ? event.last_id : null;
  chat.members = Array.isArray(event.members)
    ? event.members.filter((name) => typeof name === "string")
    : [];
  chat.resumed = chat.everWelcomed;
  chat.recovered = event.recovered !== false;
  chat.checkRecovery = chat.resumed && !chat.recovered;
  chat.attempt = 0;
  chat.ghostSince = 0;
  chat.phase = "live";
  if (!chat.everWelcomed) {
    chat.everWelcomed = true;
    enterChat();
  }
  clearRetry();
  hideBanner();
  setConnection("online");
  renderMembers();
  updateComposer();
  updateTitle();
}

function onStored(event) {
  if (!Number.isInteger(event.id)) return false;
  if (chat.checkRecovery) {
    chat.checkRecovery = false;
    if (chat.lastId !== null && event.id <= chat.lastId) {
      // The server answered as if history were lost: its ids began again.
      chat.lastId = null;
      addNotice(
        "The server restarted without its history: messages sent while you were away could not be recovered.",
      );
    } else {
      addNotice("Some messages sent while you were away could not be recovered.");
      chat.lastId = null; // the notice stands for the gap
    }
  }
  if (chat.lastId !== null) {
    if (event.id <= chat.lastId) return false; // shown already
    if (event.id > chat.lastId + 1) addNotice("Some messages are missing here.");
  }
  chat.lastId = event.id;
  const live = chat.joinId !== null && event.id > chat.joinId;
  if (event.type === "message") renderMessage(event);
  else renderPresence(event, live);
  if (event.id === chat.joinId) onReplayDone();
  return true;
}

function onReplayDone() {
  chat.firstReplay = false;
  if (!chat.resumed || !chat.recovered || chat.pending.size === 0) return;
  // Everything the server stored up to our join has been replayed: a message
  // of ours that is still not echoed never reached the server.
  const texts = [...chat.pending.values()];
  chat.pending.clear();
  restoreText(texts.join("\n"));
  showComposerError("Your last message was not delivered. It is back in the message box.");
}

function onError(event) {
  const code = typeof event.code === "string" ? event.code : "";
  const text = errorText(code, event.message);
  if (!chat.welcomed) {
    // The answer to our hello.
    if (chat.phase === "joining") {
      failJoin(fieldForError(code), text);
    } else if (code === "name_taken") {
      // After a reconnect our previous connection may still be in the room
      // until the server notices it is gone: try again shortly.
      chat.ghostSince ||= Date.now();
      if (Date.now() - chat.ghostSince > GHOST_WAIT) {
        backToJoin("name", text);
      } else {
        dropSocket();
        scheduleReconnect("Waiting for your previous connection to end.", { cap: 4000 });
      }
    } else if (code === "bad_name" || code === "bad_room") {
      backToJoin(fieldForError(code), text);
    } else {
      dropSocket();
      scheduleReconnect(text);
    }
    return;
  }
  if (typeof event.ref === "string" && chat.pending.has(event.ref)) {
    const lost = chat.pending.get(event.ref);
    chat.pending.delete(event.ref);
    restoreText(lost);
  }
  showComposerError(text);
}

function onTyping(event) {
  const name = event.name;
  if (typeof name !== "string" || name === chat.name) return;
  clearTimeout(chat.typing.get(name));
  chat.typing.set(
    name,
    setTimeout(() => stopTyping(name), TYPING_SHOWN_FOR),
  );
  renderTyping();
}

function stopTyping(name) {
  if (!chat.typing.has(name)) return;
  clearTimeout(chat.typing.get(name));
  chat.typing.delete(name);
  renderTyping();
}

function clearTyping() {
  for (const timer of chat.typing.values()) clearTimeout(timer);
  chat.typing.clear();
  renderTyping();
}

function renderTyping() {
  const names = [...chat.typing.keys()].map((name) => nameElement(name));
  if (names.length === 1) ui.typing.replaceChildren(names[0], " is typing…");
  else if (names.length === 2) {
    ui.typing.replaceChildren(names[0], " and ", names[1], " are typing…");
  } else if (names.length > 2) ui.typing.replaceChildren("Several people are typing…");
  else ui.typing.replaceChildren();
}

// ---------------------------------------------------------------------------
// Rendering the log

function isNearBottom() {
  const log = ui.log;
  return log.scrollHeight - log.scrollTop - log.clientHeight < 64;
}

function scrollToBottom() {
  ui.log.scrollTop = ui.log.scrollHeight;
  ui.jump.hidden = true;
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

function dayDivider(date) {
  const key = date.toDateString();
  if (key === chat.lastDay) return;
  chat.lastDay = key;
  chat.previous = null;
  const today = new Date();
  const yesterday = new Date(today.getFullYear(), today.getMonth(), today.getDate() - 1);
  let label = dayFormat.format(date);
  if (key === today.toDateString()) label = "Today";
  else if (key === yesterday.toDateString()) label = "Yesterday";
  const item = document.createElement("li");
  item.className = "day";
  item.textContent = label;
  ui.log.append(item);
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

function renderMessage(event) {
  const name = typeof event.name === "string" ? event.name : "?";
  const text = typeof event.text === "string" ? event.text : "";
  const own = name === chat.name;
  if (own && typeof event.ref === "string") {
    chat.pending.delete(event.ref);
    if (event.ref.startsWith(`${chat.refPrefix}-`)) chat.forceScroll = true;
  }
  stopTyping(name);
  const date = eventDate(event);
  dayDivider(date);

  const item = document.createElement("li");
  item.className = own ? "msg own" : "msg";
  item.dataset.id = String(event.id);
  item.style.setProperty("--hue", String(hueOf(name)));
  const previous = chat.previous;
  if (previous && previous.name === name && date - previous.time < GROUP_WINDOW) {
    item.classList.add("continued");
  }
  chat.previous = { name, time: date };

  const meta = document.createElement("div");
  meta.className = "meta";
  meta.append(nameElement(name, "sender"), timeElement(date, event.ts));
  const body = document.createElement("p");
  body.className = "text";
  appendText(body, text);
  item.append(meta, body);
  ui.log.append(item);

  if (!own && !chat.firstReplay && document.hidden) {
    chat.unread += 1;
    updateTitle();
  }
}

function renderPresence(event, live) {
  const name = typeof event.name === "string" ? event.name : "?";
  const date = eventDate(event);
  dayDivider(date);
  chat.previous = null;
  const item = document.createElement("li");
  item.className = `system ${event.type}`;
  item.dataset.id = String(event.id);
  const text = document.createElement("span");
  if (event.type === "join") {
    if (event.id === chat.joinId) text.textContent = chat.resumed ? "You are back" : `You joined #${chat.room}`;
    else text.append(nameElement(name), " joined");
  } else {
    text.append(nameElement(name), ` left${leaveReasonText(event.reason)}`);
  }
  item.append(text, " ", timeElement(date, event.ts));
  ui.log.append(item);

  if (!live) return;
  if (event.type === "join") {
    if (!chat.members.includes(name)) chat.members.push(name);
  } else {
    chat.members = chat.members.filter((member) => member !== name);
    stopTyping(name);
  }
  renderMembers();
}

function addNotice(text) {
  chat.previous = null;
  const item = document.createElement("li");
  item.className = "notice";
  item.textContent = text;
  ui.log.append(item);
}

function renderMembers() {
  const me = chat.name;
  const sorted = [...chat.members].sort((a, b) => {
    if (a === me) return -1;
    if (b === me) return 1;
    return a.localeCompare(b, undefined, { sensitivity: "base" });
  });
  ui.members.replaceChildren(
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
  ui.memberCount.textContent = count;
  ui.membersToggleCount.textContent = count;
}

function updateTitle() {
  if (chat.phase === "idle") {
    document.title = "trio-chat";
    return;
  }
  const unread = chat.unread > 0 ? `(${chat.unread}) ` : "";
  document.title = `${unread}#${chat.room} · trio-chat`;
}

function resetConversation() {
  clearRetry();
  clearTyping();
  ui.log.replaceChildren();
  Object.assign(chat, {
    welcomed: false,
    everWelcomed: false,
    lastId: null,
    joinId: null,
    firstReplay: true,
    resumed: false,
    recovered: true,
    checkRecovery: false,
    attempt: 0,
    ghostSince: 0,
    members: [],
    unread: 0,
    previous: null,
    lastDay: "",
    lastTypingSent: 0,
    typingGap: TYPING_SEND_EVERY,
  });
  cancelTyping();
  chat.pending.clear();
  renderMembers();
  hideBanner();
  ui.jump.hidden = true;
  ui.message.value = "";
  hideComposerError();
  updateComposer();
}

// ---------------------------------------------------------------------------
// The message box

function autosize() {
  const box = ui.message;
  box.style.height = "auto";
  box.style.height = `${box.scrollHeight + box.offsetHeight - box.clientHeight}px`;
}

function updateComposer() {
  const length = charCount(ui.message.value.trim());
  const over = length > MAX_TEXT_LENGTH;
  ui.counter.hidden = length < COUNTER_FROM;
  ui.counter.textContent = over
    ? `${length - MAX_TEXT_LENGTH} characters too many (${length} / ${MAX_TEXT_LENGTH})`
    : `${length} / ${MAX_TEXT_LENGTH}`;
  ui.counter.classList.toggle("over", over);
  ui.sendButton.disabled = over || chat.phase !== "live";
}

function restoreText(text) {
  const current = ui.message.value.trim();
  ui.message.value = current === "" ? text : `${text}\n${ui.message.value}`;
  autosize();
  updateComposer();
}

function showComposerError(text) {
  clearTimeout(chat.errorTimer);
  ui.composerError.textContent = text;
  ui.composerError.hidden = false;
  chat.errorTimer = setTimeout(hideComposerError, ERROR_SHOWN_FOR);
}

function hideComposerError() {
  clearTimeout(chat.errorTimer);
  ui.composerError.textContent = "";
  ui.composerError.hidden = true;
}

function sendMessage() {
  const text = ui.message.value.trim();
  if (text === "") return;
  const length = charCount(text);
  if (length > MAX_TEXT_LENGTH) {
    showComposerError(
      `Your message has ${length} characters; the limit is ${MAX_TEXT_LENGTH}. Shorten it to send.`,
    );
    return;
  }
  if (chat.phase !== "live") {
    showComposerError("Not connected. Your message stays here until the connection is back.");
    return;
  }
  chat.refCount += 1;
  const ref = `${chat.refPrefix}-${chat.refCount}`;
  if (!sendFrame({ type: "say", text, ref })) return;
  chat.pending.set(ref, text);
  // A message ends "typing" for the others: the next keystroke may say so
  // again soon (the server forwards at most one `typing` a second).
  cancelTyping();
  chat.typingGap = TYPING_AFTER_SEND;
  ui.message.value = "";
  autosize();
  updateComposer();
  hideComposerError();
}

function typed() {
  autosize();
  updateComposer();
  chat.lastKeystroke = Date.now();
  scheduleTyping();
}

/**
 * Tell the others we are typing: at once if the last `typing` frame is old
 * enough, else when it is, if we are still typing by then.
 */
function scheduleTyping() {
  if (chat.typingTimer !== 0) return;
  if (chat.phase !== "live" || ui.message.value.trim() === "") return;
  const wait = chat.lastTypingSent + chat.typingGap - Date.now();
  if (wait <= 0) {
    if (sendFrame({ type: "typing" })) {
      chat.lastTypingSent = Date.now();
      chat.typingGap = TYPING_SEND_EVERY;
    }
    return;
  }
  chat.typingTimer = setTimeout(() => {
    chat.typingTimer = 0;
    if (Date.now() - chat.lastKeystroke < TYPING_STILL) scheduleTyping();
  }, wait);
}

function cancelTyping() {
  clearTimeout(chat.typingTimer);
  chat.typingTimer = 0;
}

// ---------------------------------------------------------------------------
// Members panel (a sheet on phones, a column on wide screens)

function setMembersOpen(open) {
  ui.membersPanel.classList.toggle("open", open);
  ui.membersToggle.setAttribute("aria-expanded", String(open));
}

// ---------------------------------------------------------------------------
// Wiring

ui.joinForm.addEventListener("submit", (event) => {
  event.preventDefault();
  join();
});
ui.name.addEventListener("input", () => setFieldError("name", ""));
ui.room.addEventListener("input", () => setFieldError("room", ""));

ui.composer.addEventListener("submit", (event) => {
  event.preventDefault();
  sendMessage();
});
ui.message.addEventListener("keydown", (event) => {
  if (event.key !== "Enter" || event.shiftKey || event.altKey) return;
  if (event.isComposing || event.keyCode === 229) return; // an IME is composing
  event.preventDefault();
  sendMessage();
});
ui.message.addEventListener("input", typed);

ui.leaveButton.addEventListener("click", leave);
ui.bannerAction.addEventListener("click", retryNow);
ui.jump.addEventListener("click", scrollToBottom);
ui.log.addEventListener("scroll", () => {
  if (isNearBottom()) ui.jump.hidden = true;
});
ui.membersToggle.addEventListener("click", () => {
  setMembersOpen(!ui.membersPanel.classList.contains("open"));
});
// On phones the member sheet closes with a tap anywhere outside it.
document.addEventListener("click", (event) => {
  if (!ui.membersPanel.classList.contains("open")) return;
  if (ui.membersPanel.contains(event.target) || ui.membersToggle.contains(event.target)) return;
  setMembersOpen(false);
});
document.addEventListener("keydown", (event) => {
  if (event.key === "Escape" && ui.membersPanel.classList.contains("open")) {
    setMembersOpen(false);
    ui.membersToggle.focus();
  }
});

/** The network or the tab came back: do not wait out the backoff. */
function reconnectSoon() {
  if (chat.phase === "reconnecting" && chat.socket === null) connect();
}

document.addEventListener("visibilitychange", () => {
  if (document.hidden) return;
  chat.unread = 0;
  updateTitle();
  reconnectSoon();
});
window.addEventListener("online", reconnectSoon);
window.addEventListener("hashchange", () => {
  const room = roomFromHash(location.hash);
  if (chat.phase === "idle") {
    ui.room.value = room;
    setFieldError("room", "");
    return;
  }
  const checked = checkRoom(room);
  if (checked.error || checked.value === chat.room) return;
  // Another room was opened from the address bar: switch to it.
  leave();
  ui.room.value = checked.value;
  join();
});

// Start on the join screen, filled in from the URL and the last visit.
ui.name.value = storedName();
ui.room.value = roomFromHash(location.hash);
if (ui.room.value !== "") {
  const room = checkRoom(ui.room.value);
  if (room.error) setFieldError("room", room.error);
}
hideComposerError();
updateComposer();
ui.name.focus();
