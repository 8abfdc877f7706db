// The console's channel panel: each platform listing of the room's SKUs (its allocation,
// what it should show, what it shows by our account, whether its platform has it and since
// when it waits, failures), and for an exclusive SKU a form to move unsold units from one
// platform to another. It reads the API every two seconds: listings change by the second
// only during a sale, and the panel is for operators, not the big screen.

import { errorText, t } from "./i18n.js";
import { api, count } from "./format.js";

const POLL_MS = 2000;
const $ = (id) => document.getElementById(id);

/** Platform names as the shop says them. */
const PLATFORMS = { douyin: "抖音", kuaishou: "快手", taobao: "淘宝", wechat: "视频号" };

function platformName(platform) {
  return t(`platform_${platform}`) === `platform_${platform}` ? PLATFORMS[platform] ?? platform : t(`platform_${platform}`);
}

function allocationText(allocation, platform) {
  if (!allocation || allocation.mode === "shared") {
    return `${t("shared")}${allocation?.buffer ? ` · ${t("buffer")} ${count(allocation.buffer)}` : ""}`;
  }
  const share = allocation.shares?.[platform];
  const allotted = allocation.allotted?.[platform];
  if (share === undefined) return t("noShare");
  return `${t("exclusive")} ${Math.round(share * 100)}% · ${t("allotted")} ${count(allotted ?? 0)}`;
}

function syncText(entry) {
  if (!entry.connected) return t("notConnected");
  if (entry.synced) return t("synced");
  return `${t("waiting")} ${Math.round((entry.unsynced_ms ?? 0) / 1000)}${t("seconds")}`;
}

function render(listings, skus) {
  const body = $("channels");
  body.replaceChildren();
  for (const entry of listings) {
    const line = document.createElement("tr");
    line.dataset.listing = `${entry.platform}/${entry.listing}`;
    line.dataset.synced = String(entry.synced);
    const cells = [
      entry.sku,
      platformName(entry.platform),
      entry.listing,
      allocationText(skus.get(entry.sku)?.allocation, entry.platform),
      count(entry.target),
      entry.shown === undefined ? "—" : count(entry.shown),
      syncText(entry),
      count(entry.failures),
    ];
    for (const [index, text] of cells.entries()) {
      const cell = document.createElement("td");
      cell.textContent = text;
      cell.className = ["sku", "platform", "listing", "allocation", "target", "shown", "sync", "failures"][index];
      line.append(cell);
    }
    if (entry.last_error) line.title = entry.last_error;
    body.append(line);
  }
}

function renderMoves(skus, onError) {
  const moves = $("moves");
  const exclusive = [...skus.values()].filter((sku) => sku.allocation?.mode === "exclusive");
  for (const form of [...moves.children]) {
    if (!exclusive.some((sku) => sku.sku === form.dataset.sku)) form.remove();
  }
  for (const sku of exclusive) {
    let form = moves.querySelector(`form[data-sku="${CSS.escape(sku.sku)}"]`);
    const platforms = Object.keys(sku.allocation.shares ?? {});
    if (!form) {
      form = document.createElement("form");
      form.dataset.sku = sku.sku;
      form.innerHTML = `<b class="what"></b> <select class="from"></select> → <select class="to"></select>
        <input class="qty" type="number" min="1" value="10"> <button type="submit" class="move"></button>`;
      form.addEventListener("submit", (event) => {
        event.preventDefault();
        move(form, onError);
      });
      moves.append(form);
    }
    form.querySelector(".what").textContent = `${sku.sku}: ${t("moveUnits")}`;
    form.querySelector(".move").textContent = t("move");
    for (const [index, select] of [form.querySelector(".from"), form.querySelector(".to")].entries()) {
      if (select.options.length === platforms.length) continue;
      select.replaceChildren(...platforms.map((platform) => new Option(platformName(platform), platform)));
      select.selectedIndex = Math.min(index, platforms.length - 1);
    }
  }
  moves.hidden = exclusive.length === 0;
}

async function move(form, onError) {
  const body = {
    from: form.querySelector(".from").value,
    to: form.querySelector(".to").value,
    qty: Number(form.querySelector(".qty").value),
    reason: "console",
  };
  try {
    onError(null);
    await api("POST", `/api/v1/skus/${encodeURIComponent(form.dataset.sku)}/allotments/move`, body);
    form.dataset.moved = String(Number(form.dataset.moved ?? 0) + 1);
  } catch (error) {
    onError(error);
  }
}

/**
 * Starts the panel: `skusOf()` names the SKUs to show (the room's), `onError` shows what
 * went wrong (or clears it with null).
 */
export function startChannels(skusOf, onError) {
  const round = async () => {
    const wanted = new Set(skusOf());
    try {
      const { listings } = await api("GET", "/api/v1/channels");
      const shown = listings.filter((entry) => wanted.has(entry.sku));
      const skus = new Map();
      for (const sku of new Set(shown.map((entry) => entry.sku))) {
        skus.set(sku, await api("GET", `/api/v1/skus/${encodeURIComponent(sku)}`));
      }
      $("channels-section").hidden = shown.length === 0;
      render(shown, skus);
      renderMoves(skus, onError);
    } catch (error) {
      $("channels-section").dataset.error = errorText(error);
    }
  };
  round();
  setInterval(round, POLL_MS);
}
