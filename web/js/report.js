// The post-show review (直播复盘): totals, every listing's figures with its consumption curve
// against the plan, its alerts and halts, and the show's timeline, in Chinese or English.
// Printing it (A4 landscape) gives a clean document: the styles hide the buttons.

import { apply, errorText, lang, onChange, t, toggle, words } from "./i18n.js";
import { drawCurve, LIGHT } from "./chart.js";
import { api, clock, count, token } from "./format.js";

const $ = (id) => document.getElementById(id);
const state = { report: null };

/** A share as a percentage: 0.36 → "36 %". */
function percent(share) {
  return `${Math.round((share ?? 0) * 100)} %`;
}

/** A moment as the page says it: its local date and time. */
function when(text) {
  if (!text) return "—";
  return new Date(text).toLocaleString(lang(), { hour12: false });
}

function cell(row, text, kind = "td") {
  const element = document.createElement(kind);
  element.textContent = text;
  row.append(element);
  return element;
}

function table(rows) {
  const body = document.createElement("table");
  for (const [label, value] of rows) {
    const row = document.createElement("tr");
    cell(row, label, "th");
    cell(row, value);
    body.append(row);
  }
  return body;
}

function renderTotals(report) {
  const totals = report.totals;
  const figures = [
    [t("forecast"), count(totals.forecast)],
    [t("consumedInShow"), count(totals.consumed_in_show)],
    [t("sold"), count(totals.sold)],
    [t("refunded"), count(totals.refunded)],
    [t("cancelled"), count(totals.cancelled)],
    [t("expired"), count(totals.expired)],
    [t("lost"), count(totals.lost)],
    [t("accuracy"), percent(totals.accuracy)],
    [t("alerts"), count(totals.alerts)],
    [t("halts"), count(totals.halts)],
  ];
  // One row of labels over one row of figures.
  const labels = document.createElement("tr");
  const values = document.createElement("tr");
  for (const [label, value] of figures) {
    cell(labels, label, "th");
    cell(values, value);
  }
  $("totals").replaceChildren(labels, values);
}

function renderListing(report, listing) {
  const section = document.createElement("article");
  section.className = "report-listing";
  section.dataset.sku = listing.sku;
  const title = document.createElement("h2");
  title.textContent = listing.name ? `${listing.name} · ${listing.sku}` : listing.sku;
  const figures = table([
    [t("forecast"), count(listing.forecast)],
    [t("consumedInShow"), count(listing.consumed_in_show)],
    [t("sold"), count(listing.sold)],
    [t("refunded"), count(listing.refunded)],
    [t("cancelled"), count(listing.cancelled)],
    [t("expired"), count(listing.expired)],
    [t("soldOutAt"), listing.sold_out_at ? when(listing.sold_out_at) : t("notSoldOut")],
    [t("lost"), `${count(listing.lost.units)} (${t("soldOutShort")} ${count(listing.lost.insufficient_stock)} · ${t("halted")} ${count(listing.lost.halted)})`],
    [t("peak"), listing.peak_at ? `${count(Math.round(listing.peak_per_min))} ${t("perMinute")} · ${when(listing.peak_at)}` : "—"],
    [t("accuracy"), percent(listing.accuracy)],
    [t("planShape"), t(`shape_${listing.plan_shape}`)],
  ]);
  figures.className = "figures-table";
  const canvas = document.createElement("canvas");
  canvas.className = "report-curve";
  const top = document.createElement("div");
  top.className = "report-top";
  top.append(figures, canvas);
  section.append(title, top);

  const alerts = document.createElement("table");
  alerts.className = "alerts-table";
  const head = document.createElement("tr");
  for (const label of [t("time"), t("level"), t("why"), t("by"), t("ackAfter"), t("escalations")]) cell(head, label, "th");
  alerts.append(head);
  for (const alert of listing.alerts) {
    const row = document.createElement("tr");
    row.className = `level-${alert.to}`;
    cell(row, when(alert.at));
    cell(row, `${t(alert.from)} → ${t(alert.to)}`);
    cell(row, words(alert.reasons?.[0]));
    cell(row, alert.acknowledged_by ?? "—");
    cell(row, alert.acknowledged_after_s == null ? "—" : `${count(alert.acknowledged_after_s)} ${t("seconds")}`);
    cell(row, count(alert.escalations));
    alerts.append(row);
  }
  if (listing.alerts.length > 0) {
    const heading = document.createElement("h3");
    heading.textContent = t("alerts");
    section.append(heading, alerts);
  }
  if (listing.halts.length > 0) {
    const heading = document.createElement("h3");
    heading.textContent = t("halts");
    const list = document.createElement("ul");
    for (const halt of listing.halts) {
      const item = document.createElement("li");
      const who = halt.auto ? t("autoHalt") : halt.by ?? "—";
      const resumed = halt.resumed_at ? `${when(halt.resumed_at)} ${t("resumedBy")} ${halt.resumed_by ?? "—"}` : t("stillHalted");
      item.textContent = `${when(halt.at)} ${t("haltedBy")} ${who} · ${resumed}`;
      list.append(item);
    }
    section.append(heading, list);
  }
  $("listings").append(section);
  const show = (Date.parse(report.ends_at) - Date.parse(report.starts_at)) / 1000;
  const elapsed = Math.min((Date.parse(report.generated_at) - Date.parse(report.starts_at)) / 1000, show);
  drawCurve(canvas, listing, show, Math.max(elapsed, 0), { plan: t("plan"), actual: t("actual"), hour: t("hourMark") }, LIGHT);
}

function renderTimeline(report) {
  const names = new Map(report.listings.map((listing) => [listing.sku, listing.name || listing.sku]));
  $("timeline").replaceChildren(
    ...report.timeline.map((entry) => {
      const item = document.createElement("li");
      if (entry.level) item.className = `level-${entry.level}`;
      const time = document.createElement("time");
      time.textContent = clock(entry.at);
      const what = [t(`event_${entry.kind}`)];
      if (entry.sku) what.push(names.get(entry.sku) ?? entry.sku);
      if (entry.level) what.push(t(entry.level));
      if (entry.by) what.push(entry.by === "auto" ? t("autoHalt") : entry.by);
      item.append(time, what.join(" · "));
      return item;
    }),
  );
}

function render() {
  const report = state.report;
  if (!report) return;
  apply();
  document.title = `${report.name || report.room} · ${t("reportTitle")}`;
  $("title").textContent = `${report.name || report.room} · ${t("reportTitle")}`;
  const status = report.finished ? t("finished") : t("inProgress");
  $("show").textContent = `${when(report.starts_at)} – ${when(report.ends_at)} · ${status}`;
  renderTotals(report);
  $("listings").replaceChildren();
  for (const listing of report.listings) renderListing(report, listing);
  renderTimeline(report);
}

async function main() {
  apply();
  $("language").addEventListener("click", toggle);
  $("print").addEventListener("click", () => window.print());
  onChange(render);
  const room = new URLSearchParams(location.search).get("room");
  if (!room) {
    $("empty").hidden = false;
    return;
  }
  const csv = `/api/v1/rooms/${encodeURIComponent(room)}/report.csv`;
  $("csv").href = csv;
  // With credentials the download needs them too: fetched with the token, saved from memory.
  $("csv").addEventListener("click", async (event) => {
    const credential = token();
    if (!credential) return;
    event.preventDefault();
    const response = await fetch(csv, { headers: { authorization: `Bearer ${credential}` } });
    if (!response.ok) {
      $("error").textContent = errorText({ code: `http_${response.status}` });
      return;
    }
    const url = URL.createObjectURL(await response.blob());
    const link = document.createElement("a");
    link.href = url;
    link.download = `report-${room}.csv`;
    link.click();
    URL.revokeObjectURL(url);
  });
  try {
    state.report = await api("GET", `/api/v1/rooms/${encodeURIComponent(room)}/report`);
    render();
    document.body.dataset.ready = "true";
  } catch (error) {
    $("error").textContent = errorText(error);
  }
}

main();
