// Protocol v1 rules the client checks before the server does (docs/protocol.md),
// and what the server's error and close codes mean to a person (in the page's
// language, i18n.js). Pure functions, no DOM.

import { t } from "./i18n.js";

export const DEFAULT_ROOM = "lobby";
export const MAX_NAME_LENGTH = 32;
export const MAX_ROOM_LENGTH = 64;
export const MAX_TEXT_LENGTH = 4000;

const ROOM_PATTERN = /^[A-Za-z0-9_.-]{1,64}$/;
// The server's name rules (docs/protocol.md, "Names"); the server decides,
// these only spare a round trip. Control characters, lone surrogates, line
// and paragraph separators:
const CONTROL_IN_NAME = /[\p{Cc}\p{Cs}\p{Zl}\p{Zp}]/u;
// Private-use and unassigned code points:
const UNKNOWN_IN_NAME = /[\p{Co}\p{Cn}]/u;
// Characters that draw nothing yet are not format characters (Cf):
const BLANK = /^[\u034F\u115F\u1160\u17B4\u17B5\u2800\u3164\uFFA0\u{16FE4}\u{1D159}]$/u;
const VISIBLE = /^[\p{L}\p{N}\p{P}\p{S}]$/u;
const MARK = /^\p{M}$/u;
const FORMAT = /^\p{Cf}$/u;
const JOINER = /^[\u200C\u200D]$/u; // ZWNJ, ZWJ
const VARIATION_SELECTOR = /^[\u180B-\u180D\u180F\uFE00-\uFE0F\u{E0100}-\u{E01EF}]$/u;

const isVisible = (char) => VISIBLE.test(char) && !BLANK.test(char);

/**
 * Whether the character at `chars[i]` may stand there: no format character
 * (direction controls, zero-width spaces, BOM...) or blank filler, except
 * ZWNJ/ZWJ between a visible character (or its marks) and a visible one, and
 * a variation selector right after a visible character.
 */
function fitsInName(chars, i) {
  const char = chars[i];
  if (JOINER.test(char)) {
    if (i === 0 || i === chars.length - 1) return false;
    const before = chars[i - 1];
    return (isVisible(before) || MARK.test(before)) && isVisible(chars[i + 1]);
  }
  if (VARIATION_SELECTOR.test(char)) return i > 0 && isVisible(chars[i - 1]);
  return !FORMAT.test(char) && !BLANK.test(char);
}

/** Length in Unicode code points, as the server counts. */
export function charCount(text) {
  let count = 0;
  for (const _ of text) count += 1;
  return count;
}

/** The name as the server will see it, or an error message for the Name field. */
export function checkName(raw) {
  const name = raw.normalize("NFC").trim();
  if (name === "") return { error: t("nameEmpty") };
  if (charCount(name) > MAX_NAME_LENGTH) {
    return { error: t("nameTooLong", { max: MAX_NAME_LENGTH }) };
  }
  if (CONTROL_IN_NAME.test(name)) return { error: t("nameControl") };
  if (UNKNOWN_IN_NAME.test(name)) {
    return { error: t("nameUnknown") };
  }
  const chars = [...name];
  if (!chars.every((_, i) => fitsInName(chars, i))) {
    return { error: t("nameInvisible") };
  }
  if (MARK.test(chars[0])) return { error: t("nameMark") };
  if (!chars.some(isVisible)) {
    return { error: t("nameNotVisible") };
  }
  return { value: name };
}

/** The room (default "lobby"), or an error message for the Room field. */
export function checkRoom(raw) {
  const room = raw.trim() || DEFAULT_ROOM;
  if (!ROOM_PATTERN.test(room)) {
    return { error: t("roomInvalid", { max: MAX_ROOM_LENGTH }) };
  }
  return { value: room };
}

/** The room named by a URL hash such as "#ops" ("" when there is none). */
export function roomFromHash(hash) {
  let room = hash.replace(/^#/, "");
  try {
    room = decodeURIComponent(room);
  } catch {
    // keep it as written; checkRoom will say what is wrong with it
  }
  return room;
}

/**
 * A token in the page's fragment, `#token=…` (or `#room&token=…`): the
 * token, or null, and the fragment without it (what the address bar keeps).
 */
export function tokenFromHash(hash) {
  const parts = hash.replace(/^#/, "").split("&");
  const index = parts.findIndex((part) => part.startsWith("token="));
  if (index < 0) return { token: null, rest: hash.replace(/^#/, "") };
  let token = parts[index].slice("token=".length);
  try {
    token = decodeURIComponent(token);
  } catch {
    // keep it as written; the server will say what is wrong with it
  }
  parts.splice(index, 1);
  return { token: token === "" ? null : token, rest: parts.join("&") };
}

/**
 * The name a token (a JWT) carries in its `sub`, read without checking the
 * signature (the server checks it; this is only what to show), or null.
 */
export function tokenName(token) {
  if (typeof token !== "string") return null;
  const payload = token.split(".")[1];
  if (!payload) return null;
  try {
    const base64 = payload.replace(/-/g, "+").replace(/_/g, "/");
    const bytes = Uint8Array.from(atob(base64), (c) => c.charCodeAt(0));
    const claims = JSON.parse(new TextDecoder().decode(bytes));
    return typeof claims?.sub === "string" ? checkName(claims.sub).value ?? null : null;
  } catch {
    return null;
  }
}

/** Whether a close ended a connection because its token expired (its reason says). */
export function tokenExpired(code, reason) {
  return code === 1008 && typeof reason === "string" && reason.startsWith("token expired");
}

/** Friendly text for the `error` events a person can cause. */
export function errorText(code, fallback) {
  switch (code) {
    case "name_taken":
      return t("errorNameTaken");
    case "bad_name":
      return t("errorBadName");
    case "bad_room":
      return t("errorBadRoom");
    case "rate_limited":
      return t("errorRateLimited");
    case "text_too_long":
      return t("errorTooLong", { max: MAX_TEXT_LENGTH });
    case "empty_text":
      return t("errorEmpty");
    case "unavailable":
      return t("errorUnavailable");
    case "unauthorized":
      return typeof fallback === "string" && fallback !== ""
        ? t("errorUnauthorizedBecause", { reason: fallback })
        : t("errorUnauthorized");
    default:
      return typeof fallback === "string" && fallback !== ""
        ? t("errorRefusedBecause", { reason: fallback })
        : t("errorRefused");
  }
}

/**
 * What a close code means: `retry` says whether reconnecting (with `since`) is
 * the right answer, `text` what to tell the person. `welcomed`: whether the
 * connection was welcomed before it closed (a close that answers our hello
 * means something else than one that ends a live connection).
 */
export function describeClose(code, { welcomed = true } = {}) {
  switch (code) {
    case 1000:
      // The server closes with 1000 only when another connection took this
      // member's place with its resume secret (another tab, say): coming
      // back would take it away again, and so on.
      return { retry: false, text: t("closeReplaced") };
    case 1001:
      return { retry: true, text: t("closeRestarting") };
    case 1012:
      return { retry: true, text: t("closeServiceRestart") };
    case 1013:
      // Before a welcome it refused our hello: the server cannot admit anyone
      // now (its backplane is unreachable). After one, we fell behind.
      return welcomed
        ? { retry: true, text: t("closeSlow") }
        : { retry: true, text: t("closeBusy") };
    case 1011:
      return { retry: true, text: t("closeProblem") };
    case 1003:
    case 1002:
    case 1007:
      return { retry: false, text: t("closeUnreadable") };
    case 1008:
      return { retry: false, text: t("closePolicy") };
    case 1009:
      return { retry: false, text: t("closeTooLarge") };
    default:
      return { retry: true, text: t("closeLost") };
  }
}

/** Reconnection delay in ms: exponential backoff with jitter ("equal jitter"). */
export function backoffDelay(attempt, { base = 500, cap = 30000, random = Math.random } = {}) {
  const ceiling = Math.min(cap, base * 2 ** Math.min(attempt, 16));
  return ceiling / 2 + random() * (ceiling / 2);
}

/**
 * The ceilings (ms) of the reconnection delays, attempt by attempt: the
 * first retry comes within half a second (a restart or a blip is over by
 * then more often than not), the next few within 1 or 2 s, so that a client
 * is back within about 2 s of a server that was gone for a few seconds;
 * then the wait doubles up to `RECONNECT_CAP`.
 */
export const RECONNECT_CEILINGS = Object.freeze([500, 1000, 2000, 2000, 4000, 8000]);
export const RECONNECT_CAP = 15_000;

/**
 * How long to wait (ms) before reconnection attempt `attempt` (0 for the
 * first after a loss). The first is spread over the whole half second
 * ("full jitter": the clients of a restarted server do not all come back in
 * the same instant); later ones wait between half their ceiling and all of
 * it ("equal jitter"). `cap` lowers the ceiling (never raises it).
 */
export function reconnectDelay(attempt, { cap = RECONNECT_CAP, random = Math.random } = {}) {
  const last = RECONNECT_CEILINGS.length - 1;
  const ceiling = Math.min(
    cap,
    RECONNECT_CAP,
    attempt <= last
      ? RECONNECT_CEILINGS[attempt]
      : RECONNECT_CEILINGS[last] * 2 ** Math.min(attempt - last, 16),
  );
  if (attempt === 0) return random() * ceiling;
  return ceiling / 2 + random() * (ceiling / 2);
}

const LEAVE_REASONS = {
  quit: null,
  timeout: "reasonTimeout",
  slow: "reasonSlow",
  error: "reasonError",
  shutdown: "reasonShutdown",
};

/** The suffix explaining a `leave` event's reason. */
export function leaveReasonText(reason) {
  const key = Object.hasOwn(LEAVE_REASONS, reason) ? LEAVE_REASONS[reason] : null;
  return key === null ? "" : t(key);
}
