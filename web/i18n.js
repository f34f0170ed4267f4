// Every string the page shows, in English and Spanish (the original design
// document is Spanish), and the language the page speaks: the first of the
// browser's languages (navigator.languages) that has a catalog, else English.
// Pure apart from reading navigator.languages once: no DOM.
//
// A string may hold `{name}` placeholders (filled by `t`, or by `parts` when
// a placeholder is an element, such as a name in its <bdi>), and `[[x]]` for
// a key of the keyboard (`markup` says which parts; the page draws <kbd>).

const en = {
  // The join screen
  lede: "Pick a name and a room, and start talking.",
  name: "Name",
  room: "Room",
  roomHint: "Letters, digits and [[_]] [[-]] [[.]]; a new name opens a new room.",
  join: "Join",
  connecting: "Connecting…",
  // The top bar and the conversation
  connected: "Connected",
  reconnecting: "Reconnecting…",
  disconnected: "Disconnected",
  members: "Members",
  leave: "Leave",
  conversation: "Conversation",
  newMessages: "New messages ↓",
  jumpToNewest: "Jump to newest ↓",
  loadingOlder: "Loading older messages…",
  historyBeginning: "The beginning of the room's history",
  message: "Message",
  messageRoom: "Message #{room}",
  send: "Send",
  composerHelp: "[[Enter]] to send, [[Shift]]+[[Enter]] for a new line",
  closeMembers: "Close member list",
  memberList: "Member list",
  you: "(you)",
  showMore: "Show more",
  showLess: "Show less",
  pendingUnavailable: "Not sent yet, retrying…",
  pendingOffline: "Not sent yet: waiting for the connection…",
  pendingSending: "Sending…",
  noticeGap: "Some messages are missing here.",
  noticeLost: "Some messages sent while you were away could not be recovered.",
  noticeRestarted:
    "The server restarted without its history: messages sent while you were away could not be recovered.",
  today: "Today",
  yesterday: "Yesterday",
  youJoined: "You joined #{room}",
  youBack: "You are back",
  joined: "{name} joined",
  left: "{name} left{reason}",
  reasonTimeout: " (connection lost)",
  reasonSlow: " (connection too slow)",
  reasonError: " (disconnected)",
  reasonShutdown: " (server restart)",
  typingOne: "{name} is typing…",
  typingTwo: "{first} and {second} are typing…",
  typingMany: "Several people are typing…",
  counter: "{length} / {max}",
  counterOver: "{over} characters too many ({length} / {max})",
  tooLongToSend: "Your message has {length} characters; the limit is {max}. Shorten it to send.",
  maybeLost: "Your last message may not have been delivered. It is back in the message box.",
  // The rooms sidebar
  rooms: "Rooms",
  roomList: "Room list",
  closeRooms: "Close room list",
  joinedRooms: "Your rooms",
  activeRooms: "Active rooms",
  recentRooms: "Recent",
  joinRoom: "Join a room",
  joinRoomButton: "Join",
  noActiveRooms: "No other active rooms.",
  memberCount: "{count} here",
  unread: "{count} unread",
  mentionsCount: "{count} mentioning you",
  notifyMe: "Notify me",
  notifyBlocked: "Notifications are blocked in this browser.",
  mentionedYou: "{name} mentioned you in #{room}",
  // Errors from the server
  errorNameTaken:
    "Someone in this room already uses that name, or one that looks like it. Try another one.",
  errorBadName:
    "That name cannot be used. Use 1 to 32 characters, with no control, invisible or direction-control characters.",
  errorBadRoom: 'That room name cannot be used. Use letters, digits, "_", "-" or ".".',
  errorRateLimited: "Slow down: you are sending messages too fast. Your message was not sent.",
  errorTooLong: "Your message is longer than {max} characters and was not sent.",
  errorEmpty: "Your message is empty.",
  errorUnavailable: "The server cannot take messages right now. Yours will be sent again shortly.",
  errorRefusedBecause: "The server refused that: {reason}",
  errorRefused: "The server refused that.",
  // Checks made before the server does
  nameEmpty: "Enter a name.",
  nameTooLong: "Use at most {max} characters.",
  nameControl: "A name cannot contain control characters.",
  nameUnknown: "A name cannot contain unassigned or private-use characters.",
  nameInvisible: "A name cannot contain invisible or direction-control characters.",
  nameMark: "A name cannot start with a combining mark.",
  nameNotVisible: "A name needs a letter, number, punctuation mark or symbol.",
  roomInvalid: 'Use 1 to {max} letters, digits, "_", "-" or "." (no spaces).',
  // The connection
  closeRestarting: "The server is restarting.",
  closeServiceRestart: "The chat service restarted.",
  closeSlow: "The connection could not keep up.",
  closeBusy: "The server is busy.",
  closeProblem: "The server had a problem.",
  closeUnreadable: "The server closed the connection because it received data it could not read.",
  closePolicy:
    "The server closed the connection (it took too long to join, or too many requests were refused).",
  closeTooLarge: "The server closed the connection: a message was too large.",
  closeLost: "The connection was lost.",
  closeReplaced: "This chat was opened in another tab or window.",
  tryAgainSoon: "{reason} Try again in a moment.",
  signedInAs: "Signed in as {name}",
  tokenRefreshing: "Your sign-in expired; renewing it.",
  tokenExpired: "Your sign-in has expired. Open the chat again from the site that sent you here.",
  errorUnauthorized: "This chat did not accept your sign-in.",
  errorUnauthorizedBecause: "This chat did not accept your sign-in: {reason}",
  couldNotConnect: "Could not connect to the chat server. Check your connection and try again.",
  retryingIn: "{reason} Retrying in {seconds} s.",
  retryNow: "Retry now",
  reconnect: "Reconnect",
  waitingForGhost: "Waiting for your previous connection to end.",
};

/** @type {typeof en} */
const es = {
  lede: "Elige un nombre y una sala, y empieza a hablar.",
  name: "Nombre",
  room: "Sala",
  roomHint: "Letras, cifras y [[_]] [[-]] [[.]]; un nombre nuevo abre una sala nueva.",
  join: "Entrar",
  connecting: "Conectando…",
  connected: "Conectado",
  reconnecting: "Reconectando…",
  disconnected: "Desconectado",
  members: "Miembros",
  leave: "Salir",
  conversation: "Conversación",
  newMessages: "Mensajes nuevos ↓",
  jumpToNewest: "Ir a lo más reciente ↓",
  loadingOlder: "Cargando mensajes anteriores…",
  historyBeginning: "El principio del historial de la sala",
  message: "Mensaje",
  messageRoom: "Mensaje a #{room}",
  send: "Enviar",
  composerHelp: "[[Intro]] para enviar, [[Mayús]]+[[Intro]] para una línea nueva",
  closeMembers: "Cerrar la lista de miembros",
  memberList: "Lista de miembros",
  you: "(tú)",
  showMore: "Ver más",
  showLess: "Ver menos",
  pendingUnavailable: "Aún no enviado, reintentando…",
  pendingOffline: "Aún no enviado: esperando la conexión…",
  pendingSending: "Enviando…",
  noticeGap: "Aquí faltan algunos mensajes.",
  noticeLost: "No se han podido recuperar algunos mensajes enviados mientras no estabas.",
  noticeRestarted:
    "El servidor se reinició sin su historial: no se han podido recuperar los mensajes enviados mientras no estabas.",
  today: "Hoy",
  yesterday: "Ayer",
  youJoined: "Has entrado en #{room}",
  youBack: "Has vuelto",
  joined: "{name} ha entrado",
  left: "{name} se ha ido{reason}",
  reasonTimeout: " (conexión perdida)",
  reasonSlow: " (conexión demasiado lenta)",
  reasonError: " (desconectado)",
  reasonShutdown: " (reinicio del servidor)",
  typingOne: "{name} está escribiendo…",
  typingTwo: "{first} y {second} están escribiendo…",
  typingMany: "Varias personas están escribiendo…",
  counter: "{length} / {max}",
  counterOver: "{over} caracteres de más ({length} / {max})",
  tooLongToSend: "Tu mensaje tiene {length} caracteres; el límite es {max}. Acórtalo para enviarlo.",
  maybeLost: "Puede que tu último mensaje no se haya entregado. Está de vuelta en el cuadro de mensaje.",
  rooms: "Salas",
  roomList: "Lista de salas",
  closeRooms: "Cerrar la lista de salas",
  joinedRooms: "Tus salas",
  activeRooms: "Salas activas",
  recentRooms: "Recientes",
  joinRoom: "Entrar en una sala",
  joinRoomButton: "Entrar",
  noActiveRooms: "No hay otras salas activas.",
  memberCount: "{count} aquí",
  unread: "{count} sin leer",
  mentionsCount: "{count} te mencionan",
  notifyMe: "Avisarme",
  notifyBlocked: "Las notificaciones están bloqueadas en este navegador.",
  mentionedYou: "{name} te ha mencionado en #{room}",
  errorNameTaken:
    "Alguien en esta sala ya usa ese nombre, o uno que se le parece. Prueba con otro.",
  errorBadName:
    "Ese nombre no se puede usar. Usa de 1 a 32 caracteres, sin caracteres de control, invisibles ni de dirección.",
  errorBadRoom: 'Ese nombre de sala no se puede usar. Usa letras, cifras, "_", "-" o ".".',
  errorRateLimited: "Más despacio: estás enviando mensajes demasiado rápido. Tu mensaje no se ha enviado.",
  errorTooLong: "Tu mensaje tiene más de {max} caracteres y no se ha enviado.",
  errorEmpty: "Tu mensaje está vacío.",
  errorUnavailable:
    "El servidor no puede aceptar mensajes ahora mismo. El tuyo se enviará de nuevo en breve.",
  errorRefusedBecause: "El servidor lo ha rechazado: {reason}",
  errorRefused: "El servidor lo ha rechazado.",
  nameEmpty: "Escribe un nombre.",
  nameTooLong: "Usa como mucho {max} caracteres.",
  nameControl: "Un nombre no puede contener caracteres de control.",
  nameUnknown: "Un nombre no puede contener caracteres sin asignar o de uso privado.",
  nameInvisible: "Un nombre no puede contener caracteres invisibles ni de control de dirección.",
  nameMark: "Un nombre no puede empezar por una marca combinante.",
  nameNotVisible: "Un nombre necesita una letra, una cifra, un signo de puntuación o un símbolo.",
  roomInvalid: 'Usa de 1 a {max} letras, cifras, "_", "-" o "." (sin espacios).',
  closeRestarting: "El servidor se está reiniciando.",
  closeServiceRestart: "El servicio de chat se ha reiniciado.",
  closeSlow: "La conexión no daba abasto.",
  closeBusy: "El servidor está ocupado.",
  closeProblem: "El servidor ha tenido un problema.",
  closeUnreadable: "El servidor ha cerrado la conexión porque recibió datos que no podía leer.",
  closePolicy:
    "El servidor ha cerrado la conexión (se tardó demasiado en entrar, o se rechazaron demasiadas peticiones).",
  closeTooLarge: "El servidor ha cerrado la conexión: un mensaje era demasiado grande.",
  closeLost: "Se ha perdido la conexión.",
  closeReplaced: "Este chat se ha abierto en otra pestaña o ventana.",
  tryAgainSoon: "{reason} Inténtalo de nuevo en un momento.",
  signedInAs: "Has iniciado sesión como {name}",
  tokenRefreshing: "Tu sesión ha caducado; renovándola.",
  tokenExpired: "Tu sesión ha caducado. Vuelve a abrir el chat desde el sitio que te trajo aquí.",
  errorUnauthorized: "Este chat no ha aceptado tu inicio de sesión.",
  errorUnauthorizedBecause: "Este chat no ha aceptado tu inicio de sesión: {reason}",
  couldNotConnect: "No se ha podido conectar con el servidor de chat. Comprueba tu conexión e inténtalo de nuevo.",
  retryingIn: "{reason} Reintentando en {seconds} s.",
  retryNow: "Reintentar ahora",
  reconnect: "Reconectar",
  waitingForGhost: "Esperando a que termine tu conexión anterior.",
};

/** The catalogs, by language subtag. */
export const CATALOGS = Object.freeze({ en, es });

/**
 * The language to speak for a browser whose preferred languages are
 * `languages` (BCP 47 tags, most preferred first): the first whose primary
 * subtag has a catalog, else "en".
 */
export function chooseLanguage(languages) {
  for (const tag of Array.isArray(languages) ? languages : []) {
    if (typeof tag !== "string") continue;
    const primary = tag.split("-")[0].toLowerCase();
    if (Object.hasOwn(CATALOGS, primary)) return primary;
  }
  return "en";
}

/** The BCP 47 tag for Intl (the browser's own tag when it speaks our language). */
function chooseLocale(languages, language) {
  for (const tag of Array.isArray(languages) ? languages : []) {
    if (typeof tag === "string" && tag.split("-")[0].toLowerCase() === language) return tag;
  }
  return language;
}

const preferred = typeof navigator === "object" ? [...(navigator.languages ?? [])] : [];

/** The page's language ("en", "es") and the locale Intl formats with. */
export const language = chooseLanguage(preferred);
export const locale = chooseLocale(preferred, language);

/**
 * `key`'s string in `catalog` (English when the catalog lacks it), cut at its
 * placeholders: text strings and `params` values, in order. A placeholder
 * with no value is kept as written.
 */
export function parts(key, params = {}, catalog = CATALOGS[language]) {
  const template = Object.hasOwn(catalog, key) ? catalog[key] : Object.hasOwn(en, key) ? en[key] : key;
  const out = [];
  let at = 0;
  for (const match of template.matchAll(/\{(\w+)\}/gu)) {
    if (match.index > at) out.push(template.slice(at, match.index));
    out.push(Object.hasOwn(params, match[1]) ? params[match[1]] : match[0]);
    at = match.index + match[0].length;
  }
  if (at < template.length) out.push(template.slice(at));
  return out;
}

/** `key`'s string with its placeholders filled in, as text. */
export function t(key, params = {}, catalog = CATALOGS[language]) {
  return parts(key, params, catalog).map(String).join("");
}

/** A string cut into `{text}` and `{kbd}` (a key of the keyboard, `[[Enter]]`) parts. */
export function markup(text) {
  const out = [];
  let at = 0;
  for (const match of text.matchAll(/\[\[(.+?)\]\]/gu)) {
    if (match.index > at) out.push({ text: text.slice(at, match.index) });
    out.push({ kbd: match[1] });
    at = match.index + match[0].length;
  }
  if (at < text.length) out.push({ text: text.slice(at) });
  return out;
}
