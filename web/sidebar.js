// The rooms sidebar: the rooms this page is in (with what is unread there),
// the server's other active rooms, the person's recent rooms, a field to
// join a room by name, and the "Notify me" toggle. A column on wide
// screens, a sheet on phones (like the members). What to list comes from
// rooms.js (`sidebar()`); clicking a room is following its `#room` link,
// which app.js answers.

import { Sheet } from "./conversation.js";
import { t } from "./i18n.js";

const ui = {
  panel: document.getElementById("rooms-panel"),
  toggle: document.getElementById("rooms-toggle"),
  toggleCount: document.getElementById("rooms-toggle-count"),
  close: document.getElementById("rooms-close"),
  joined: document.getElementById("joined-rooms"),
  active: document.getElementById("active-rooms"),
  noActive: document.getElementById("no-active-rooms"),
  recentHeading: document.getElementById("recent-heading"),
  recent: document.getElementById("recent-rooms"),
  form: document.getElementById("new-room-form"),
  input: document.getElementById("new-room"),
  error: document.getElementById("new-room-error"),
  notify: document.getElementById("notify-toggle"),
  notifyStatus: document.getElementById("notify-status"),
};

export const roomsSheet = new Sheet(ui.panel, ui.toggle, ui.close);

/**
 * `onJoin(room)`: the person asked to join `room` (as typed); `onNotify()`:
 * the "Notify me" toggle was pressed.
 */
export function setUp({ onJoin, onNotify }) {
  ui.form.addEventListener("submit", (event) => {
    event.preventDefault();
    onJoin(ui.input.value);
  });
  ui.input.addEventListener("input", () => setJoinError(""));
  ui.notify.addEventListener("click", onNotify);
  // On a phone, picking a room closes the sheet.
  ui.panel.addEventListener("click", (event) => {
    if (event.target instanceof Element && event.target.closest("a")) roomsSheet.setOpen(false);
  });
}

/** A small count beside a room, shown as a number; the link's name says what it counts. */
function count(value, key, className) {
  const badge = document.createElement("span");
  badge.className = `badge ${className}`;
  badge.textContent = String(value);
  badge.setAttribute("aria-hidden", "true");
  return { badge, spoken: t(key, { count: value }) };
}

function roomItem(name, counts, current = false) {
  const item = document.createElement("li");
  const link = document.createElement("a");
  link.className = "room-link";
  link.href = `#${name}`;
  if (current) link.setAttribute("aria-current", "page");
  const label = document.createElement("span");
  label.className = "room-name";
  label.textContent = `#${name}`;
  link.append(label, ...counts.map((shown) => shown.badge));
  if (counts.length > 0) {
    link.setAttribute("aria-label", [`#${name}`, ...counts.map((shown) => shown.spoken)].join(", "));
  }
  item.append(link);
  return item;
}

/** Draw the lists: `lists` is what rooms.js's `sidebar()` returns. */
export function render(lists) {
  ui.joined.replaceChildren(
    ...lists.joined.map((room) => {
      const counts = [];
      if (room.mentions > 0) counts.push(count(room.mentions, "mentionsCount", "mentions"));
      if (room.unread > 0) counts.push(count(room.unread, "unread", "attention"));
      return roomItem(room.name, counts, room.current);
    }),
  );
  ui.active.replaceChildren(
    ...lists.active.map((room) =>
      roomItem(room.name, [count(room.members, "memberCount", "quiet-count")]),
    ),
  );
  ui.noActive.hidden = lists.active.length > 0;
  ui.recent.replaceChildren(...lists.recent.map((room) => roomItem(room, [])));
  ui.recent.hidden = lists.recent.length === 0;
  ui.recentHeading.hidden = lists.recent.length === 0;
  // The phone's toggle says when another room has something new.
  const unread = lists.joined.reduce((sum, room) => sum + room.unread, 0);
  ui.toggleCount.hidden = unread === 0;
  ui.toggleCount.textContent = String(unread);
  ui.toggle.setAttribute(
    "aria-label",
    unread === 0 ? t("rooms") : `${t("rooms")}, ${t("unread", { count: unread })}`,
  );
}

/** Show `text` under the field ("" clears it). */
export function setJoinError(text) {
  ui.error.textContent = text;
  if (text) ui.input.setAttribute("aria-invalid", "true");
  else ui.input.removeAttribute("aria-invalid");
}

/** A join from the field went through (or is on its way): empty the field. */
export function clearJoin() {
  ui.input.value = "";
  setJoinError("");
}

export function focusJoin() {
  ui.input.focus();
}

/** The "Notify me" toggle: `on` (notifications of mentions), `status` a line under it. */
export function setNotify({ on, status }) {
  ui.notify.setAttribute("aria-pressed", String(on));
  ui.notifyStatus.textContent = status;
}
