// The message box: sending (Enter sends, Shift+Enter adds a line), the
// character counter near the limit, errors shown under the box for a few
// seconds, a message given back when it was not delivered (or queued behind
// ours that wait for a resend, or while the connection is down), and the
// `typing` frames that tell the others we are typing, throttled to what the
// server forwards. One message box for every joined room: it works for the
// room in view, and keeps what was typed for each room when another comes
// into view.

import { t } from "./i18n.js";
import { MAX_TEXT_LENGTH, charCount } from "./protocol.js";

const TYPING_SEND_EVERY = 3000; // ms between our `typing` frames while typing
const TYPING_AFTER_SEND = 1250; // ms, after sending a message (the server allows 1 s)
const TYPING_STILL = 2000; // ms since the last keystroke that still counts as typing
const ERROR_SHOWN_FOR = 5000; // ms an error under the message box stays
const COUNTER_FROM = MAX_TEXT_LENGTH - 500; // show the character counter from here
// Phases in which a message is taken: sent, or kept to go after the reconnect.
const QUEUEING_PHASES = new Set(["live", "reconnecting", "stopped"]);

/**
 * The message box. `current()` is the room in view: `{session, pending,
 * send, held}`: `session` ({phase, room, ...}: sending while "live"; while
 * "reconnecting" or "stopped" a message waits for the connection);
 * `send(frame)` sends a frame and says whether it went out; `pending`
 * (transcript.js's Pending) keeps what we sent until its echo;
 * `held(ref, text)`: a message was queued, not sent (behind ours that wait
 * for a resend, or for the connection).
 */
export class Composer {
  #current;
  #room = null; // the room whose draft the box holds
  #drafts = new Map(); // room -> what was typed there
  #ui = {
    composer: document.getElementById("composer"),
    message: document.getElementById("message"),
    sendButton: document.getElementById("send-button"),
    composerError: document.getElementById("composer-error"),
    counter: document.getElementById("counter"),
  };
  #lastTypingSent = 0; // when our last `typing` frame went out
  #typingGap = TYPING_SEND_EVERY; // ms to leave after it
  #typingTimer = 0;
  #lastKeystroke = 0;
  #errorTimer = 0;

  constructor(current) {
    this.#current = current;
    const ui = this.#ui;
    ui.composer.addEventListener("submit", (event) => {
      event.preventDefault();
      this.send();
    });
    ui.message.addEventListener("keydown", (event) => {
      if (event.key !== "Enter" || event.shiftKey || event.altKey) return;
      if (event.isComposing || event.keyCode === 229) return; // an IME is composing
      event.preventDefault();
      this.send();
    });
    ui.message.addEventListener("input", () => this.#typed());
  }

  /** A new room session: an empty box, no error, no typing frame owed. */
  reset() {
    this.#lastTypingSent = 0;
    this.#typingGap = TYPING_SEND_EVERY;
    this.#cancelTyping();
    this.#ui.message.value = "";
    this.hideError();
    this.update();
  }

  get #session() {
    return this.#current()?.session ?? { phase: "idle" };
  }

  /**
   * `room` came into view: keep what was typed for the room before, and
   * bring back what was typed for this one. `focus`: put the caret there.
   */
  enter(room, { focus = true } = {}) {
    const box = this.#ui.message;
    if (this.#room !== null && this.#room !== room) this.#drafts.set(this.#room, box.value);
    if (this.#room !== room) {
      box.value = this.#drafts.get(room) ?? "";
      this.#cancelTyping();
      this.#autosize();
    }
    this.#room = room;
    box.placeholder = t("messageRoom", { room });
    this.update();
    if (focus) box.focus();
  }

  /** `room` was left: forget what was typed for it. */
  forget(room) {
    this.#drafts.delete(room);
    if (this.#room === room) this.#room = null;
  }

  #autosize() {
    const box = this.#ui.message;
    box.style.height = "auto";
    box.style.height = `${box.scrollHeight + box.offsetHeight - box.clientHeight}px`;
  }

  /** Refresh the counter and the Send button (after typing or a change of phase). */
  update() {
    const ui = this.#ui;
    const length = charCount(ui.message.value.trim());
    const over = length > MAX_TEXT_LENGTH;
    ui.counter.hidden = length < COUNTER_FROM;
    ui.counter.textContent = over
      ? t("counterOver", { over: length - MAX_TEXT_LENGTH, length, max: MAX_TEXT_LENGTH })
      : t("counter", { length, max: MAX_TEXT_LENGTH });
    ui.counter.classList.toggle("over", over);
    ui.sendButton.disabled = over || !QUEUEING_PHASES.has(this.#session.phase);
  }

  /** Put a message that was not delivered back in the box, above what is there. */
  restore(text) {
    const box = this.#ui.message;
    const current = box.value.trim();
    box.value = current === "" ? text : `${text}\n${box.value}`;
    this.#autosize();
    this.update();
  }

  showError(text) {
    clearTimeout(this.#errorTimer);
    this.#ui.composerError.textContent = text;
    this.#ui.composerError.hidden = false;
    this.#errorTimer = setTimeout(() => this.hideError(), ERROR_SHOWN_FOR);
  }

  hideError() {
    clearTimeout(this.#errorTimer);
    this.#ui.composerError.textContent = "";
    this.#ui.composerError.hidden = true;
  }

  send() {
    const text = this.#ui.message.value.trim();
    if (text === "") return;
    const length = charCount(text);
    if (length > MAX_TEXT_LENGTH) {
      this.showError(t("tooLongToSend", { length, max: MAX_TEXT_LENGTH }));
      return;
    }
    if (!QUEUEING_PHASES.has(this.#session.phase)) return;
    const room = this.#current();
    const pending = room.pending;
    const ref = pending.nextRef();
    if (this.#session.phase === "live" && !pending.held() && room.send({ type: "say", text, ref })) {
      pending.sent(ref, text);
    } else {
      // No connection, or ours wait for a resend: this one goes after them,
      // after the reconnect's replay at the latest, so that ours keep their
      // order. It stays in the log as not sent yet until then.
      pending.hold(ref, text);
      room.held(ref, text);
    }
    // A message ends "typing" for the others: the next keystroke may say so
    // again soon (the server forwards at most one `typing` a second).
    this.#cancelTyping();
    this.#typingGap = TYPING_AFTER_SEND;
    this.#ui.message.value = "";
    this.#autosize();
    this.update();
    this.hideError();
  }

  #typed() {
    this.#autosize();
    this.update();
    this.#lastKeystroke = Date.now();
    this.#scheduleTyping();
  }

  /**
   * Tell the others we are typing: at once if the last `typing` frame is old
   * enough, else when it is, if we are still typing by then.
   */
  #scheduleTyping() {
    if (this.#typingTimer !== 0) return;
    if (this.#session.phase !== "live" || this.#ui.message.value.trim() === "") return;
    const wait = this.#lastTypingSent + this.#typingGap - Date.now();
    if (wait <= 0) {
      if (this.#current().send({ type: "typing" })) {
        this.#lastTypingSent = Date.now();
        this.#typingGap = TYPING_SEND_EVERY;
      }
      return;
    }
    this.#typingTimer = setTimeout(() => {
      this.#typingTimer = 0;
      if (Date.now() - this.#lastKeystroke < TYPING_STILL) this.#scheduleTyping();
    }, wait);
  }

  #cancelTyping() {
    clearTimeout(this.#typingTimer);
    this.#typingTimer = 0;
  }
}
