// Mentions: `@name` of a current member in a message's text. Pure (no DOM):
// conversation.js highlights the parts, app.js counts those of us; tests
// call it alone.
//
// Rules:
// - `@` starts a mention only at the start of the text or after a character
//   that is not a letter, number, combining mark, connector (`_`) or `@`
//   (so `me@alice.org` mentions nobody);
// - what follows must be a member's name, compared ignoring case (Unicode's
//   case rules, as the server's name rules ignore case; accents count:
//   `@alíce` is not `alice`), and runs of white space counted as one as in
//   the server's names;
// - the name must end at a word boundary: the next character is not a
//   letter, number, combining mark or connector, nor a joiner (`@alicex` and
//   `@alice_2` mention nobody; `@alice,` and `@alice's` do);
// - when several names fit (`@Ana` and `@Ana María`), the longest wins.

const WORD = /[\p{L}\p{N}\p{M}\p{Pc}\u200C\u200D]/u;
const BEFORE_AT = /[\p{L}\p{N}\p{M}\p{Pc}@]/u;

/** A name as mentions compare it: NFC, white-space runs as one space, case folded. */
function folded(name) {
  return name.normalize("NFC").replace(/\s+/gu, " ").toLowerCase().toUpperCase();
}

/**
 * Whether the member `name` is written at `text[at...]`: the length (code
 * units) of what matches, or 0. Compared code point by code point so that a
 * case change that alters the length (ß, İ) cannot match across a boundary.
 */
function matchAt(text, at, name) {
  const wanted = [...name.normalize("NFC").replace(/\s+/gu, " ")];
  let i = at;
  for (const char of wanted) {
    if (i >= text.length) return 0;
    if (/\s/u.test(char)) {
      const run = /^\s+/u.exec(text.slice(i));
      if (run === null) return 0;
      i += run[0].length;
      continue;
    }
    const got = String.fromCodePoint(text.codePointAt(i));
    if (got !== char && folded(got) !== folded(char)) return 0;
    i += got.length;
  }
  return i - at;
}

/**
 * `text` cut into parts, in order: `{text}` for plain text and
 * `{text, mention}` for a mention (`text` as written, `mention` the member's
 * name as the member list has it). Joining every part's `text` gives
 * `text` back. `members`: the names of the room's current members.
 */
export function mentionParts(text, members) {
  const names = [...new Set(members.filter((name) => typeof name === "string" && name !== ""))];
  names.sort((a, b) => [...b].length - [...a].length);
  const parts = [];
  let plain = 0;
  let at = 0;
  while (at < text.length) {
    const sign = text.indexOf("@", at);
    if (sign === -1) break;
    at = sign + 1;
    const before = sign > 0 ? String.fromCodePoint(text.codePointAt(sign - 1)) : "";
    // a low surrogate before: look at the whole code point
    const previous =
      sign > 1 && /[\uDC00-\uDFFF]/u.test(text[sign - 1]) ? text.slice(sign - 2, sign) : before;
    if (previous !== "" && BEFORE_AT.test(previous)) continue;
    for (const name of names) {
      const length = matchAt(text, at, name);
      if (length === 0) continue;
      const end = at + length;
      const next = end < text.length ? String.fromCodePoint(text.codePointAt(end)) : "";
      if (next !== "" && WORD.test(next)) continue;
      if (sign > plain) parts.push({ text: text.slice(plain, sign) });
      parts.push({ text: text.slice(sign, end), mention: name });
      plain = end;
      at = end;
      break;
    }
  }
  if (plain < text.length || parts.length === 0) parts.push({ text: text.slice(plain) });
  return parts;
}

/** Whether `text` mentions `name` (one of `members`, who are the room's members). */
export function mentions(text, name, members) {
  return mentionParts(text, members).some((part) => part.mention === name);
}
