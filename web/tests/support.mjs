// What the browser tests share: the real server binary on a free port with its own data
// directory, the JSON API, and headless Chromium (Debian's package).

import { spawn, spawnSync } from "node:child_process";
import { mkdtempSync, mkdirSync, rmSync, writeFileSync } from "node:fs";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { chromium } from "playwright-core";

export const root = resolve(dirname(fileURLToPath(import.meta.url)), "../..");
export const screenshots = join(root, "target", "screenshots");

export async function freePort() {
  return new Promise((done, fail) => {
    const probe = createServer();
    probe.once("error", fail);
    probe.listen(0, "127.0.0.1", () => {
      const { port } = probe.address();
      probe.close(() => done(port));
    });
  });
}

/** The server: start it, kill it, start it again on the same port and data directory. */
export class Server {
  /**
   * @param {object} [options] `secret`: an auth secret to run with; `config`: the text of a
   * TOML configuration file to run with.
   */
  constructor(options = {}) {
    this.secret = options.secret;
    this.dataDir = mkdtempSync(join(tmpdir(), "stockpulse-browser-"));
    if (options.config) {
      this.configFile = join(this.dataDir, "stockpulse.toml");
      writeFileSync(this.configFile, options.config);
    }
    this.binary = process.env.STOCKPULSE_BIN ?? join(root, "target", "debug", "stockpulse");
    this.child = null;
  }

  async start() {
    if (this.port === undefined) this.port = await freePort();
    this.base = `http://127.0.0.1:${this.port}`;
    this.child = spawn(this.binary, ["--listen", `127.0.0.1:${this.port}`, "--data-dir", this.dataDir], {
      stdio: ["ignore", "ignore", "inherit"],
      env: {
        ...process.env,
        RUST_LOG: "warn",
        ...(this.secret ? { STOCKPULSE_AUTH_SECRET: this.secret } : {}),
        ...(this.configFile ? { STOCKPULSE_CONFIG: this.configFile } : {}),
      },
    });
    for (let attempt = 0; attempt < 200; attempt += 1) {
      try {
        const response = await fetch(`${this.base}/healthz`);
        if (response.ok) return;
      } catch {
        // Not listening yet.
      }
      await new Promise((done) => setTimeout(done, 50));
    }
    throw new Error(`${this.binary} did not answer on ${this.base}`);
  }

  /** SIGKILL, as a crash would. */
  async kill() {
    const exited = new Promise((done) => this.child.once("exit", done));
    this.child.kill("SIGKILL");
    await exited;
  }

  async stop() {
    if (this.child && this.child.exitCode === null) {
      const exited = new Promise((done) => this.child.once("exit", done));
      this.child.kill("SIGTERM");
      await exited;
    }
    rmSync(this.dataDir, { recursive: true, force: true });
  }

  /** Issues a token with the server's own command. */
  token(role, rooms = []) {
    const args = ["token", "--role", role, ...rooms.flatMap((room) => ["--room", room])];
    const issued = spawnSync(this.binary, args, {
      env: { ...process.env, STOCKPULSE_AUTH_SECRET: this.secret },
      encoding: "utf8",
    });
    if (issued.status !== 0) throw new Error(`token: ${issued.stderr}`);
    return issued.stdout.trim();
  }

  async api(method, path, body, token = this.adminToken) {
    const headers = body === undefined ? {} : { "content-type": "application/json" };
    if (token) headers.authorization = `Bearer ${token}`;
    const response = await fetch(`${this.base}${path}`, {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    const text = await response.text();
    return { status: response.status, body: text ? JSON.parse(text) : null };
  }
}

export async function launch() {
  mkdirSync(screenshots, { recursive: true });
  return chromium.launch({
    executablePath: process.env.CHROMIUM ?? "/usr/bin/chromium",
    args: ["--no-sandbox", "--disable-gpu"],
  });
}

/**
 * A new page that records what goes wrong in it: console errors, uncaught exceptions, and
 * requests answered with an error status (a missing icon included). `page.problems` lists
 * them.
 */
export async function watchedPage(browser, options) {
  const page = await browser.newPage(options);
  page.problems = [];
  page.on("console", (message) => {
    if (message.type() === "error") page.problems.push(`console: ${message.text()}`);
  });
  page.on("pageerror", (error) => page.problems.push(`exception: ${error.message}`));
  page.on("response", (response) => {
    if (response.status() >= 400) page.problems.push(`${response.status()} ${response.url()}`);
  });
  return page;
}

/**
 * The words a page shows in Latin letters, two or more in a row, outside the language toggle
 * (which names the other language in its own words) and outside `names` (product and room
 * names, which are what the shop calls them).
 */
export async function latinWords(page, names) {
  const text = await page.evaluate(() => {
    const clone = document.body.cloneNode(true);
    clone.querySelector("#language")?.remove();
    for (const hidden of clone.querySelectorAll("[hidden]")) hidden.remove();
    return clone.innerText;
  });
  let rest = text;
  for (const name of names) rest = rest.split(name).join(" ");
  return rest.match(/[A-Za-z]{2,}/g) ?? [];
}
