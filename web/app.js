// A small working client for protocol v1; every network string is shown with
// textContent, never parsed as HTML.
const $ = (id) => document.getElementById(id);
let socket = null;
let lastId = null;
let me = null;

function line(text, cls) {
  const item = document.createElement("li");
  item.textContent = text;
  if (cls) item.className = cls;
  $("log").append(item);
  item.scrollIntoView({ block: "end" });
}

function showMembers(names) {
  $("members").replaceChildren(...names.map((n) => {
    const li = document.createElement("li");
    li.textContent = n;
    return li;
  }));
}

function handle(event) {
  if (typeof event.id === "number") {
    if (lastId !== null && event.id <= lastId) return;  // already shown
    lastId = event.id;
  }
  switch (event.type) {
    case "welcome":
      me = event.name;
      lastId = null;
      showMembers(event.members);
      $("join").hidden = true;
      $("chat").hidden = false;
      $("status").textContent = `Connected to ${event.room} as ${event.name}`;
      break;
    case "message":
      line(`${new Date(event.ts).toLocaleTimeString()} ${event.name}: ${event.text}`,
           event.name === me ? "own" : "");
      break;
    case "join":
    case "leave": {
      line(`${event.name} ${event.type === "join" ? "joined" : "left"}`, "system");
      const names = [...$("members").children].map((li) => li.textContent)
        .filter((n) => n !== event.name);
      if (event.type === "join") names.push(event.name);
      showMembers(names);
      break;
    }
    case "typing":
      $("status").textContent = `${event.name} is typing…`;
      break;
    case "error":
      if ($("chat").hidden) $("join-error").textContent = event.message;
      else line(`error: ${event.message}`, "error");
      break;
  }
}

$("join").addEventListener("submit", (e) => {
  e.preventDefault();
  const scheme = location.protocol === "https:" ? "wss" : "ws";
  socket = new WebSocket(`${scheme}://${location.host}/ws`);
  socket.addEventListener("open", () => {
    socket.send(JSON.stringify({ type: "hello", name: $("name").value, room: $("room").value }));
  });
  socket.addEventListener("message", (m) => {
    for (const part of m.data.split("\n")) handle(JSON.parse(part));
  });
  socket.addEventListener("close", (c) => {
    $("status").textContent = `Disconnected (${c.code})`;
  });
});

$("send").addEventListener("submit", (e) => {
  e.preventDefault();
  const text = $("message").value;
  if (socket && text.trim()) socket.send(JSON.stringify({ type: "say", text }));
  $("message").value = "";
});
