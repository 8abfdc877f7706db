// The console's channel panel in headless Chromium against the real server, with a real
// HTTP receiver standing in for the platforms: each platform listing of the room's SKU with
// its allocation and sync state, in Chinese, and a move of units from one platform to the
// other that the listings and the receiver follow.

import assert from "node:assert/strict";
import { createServer } from "node:http";
import { join } from "node:path";
import test from "node:test";

import { Server, launch, screenshots, watchedPage } from "./support.mjs";

const MINUTE = 60_000;

/** A webhook receiver that applies every update's quantity and answers 200. */
async function receiver() {
  const shows = new Map();
  const http = createServer((request, response) => {
    let body = "";
    request.on("data", (chunk) => (body += chunk));
    request.on("end", () => {
      for (const update of JSON.parse(body).updates ?? []) shows.set(update.listing, update.quantity);
      response.writeHead(200, { "content-type": "application/json" });
      response.end("{}");
    });
  });
  await new Promise((done) => http.listen(0, "127.0.0.1", done));
  return { http, shows, url: `http://127.0.0.1:${http.address().port}/stock` };
}

test("the console shows every platform listing and moves units between platforms", async (t) => {
  const platforms = await receiver();
  const channel = (name) => `[[channels]]\nplatform = "${name}"\nurl = "${platforms.url}"\nsecret = "receiver-secret-0123"\nmax_requests_per_s = 50\n`;
  const server = new Server({ config: `${channel("douyin")}\n${channel("kuaishou")}` });
  await server.start();
  const browser = await launch();
  t.after(async () => {
    await browser.close();
    await server.stop();
    platforms.http.close();
  });
  const sku = await server.api("PUT", "/api/v1/skus/LIP", {
    name: "丝绒口红",
    total: 100,
    listings: { douyin: "3598001", kuaishou: "889001" },
    allocation: { mode: "exclusive", shares: { douyin: 0.6, kuaishou: 0.4 }, floor: 5, rebalance_every_s: 0 },
  });
  assert.equal(sku.status, 200, JSON.stringify(sku.body));
  const now = Date.now();
  const room = await server.api("PUT", "/api/v1/rooms/r1", {
    name: "晚八点专场",
    starts_at: new Date(now - 30 * MINUTE).toISOString(),
    ends_at: new Date(now + 90 * MINUTE).toISOString(),
    listings: [{ sku: "LIP", forecast: 100 }],
  });
  assert.equal(room.status, 200, JSON.stringify(room.body));

  const console = await watchedPage(browser, { viewport: { width: 1600, height: 1000 }, locale: "zh-CN" });
  await console.goto(`${server.base}/console?room=r1`);
  await console.waitForFunction(() => document.querySelectorAll('#channels tr[data-synced="true"]').length === 2, null, {
    timeout: 10_000,
  });
  const douyin = console.locator('#channels tr[data-listing="douyin/3598001"]');
  assert.equal(await douyin.locator(".platform").textContent(), "抖音");
  assert.equal(await douyin.locator(".allocation").textContent(), "独占 60% · 配额 60");
  assert.equal(await douyin.locator(".target").textContent(), "60");
  assert.equal(await douyin.locator(".sync").textContent(), "已同步");
  // In Chinese the panel shows no English word beyond the SKU's id and the column "SKU".
  const words = (await console.locator("#channels-section").innerText()).match(/[A-Za-z]{2,}/g) ?? [];
  assert.deepEqual(words.filter((word) => !["SKU", "LIP"].includes(word)), []);

  const form = console.locator('#moves form[data-sku="LIP"]');
  await form.locator(".from").selectOption("kuaishou");
  await form.locator(".to").selectOption("douyin");
  await form.locator(".qty").fill("10");
  await form.locator(".move").click();
  await console.waitForFunction(
    () => document.querySelector('#channels tr[data-listing="douyin/3598001"] .target')?.textContent === "70",
    null,
    { timeout: 10_000 },
  );
  const after = await server.api("GET", "/api/v1/skus/LIP");
  assert.deepEqual(after.body.allocation.allotted, { douyin: 70, kuaishou: 30 });
  for (let attempt = 0; attempt < 100 && platforms.shows.get("3598001") !== 70; attempt += 1) {
    await new Promise((done) => setTimeout(done, 50));
  }
  assert.equal(platforms.shows.get("3598001"), 70);
  assert.equal(platforms.shows.get("889001"), 30);
  await console.screenshot({ path: join(screenshots, "console-channels.png") });
  assert.deepEqual(console.problems, []);
});
