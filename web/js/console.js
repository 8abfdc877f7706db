// The operators' console: the alert feed with acknowledge buttons (live over the alerts
// topic), the room's listings with restock, halt/resume and forecast controls (live over the
// room topic), and the rooms. The feed keeps a fixed number of alerts.

import { Live } from "./live.js";
import { errorText, t, words } from "./i18n.js";
import { setUp, waitForRoom } from "./page.js";
import { api, clock, count, mergeRoom } from "./format.js";
import { startChannels } from "./channels.js";

const FEED_MAX = 200;
const state = { room: null, view: null, alerts: new Map(), suggestions: new Map() };
const $ = (id) => document.getElementById(id);

function showError(error) {
  $("error").textContent = errorText(error);
}

async function act(work) {
  try {
    showError(null);
    return await work();
  } catch (error) {
    showError(error);
    return null;
  }
}

// The alert feed.

function renderAlert(alert) {
  let item = document.querySelector(`#feed li[data-id="${alert.id}"]`);
  if (!item) {
    item = document.createElement("li");
    item.dataset.id = alert.id;
    item.innerHTML = `<div><b class="what"></b> <span class="state"></span></div>
      <div class="meta"></div><div class="why"></div>`;
    const button = document.createElement("button");
    button.type = "button";
    button.className = "ack";
    button.addEventListener("click", () => acknowledge(alert.id));
    item.append(button);
    const feed = $("feed");
    feed.prepend(item);
    while (feed.children.length > FEED_MAX) feed.lastElementChild.remove();
  }
  item.className = `level-${alert.to}`;
  item.dataset.state = alert.state;
  item.querySelector(".what").textContent = `#${alert.id} ${alert.room} · ${alert.sku}: ${t(alert.from)} → ${t(alert.to)}`;
  item.querySelector(".state").textContent = t(alert.state);
  const by = alert.acknowledged_by ? ` · ${t("by")} ${alert.acknowledged_by}` : "";
  item.querySelector(".meta").textContent = `${clock(alert.at)}${by}`;
  item.querySelector(".why").textContent = words(alert.reasons?.[0]);
  const button = item.querySelector(".ack");
  button.textContent = t("ack");
  button.hidden = alert.state !== "open";
}

function rememberAlert(alert) {
  const known = state.alerts.get(alert.id) ?? {};
  const merged = { ...known, ...alert, state: alert.state ?? known.state ?? "open" };
  state.alerts.set(alert.id, merged);
  while (state.alerts.size > FEED_MAX) state.alerts.delete(state.alerts.keys().next().value);
  renderAlert(merged);
}

async function acknowledge(id) {
  const alert = await act(() => api("POST", `/api/v1/alerts/${id}/ack`, { by: "console" }));
  if (alert) rememberAlert(alert);
}

function takeAlert(message) {
  if (message.type === "snapshot" || message.type === "resync") {
    // The feed's states come from the API; the snapshot adds what it lacks.
    for (const alert of message.alerts ?? []) if (!state.alerts.has(alert.id)) rememberAlert(alert);
  } else if (message.type === "alert") {
    rememberAlert({ ...message, state: "open" });
  } else if (message.type === "alert_state") {
    const known = state.alerts.get(message.id);
    if (known) rememberAlert({ ...known, state: message.state, acknowledged_by: message.acknowledged_by });
  }
}

// The listings.

function row(entry) {
  let line = document.querySelector(`#listings tr[data-sku="${CSS.escape(entry.sku)}"]`);
  if (!line) {
    line = document.createElement("tr");
    line.dataset.sku = entry.sku;
    line.innerHTML = `<td class="sku"></td><td class="level"></td><td class="available"></td>
      <td class="consumed"></td>
      <td class="lost"></td>
      <td><input class="forecast" type="number" min="1"> <button class="save" type="button"></button>
        <button class="suggest" type="button" hidden></button></td>
      <td><input class="qty" type="number" min="1" value="50"> <button class="restock" type="button"></button></td>
      <td><button class="halt" type="button"></button></td>`;
    line.querySelector(".save").addEventListener("click", () => saveForecast(entry.sku, line));
    line.querySelector(".suggest").addEventListener("click", () => {
      const suggested = state.suggestions.get(entry.sku)?.suggested_forecast;
      if (suggested) line.querySelector(".forecast").value = suggested;
    });
    suggest(entry.sku);
    line.querySelector(".restock").addEventListener("click", () => restock(entry.sku, line));
    line.querySelector(".halt").addEventListener("click", () => haltOrResume(entry.sku));
    $("listings").append(line);
  }
  return line;
}

function renderListing(entry) {
  const line = row(entry);
  line.querySelector(".sku").textContent = entry.name ? `${entry.sku} · ${entry.name}` : entry.sku;
  const level = line.querySelector(".level");
  level.className = `level level-${entry.level}`;
  level.textContent = t(entry.level);
  line.querySelector(".available").textContent = count(entry.stock.available);
  line.querySelector(".consumed").textContent = count(entry.consumed);
  const lost = line.querySelector(".lost");
  lost.textContent = count(entry.lost?.units ?? 0);
  // Per platform and why, on hover.
  lost.title = (entry.lost?.platforms ?? [])
    .map((one) => `${one.platform}: ${t("soldOutShort")} ${count(one.insufficient_stock)} · ${t("halted")} ${count(one.halted)}`)
    .join("\n");
  const forecast = line.querySelector(".forecast");
  if (document.activeElement !== forecast) forecast.value = entry.forecast;
  line.querySelector(".save").textContent = t("save");
  const history = state.suggestions.get(entry.sku);
  const button = line.querySelector(".suggest");
  button.hidden = !history?.suggested_forecast;
  if (history?.suggested_forecast) {
    button.textContent = t("fromHistory")
      .replace("{n}", count(history.suggested_forecast))
      .replace("{shows}", String(history.suggested_from));
  }
  line.querySelector(".restock").textContent = t("restock");
  line.querySelector(".halt").textContent = entry.halted ? t("resume") : t("halt");
}

function renderListings() {
  if (!state.view) return;
  $("room-name").textContent = state.view.name || state.view.room;
  const keep = new Set(state.view.listings.map((entry) => entry.sku));
  for (const line of [...$("listings").children]) if (!keep.has(line.dataset.sku)) line.remove();
  for (const entry of state.view.listings) renderListing(entry);
}

/** Reads what a SKU's finished shows suggest as its forecast, once per page. */
async function suggest(sku) {
  if (state.suggestions.has(sku)) return;
  state.suggestions.set(sku, null);
  try {
    state.suggestions.set(sku, await api("GET", `/api/v1/skus/${encodeURIComponent(sku)}/history`));
    renderListings();
  } catch {
    // No suggestion: the forecast stays the operator's.
  }
}

function listing(sku) {
  return state.view?.listings.find((entry) => entry.sku === sku);
}

async function saveForecast(sku, line) {
  const forecast = Number(line.querySelector(".forecast").value);
  const view = await act(() =>
    api("PUT", `/api/v1/rooms/${encodeURIComponent(state.room)}/listings/${encodeURIComponent(sku)}/forecast`, { forecast }),
  );
  if (view) {
    state.view = view;
    renderListings();
  }
}

async function restock(sku, line) {
  const qty = Number(line.querySelector(".qty").value);
  const button = line.querySelector(".restock");
  // One click, one restock: the button waits for the answer, and a retry of the same
  // click reuses its restock id.
  button.disabled = true;
  const restockId = `console-${Date.now()}-${Math.random().toString(36).slice(2, 8)}`;
  try {
    await act(() =>
      api("POST", `/api/v1/skus/${encodeURIComponent(sku)}/restock`, { qty, restock_id: restockId }),
    );
  } finally {
    button.disabled = false;
  }
}

async function haltOrResume(sku) {
  const entry = listing(sku);
  const verb = entry?.halted ? "resume" : "halt";
  const view = await act(() =>
    api("POST", `/api/v1/rooms/${encodeURIComponent(state.room)}/listings/${encodeURIComponent(sku)}/${verb}`),
  );
  if (view) {
    state.view = view;
    renderListings();
  }
}

function takeRoom(message) {
  switch (message.type) {
    case "snapshot":
    case "resync":
    case "room":
      if (message.room) {
        state.view = message.type === "room" ? mergeRoom(state.view, message.room) : message.room;
        renderListings();
      }
      return;
    case "stock": {
      const entry = listing(message.stock.sku);
      if (entry && entry.stock.version < message.stock.version) entry.stock = message.stock;
      break;
    }
    case "point": {
      const entry = listing(message.sku);
      if (entry) entry.consumed = message.actual;
      break;
    }
    case "level": {
      const entry = listing(message.sku);
      if (entry) entry.level = message.to;
      break;
    }
    case "listing": {
      const entry = listing(message.sku);
      if (entry) entry.halted = message.halted;
      break;
    }
    case "lost": {
      const entry = listing(message.sku);
      if (entry) entry.lost = message.lost;
      break;
    }
    default:
      return;
  }
  renderListings();
}

async function renderRooms() {
  const { rooms } = await api("GET", "/api/v1/rooms");
  const nav = $("rooms");
  nav.replaceChildren();
  for (const room of rooms) {
    const link = document.createElement("a");
    link.href = `/console?room=${encodeURIComponent(room.room)}`;
    link.textContent = room.name || room.room;
    if (room.room === state.room) link.className = "selected";
    nav.append(link);
  }
}

async function main() {
  const showState = setUp(() => {
    renderListings();
    for (const alert of state.alerts.values()) renderAlert(alert);
  });
  const { alerts } = await api("GET", "/api/v1/alerts").catch(() => ({ alerts: [] }));
  for (const alert of alerts) rememberAlert(alert);
  state.room = await waitForRoom();
  await renderRooms().catch(showError);
  // This room's alerts: an operator of some rooms may not follow every room's.
  const topics = [`alerts:${state.room}`, `room:${state.room}`];
  new Live(topics, (message) => (message.topic?.startsWith("alerts") ? takeAlert(message) : takeRoom(message)), showState).start();
  startChannels(() => (state.view?.listings ?? []).map((entry) => entry.sku), showError);
}

main();
