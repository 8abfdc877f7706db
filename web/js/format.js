// Numbers and times as the pages show them.

/** 3725 → "1:02:05"; 65 → "1:05". */
export function duration(seconds) {
  const total = Math.max(0, Math.round(seconds));
  const hours = Math.floor(total / 3600);
  const minutes = Math.floor((total % 3600) / 60);
  const rest = String(total % 60).padStart(2, "0");
  return hours > 0 ? `${hours}:${String(minutes).padStart(2, "0")}:${rest}` : `${minutes}:${rest}`;
}

/** An RFC 3339 time as local "HH:MM:SS". */
export function clock(text) {
  if (!text) return "—";
  const date = new Date(text);
  return date.toLocaleTimeString([], { hour12: false });
}

/** 12345 → "12,345". */
export function count(value) {
  return Number(value ?? 0).toLocaleString("en-US");
}

/**
 * The page's token, if the server wants one: given in the link as `#token=…` (a fragment never
 * leaves the browser, so no server or proxy logs it) or, in older links, `?token=…`. It is kept
 * for the tab's later pages and taken out of the address bar and the history at once.
 */
export function token() {
  const fragment = new URLSearchParams(location.hash.slice(1));
  const query = new URLSearchParams(location.search);
  const given = fragment.get("token") ?? query.get("token");
  if (given) {
    sessionStorage.setItem("stockpulse.token", given);
    fragment.delete("token");
    query.delete("token");
    const search = query.toString();
    const hash = fragment.toString();
    history.replaceState(null, "", `${location.pathname}${search ? `?${search}` : ""}${hash ? `#${hash}` : ""}`);
  }
  return given ?? sessionStorage.getItem("stockpulse.token");
}

/** Fetches JSON from the API; throws with the server's error `code` and message. */
export async function api(method, path, body) {
  const headers = body === undefined ? {} : { "content-type": "application/json" };
  const credential = token();
  if (credential) headers.authorization = `Bearer ${credential}`;
  const response = await fetch(path, {
    method,
    headers,
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await response.text();
  const value = text ? JSON.parse(text) : null;
  if (!response.ok) {
    const error = new Error(value?.error?.message ?? `HTTP ${response.status}`);
    error.code = value?.error?.code ?? `http_${response.status}`;
    throw error;
  }
  return value;
}

/** The room a page shows: ?room=…, else the first room the server has. */
export async function pickRoom() {
  const asked = new URLSearchParams(location.search).get("room");
  if (asked) return asked;
  const { rooms } = await api("GET", "/api/v1/rooms");
  return rooms.length > 0 ? rooms[0].room : null;
}

/**
 * A room after a `room` message: the new header, and the line-up it gives, each listing as
 * the message has it when it changed (keeping the actual curve the page had when the message
 * leaves it out), as the page had it otherwise.
 */
export function mergeRoom(previous, changed) {
  const lineup = changed.lineup ?? changed.listings.map((entry) => entry.sku);
  const listings = lineup
    .map((sku) => {
      const before = previous?.listings.find((item) => item.sku === sku);
      const fresh = changed.listings.find((item) => item.sku === sku);
      if (!fresh) return before;
      if (fresh.series.actual === undefined) fresh.series.actual = before?.series.actual ?? [];
      return fresh;
    })
    .filter((entry) => entry !== undefined);
  return { ...changed, listings };
}
