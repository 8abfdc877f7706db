// Words of the pages in zh-CN and English: chosen from the browser's language, switched
// with a toggle, remembered. Elements with data-i18n="key" get the word as their text.

const WORDS = {
  "zh-CN": {
    live: "实时",
    connecting: "连接中",
    reconnecting: "重连中…",
    elapsed: "已开播",
    remaining: "剩余",
    forecast: "预估",
    consumed: "已售/锁定",
    available: "可售",
    locked: "锁定",
    sold: "已售",
    sellout: "预计售罄",
    restock: "建议补货",
    noSellout: "—",
    halted: "已停售",
    green: "正常",
    yellow: "预警",
    orange: "紧张",
    red: "告急",
    plan: "计划",
    actual: "实际",
    alerts: "告警",
    hints: "提示",
    noRoom: "还没有直播间：PUT /api/v1/rooms/{room}",
    unitsLeft: "剩余件数",
    toSellout: "距售罄",
    keepGoing: "节奏正常，继续",
    ack: "确认",
    acknowledged: "已确认",
    open: "未处理",
    resolved: "已恢复",
    listings: "商品",
    rooms: "直播间",
    halt: "停售",
    resume: "恢复",
    save: "保存",
    level: "等级",
    state: "状态",
    actions: "操作",
    qty: "数量",
    language: "English",
    by: "确认人",
    time: "时间",
  },
  en: {
    live: "Live",
    connecting: "Connecting",
    reconnecting: "Reconnecting…",
    elapsed: "Elapsed",
    remaining: "Left",
    forecast: "Forecast",
    consumed: "Consumed",
    available: "Available",
    locked: "Locked",
    sold: "Sold",
    sellout: "Sell-out",
    restock: "Restock",
    noSellout: "—",
    halted: "Halted",
    green: "OK",
    yellow: "Watch",
    orange: "Tight",
    red: "Critical",
    plan: "Plan",
    actual: "Actual",
    alerts: "Alerts",
    hints: "Hints",
    noRoom: "No room yet: PUT /api/v1/rooms/{room}",
    unitsLeft: "Units left",
    toSellout: "To sell-out",
    keepGoing: "On pace, keep going",
    ack: "Acknowledge",
    acknowledged: "Acknowledged",
    open: "Open",
    resolved: "Resolved",
    listings: "Listings",
    rooms: "Rooms",
    halt: "Halt",
    resume: "Resume",
    save: "Save",
    level: "Level",
    state: "State",
    actions: "Actions",
    qty: "Qty",
    language: "中文",
    by: "By",
    time: "Time",
  },
};

const STORED = "stockpulse.language";

function initial() {
  const asked = new URLSearchParams(location.search).get("lang");
  if (asked in WORDS) return asked;
  const stored = localStorage.getItem(STORED);
  if (stored in WORDS) return stored;
  return (navigator.language || "").toLowerCase().startsWith("zh") ? "zh-CN" : "en";
}

let language = initial();
const listeners = [];

export function lang() {
  return language;
}

export function t(key) {
  return WORDS[language][key] ?? key;
}

/** Sets every [data-i18n] element's text, and the document's language. */
export function apply(root = document) {
  document.documentElement.lang = language;
  for (const element of root.querySelectorAll("[data-i18n]")) {
    element.textContent = t(element.dataset.i18n);
  }
}

export function toggle() {
  language = language === "zh-CN" ? "en" : "zh-CN";
  localStorage.setItem(STORED, language);
  apply();
  for (const listener of listeners) listener();
}

/** Calls `listener` after every language change. */
export function onChange(listener) {
  listeners.push(listener);
}

/** A hint's wording in the current language (the server sends both). */
export function hintText(hint) {
  if (!hint) return t("keepGoing");
  return language === "zh-CN" ? hint["zh-CN"] : hint.en;
}
