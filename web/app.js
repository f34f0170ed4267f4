// The trio-chat browser client (protocol v1, see docs/protocol.md): the entry
// point. It holds the room session, follows it from Join to Leave, and hands
// every event from the server to the transcript, which says what to show,
// then to the module that shows it.
//
// Modules, one concern each:
// - transcript.js: event ids, `since`, dedupe of replays, gaps, the member
//   list, our messages not echoed yet. Pure (no DOM), tested on its own.
// - protocol.js: the protocol's rules and codes as text for people. Pure.
// - connection.js: the socket, its hello, reconnecting with backoff, the
//   status line and banner.
// - conversation.js: the log, the "is typing" line, the members, the title.
// - composer.js: the message box and our `typing` frames.
// - join.js: the join screen.
//
// Theory of operation:
// - One room session runs from Join to Leave: one Transcript, many
//   connections. Each connection says `hello` (with `since` = the last id
//   shown, after the first welcome) and the server answers `welcome`, then
//   history, then live events; the transcript decides which stored events
//   to show (never one twice; a loss always with a notice).
// - `session.phase`: "idle" (join screen), "joining" (first connection of a
//   room session, not welcomed yet), "live", "reconnecting", "stopped"
//   (closed for good; the person may press Reconnect). app.js moves it in
//   and out of a session; connection.js between live, reconnecting and
//   stopped.
// - Security: strings from the network reach the page only as text, and
//   every name in its own <bdi> (see conversation.js).

import { Composer } from "./composer.js";
import { Connection } from "./connection.js";
import { Conversation, nameOf } from "./conversation.js";
import * as joinScreen from "./join.js";
import { checkRoom, errorText, roomFromHash } from "./protocol.js";
import { Pending, Transcript, splitFrame } from "./transcript.js";

const session = { phase: "idle", name: "", room: "" };
let transcript = new Transcript();
const pending = new Pending(Math.random().toString(36).slice(2, 8));

const conversation = new Conversation(session);
const connection = new Connection(session, {
  since: () => transcript.since(),
  epoch: () => transcript.epoch(),
  receive,
  lost: () => conversation.clearTyping(),
  joinFailed: (text) => failJoin(null, text),
  phaseChanged: () => composer.update(),
});
const composer = new Composer(session, {
  send: (frame) => connection.send(frame),
  pending,
});

// ---------------------------------------------------------------------------
// Joining and leaving

function join() {
  if (session.phase !== "idle") return;
  const form = joinScreen.readForm();
  if (form === null) return;
  connection.reset();
  conversation.reset();
  transcript = new Transcript();
  pending.clear();
  composer.reset();
  session.name = form.name;
  session.room = form.room;
  session.phase = "joining";
  joinScreen.showConnecting();
  connection.connect();
}

function failJoin(field, text) {
  connection.drop();
  session.phase = "idle";
  joinScreen.showJoinFailed(field, text);
}

function leave() {
  session.phase = "idle";
  connection.clearRetry();
  connection.drop();
  conversation.clearTyping();
  conversation.setMembersOpen(false);
  joinScreen.showJoin();
  conversation.updateTitle();
  joinScreen.focusName();
}

function backToJoin(field, text) {
  leave();
  if (field) joinScreen.setFieldError(field, text);
  else joinScreen.showStatus(text);
}

// ---------------------------------------------------------------------------
// Events from the server

function receive(data) {
  const stick = conversation.isNearBottom();
  let grew = false;
  for (const event of splitFrame(data)) {
    grew = handle(event) || grew;
    if (connection.socket === null) break; // this event ended the connection
  }
  if (grew) conversation.grew(stick);
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
      if (typeof event.name === "string" && event.name !== session.name) {
        conversation.typing(event.name);
      }
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
  session.name = typeof event.name === "string" ? event.name : session.name;
  const { first } = transcript.welcome(event);
  session.phase = "live";
  if (first) {
    joinScreen.showChat(session.name, session.room);
    composer.enter(session.room);
  }
  connection.online();
  conversation.renderMembers(transcript.members);
  composer.update();
  conversation.updateTitle();
}

function onStored(event) {
  const shown = transcript.stored(event);
  if (!shown.show) return false;
  if (shown.notice !== null) conversation.notice(shown.notice);
  const name = nameOf(event);
  if (event.type === "message") {
    const own = name === session.name;
    if (own && typeof event.ref === "string" && pending.echoed(event.ref)) {
      conversation.forceScroll = true;
    }
    conversation.message(event, { own, initial: shown.initial });
  } else {
    let you = null;
    if (shown.ownJoin) you = transcript.resumed ? "back" : "joined";
    conversation.presence(event, { you });
    if (shown.live) {
      if (event.type === "leave") conversation.stopTyping(name);
      conversation.renderMembers(transcript.members);
    }
  }
  if (shown.pendingLost && pending.size > 0) {
    // Everything the server stored up to our join has been replayed: a
    // message of ours that is still not echoed never reached the server.
    composer.restore(pending.takeAll().join("\n"));
    composer.showError("Your last message was not delivered. It is back in the message box.");
  }
  return true;
}

function onError(event) {
  const code = typeof event.code === "string" ? event.code : "";
  const text = errorText(code, event.message);
  if (!connection.welcomed) {
    // The answer to our hello.
    if (session.phase === "joining") {
      failJoin(joinScreen.fieldForError(code), text);
    } else if (code === "name_taken") {
      // After a reconnect our previous connection may still be in the room.
      if (!connection.retryAfterGhost()) backToJoin("name", text);
    } else if (code === "bad_name" || code === "bad_room") {
      backToJoin(joinScreen.fieldForError(code), text);
    } else {
      connection.drop();
      connection.scheduleReconnect(text);
    }
    return;
  }
  if (typeof event.ref === "string") {
    const lost = pending.refused(event.ref);
    if (lost !== undefined) composer.restore(lost);
  }
  composer.showError(text);
}

// ---------------------------------------------------------------------------
// Wiring

document.getElementById("leave-button").addEventListener("click", leave);
document.addEventListener("visibilitychange", () => {
  if (document.hidden) return;
  conversation.seen();
  connection.reconnectSoon();
});
window.addEventListener("online", () => connection.reconnectSoon());
window.addEventListener("hashchange", () => {
  const room = roomFromHash(location.hash);
  if (session.phase === "idle") {
    joinScreen.fillRoom(room);
    joinScreen.setFieldError("room", "");
    return;
  }
  const checked = checkRoom(room);
  if (checked.error || checked.value === session.room) return;
  // Another room was opened from the address bar: switch to it.
  leave();
  joinScreen.fillRoom(checked.value);
  join();
});

// Start on the join screen, filled in from the URL and the last visit.
joinScreen.setUp(join);
composer.hideError();
composer.update();
joinScreen.focusName();
