// The pages when the server wants credentials: a screen opened with a viewer's token for
// its room shows it live; the same page without a token shows nothing of the show.

import assert from "node:assert/strict";
import test from "node:test";

import { Server, launch } from "./support.mjs";

const MINUTE = 60_000;

test("a screen with a room viewer's token follows its room", async (t) => {
  const server = new Server({ secret: "a browser test secret of 32 bytes or more" });
  await server.start();
  server.adminToken = server.token("admin");
  const browser = await launch();
  t.after(async () => {
    await browser.close();
    await server.stop();
  });
  const now = Date.now();
  assert.equal((await server.api("PUT", "/api/v1/skus/LIP", { total: 300 })).status, 200);
  for (const room of ["r1", "r2"]) {
    const made = await server.api("PUT", `/api/v1/rooms/${room}`, {
      starts_at: new Date(now - 10 * MINUTE).toISOString(),
      ends_at: new Date(now + 170 * MINUTE).toISOString(),
      listings: [{ sku: "LIP", forecast: 200 }],
    });
    assert.equal(made.status, 200, JSON.stringify(made.body));
  }
  assert.equal((await server.api("GET", "/api/v1/rooms", undefined, null)).status, 401);

  const viewer = server.token("viewer", ["r1"]);
  const screen = await browser.newPage({ viewport: { width: 1920, height: 1080 } });
  // The token travels in the fragment, which never reaches a server log, and leaves the
  // address bar at once.
  await screen.goto(`${server.base}/?room=r1#token=${viewer}`);
  await screen.waitForFunction(() => document.getElementById("connection").dataset.state === "live");
  assert.equal(await screen.evaluate(() => location.href.includes("token")), false);
  const placed = await server.api("POST", "/api/v1/orders", {
    order_id: "secured-1",
    sku: "LIP",
    qty: 4,
    platform: "douyin",
    room: "r1",
  });
  assert.equal(placed.status, 201);
  await screen.waitForFunction(
    () => document.querySelector('.card[data-sku="LIP"] .available')?.textContent === "296",
    null,
    { timeout: 3000 },
  );

  // Another room with the same token: refused; the page stays empty.
  const other = await browser.newPage();
  await other.goto(`${server.base}/?room=r2&token=${viewer}`);
  await other.waitForTimeout(1000);
  assert.equal(await other.locator(".card").count(), 0);
  await other.close();

  // No token at all: nothing but the page itself.
  const anonymous = await browser.newPage();
  await anonymous.goto(`${server.base}/?room=r1`);
  await anonymous.waitForTimeout(1000);
  assert.equal(await anonymous.locator(".card").count(), 0);
  await anonymous.close();
});
