// Which parts of a message's text are links. Pure (no DOM): conversation.js
// turns the parts into text nodes and <a> elements, and tests call it alone.
//
// Rules, the same for every link:
// - `http://` and `https://` URLs, and bare hosts starting with `www.`
//   (`www.example.org/path`), which link to `https://` that host;
// - no other scheme is ever a link (`javascript:`, `data:`...): only a URL
//   the browser parses with the http(s) scheme becomes an href;
// - trailing punctuation is left out (`see https://example.org.`);
// - a bare `www.` host must be what the browser takes for the host: one with
//   a user part (`www.example.org:x@evil.example`) or that is glued to what
//   comes before it (`me@www.example.org`, `a.www.example.org`) is no link.

const URL_PATTERN = /\bhttps?:\/\/[^\s<>"'`]+|(?<![\p{L}\p{N}_.@/:-])www\.[^\s<>"'`]+/giu;
const TRAILING_PUNCTUATION = /[.,;:!?)\]}'"]+$/u;
const BARE_HOST = /^www\.[\p{L}\p{N}-]+(?:\.[\p{L}\p{N}-]+)+(?::\d{1,5})?$/iu;

/** The http(s) URL `raw` links to, or null when it is no link. */
function hrefOf(raw) {
  const bare = !/^https?:/iu.test(raw);
  let url;
  try {
    url = new URL(bare ? `https://${raw}` : raw);
  } catch {
    return null;
  }
  if (url.protocol !== "http:" && url.protocol !== "https:") return null;
  if (bare) {
    // The host as written must be the whole host: no user part, no port
    // trick, nothing the parser would read differently from a person.
    const host = raw.split(/[/?#]/u, 1)[0];
    if (!BARE_HOST.test(host) || url.username !== "" || url.password !== "") return null;
  }
  return url.href;
}

/**
 * `text` cut into parts, in order: `{text}` for plain text and
 * `{text, href}` for a link (`text` as written, `href` the http(s) URL).
 * Joining every part's `text` gives `text` back.
 */
export function linkParts(text) {
  const parts = [];
  let at = 0;
  for (const match of text.matchAll(URL_PATTERN)) {
    const raw = match[0].replace(TRAILING_PUNCTUATION, "");
    const href = hrefOf(raw);
    if (href === null) continue;
    if (match.index > at) parts.push({ text: text.slice(at, match.index) });
    parts.push({ text: raw, href });
    at = match.index + raw.length;
  }
  if (at < text.length || parts.length === 0) parts.push({ text: text.slice(at) });
  return parts;
}
