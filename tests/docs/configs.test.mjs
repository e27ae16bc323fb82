// Config agreement: docs/config.schema.json (Ajv, JSON Schema 2020-12) and the C config parser
// (`checkoutd --check-config`) must agree on every config of the project.
//   accepted by both: config/*.json, tests/configs/good/*.json, and the config examples in
//     README.md and docs/*.md (```json blocks that are a whole config, or one validation, which is
//     checked inside {"validations": [it]}; tls file paths in them are replaced by a placeholder
//     file, since checkoutd only checks that a tls file can be read);
//   accepted by the schema only: tests/configs/good-v13/*.json, configs that use the v1.3 keys
//     (dns, journal, admin_listen, tls, request_timeout_ms), which the C parser of this branch does
//     not know yet; `--check-config` checks them too once CONFIG_V13_C=1 is set (the v1.3 parsers
//     are merged);
//   refused by both: tests/configs/bad/*.json, each listed in tests/configs/refused.json with the
//     key the C message must name ("c_names") and why. Entries marked "v13" are refused by the C
//     parser of this branch only as an unknown top-level key; with CONFIG_V13_C=1 the message must
//     name the key (c_names) as for the others.
// On a disagreement the line says which file, what the schema said (its error's path and keyword)
// and what checkoutd said. Run from the repository root (tests/docs/run.sh does it).
//   env CHECKOUTD_BIN: the program (build/release/checkoutd)
import Ajv2020 from "ajv/dist/2020.js";
import { execFile } from "node:child_process";
import { readFileSync, readdirSync, writeFileSync, mkdtempSync, rmSync, existsSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, basename } from "node:path";

const CHECKOUTD = process.env.CHECKOUTD_BIN || "build/release/checkoutd";
const V13_C = process.env.CONFIG_V13_C === "1";
const PLACEHOLDER = "tests/configs/files/placeholder.pem";
let passed = 0, failed = 0;

function result(ok, what) {
  if (ok) passed++;
  else failed++;
  if (!ok || process.env.VERBOSE) console.log(`${ok ? "ok  " : "FAIL"} ${what}`);
}

const schema = JSON.parse(readFileSync("docs/config.schema.json", "utf8"));
const ajv = new Ajv2020({ allErrors: true, strict: true, strictTypes: false, strictRequired: false });
const validate = ajv.compile(schema);
const validateValidation = ajv.getSchema(`${schema.$id}#/$defs/validation`);

function schemaSays(v, fn = validate) {
  if (fn(v)) return null;
  return fn.errors.map((e) => `${e.instancePath || "/"} ${e.keyword}: ${e.message}`).join("; ");
}

// The environment of --check-config: none of the caller's CHECKOUTD_* variables (they would
// override the file), and the variables the configs' headers name.
const env = Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith("CHECKOUTD_")));
env.PAYMENT_API_TOKEN = "test-token";

// Resolves with {ok, message}; at most POOL run at once (each is a process start: ~5 ms plain,
// more under ASan or TSan).
const POOL = 4;
let running = 0;
const waiting = [];
async function checkConfig(path) {
  if (running >= POOL) await new Promise((r) => waiting.push(r));
  running++;
  try {
    return await new Promise((resolve) => {
      execFile(CHECKOUTD, ["--check-config", path], { env, encoding: "utf8", timeout: 20000 }, (err, _out, stderr) => {
        const code = err ? (err.code ?? err.signal) : 0;
        resolve({ ok: code === 0, message: (stderr || "").trim().split("\n")[0] || `exit ${code}` });
      });
    });
  } finally {
    running--;
    waiting.shift()?.();
  }
}
// Each check is queued as a task; the tasks run concurrently and report in the order queued.
const tasks = [];

const list = (dir) => (existsSync(dir) ? readdirSync(dir).filter((f) => f.endsWith(".json")).sort().map((f) => join(dir, f)) : []);
const tmp = mkdtempSync(join(tmpdir(), "checkoutd-configs-"));

// 1. accepted by both
for (const file of [...list("config"), ...list("tests/configs/good")]) tasks.push(async () => {
  const text = readFileSync(file, "utf8");
  const s = schemaSays(JSON.parse(text));
  const c = await checkConfig(file);
  return () => result(s === null && c.ok, `${file}: accepted by both` +
    (s !== null ? ` — the schema refuses it: ${s}` : "") + (c.ok ? "" : ` — checkoutd refuses it: ${c.message}`));
});

// 2. the examples in the documentation
const topKeys = new Set(Object.keys(schema.properties));
const valKeys = new Set(Object.keys(schema.$defs.validation.properties));
function placeholders(v) { // tls file paths -> a file that exists
  if (Array.isArray(v)) return v.map(placeholders);
  if (v === null || typeof v !== "object") return v;
  const out = {};
  for (const [k, x] of Object.entries(v))
    out[k] = k === "tls" && x && typeof x === "object" ? Object.fromEntries(Object.keys(x).map((f) => [f, PLACEHOLDER])) : placeholders(x);
  return out;
}
const mdFiles = ["README.md", ...(existsSync("docs") ? readdirSync("docs").filter((f) => f.endsWith(".md")).sort().map((f) => `docs/${f}`) : [])];
let examples = 0;
for (const md of mdFiles) {
  const text = readFileSync(md, "utf8");
  for (const m of text.matchAll(/```json\n([\s\S]*?)```/g)) {
    let v;
    try { v = JSON.parse(m[1]); } catch { continue; } // an answer with its status line, a log, ...
    if (v === null || typeof v !== "object" || Array.isArray(v)) continue;
    const keys = Object.keys(v);
    const line = text.slice(0, m.index).split("\n").length + 1;
    const where = `${md}:${line}`;
    let config, s;
    if (keys.length > 0 && keys.every((k) => valKeys.has(k)) && "url" in v) {
      s = schemaSays(v, validateValidation);
      config = { validations: [v] };
    } else if (keys.length > 0 && keys.every((k) => topKeys.has(k)) && ("validations" in v || "listen" in v)) {
      s = schemaSays(v);
      config = v;
    } else continue;
    examples++;
    const v13 = Object.keys(config).some((k) => ["dns", "journal", "admin_listen", "tls", "request_timeout_ms"].includes(k));
    if (v13 && !V13_C) {
      tasks.push(async () => () => result(s === null, `${where}: example accepted by the schema${s ? ` — it refuses it: ${s}` : ""}`));
      continue;
    }
    const path = join(tmp, `example-${examples}.json`);
    writeFileSync(path, JSON.stringify(placeholders(config)));
    tasks.push(async () => {
      const c = await checkConfig(path);
      return () => result(s === null && c.ok, `${where}: example accepted by both` +
        (s !== null ? ` — the schema refuses it: ${s}` : "") + (c.ok ? "" : ` — checkoutd refuses it: ${c.message}`));
    });
  }
}
tasks.push(async () => () => result(examples > 0, `found config examples in ${mdFiles.join(", ")} (${examples})`));

// 3. v1.3 configs: the schema (and checkoutd once its v1.3 parsers are merged, CONFIG_V13_C=1)
for (const file of list("tests/configs/good-v13")) tasks.push(async () => {
  const s = schemaSays(JSON.parse(readFileSync(file, "utf8")));
  const c = V13_C ? await checkConfig(file) : { ok: true };
  return () => result(s === null && c.ok, `${file}: accepted by the schema${V13_C ? " and checkoutd" : " (v1.3 keys: checkoutd with CONFIG_V13_C=1)"}` +
    (s !== null ? ` — the schema refuses it: ${s}` : "") + (c.ok ? "" : ` — checkoutd refuses it: ${c.message}`));
});

// 4. refused by both, checkoutd naming the key
const expected = JSON.parse(readFileSync("tests/configs/refused.json", "utf8"));
const listed = new Set(expected.map((e) => e.file));
for (const file of list("tests/configs/bad"))
  tasks.push(async () => () => result(listed.has(basename(file)), `${file} is listed in tests/configs/refused.json`));
for (const e of expected) tasks.push(async () => {
  const file = join("tests/configs/bad", e.file);
  const s = schemaSays(JSON.parse(readFileSync(file, "utf8")));
  const c = await checkConfig(file);
  const top = e.c_names.split(/[.[:]/)[0];
  const named = c.message.includes(e.c_names) ||
    (e.v13 && !V13_C && c.message.includes(`unknown key "${top}"`));
  const problems = [];
  if (s === null) problems.push(`the schema ACCEPTS it (checkoutd: ${c.message})`);
  if (!c.ok) {
    if (!named) problems.push(`checkoutd's message does not name ${e.c_names}: ${c.message}`);
  } else problems.push(`checkoutd ACCEPTS it (schema: ${s})`);
  const note = e.v13 && !V13_C ? " [v1.3: checkoutd refuses the key as unknown until its parser is merged]" : "";
  return () => result(problems.length === 0, `${file}: refused by both (${e.why})${note}` + (problems.length ? ` — ${problems.join("; ")}` : ""));
});

for (const report of await Promise.all(tasks.map((t) => t()))) report();

rmSync(tmp, { recursive: true, force: true });
console.log(`config agreement: ${passed} passed, ${failed} failed`);
process.exit(failed ? 1 : 0);
