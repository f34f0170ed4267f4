// The trio-chat browser client (protocol v1, see docs/protocol.md): the entry
// point. It holds the room session, follows it from Join to Leave, and hands
// every event from the server to the transcript, which says what to show,
// then to the module that shows it.
//
// Modules, one concern each:
// - transcript.js: event ids, `since`, dedupe of replays, gaps, the member
//   list, our messages not echoed yet and when to send again those the
//   server could not take. Pure (no DOM, no timers), tested on its own.
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
// - A message the server could not take (`unavailable`: its backplane is
//   down), one typed while the connection is down, and one on its way when
//   it dropped stay at the end of the log as not sent yet, and go (again),
//   by themselves, with their first ref, when Pending says (one timer
//   here), or at the end of the next connection's replay; the echo confirms
//   each. A server may send an echo twice (a repeated ref gets the original
//   back): the transcript shows an id once. Leaving forgets them.
// - A welcome's `resume` goes back in the next hello to the room, which
//   then takes our place back: no leave and join lines, and the replay ends
//   with the room's last event instead of our join (Transcript).
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
  resume: () => transcript.resume(),
  receive,
  lost,
  joinFailed: (text) => failJoin(null, text),
  phaseChanged: () => composer.update(),
});
const composer = new Composer(session, {
  send: (frame) => connection.send(frame),
  pending,
  held: (ref, text) => {
    conversation.pendingMessage(ref, text, session.phase === "live" ? "unavailable" : "offline");
    conversation.scrollToBottom();
  },
});
let resendTimer = 0;

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
  clearTimeout(resendTimer);
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
  clearTimeout(resendTimer); // what was not sent yet is forgotten at the next join
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
  const { first, replayOver } = transcript.welcome(event);
  session.phase = "live";
  if (first) {
    joinScreen.showChat(session.name, session.room);
    composer.enter(session.room);
  }
  connection.online();
  conversation.renderMembers(transcript.members);
  composer.update();
  conversation.updateTitle();
  if (replayOver) replayed({ unechoedLost: true }); // nothing was missed: nothing to replay
}

function onStored(event) {
  const shown = transcript.stored(event);
  if (!shown.show) {
    if (shown.why === "duplicate") echoedAgain(event);
    return false;
  }
  if (shown.notice !== null) conversation.notice(shown.notice);
  const name = nameOf(event);
  if (event.type === "message") {
    const own = name === session.name;
    if (own && typeof event.ref === "string" && pending.echoed(event.ref)) {
      conversation.unpend(event.ref);
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
  if (shown.replayEnd && transcript.resumed) replayed({ unechoedLost: shown.pendingLost });
  return true;
}

/**
 * A stored event the log shows already: a replay overlapping what we saw,
 * or the original `message` a server sends back for a ref we used again.
 * If it is ours and still shown as not sent, it was delivered after all.
 */
function echoedAgain(event) {
  if (event.type !== "message" || typeof event.ref !== "string") return;
  if (nameOf(event) !== session.name) return;
  pending.echoed(event.ref);
  if (conversation.unpend(event.ref) && !conversation.shows(event.id)) {
    // Stored in a stretch of the log we never got (after a loss notice):
    // show it rather than let it vanish.
    conversation.message(event, { own: true, initial: false });
  }
}

/** The replay of a new connection is over: what it did not echo was not stored. */
function replayed({ unechoedLost }) {
  const { resend, lost } = pending.rejoined({
    unechoedLost,
    dedupesRefs: transcript.dedupesRefs,
  });
  for (const { ref, text } of resend) conversation.pendingMessage(ref, text, "sending");
  sendAgain(resend);
  if (lost.length > 0) {
    for (const { ref } of lost) conversation.unpend(ref);
    composer.restore(lost.map(({ text }) => text).join("\n"));
    composer.showError(
      "Your last message may not have been delivered. It is back in the message box.",
    );
  }
}

/** The socket closed: what was on its way waits, shown as not sent yet. */
function lost() {
  conversation.clearTyping();
  if (session.phase === "idle") return;
  const stick = conversation.isNearBottom();
  for (const { ref, text } of pending.disconnected()) {
    conversation.pendingMessage(ref, text, "offline");
  }
  if (stick) conversation.scrollToBottom();
}

// ---------------------------------------------------------------------------
// Our messages not confirmed yet, sent again

function sendAgain(messages) {
  for (const { ref, text } of messages) {
    // On a closed socket nothing goes: it waits again, for the next replay.
    if (!connection.send({ type: "say", text, ref })) pending.hold(ref, text);
  }
}

function scheduleResend() {
  clearTimeout(resendTimer);
  const at = pending.retryAt;
  if (at === null) return;
  resendTimer = setTimeout(
    () => {
      if (session.phase !== "live" || !connection.welcomed) return; // sent after the next join
      sendAgain(pending.resend(Date.now()));
      scheduleResend(); // in case the timer fired a little early
    },
    Math.max(0, at - Date.now()),
  );
}

/** `unavailable` answered our message `ref`: show it as not sent yet; it goes again. */
function onUnavailable(ref) {
  const text = pending.unavailable(ref, Date.now());
  if (text === undefined) return false;
  const stick = conversation.isNearBottom();
  conversation.pendingMessage(ref, text, "unavailable");
  if (stick) conversation.scrollToBottom();
  scheduleResend();
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
      if (code === "bad_request") transcript.forgetResume(); // it may not take ours
      connection.drop();
      connection.scheduleReconnect(text);
    }
    return;
  }
  if (typeof event.ref === "string") {
    if (code === "unavailable" && onUnavailable(event.ref)) return; // the log says it
    const lost = pending.refused(event.ref);
    conversation.unpend(event.ref);
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
