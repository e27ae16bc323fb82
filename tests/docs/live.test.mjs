// Live answers against docs/openapi.yaml: starts the fake upstreams and two checkoutd, provokes
// every answer this branch can give — 200, 422, 502, 504, circuit_open, each client error
// (400 invalid_json / invalid_request, 404, 405, 409, 413, 415, 422 idempotency_key_reused, 503
// overloaded / idempotency_unavailable / shutting_down), a replay, the trace member, /healthz,
// /readyz (200 and 503 draining), /status.json, /metrics — and validates each status, body and
// documented header against the operation's response in openapi.yaml (Ajv, JSON Schema 2020-12).
// A response header of the API (X-Request-Id, Idempotent-Replayed, Retry-After, Allow,
// Cache-Control) that the document does not list for that response is a failure too. So is a
// /checkout answer quoted in README.md or docs/*.md whose body does not conform (documentedAnswers).
// Not provokable here (documented, schema-checked only by redocly's lint): 408 request_timeout,
// 503 journal_unavailable, kind "interrupted", /readyz "resolving" (v1.3, other branches), 500.
// Usage (tests/docs/run.sh): node live.test.mjs, from the repository root
//   env CHECKOUTD_BIN, FAKE_UPSTREAMS_BIN: the programs
// Everything listens on 127.0.0.1, on free ports; only the processes started here are stopped.
import Ajv2020 from "ajv/dist/2020.js";
import { parse } from "yaml";
import { spawn } from "node:child_process";
import http from "node:http";
import net from "node:net";
import { mkdtempSync, writeFileSync, rmSync, readFileSync, readdirSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createInterface } from "node:readline";

const CHECKOUTD = process.env.CHECKOUTD_BIN || "build/release/checkoutd";
const FAKE = process.env.FAKE_UPSTREAMS_BIN || "build/release/fake-upstreams";
const children = [];
const started = Date.now();
let passed = 0, failed = 0;

function check(ok, what) {
  if (ok) passed++;
  else failed++;
  console.log(`[${((Date.now() - started) / 1000).toFixed(1)} s] ${ok ? "ok  " : "FAIL"} ${what}`);
  return ok;
}

// ---- the document -------------------------------------------------------------------------------
const doc = parse(readFileSync("docs/openapi.yaml", "utf8"));
// strict off: OpenAPI's own keywords (example, ...) sit beside JSON Schema's in its schemas
const ajv = new Ajv2020({ allErrors: true, strict: false });
ajv.addSchema(doc, "openapi");
const esc = (s) => s.replace(/~/g, "~0").replace(/\//g, "~1");
const API_HEADERS = ["x-request-id", "idempotent-replayed", "retry-after", "allow", "cache-control"];

// The response object (and its JSON pointer) of path/method/status, $refs followed.
function responseOf(path, method, status) {
  const op = doc.paths[path]?.[method];
  if (!op) return null;
  let ptr = `#/paths/${esc(path)}/${method}/responses/${status}`;
  let r = op.responses[String(status)];
  if (r?.$ref) {
    ptr = r.$ref;
    r = ptr.split("/").slice(1).reduce((o, k) => o[k.replace(/~1/g, "/").replace(/~0/g, "~")], doc);
  }
  return r ? { r, ptr } : null;
}

// Validates one answer; returns a list of problems (empty: it conforms). headers false: the body
// alone (an answer quoted in the docs).
function conforms(path, method, ans, headers = true) {
  const found = responseOf(path, method, ans.status);
  if (!found) return [`status ${ans.status} is not documented for ${method.toUpperCase()} ${path}`];
  const { r, ptr } = found;
  const problems = [];
  const ct = ans.headers["content-type"] || "";
  const media = Object.keys(r.content || {}).find((m) => m === ct || (m === "application/json" && ct.split(";")[0] === m));
  if (!media) problems.push(`Content-Type ${ct} is not documented (${Object.keys(r.content || {}).join(", ")})`);
  else {
    let body = ans.body;
    if (media === "application/json") {
      try { body = JSON.parse(ans.body); } catch (e) { problems.push(`body is not JSON: ${e.message}`); }
    }
    const validate = ajv.getSchema(`openapi${ptr}/content/${esc(media)}/schema`);
    if (!validate(body))
      problems.push(...validate.errors.map((e) => `body${e.instancePath} ${e.message}${e.params?.additionalProperty ? ` (${e.params.additionalProperty})` : ""}`));
  }
  const documented = {};
  if (!headers) return problems;
  for (const [name, h0] of Object.entries(r.headers || {})) {
    const hptr = h0.$ref ? h0.$ref : `${ptr}/headers/${esc(name)}`;
    const h = h0.$ref ? h0.$ref.split("/").slice(1).reduce((o, k) => o[k], doc) : h0;
    documented[name.toLowerCase()] = true;
    const value = ans.headers[name.toLowerCase()];
    if (value === undefined) {
      if (h.required) problems.push(`header ${name} is missing`);
      continue;
    }
    const validate = ajv.getSchema(`openapi${hptr}/schema`);
    if (!validate(value)) problems.push(`header ${name}: ${JSON.stringify(value)} ${validate.errors[0].message}`);
  }
  for (const name of API_HEADERS)
    if (ans.headers[name] !== undefined && !documented[name]) problems.push(`header ${name} is not documented for this answer`);
  return problems;
}

// ---- processes and requests ---------------------------------------------------------------------
function start(prog, args, re, count) {
  return new Promise((resolve, reject) => {
    // the fake upstreams' log (stderr) is left out: it reports the cancelled calls, as it should
    const child = spawn(prog, args, { stdio: ["ignore", "pipe", "ignore"] });
    children.push(child);
    const found = [];
    const timer = setTimeout(() => reject(new Error(`${prog}: no ready line in 20 s`)), 20000);
    child.on("exit", (code) => { clearTimeout(timer); reject(new Error(`${prog} exited (${code}) before it was ready`)); });
    createInterface({ input: child.stdout }).on("line", (line) => {
      const m = re.exec(line);
      if (m) found.push(Number(m[1]));
      if (found.length === count) {
        clearTimeout(timer);
        resolve({ child, ports: found });
      }
    });
  });
}

function request(port, method, path, { headers = {}, body, agent } = {}) {
  return new Promise((resolve, reject) => {
    const req = http.request({ host: "127.0.0.1", port, method, path, headers, agent: agent || false }, (res) => {
      let data = "";
      res.setEncoding("utf8");
      res.on("data", (c) => (data += c));
      res.on("end", () => resolve({ status: res.statusCode, headers: res.headers, body: data }));
    });
    req.setTimeout(15000, () => req.destroy(new Error(`${method} ${path}: no answer in 15 s`)));
    req.on("error", reject);
    if (body !== undefined) req.write(body);
    req.end();
  });
}

const JSON_CT = { "Content-Type": "application/json" };
function order(over = {}) {
  const o = {
    order_id: over.order_id ?? "ord-live",
    address: { name: "Ada", line1: "1 Main St", city: "Springfield", postal_code: "12345", country: "US" },
    items: [{ sku: over.sku || "SKU-1", quantity: 1 }],
    payment: { method: "card", token: over.token || "tok_visa", amount: 2598, currency: "USD" },
  };
  return JSON.stringify(o);
}
const checkout = (port, body, headers = {}, agent) =>
  request(port, "POST", "/checkout", { headers: { ...JSON_CT, ...headers }, body, agent });

// Checks one answer: the status wanted, conformance, and what more `extra` says (a string: a
// problem; null: fine).
function expect(what, path, method, ans, status, extra = () => null) {
  const problems = ans.status === status ? conforms(path, method, ans) : [`status ${ans.status}, want ${status}: ${ans.body.slice(0, 200)}`];
  if (problems.length === 0) {
    const p = extra(ans.headers["content-type"]?.startsWith("application/json") ? JSON.parse(ans.body) : ans.body, ans);
    if (p) problems.push(p);
  }
  return check(problems.length === 0, `${what}: ${status} conforms` + (problems.length ? ` — ${problems.join("; ")}` : ""));
}
const code = (c) => (b) => (b.error?.code === c ? null : `code ${b.error?.code}, want ${c}`);
const kind = (k) => (b) => (b.error_group?.errors?.some((e) => e.kind === k) ? null : `no error of kind ${k}`);
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

// Resolves once the checkoutd on port has n checkouts in flight (its /status.json says so).
async function inflight(port, n) {
  for (const end = Date.now() + 10000; Date.now() < end; await sleep(20)) {
    const r = await request(port, "GET", "/status.json");
    if (r.status === 200 && JSON.parse(r.body).inflight >= n) return;
  }
  throw new Error(`no ${n} checkout(s) in flight on ${port} within 10 s`);
}

async function freePort() {
  const s = net.createServer();
  await new Promise((r) => s.listen(0, "127.0.0.1", r));
  const { port } = s.address();
  await new Promise((r) => s.close(r));
  return port;
}

// The answers the documentation quotes (```json blocks of README.md and docs/*.md that are a
// /checkout answer, after an optional "HTTP 422 (in 0.002 s)" line, or a /status.json) conform
// too; an example abridged with "..." values is left out.
const CODE_STATUS = { invalid_json: 400, invalid_request: 400, body_too_large: 413, unsupported_media_type: 415,
  method_not_allowed: 405, not_found: 404, idempotency_in_progress: 409, idempotency_key_reused: 422 };
function documentedAnswers() {
  const files = ["README.md", ...readdirSync("docs").filter((f) => f.endsWith(".md")).sort().map((f) => `docs/${f}`)];
  let n = 0;
  for (const f of files) {
    const text = readFileSync(f, "utf8");
    for (const m of text.matchAll(/```\w*\n([\s\S]*?)```/g)) {
      const http = /^HTTP (\d{3})[^\n]*\n/.exec(m[1]);
      let body;
      try { body = JSON.parse(http ? m[1].slice(http[0].length) : m[1]); } catch { continue; }
      if (body === null || typeof body !== "object" || "event" in body) continue; // a log line
      if (m[1].includes('"..."')) continue; // abridged on purpose ("...": values left out)
      if ("uptime_s" in body && "validations" in body) { // a /status.json
        n++;
        const where = `${f}:${text.slice(0, m.index).split("\n").length + 1}`;
        const problems = conforms("/status.json", "get", { status: 200, headers: { "content-type": "application/json" }, body: JSON.stringify(body) }, false);
        check(problems.length === 0, `${where}: the documented /status.json conforms` + (problems.length ? ` — ${problems.join("; ")}` : ""));
        continue;
      }
      if (!(("order_id" in body && "status" in body) || "error" in body)) continue;
      const status = http ? Number(http[1])
        : body.error ? CODE_STATUS[body.error.code]
        : { accepted: 200, rejected: 422, failed: 502 }[body.status];
      if (!status || !("elapsed_ms" in body || "error" in body)) continue; // a request, not an answer
      n++;
      const where = `${f}:${text.slice(0, m.index).split("\n").length + 1}`;
      const problems = conforms("/checkout", "post", { status, headers: { "content-type": "application/json" }, body: JSON.stringify(body) }, false);
      check(problems.length === 0, `${where}: the documented ${status} conforms` + (problems.length ? ` — ${problems.join("; ")}` : ""));
    }
  }
  check(n > 0, `found answers quoted in the docs (${n})`);
}

async function main() {
  documentedAnswers();
  const dir = mkdtempSync(join(tmpdir(), "checkoutd-live-"));
  const fake = await start(FAKE, ["--address-port", "0", "--inventory-port", "0", "--payment-port", "0"],
    /listening on 127\.0\.0\.1:(\d+)/, 3);
  const [a, i, p] = fake.ports;
  const vals = (paymentTimeout) => [
    { name: "address", field: "address", url: `http://127.0.0.1:${a}/validate` },
    { name: "inventory", field: "items", url: `http://127.0.0.1:${i}/check` },
    { name: "payment", field: "payment", url: `http://127.0.0.1:${p}/verify`, timeout_ms: paymentTimeout },
  ];
  // A: the default config's validations, trace on, a small body limit, payment's timeout short
  writeFileSync(join(dir, "a.json"), JSON.stringify({ listen: "127.0.0.1:0", trace: true, max_body_bytes: 1024, validations: vals(700) }));
  // B: one checkout at a time, a breaker that opens at the first failure, an unreachable Redis
  const deadRedis = await freePort();
  writeFileSync(join(dir, "b.json"), JSON.stringify({
    listen: "127.0.0.1:0", max_inflight: 1,
    idempotency: { store: "redis", redis_url: `redis://127.0.0.1:${deadRedis}`, timeout_ms: 50 },
    validations: [{ ...vals(500)[2], breaker: { consecutive_failures: 1, open_ms: 60000 } }],
  }));
  const env = Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith("CHECKOUTD_")));
  const startD = (cfg) => new Promise((resolve, reject) => {
    const child = spawn(CHECKOUTD, ["--config", cfg, "--log-level", "error"], { stdio: ["ignore", "pipe", "inherit"], env });
    children.push(child);
    const timer = setTimeout(() => reject(new Error("checkoutd: no ready line in 20 s")), 20000);
    child.on("exit", (c) => { clearTimeout(timer); reject(new Error(`checkoutd exited (${c}) before it was ready`)); });
    createInterface({ input: child.stdout }).on("line", (line) => {
      const m = /listening on 127\.0\.0\.1:(\d+)/.exec(line);
      if (m) { clearTimeout(timer); resolve({ child, port: Number(m[1]) }); }
    });
  });
  const A = await startD(join(dir, "a.json"));
  const B = await startD(join(dir, "b.json"));
  const pa = A.port, pb = B.port;
  console.log(`checkoutd A on ${pa}, B on ${pb}; upstreams ${a} ${i} ${p}`);

  // ---- /checkout: the task group's answers
  expect("accepted", "/checkout", "post", await checkout(pa, order(), { "X-Request-Id": "live-req-1" }), 200,
    (b, r) => (r.headers["x-request-id"] !== "live-req-1" ? "X-Request-Id not echoed" : b.trace ? "trace without asking" : null));
  expect("accepted with trace", "/checkout", "post", await checkout(pa, order(), { "X-Checkout-Trace": "1" }), 200,
    (b) => (b.trace?.validations?.payment?.attempts?.length >= 1 ? null : "no trace member"));
  const noOrderId = JSON.parse(order());
  delete noOrderId.order_id;
  expect("accepted without order_id", "/checkout", "post", await checkout(pa, JSON.stringify(noOrderId)), 200,
    (b) => (/^ord-/.test(b.order_id) ? null : `order_id ${b.order_id}`));
  expect("rejected (out of stock)", "/checkout", "post", await checkout(pa, order({ sku: "OOS-9" })), 422, kind("rejected"));
  expect("rejected with trace", "/checkout", "post", await checkout(pa, order({ token: "tok_declined" }), { "X-Checkout-Trace": "1" }), 422,
    (b) => (b.trace ? null : "no trace member"));
  expect("upstream_error", "/checkout", "post", await checkout(pa, order({ token: "tok_error" })), 502, kind("upstream_error"));
  expect("invalid_response", "/checkout", "post", await checkout(pa, order({ token: "tok_garbage" })), 502, kind("invalid_response"));
  expect("timeout", "/checkout", "post", await checkout(pa, order({ token: "tok_slow" })), 504, kind("timeout"));

  // ---- client errors
  expect("invalid_json", "/checkout", "post", await checkout(pa, "{x"), 400, code("invalid_json"));
  expect("invalid_json (duplicate key)", "/checkout", "post", await checkout(pa, '{"a":1,"a":2}'), 400, code("invalid_json"));
  expect("invalid_request (not an object)", "/checkout", "post", await checkout(pa, "[1]"), 400, code("invalid_request"));
  expect("invalid_request (field missing)", "/checkout", "post", await checkout(pa, '{"address":{},"items":[]}'), 400, code("invalid_request"));
  expect("invalid_request (order_id)", "/checkout", "post", await checkout(pa, order({ order_id: 5 })), 400, code("invalid_request"));
  expect("invalid_request (Idempotency-Key)", "/checkout", "post", await checkout(pa, order(), { "Idempotency-Key": "a b" }), 400, code("invalid_request"));
  expect("body_too_large", "/checkout", "post", await checkout(pa, JSON.stringify({ pad: "x".repeat(2000) })), 413, code("body_too_large"));
  expect("unsupported_media_type", "/checkout", "post",
    await request(pa, "POST", "/checkout", { headers: { "Content-Type": "text/plain" }, body: order() }), 415, code("unsupported_media_type"));
  expect("method_not_allowed", "/checkout", "post", await request(pa, "GET", "/checkout"), 405,
    (b, r) => code("method_not_allowed")(b) || (r.headers.allow === "POST" ? null : `Allow: ${r.headers.allow}`));
  expect("method_not_allowed on a probe", "/healthz", "get", await request(pa, "POST", "/healthz", { body: "" }), 405, code("method_not_allowed"));
  expect("not_found", "/metrics", "get", await request(pa, "GET", "/no-such-path"), 404, code("not_found"));

  // ---- Idempotency-Key: replay, reuse, in progress
  const key = `live-${process.pid}-${Date.now()}`;
  const first = await checkout(pa, order(), { "Idempotency-Key": key });
  expect("keyed, first", "/checkout", "post", first, 200, (b, r) => (r.headers["idempotent-replayed"] ? "marked replayed" : null));
  expect("keyed, replay", "/checkout", "post", await checkout(pa, order(), { "Idempotency-Key": key }), 200,
    (b, r) => (r.headers["idempotent-replayed"] !== "true" ? "no Idempotent-Replayed: true" : r.body !== first.body ? "body differs" : null));
  expect("idempotency_key_reused", "/checkout", "post", await checkout(pa, order({ order_id: "other" }), { "Idempotency-Key": key }), 422,
    code("idempotency_key_reused"));
  const slowKey = `${key}-slow`;
  const slow = checkout(pa, order({ token: "tok_slow" }), { "Idempotency-Key": slowKey });
  await inflight(pa, 1);
  expect("idempotency_in_progress", "/checkout", "post", await checkout(pa, order({ token: "tok_slow" }), { "Idempotency-Key": slowKey }), 409,
    (b, r) => code("idempotency_in_progress")(b) || (r.headers["retry-after"] === "1" ? null : "Retry-After is not 1"));
  expect("keyed timeout", "/checkout", "post", await slow, 504, kind("timeout"));

  // ---- B: overloaded, then the breaker's circuit_open, and an unreachable idempotency store
  const busy = checkout(pb, JSON.stringify({ payment: { token: "tok_slow" } }));
  await inflight(pb, 1);
  expect("overloaded", "/checkout", "post", await checkout(pb, JSON.stringify({ payment: { token: "tok_visa" } })), 503,
    (b, r) => code("overloaded")(b) || (r.headers["retry-after"] === "1" ? null : "Retry-After is not 1"));
  expect("timeout (opens the breaker)", "/checkout", "post", await busy, 504, kind("timeout"));
  expect("circuit_open", "/checkout", "post", await checkout(pb, JSON.stringify({ payment: { token: "tok_visa" } })), 502,
    (b) => kind("circuit_open")(b) || (b.error_group.errors[0].attempts === 0 ? null : "attempts is not 0"));
  expect("idempotency_unavailable", "/checkout", "post",
    await checkout(pb, JSON.stringify({ payment: { token: "tok_visa" } }), { "Idempotency-Key": key }), 503,
    (b, r) => code("idempotency_unavailable")(b) || (r.headers["retry-after"] === "1" ? null : "Retry-After is not 1"));
  expect("status.json (redis down, circuit open)", "/status.json", "get", await request(pb, "GET", "/status.json"), 200,
    (b) => (b.validations?.payment?.circuit === "open" ? null : `circuit ${b.validations?.payment?.circuit}`));

  // ---- operations
  expect("healthz", "/healthz", "get", await request(pa, "GET", "/healthz"), 200);
  expect("readyz", "/readyz", "get", await request(pa, "GET", "/readyz"), 200);
  expect("metrics", "/metrics", "get", await request(pa, "GET", "/metrics"), 200,
    (b) => (/checkoutd_checkouts_total\{outcome="accepted"\} [1-9]/.test(b) ? null : "no accepted checkout counted"));
  expect("status.json", "/status.json", "get", await request(pa, "GET", "/status.json"), 200,
    (b) => (Object.keys(b.validations || {}).join() === "address,inventory,payment" ? null : "validations missing"));

  // ---- the drain: a keep-alive connection opened before SIGTERM gets 503s while a checkout runs
  const agent = new http.Agent({ keepAlive: true, maxSockets: 1 });
  expect("healthz (keep-alive)", "/healthz", "get", await request(pa, "GET", "/healthz", { agent }), 200);
  const running = checkout(pa, order({ token: "tok_slow" }));
  await inflight(pa, 1);
  A.child.kill("SIGTERM");
  try {
    let ready; // 200 until the signal is handled
    for (const end = Date.now() + 5000; Date.now() < end; await sleep(20)) {
      ready = await request(pa, "GET", "/readyz", { agent });
      if (ready.status !== 200) break;
    }
    expect("readyz while draining", "/readyz", "get", ready, 503,
      (b) => (b.status === "draining" ? null : `status ${b.status}`));
    expect("shutting_down", "/checkout", "post", await checkout(pa, order(), {}, agent), 503, code("shutting_down"));
  } catch (e) {
    check(false, `drain: ${e.message}`);
  }
  expect("in-flight checkout finishes during the drain", "/checkout", "post", await running, 504, kind("timeout"));
  agent.destroy();
  rmSync(dir, { recursive: true, force: true });
}

const guard = setTimeout(() => { check(false, "the test took over 60 s"); stop(1); }, 60000);
function stop(code) {
  clearTimeout(guard);
  for (const c of children) if (c.exitCode === null && c.signalCode === null) c.kill("SIGTERM");
  console.log(`live answers against docs/openapi.yaml: ${passed} passed, ${failed} failed`);
  process.exit(code || (failed ? 1 : 0));
}
main().then(() => stop(0), (e) => { check(false, e.stack || String(e)); stop(1); });
