// The host's phone: one listing at a glance: its level in colour, what to do, units left and
// the time to sell-out. It follows the listing in the worst state unless the host picks one.

import { Live } from "./live.js";
import { hintText, selloutText, t } from "./i18n.js";
import { setUp, waitForRoom } from "./page.js";
import { api, count, mergeRoom } from "./format.js";

const ORDER = { green: 0, yellow: 1, orange: 2, red: 3 };
const REFRESH_MS = 5000;
const state = { room: null, view: null, chosen: new URLSearchParams(location.search).get("sku"), fetchedAt: Date.now() };
const $ = (id) => document.getElementById(id);

function current() {
  const listings = state.view?.listings ?? [];
  const chosen = listings.find((entry) => entry.sku === state.chosen);
  if (chosen) return chosen;
  return listings.reduce((worst, entry) => (worst && ORDER[worst.level] >= ORDER[entry.level] ? worst : entry), null);
}

function render() {
  const entry = current();
  if (!entry) return;
  const page = $("page");
  page.classList.remove("level-green", "level-yellow", "level-orange", "level-red");
  page.classList.add(`level-${entry.level}`);
  page.style.setProperty("background", "var(--level)");
  $("product").textContent = entry.name || entry.sku;
  $("level").textContent = t(entry.level);
  $("hint").textContent = entry.halted || entry.stock.halted ? t("halted") : hintText(entry.hint);
  $("hint").dataset.key = entry.hint?.key ?? "";
  $("left").textContent = count(entry.stock.available);
  const inSeconds = entry.projection.sellout_in_s;
  const since = (Date.now() - state.fetchedAt) / 1000;
  $("sellout").textContent = selloutText(
    entry.stock.available,
    inSeconds === null || inSeconds === undefined ? null : inSeconds - since,
    state.view.remaining_s - since,
  );
  const nav = $("listings");
  for (const button of nav.children) {
    const listing = state.view.listings.find((item) => item.sku === button.dataset.sku);
    button.className = `level-${listing?.level ?? "green"}${button.dataset.sku === entry.sku ? " selected" : ""}`;
  }
}

function adopt(view) {
  state.view = view;
  state.fetchedAt = Date.now();
  const nav = $("listings");
  nav.replaceChildren();
  for (const entry of view.listings) {
    const button = document.createElement("button");
    button.type = "button";
    button.dataset.sku = entry.sku;
    button.textContent = entry.name || entry.sku;
    button.addEventListener("click", () => {
      state.chosen = entry.sku;
      render();
    });
    nav.append(button);
  }
  render();
}

function take(message) {
  const entry = state.view?.listings.find((item) => item.sku === (message.sku ?? message.stock?.sku));
  switch (message.type) {
    case "snapshot":
    case "resync":
      if (message.room) adopt(message.room);
      return;
    case "room":
      if (message.room) adopt(mergeRoom(state.view, message.room));
      return;
    case "stock":
      if (entry && entry.stock.version < message.stock.version) entry.stock = message.stock;
      break;
    case "level":
      if (entry) entry.level = message.to;
      break;
    case "hint":
      if (entry) entry.hint = message.hint;
      break;
    case "listing":
      if (entry) entry.halted = message.halted;
      break;
    default:
      return;
  }
  render();
}

async function refresh() {
  if (!state.view) return;
  try {
    const view = await api("GET", `/api/v1/rooms/${encodeURIComponent(state.room)}`);
    for (const fresh of view.listings) {
      const entry = state.view.listings.find((item) => item.sku === fresh.sku);
      if (entry) entry.projection = fresh.projection;
    }
    state.fetchedAt = Date.now();
    render();
  } catch {
    // Shown by the connection state; tried again at the next refresh.
  }
}

async function main() {
  const showState = setUp(render);
  state.room = await waitForRoom();
  new Live([`room:${state.room}`], take, showState).start();
  setInterval(render, 1000);
  setInterval(refresh, REFRESH_MS);
}

main();
