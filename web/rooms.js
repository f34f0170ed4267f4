// The rooms a page knows about, as data: the rooms it has joined, the
// server's active rooms (`GET /api/rooms`), the person's recent rooms (kept
// in localStorage), and what a reloaded page needs to take its places back
// (kept in sessionStorage). Pure (no DOM, no storage, no fetch): the page
// reads and writes the strings; tests call these alone.

import { checkName, checkRoom } from "./protocol.js";

export const MAX_RECENT = 8;
const MAX_SECRET = 64; // a hello's `resume` and `epoch`, at most

/**
 * The recent rooms after visiting `room`: it first, then the others in the
 * order they were (no repeats), at most `max`.
 */
export function addRecent(recent, room, max = MAX_RECENT) {
  return [room, ...recent.filter((other) => other !== room)].slice(0, max);
}

/** Recent rooms read back from storage (`text`, JSON): only valid room names, no repeats. */
export function parseRecent(text) {
  let value;
  try {
    value = JSON.parse(text ?? "[]");
  } catch {
    return [];
  }
  if (!Array.isArray(value)) return [];
  const rooms = [];
  for (const room of value) {
    if (typeof room !== "string" || checkRoom(room).value !== room) continue;
    if (!rooms.includes(room)) rooms.push(room);
    if (rooms.length === MAX_RECENT) break;
  }
  return rooms;
}

/**
 * The body of `GET /api/rooms` as `[{name, members}]`, busiest first, only
 * the entries that are well formed; [] for anything else.
 */
export function parseActiveRooms(body) {
  const rooms = body !== null && typeof body === "object" ? body.rooms : null;
  if (!Array.isArray(rooms)) return [];
  const out = [];
  for (const room of rooms) {
    if (room === null || typeof room !== "object") continue;
    const { name, members } = room;
    if (typeof name !== "string" || checkRoom(name).value !== name) continue;
    if (!Number.isInteger(members) || members < 0) continue;
    out.push({ name, members });
  }
  return out;
}

/**
 * The sidebar's three lists, each room in one of them only:
 * - `joined`: the rooms this page is in, in the order joined, each with its
 *   member count as the server last said (`members`, or null), `unread`
 *   and `mentions` (0 for the room in view), and `current`;
 * - `active`: the server's other active rooms, busiest first;
 * - `recent`: the person's other recent rooms.
 * `joined` is `[{name, unread, mentions}]`, `current` the room in view.
 */
export function sidebar({ joined, current, active, recent }) {
  const counts = new Map(active.map((room) => [room.name, room.members]));
  const mine = new Set(joined.map((room) => room.name));
  return {
    joined: joined.map((room) => ({
      name: room.name,
      members: counts.get(room.name) ?? null,
      unread: room.name === current ? 0 : room.unread,
      mentions: room.name === current ? 0 : room.mentions,
      current: room.name === current,
    })),
    active: active.filter((room) => !mine.has(room.name)),
    recent: recent.filter((room) => !mine.has(room) && !counts.has(room)),
  };
}

/**
 * What a reloaded page needs to take its places back, as a string for
 * sessionStorage (per tab, gone with it): our name, the room in view, and
 * for each joined room the last welcome's `resume` secret, its `epoch` and
 * the last id shown (`since`).
 */
export function encodeSaved({ name, current, rooms }) {
  return JSON.stringify({ name, current, rooms });
}

/**
 * `encodeSaved`'s string read back: `{name, current, rooms: [{room, since,
 * epoch, resume}]}` with only what a hello may carry, or null when there
 * is nothing usable.
 */
export function decodeSaved(text) {
  let value;
  try {
    value = JSON.parse(text ?? "null");
  } catch {
    return null;
  }
  if (value === null || typeof value !== "object" || !Array.isArray(value.rooms)) return null;
  if (typeof value.name !== "string" || checkName(value.name).value !== value.name) return null;
  const secret = (s) => typeof s === "string" && s.length > 0 && s.length <= MAX_SECRET;
  const rooms = [];
  for (const entry of value.rooms) {
    if (entry === null || typeof entry !== "object") continue;
    const { room } = entry;
    if (typeof room !== "string" || checkRoom(room).value !== room) continue;
    if (rooms.some((other) => other.room === room)) continue;
    rooms.push({
      room,
      since: Number.isInteger(entry.since) && entry.since >= 0 ? entry.since : null,
      epoch: secret(entry.epoch) ? entry.epoch : null,
      resume: secret(entry.resume) ? entry.resume : null,
    });
  }
  if (rooms.length === 0) return null;
  const current = rooms.some((entry) => entry.room === value.current)
    ? value.current
    : rooms[0].room;
  return { name: value.name, current, rooms };
}
