// Words of the pages in zh-CN and English: chosen from the browser's language, switched
// with a toggle, remembered. Elements with data-i18n="key" get the word as their text.

const WORDS = {
  "zh-CN": {
    channels: "平台库存同步",
    platform: "平台",
    listingId: "平台商品",
    allocation: "分配",
    target: "应显示",
    shownOnPlatform: "平台显示",
    syncState: "同步",
    failures: "失败",
    shared: "共享",
    buffer: "预留",
    exclusive: "独占",
    allotted: "配额",
    noShare: "无份额",
    notConnected: "未接入",
    synced: "已同步",
    waiting: "等待",
    moveUnits: "调拨",
    move: "调拨",
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
    reportTitle: "直播复盘",
    downloadCsv: "下载 CSV",
    print: "打印",
    totalsTitle: "本场合计",
    timelineTitle: "时间线",
    consumedInShow: "本场消耗",
    refunded: "退款",
    cancelled: "取消",
    expired: "超时未付",
    accuracy: "预估准确率",
    halts: "停售",
    soldOutAt: "售罄时间",
    notSoldOut: "未售罄",
    peak: "峰值",
    perMinute: "件/分钟",
    planShape: "计划曲线",
    shape_linear: "直线",
    shape_points: "手动设定",
    shape_front_loaded: "开场即巅峰",
    shape_slow_start: "慢热型",
    shape_history: "按历史",
    why: "原因",
    ackAfter: "确认用时",
    escalations: "升级",
    seconds: "秒",
    autoHalt: "系统自动",
    haltedBy: "停售，操作人",
    resumedBy: "恢复，操作人",
    stillHalted: "仍停售",
    finished: "已结束",
    inProgress: "进行中",
    event_start: "开播",
    event_end: "下播",
    event_alert: "告警",
    event_acknowledged: "已确认",
    event_halted: "停售",
    event_resumed: "恢复售卖",
    event_sold_out: "售罄",
    event_peak: "销售峰值",
    lost: "错失",
    fromHistory: "历史建议 {n}（{shows} 场）",
    soldOutShort: "缺货",
    noSellout: "暂无售罄预估",
    soldOut: "已售罄",
    notThisShow: "本场内不会售罄",
    selloutSoon: "1 分钟内售罄",
    selloutIn: "约 {n} 分钟后售罄",
    halted: "已停售",
    green: "正常",
    yellow: "预警",
    orange: "紧张",
    red: "告急",
    plan: "计划",
    hourMark: "{n}小时",
    actual: "实际",
    alerts: "告警",
    hints: "提示",
    noRoom: "还没有直播间：PUT /api/v1/rooms/{room}",
    unitsLeft: "剩余件数",
    toSellout: "售罄预估",
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
    channels: "Platform listings",
    platform: "Platform",
    listingId: "Listing",
    allocation: "Allocation",
    target: "Should show",
    shownOnPlatform: "Shows",
    syncState: "Sync",
    failures: "Failures",
    shared: "Shared",
    buffer: "buffer",
    exclusive: "Exclusive",
    allotted: "allotted",
    noShare: "No share",
    notConnected: "Not connected",
    synced: "Synced",
    waiting: "Waiting",
    moveUnits: "move units",
    move: "Move",
    platform_douyin: "Douyin",
    platform_kuaishou: "Kuaishou",
    platform_taobao: "Taobao",
    platform_wechat: "WeChat Channels",
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
    reportTitle: "Post-show review",
    downloadCsv: "Download CSV",
    print: "Print",
    totalsTitle: "Show totals",
    timelineTitle: "Timeline",
    consumedInShow: "Consumed in show",
    refunded: "Refunded",
    cancelled: "Cancelled",
    expired: "Expired unpaid",
    accuracy: "Forecast accuracy",
    halts: "Halts",
    soldOutAt: "Sold out at",
    notSoldOut: "Did not sell out",
    peak: "Peak",
    perMinute: "per minute",
    planShape: "Plan",
    shape_linear: "Straight line",
    shape_points: "Set by hand",
    shape_front_loaded: "Front-loaded",
    shape_slow_start: "Slow start",
    shape_history: "From history",
    why: "Why",
    ackAfter: "Acknowledged after",
    escalations: "Escalations",
    seconds: "s",
    autoHalt: "automatic",
    haltedBy: "halted by",
    resumedBy: "resumed by",
    stillHalted: "still halted",
    finished: "finished",
    inProgress: "in progress",
    event_start: "Show starts",
    event_end: "Show ends",
    event_alert: "Alert",
    event_acknowledged: "Acknowledged",
    event_halted: "Halted",
    event_resumed: "Resumed",
    event_sold_out: "Sold out",
    event_peak: "Peak sales",
    lost: "Lost",
    fromHistory: "History suggests {n} · shows: {shows}",
    soldOutShort: "no stock",
    noSellout: "no sell-out estimate yet",
    soldOut: "sold out",
    notThisShow: "not before the end of the show",
    selloutSoon: "sells out within 1 min",
    selloutIn: "sells out in ~{n} min",
    halted: "Halted",
    green: "OK",
    yellow: "Watch",
    orange: "Tight",
    red: "Critical",
    plan: "Plan",
    hourMark: "{n}h",
    actual: "Actual",
    alerts: "Alerts",
    hints: "Hints",
    noRoom: "No room yet: PUT /api/v1/rooms/{room}",
    unitsLeft: "Units left",
    toSellout: "Sell-out",
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

/** What a page says when the API refuses something, by the error's code. */
const ERRORS = {
  "zh-CN": {
    invalid_request: "输入有误，请检查后重试",
    malformed_json: "请求格式有误",
    unauthorized: "登录已失效，请重新获取链接",
    forbidden: "没有权限执行此操作",
    sku_not_found: "商品不存在",
    room_not_found: "直播间不存在",
    listing_not_found: "该商品不在此直播间",
    alert_not_found: "告警不存在",
    order_not_found: "订单不存在",
    insufficient_stock: "库存不足",
    allotment_exhausted: "该平台的配额已用完",
    listing_taken: "该平台商品已属于另一个商品",
    halted: "已停售",
    payload_too_large: "内容过大",
    storage_unavailable: "服务器暂时无法保存，请稍后重试",
    not_leader: "集群正在切换，请稍后重试",
    network: "网络连接失败，请稍后重试",
    other: "操作失败",
  },
  en: {
    network: "Network error, try again",
    other: "It did not work",
  },
};

/**
 * An API error in the current language: in Chinese by its code, in English the server's
 * own message (which names the ids and numbers).
 */
export function errorText(error) {
  if (!error) return "";
  const words = ERRORS[language];
  if (!error.code) return words.network;
  if (language === "en") return error.message || words.other;
  return words[error.code] ?? `${words.other}（${error.code}）`;
}

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

/** What the server wrote in both languages (a hint, a reason), in the current one. */
export function words(item) {
  if (!item) return "";
  return language === "zh-CN" ? item["zh-CN"] ?? item.en ?? "" : item.en ?? item["zh-CN"] ?? "";
}

/** A hint's wording in the current language (the server sends both). */
export function hintText(hint) {
  return hint ? words(hint) : t("keepGoing");
}

/**
 * When a listing sells out, as people say it: "约 23 分钟后售罄" / "sells out in ~23 min", and
 * "本场内不会售罄" / "not before the end of the show" when the estimate is past the end.
 * `inSeconds` is null when nothing sells (no estimate).
 */
export function selloutText(available, inSeconds, remainingSeconds) {
  if (available === 0) return t("soldOut");
  if (inSeconds === null || inSeconds === undefined) return t("noSellout");
  if (remainingSeconds !== null && remainingSeconds !== undefined && inSeconds > remainingSeconds) {
    return t("notThisShow");
  }
  const minutes = Math.max(1, Math.round(inSeconds / 60));
  if (inSeconds < 60) return t("selloutSoon");
  return t("selloutIn").replace("{n}", String(minutes));
}
