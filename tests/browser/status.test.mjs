// The /status page in a real browser (Debian's chromium, driven by playwright-core), against a
// live checkoutd with the fake upstreams and a fourth upstream ("fraud") played here, which the
// test takes down half way. Checks: no console error or page error, every configured validation
// shown, the numbers move after checkouts are sent, the validation whose upstream is down shows
// as failing (and the service's health too).
// Usage (tests/browser/run.sh does it): node status.test.mjs
//   env CHECKOUTD_BIN, FAKE_UPSTREAMS_BIN: the programs; CHROMIUM: the browser (/usr/bin/chromium)
//   STATUS_SCREENSHOT=FILE: also run a mixed load for a while and take a PNG of the page under it.
// Everything listens on 127.0.0.1, on free ports; only the processes started here are stopped.
import { chromium } from "playwright-core";
import { spawn } from "node:child_process";
import { createServer } from "node:http";
import { mkdtempSync, writeFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createInterface } from "node:readline";

const CHECKOUTD = process.env.CHECKOUTD_BIN || "build/release/checkoutd";
const FAKE = process.env.FAKE_UPSTREAMS_BIN || "build/release/fake-upstreams";
const BROWSER = process.env.CHROMIUM || "/usr/bin/chromium";
const SHOT = process.env.STATUS_SCREENSHOT || "";
const children = [];
const started = Date.now();
let failures = 0;

function log(msg) {
  console.log(`[${((Date.now() - started) / 1000).toFixed(1)} s] ${msg}`);
}
function check(ok, what) {
  log(`${ok ? "ok  " : "FAIL"} ${what}`);
  if (!ok) failures++;
  return ok;
}

// Starts prog and resolves with the lines matching re (count of them), read from its stdout.
function start(prog, args, re, count) {
  return new Promise((resolve, reject) => {
    const child = spawn(prog, args, { stdio: ["ignore", "pipe", "inherit"] });
    children.push(child);
    const found = [];
    const timer = setTimeout(() => reject(new Error(`${prog}: no ready line in 10 s`)), 10000);
    child.on("exit", (code) => reject(new Error(`${prog} exited (${code}) before it was ready`)));
    createInterface({ input: child.stdout }).on("line", (line) => {
      const m = re.exec(line);
      if (m) found.push(Number(m[1]));
      if (found.length === count) {
        clearTimeout(timer);
        resolve(found);
      }
    });
  });
}

function order(kind) {
  const token = kind === "error" ? "tok_error" : "tok_visa";
  const sku = kind === "oos" ? "OOS-9" : "SKU-1";
  return JSON.stringify({
    address: { name: "Ada", line1: "1 Main St", city: "Springfield", postal_code: "12345", country: "US" },
    items: [{ sku, quantity: 1 }],
    payment: { method: "card", token, amount: 2598, currency: "USD" },
  });
}

async function checkouts(base, n, kind = "ok") {
  const codes = {};
  for (let i = 0; i < n; i += 10) {
    const batch = [];
    for (let k = i; k < Math.min(n, i + 10); k++)
      batch.push(fetch(`${base}/checkout`, {
        method: "POST", headers: { "Content-Type": "application/json" }, body: order(kind),
      }).then(async (r) => { await r.arrayBuffer(); codes[r.status] = (codes[r.status] || 0) + 1; }));
    await Promise.all(batch);
  }
  return codes;
}

// Polls fn() (in the page) until it returns a truthy value, up to ms.
async function until(page, fn, arg, ms) {
  try {
    await page.waitForFunction(fn, arg, { timeout: ms, polling: 200 });
    return true;
  } catch {
    return false;
  }
}

const field = (name, f) => `tr[data-validation="${name}"] td[data-field="${f}"]`;

async function main() {
  const dir = mkdtempSync(join(tmpdir(), "checkoutd-browser-"));
  // The fourth upstream, played here so that the test can take it down.
  const sockets = new Set();
  const fraud = createServer((req, res) => {
    req.resume();
    req.on("end", () => {
      res.writeHead(200, { "Content-Type": "application/json" });
      res.end('{"ok":true,"score":3}');
    });
  });
  fraud.on("connection", (s) => { sockets.add(s); s.on("close", () => sockets.delete(s)); });
  await new Promise((r) => fraud.listen(0, "127.0.0.1", r));
  const fraudPort = fraud.address().port;

  const [a, i, p] = await start(FAKE, ["--address-port", "0", "--inventory-port", "0", "--payment-port", "0"],
    /listening on 127\.0\.0\.1:(\d+)/, 3);
  const config = join(dir, "checkoutd.json");
  const names = ["address", "inventory", "payment", "fraud"];
  writeFileSync(config, JSON.stringify({
    listen: "127.0.0.1:0",
    validations: [
      { name: "address", field: "address", url: `http://127.0.0.1:${a}/validate` },
      { name: "inventory", field: "items", url: `http://127.0.0.1:${i}/check` },
      { name: "payment", field: "payment", url: `http://127.0.0.1:${p}/verify` },
      { name: "fraud", field: "payment", url: `http://user:secret-pw@127.0.0.1:${fraudPort}/score` },
    ],
  }));
  const [port] = await start(CHECKOUTD, ["--config", config, "--log-level", "warn"], /listening on 127\.0\.0\.1:(\d+)/, 1);
  const base = `http://127.0.0.1:${port}`;
  log(`checkoutd on ${port}, upstreams ${a} ${i} ${p}, fraud ${fraudPort}`);

  const browser = await chromium.launch({
    executablePath: BROWSER,
    headless: true,
    args: ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
      "--disable-background-networking", "--disable-component-update", "--disable-sync"],
    // playwright gives the browser a new, empty profile (user data dir) of its own

  });
  const errors = [];
  try {
    const page = await browser.newPage({ viewport: { width: 1500, height: 430 } });
    page.on("console", (m) => { if (m.type() === "error") errors.push(`console: ${m.text()}`); });
    page.on("pageerror", (e) => errors.push(`page error: ${e.message}`));
    const resp = await page.goto(`${base}/status`);
    check(resp.status() === 200 && /text\/html/.test(resp.headers()["content-type"]), "GET /status is an HTML page");
    check(await until(page, () => Number(document.body.dataset.polls || 0) >= 2, null, 10000),
      "the page polled /status.json twice");
    for (const n of names)
      check(await page.locator(`tr[data-validation="${n}"]`).count() === 1, `validation ${n} shown`);
    const html = await page.content();
    check(!html.includes("secret-pw") && !html.includes(`${fraudPort}/score`), "no URL or userinfo on the page");
    const before = await page.textContent(field("address", "requests_per_s"));
    check(before === "0.00", `address req/s before any checkout: ${before}`);

    // Phase 1: checkouts that pass; the rates and latencies must show them within a few seconds.
    const codes = await checkouts(base, 60);
    check(codes[200] === 60, `60 checkouts accepted (${JSON.stringify(codes)})`);
    check(await until(page, (sel) => Number(document.querySelector(sel).textContent) > 0, field("address", "requests_per_s"), 8000),
      "address req/s moved above 0");
    check(await until(page, () => Number(document.getElementById("accepted").textContent) > 0, null, 8000),
      "accepted/s moved above 0");
    check(/^\d+\.\d\d$/.test(await page.textContent(field("payment", "p99_ms"))), "payment p99 shown as a number");
    check(await page.textContent(field("fraud", "circuit")) === "closed", "fraud circuit closed");
    check(await page.textContent("#health") === "ok", `health ok while everything answers`);

    if (SHOT) {
      // A mixed load for a while (some rejected, some upstream errors), then the picture.
      const end = Date.now() + 9000;
      const load = async () => {
        let k = 0;
        while (Date.now() < end) {
          const kind = k % 23 === 0 ? "oos" : k % 37 === 0 ? "error" : "ok";
          await checkouts(base, 10, kind);
          k++;
        }
      };
      await Promise.all([load(), load(), load(), load()]);
      await page.waitForTimeout(1500);
      await page.screenshot({ path: SHOT, fullPage: true });
      log(`screenshot: ${SHOT}`);
    }

    // Phase 2: the fraud upstream goes down; every checkout now fails on it (transport). Traffic
    // goes on (10 checkouts every 200 ms, as a shop's would) until the page says so.
    await new Promise((r) => { fraud.close(r); for (const s of sockets) s.destroy(); });
    const down = {};
    let sending = true;
    const traffic = (async () => {
      while (sending) {
        const codes = await checkouts(base, 10);
        for (const [k, n] of Object.entries(codes)) down[k] = (down[k] || 0) + n;
        await new Promise((r) => setTimeout(r, 200));
      }
    })();
    const failing = await until(page, (sel) => document.querySelector(sel).textContent === "failing",
      field("fraud", "state"), 15000);
    const healthFailing = await until(page, () => document.getElementById("health").textContent === "failing", null, 3000);
    sending = false;
    await traffic;
    const sent = Object.values(down).reduce((a, b) => a + b, 0);
    check(sent > 0 && down[502] === sent, `every checkout failed with the fraud upstream down (${JSON.stringify(down)})`);
    check(failing, "fraud shows failing (at least half of its calls of the last 5 s failed)");
    check(healthFailing, "the health badge says failing");
    check(/transport \d+/.test(await page.textContent(field("fraud", "errors"))), "fraud's errors name transport");
    check(await page.textContent(field("address", "state")) !== "failing", "address is not failing");
  } finally {
    await browser.close();
  }
  check(errors.length === 0, `no console error (${errors.join("; ") || "none"})`);
  rmSync(dir, { recursive: true, force: true });
}

const guard = setTimeout(() => { log("FAIL: the test took over 120 s"); stop(1); }, 120000);
function stop(code) {
  clearTimeout(guard);
  for (const c of children) if (c.exitCode === null) c.kill("SIGTERM");
  log(failures === 0 && code === 0 ? "browser test: passed" : "browser test: FAILED");
  process.exit(code || (failures ? 1 : 0));
}
main().then(() => stop(0), (e) => { log(`FAIL: ${e.stack || e}`); stop(1); });
