// The join screen: the Name and Room fields checked as the protocol does
// (protocol.js) before anything is sent, errors next to their field, the
// status line under the Join button, the name remembered from the last
// visit, and the switch between this screen and the chat screen.

import { t } from "./i18n.js";
import { checkName, checkRoom, roomFromHash } from "./protocol.js";

const NAME_KEY = "trio-chat.name";

const ui = {
  joinScreen: document.getElementById("join-screen"),
  joinForm: document.getElementById("join-form"),
  name: document.getElementById("name"),
  nameField: document.getElementById("name-field"),
  signedIn: document.getElementById("signed-in"),
  room: document.getElementById("room"),
  nameError: document.getElementById("name-error"),
  roomError: document.getElementById("room-error"),
  roomHint: document.getElementById("room-hint"),
  joinButton: document.getElementById("join-button"),
  joinStatus: document.getElementById("join-status"),
  chatScreen: document.getElementById("chat-screen"),
  roomTitle: document.getElementById("room-title"),
};

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

/** The field an `error` answering our hello belongs to ("name", "room"), or null. */
export function fieldForError(code) {
  if (code === "name_taken" || code === "bad_name") return "name";
  if (code === "bad_room") return "room";
  return null;
}

/** Show `text` under `field` ("name" or "room"); "" clears it. */
export function setFieldError(field, text) {
  const input = field === "room" ? ui.room : ui.name;
  const slot = field === "room" ? ui.roomError : ui.nameError;
  slot.textContent = text;
  if (text) input.setAttribute("aria-invalid", "true");
  else input.removeAttribute("aria-invalid");
  if (field === "room") {
    // The error says what the hint says, and more: show (and read) one.
    ui.roomHint.hidden = Boolean(text);
    input.setAttribute("aria-describedby", text ? "room-error" : "room-error room-hint");
  }
}

/**
 * Fill in the form from the last visit and the URL; `onJoin()` runs when
 * it is submitted.
 */
export function setUp(onJoin) {
  ui.joinForm.addEventListener("submit", (event) => {
    event.preventDefault();
    onJoin();
  });
  ui.name.addEventListener("input", () => setFieldError("name", ""));
  ui.room.addEventListener("input", () => setFieldError("room", ""));
  ui.name.value = storedName();
  ui.room.value = roomFromHash(location.hash);
  if (ui.room.value !== "") {
    const room = checkRoom(ui.room.value);
    if (room.error) setFieldError("room", room.error);
  }
}

let tokenMode = false; // a token names us: no Name field

/**
 * Token mode: the token names us, so the Name field goes, and the name the
 * token carries (null: unknown until the welcome) is shown instead.
 */
export function useToken(name) {
  tokenMode = true;
  ui.nameField.hidden = true;
  ui.name.required = false;
  ui.signedIn.hidden = name === null;
  if (name !== null) {
    ui.signedIn.textContent = t("signedInAs", { name });
    ui.name.value = name;
  }
}

/**
 * Check the form: `{name, room}` as the server will see them, or null
 * after showing what is wrong next to the field and focusing it.
 */
export function readForm() {
  setFieldError("name", "");
  setFieldError("room", "");
  ui.joinStatus.textContent = "";
  ui.joinStatus.classList.remove("error");
  // In token mode the name is the token's; a stored one stands in until the welcome.
  const name = tokenMode ? { value: ui.name.value } : checkName(ui.name.value);
  const room = checkRoom(ui.room.value);
  if (name.error) setFieldError("name", name.error);
  if (room.error) setFieldError("room", room.error);
  if (name.error || room.error) {
    (name.error ? ui.name : ui.room).focus();
    return null;
  }
  return { name: name.value, room: room.value };
}

/** The first connection is on its way. */
export function showConnecting() {
  ui.joinButton.disabled = true;
  ui.joinStatus.textContent = t("connecting");
}

/** Joining failed: say why next to `field`, or under the button when it is null. */
export function showJoinFailed(field, text) {
  if (tokenMode && field === "name") field = null; // no Name field to point at
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

/** Put `text` in the status line (plain, not as an error). */
export function showStatus(text) {
  ui.joinStatus.textContent = text;
}

/** Set the Room field (the address bar named a room). */
export function fillRoom(room) {
  ui.room.value = room;
}

/** Welcomed as `name`: remember the name, show the chat screen. */
export function showChat(name) {
  rememberName(name);
  ui.name.value = name;
  ui.joinButton.disabled = false;
  ui.joinStatus.textContent = "";
  ui.joinScreen.hidden = true;
  ui.chatScreen.hidden = false;
}

/** `room` is in view: its name on top, and in the address bar. */
export function showRoom(room) {
  ui.room.value = room;
  if (roomFromHash(location.hash) !== room) {
    history.replaceState(null, "", `#${room}`);
  }
  ui.roomTitle.textContent = `#${room}`;
}

/** Back from the chat screen. */
export function showJoin() {
  ui.chatScreen.hidden = true;
  ui.joinScreen.hidden = false;
  ui.joinButton.disabled = false;
}

export function focusName() {
  (tokenMode ? ui.room : ui.name).focus();
}
