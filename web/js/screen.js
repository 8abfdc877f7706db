// The big screen: the room's header and totals, one card per listing, the selected listing's
// curve against the plan with the threshold bands, and a ticker of alerts and hints. Stock,
// levels, hints, points and halts arrive live; the forecast figures are read again every
// few seconds. Cards are built once per snapshot and updated in place; the ticker keeps a
// fixed number of lines, so nothing grows over a show.

import { Live } from "./live.js";
import { apply, hintText, lang, selloutText, t, words } from "./i18n.js";
import { setUp, waitForRoom } from "./page.js";
import { drawCurve } from "./chart.js";
import { api, clock, count, duration, mergeRoom } from "./format.js";

const TICKER_LINES = 8;
const REFRESH_MS = 5000;

const state = { room: null, view: null, selected: null, offset: 0, cards: new Map(), ticker: [] };
const $ = (id) => document.getElementById(id);

function listing(sku) {
  return state.view?.listings.find((entry) => entry.sku === sku);
}

function levelClass(element, level) {
  element.classList.remove("level-green", "level-yellow", "level-orange", "level-red");
  element.classList.add(`level-${level}`);
}

function buildCards() {
  const cards = $("cards");
  cards.replaceChildren();
  state.cards.clear();
  for (const entry of state.view.listings) {
    const card = document.createElement("article");
    card.className = "card";
    card.dataset.sku = entry.sku;
    card.innerHTML = `
      <div class="head"><span class="name"></span><span class="badge"></span></div>
      <div class="available"></div>
      <div class="figures">
        <span><span data-i18n="locked"></span><b data-field="locked"></b></span>
        <span><span data-i18n="sold"></span><b data-field="sold"></b></span>
        <span><span data-i18n="consumed"></span><b data-field="consumed"></b></span>
        <span><span data-i18n="restock"></span><b data-field="restock"></b></span>
        <span><span data-i18n="lost"></span><b data-field="lost"></b></span>
        <span class="halted" data-field="halted"></span>
      </div>
      <div class="sellout" data-field="sellout"></div>`;
    card.addEventListener("click", () => select(entry.sku));
    cards.append(card);
    state.cards.set(entry.sku, card);
  }
  apply(cards);
  if (!listing(state.selected)) state.selected = state.view.listings[0]?.sku ?? null;
  for (const entry of state.view.listings) renderCard(entry.sku);
}

function renderCard(sku) {
  const entry = listing(sku);
  const card = state.cards.get(sku);
  if (!entry || !card) return;
  levelClass(card, entry.level);
  card.classList.toggle("selected", sku === state.selected);
  card.querySelector(".name").textContent = entry.name || entry.sku;
  card.querySelector(".badge").textContent = t(entry.level);
  card.querySelector(".available").textContent = count(entry.stock.available);
  const field = (name) => card.querySelector(`[data-field="${name}"]`);
  field("locked").textContent = count(entry.stock.locked);
  field("sold").textContent = count(entry.stock.sold);
  field("consumed").textContent = `${count(entry.consumed)} / ${count(entry.forecast)}`;
  const now = Date.now() + state.offset;
  const sellout = entry.projection.sellout_at;
  field("sellout").textContent = selloutText(
    entry.stock.available,
    sellout ? (Date.parse(sellout) - now) / 1000 : null,
    (Date.parse(state.view.ends_at) - now) / 1000,
  );
  field("restock").textContent = count(entry.projection.suggested_restock);
  field("lost").textContent = count(entry.lost?.units ?? 0);
  field("halted").textContent = entry.halted || entry.stock.halted ? t("halted") : "";
}

function renderHeader() {
  const view = state.view;
  $("room-name").textContent = view.name || view.room;
  const now = (Date.now() + state.offset) / 1000;
  const starts = Date.parse(view.starts_at) / 1000;
  const ends = Date.parse(view.ends_at) / 1000;
  $("elapsed").textContent = duration(Math.min(Math.max(now - starts, 0), ends - starts));
  $("remaining").textContent = duration(Math.max(ends - Math.max(now, starts), 0));
  const sum = (pick) => view.listings.reduce((total, entry) => total + pick(entry), 0);
  $("total-forecast").textContent = count(sum((entry) => entry.forecast));
  $("total-consumed").textContent = count(sum((entry) => entry.consumed));
  $("total-available").textContent = count(sum((entry) => entry.stock.available));
}

function renderCurve() {
  const entry = listing(state.selected);
  if (!entry) return;
  $("curve-title").textContent = `${entry.name || entry.sku} · ${t(entry.level)}`;
  const view = state.view;
  const show = (Date.parse(view.ends_at) - Date.parse(view.starts_at)) / 1000;
  const elapsed = (Date.now() + state.offset - Date.parse(view.starts_at)) / 1000;
  drawCurve($("chart"), entry, show, Math.min(Math.max(elapsed, 0), show), {
    plan: t("plan"),
    actual: t("actual"),
    hour: t("hourMark"),
  });
}

function renderAll() {
  if (!state.view) return;
  renderHeader();
  for (const entry of state.view.listings) renderCard(entry.sku);
  renderCurve();
}

function select(sku) {
  state.selected = sku;
  renderAll();
}

/** Adds a line to the ticker; `text` gives its words in the current language. */
function tick(level, text, at) {
  state.ticker.unshift({ level, text, at });
  state.ticker.length = Math.min(state.ticker.length, TICKER_LINES);
  renderTicker();
}

function renderTicker() {
  const lines = state.ticker.map(({ level, text, at }) => {
    const line = document.createElement("li");
    levelClass(line, level);
    const time = document.createElement("time");
    time.textContent = clock(at);
    line.append(time, text());
    return line;
  });
  $("ticker").replaceChildren(...lines);
}

function adopt(view) {
  state.view = view;
  state.offset = Date.parse(view.now) - Date.now();
  buildCards();
  renderAll();
}

function take(message) {
  switch (message.type) {
    case "snapshot":
    case "resync":
      if (message.room) adopt(message.room);
      return;
    case "room":
      if (message.room) adopt(mergeRoom(state.view, message.room));
      return;
    case "stock": {
      const entry = listing(message.stock.sku);
      if (entry && entry.stock.version < message.stock.version) {
        entry.stock = message.stock;
        renderCard(entry.sku);
        renderHeader();
      }
      return;
    }
    case "point": {
      const entry = listing(message.sku);
      if (!entry) return;
      const actual = entry.series.actual;
      const last = actual.length > 0 ? actual[actual.length - 1] : entry.series.before_start;
      while (actual.length < message.bucket) actual.push(last);
      actual[message.bucket] = message.actual;
      entry.consumed = message.actual;
      renderCard(entry.sku);
      if (entry.sku === state.selected) renderCurve();
      return;
    }
    case "level": {
      const entry = listing(message.sku);
      if (!entry) return;
      entry.level = message.to;
      entry.reasons = message.reasons;
      renderCard(entry.sku);
      if (entry.sku === state.selected) renderCurve();
      const name = entry.name || entry.sku;
      const reason = message.reasons[0];
      tick(message.to, () => `${name}: ${t(message.from)} → ${t(message.to)} · ${words(reason)}`, message.at);
      return;
    }
    case "hint": {
      const entry = listing(message.sku);
      if (!entry) return;
      entry.hint = message.hint;
      const hint = message.hint;
      if (hint) tick(message.level, () => `${entry.name || entry.sku}: ${hintText(hint)}`, message.at);
      return;
    }
    case "listing": {
      const entry = listing(message.sku);
      if (!entry) return;
      entry.halted = message.halted;
      renderCard(entry.sku);
      return;
    }
    case "lost": {
      const entry = listing(message.sku);
      if (!entry) return;
      entry.lost = message.lost;
      renderCard(entry.sku);
      return;
    }
    default:
  }
}

/** Starts the ticker with the room's latest alerts, so a screen opened mid-show has context. */
async function seedTicker() {
  try {
    const { alerts } = await api("GET", "/api/v1/alerts");
    const recent = alerts.filter((alert) => alert.room === state.room).slice(-TICKER_LINES);
    for (const alert of recent) {
      const reason = alert.reasons?.[0];
      const name = () => listing(alert.sku)?.name || alert.sku;
      tick(alert.to, () => `${name()}: ${t(alert.from)} → ${t(alert.to)} · ${words(reason)}`, alert.at);
    }
  } catch {
    // The ticker fills as the show goes on.
  }
}

async function refresh() {
  if (!state.room || !state.view) return;
  try {
    const view = await api("GET", `/api/v1/rooms/${encodeURIComponent(state.room)}`);
    // Keep what arrived live; take the forecast figures and the curve's latest points.
    for (const fresh of view.listings) {
      const entry = listing(fresh.sku);
      if (!entry) continue;
      entry.projection = fresh.projection;
      entry.thresholds = fresh.thresholds;
      entry.lost = fresh.lost;
      if (fresh.series.actual.length >= entry.series.actual.length) entry.series = fresh.series;
    }
    state.offset = Date.parse(view.now) - Date.now();
  } catch {
    // The connection state shows it; the next refresh tries again.
  }
}

async function main() {
  const showState = setUp(() => {
    renderAll();
    renderTicker();
  });
  state.room = await waitForRoom();
  await seedTicker();
  new Live([`room:${state.room}`], take, showState).start();
  setInterval(renderAll, 1000);
  setInterval(refresh, REFRESH_MS);
  window.addEventListener("resize", renderCurve);
  document.documentElement.dataset.lang = lang();
}

main();
