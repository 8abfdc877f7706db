// The post-show review page in headless Chromium: a short show that ended, read in Chinese
// and in English, with each listing's figures and curve, its alerts and the timeline, no
// error in the page, and a clean A4 landscape PDF from printing it.

import assert from "node:assert/strict";
import { writeFileSync } from "node:fs";
import { join } from "node:path";
import test from "node:test";

import { Server, launch, screenshots, watchedPage } from "./support.mjs";

test("the review of a finished show reads in both languages and prints", async (t) => {
  const server = new Server();
  await server.start();
  const browser = await launch();
  t.after(async () => {
    await browser.close();
    await server.stop();
  });
  assert.equal((await server.api("PUT", "/api/v1/skus/LIP", { name: "丝绒口红", total: 40 })).status, 200);
  assert.equal((await server.api("PUT", "/api/v1/skus/PEN", { name: "眼线笔", total: 500 })).status, 200);
  // A one-minute show ending four seconds from now.
  const made = await server.api("PUT", "/api/v1/rooms/r1", {
    name: "晚八点专场",
    starts_at: new Date(Date.now() - 56_000).toISOString(),
    ends_at: new Date(Date.now() + 4_000).toISOString(),
    listings: [
      { sku: "LIP", forecast: 30, plan: { shape: "front_loaded" } },
      { sku: "PEN", forecast: 100 },
    ],
  });
  assert.equal(made.status, 200, JSON.stringify(made.body));
  const sell = async (id, sku, qty) =>
    server.api("POST", "/api/v1/orders", { order_id: id, sku, qty, platform: "douyin", room: "r1", paid: true });
  assert.equal((await sell("o1", "LIP", 25)).status, 201);
  assert.equal((await sell("o2", "LIP", 15)).status, 201);
  assert.equal((await sell("o3", "LIP", 5)).status, 409, "sold out: lost");
  assert.equal((await sell("o4", "PEN", 20)).status, 201);
  let report = null;
  for (let attempt = 0; attempt < 100; attempt += 1) {
    report = (await server.api("GET", "/api/v1/rooms/r1/report")).body;
    if (report.finished && report.listings[0].lost.units === 5) break;
    await new Promise((done) => setTimeout(done, 100));
  }
  assert.equal(report.finished, true);

  const chinese = await watchedPage(browser, { viewport: { width: 1400, height: 1000 }, locale: "zh-CN" });
  await chinese.goto(`${server.base}/report?room=r1`);
  await chinese.waitForFunction(() => document.body.dataset.ready === "true");
  assert.match(await chinese.locator("#title").textContent(), /直播复盘/);
  const lip = chinese.locator('.report-listing[data-sku="LIP"]');
  const lipText = await lip.innerText();
  assert.match(lipText, /丝绒口红/);
  assert.match(lipText, /本场消耗\s+40/);
  assert.match(lipText, /错失\s+5/);
  assert.match(lipText, /开场即巅峰/);
  assert.match(lipText, /已消耗预估的|已无可售库存/, "a reason in Chinese");
  const timeline = await chinese.locator("#timeline").innerText();
  assert.match(timeline, /开播/);
  assert.match(timeline, /售罄/);
  assert.match(timeline, /下播/);
  assert.equal(await chinese.locator(".report-listing canvas").count(), 2);
  await chinese.screenshot({ path: join(screenshots, "report-zh-CN.png"), fullPage: true });
  await chinese.emulateMedia({ media: "print" });
  const pdf = await chinese.pdf({ preferCSSPageSize: true, printBackground: true });
  writeFileSync(join(screenshots, "report-zh-CN.pdf"), pdf);
  // A4 landscape: 842 × 595 points.
  const box = /\/MediaBox\s*\[\s*0 0 ([\d.]+) ([\d.]+)\s*\]/.exec(pdf.toString("latin1"));
  assert.ok(box, "a page size in the PDF");
  assert.ok(Math.abs(Number(box[1]) - 842) < 2 && Math.abs(Number(box[2]) - 595) < 2, box[0]);
  assert.deepEqual(chinese.problems, []);

  const english = await watchedPage(browser, { viewport: { width: 1400, height: 1000 }, locale: "en-US" });
  await english.goto(`${server.base}/report?room=r1&lang=en`);
  await english.waitForFunction(() => document.body.dataset.ready === "true");
  assert.match(await english.locator("#title").textContent(), /Post-show review/);
  const englishLip = await english.locator('.report-listing[data-sku="LIP"]').innerText();
  assert.match(englishLip, /Consumed in show\s+40/);
  assert.match(englishLip, /Front-loaded/);
  assert.match(await english.locator("#timeline").innerText(), /Show ends/);
  await english.screenshot({ path: join(screenshots, "report-en.png"), fullPage: true });
  assert.deepEqual(english.problems, []);
});
