#!/usr/bin/env python3
"""bench/soak_check.py: checks the answers that bench/soak.sh sampled with curl during the soak.

Usage: soak_check.py INDEX SAMPLE_DIR "address inventory payment fraud"
INDEX lines: N T KIND CODE CURL_RC STRICT, where STRICT is 1 when the sample was sent and answered
while every upstream was up and healthy (no restart and no fault mode since 1 s before it was sent
until it was answered), else 0. The body of sample N is SAMPLE_DIR/N.body.

Every sample, parsed with json: curl got an answer (rc 0); the status is 200, 422, 502 or 504; the
body is a JSON object with the sent order_id; a 200 is "accepted" with results naming every
validation exactly once, and only for the accepted kind; an error group has status rejected (422)
or failed, completed and cancelled lists, every error with its seven fields (attempts: requests sent, >= 1 here), each validation exactly
once across errors, completed and cancelled, "N of M validations failed" matching, the status that
the error kinds give (any rejected -> 422, else any timeout -> 504, else 502), and rejections only
where the kind asks for one, and a payment error of a kind that its token or an outage can give. STRICT samples must also be exactly the answer that the fake upstreams'
rules give: accepted 200; oos 422 with inventory rejected 409; zz 422 with address rejected 422;
error 502 with payment upstream_error 500; garbage 502 with payment invalid_response; slow 504 with
payment timeout after its 300 ms.
Prints one line per failed sample, then "@@samples total=N strict=N bad=N"; exit status 1 if any bad.
"""
import json
import sys

ERROR_KEYS = {"validation", "kind", "http_status", "message", "upstream", "elapsed_ms", "attempts"}
KINDS = {"rejected", "upstream_error", "invalid_response", "transport", "timeout"}
REJECTS = {"oos": ("inventory", 409), "zz": ("address", 422)}
# The payment error kinds each token can give (transport/timeout: the fake upstreams are down).
PAY_KINDS = {
    "error": {"upstream_error", "transport", "timeout"},
    "garbage": {"invalid_response", "transport", "timeout"},
    "slow": {"timeout", "transport"},
}
# kind -> (status, validation that fails, its error kind, its http_status or None for any)
STRICT = {
    "accepted": (200, None, None, None),
    "oos": (422, "inventory", "rejected", 409),
    "zz": (422, "address", "rejected", 422),
    "error": (502, "payment", "upstream_error", 500),
    "garbage": (502, "payment", "invalid_response", 200),
    "slow": (504, "payment", "timeout", None),
}


def check(kind, code, body, names, strict):
    if code not in (200, 422, 502, 504):
        return f"status {code}"
    try:
        doc = json.loads(body)
    except ValueError as e:
        return f"not JSON: {e}"
    if not isinstance(doc, dict):
        return "not an object"
    if doc.get("order_id") != f"soak-{kind}":
        return f"order_id {doc.get('order_id')!r}"
    if code == 200:
        if kind != "accepted":
            return "200 for a kind that must fail"
        if doc.get("status") != "accepted" or "error_group" in doc:
            return "200 without status accepted"
        res = doc.get("results")
        if not isinstance(res, dict) or sorted(res) != sorted(names):
            return f"results {sorted(res) if isinstance(res, dict) else res!r}"
        if not all(isinstance(v, dict) for v in res.values()):
            return "a result is not an object"
        return None
    if doc.get("status") != ("rejected" if code == 422 else "failed"):
        return f"status field {doc.get('status')!r} with {code}"
    if "results" in doc:
        return "results in an error answer"
    eg = doc.get("error_group")
    comp, canc = doc.get("completed"), doc.get("cancelled")
    if not isinstance(eg, dict) or not isinstance(comp, list) or not isinstance(canc, list):
        return "error_group/completed/cancelled missing"
    if doc.get("compensating") != []:  # v1.2: always there; the soak configures no compensate
        return f"compensating {doc.get('compensating')!r} (expected [] without compensate)"
    errs = eg.get("errors")
    if not isinstance(errs, list) or not errs:
        return "errors missing or empty"
    for e in errs:
        if not isinstance(e, dict) or set(e) != ERROR_KEYS:
            return f"error fields {sorted(e) if isinstance(e, dict) else e!r}"
        if e["kind"] not in KINDS:
            return f"error kind {e['kind']!r}"
        if not isinstance(e["attempts"], int) or e["attempts"] < 1:
            return f"attempts {e['attempts']!r} (no breaker or retry in the soak: one request each)"
        if e["kind"] in ("rejected", "upstream_error") and not isinstance(e["http_status"], int):
            return f"{e['kind']} without http_status"
    seen = [e["validation"] for e in errs] + comp + canc
    if sorted(seen) != sorted(names):
        return f"validations not exactly once: errors {[e['validation'] for e in errs]} completed {comp} cancelled {canc}"
    want_msg = f"checkout failed: {len(errs)} of {len(names)} validations failed"
    if eg.get("message") != want_msg:
        return f"message {eg.get('message')!r}, expected {want_msg!r}"
    ks = [e["kind"] for e in errs]
    rule = 422 if "rejected" in ks else 504 if "timeout" in ks else 502
    if rule != code:
        return f"status {code} but the kinds {ks} give {rule}"
    for e in errs:
        if e["kind"] == "rejected" and REJECTS.get(kind, (None, None))[0] != e["validation"]:
            return f"unexpected rejection by {e['validation']}"
        if e["validation"] == "payment" and kind in PAY_KINDS and e["kind"] not in PAY_KINDS[kind]:
            return f"payment {e['kind']} for {kind}"
    if strict:
        want_code, v, k, hs = STRICT[kind]
        if code != want_code:
            return f"strict: status {code}, expected {want_code}"
        if v is not None:
            mine = [e for e in errs if e["validation"] == v]
            if not mine or mine[0]["kind"] != k or (hs is not None and mine[0]["http_status"] != hs):
                return f"strict: expected {v} {k} {hs}, got {mine}"
            if kind == "slow" and mine[0]["elapsed_ms"] < 299:
                return f"strict: payment timed out after {mine[0]['elapsed_ms']} ms (< 300)"
    return None


def main():
    index, sdir, names = sys.argv[1], sys.argv[2], sys.argv[3].split()
    total = strict_n = bad = 0
    with open(index, encoding="ascii") as f:
        for line in f:
            parts = line.split()
            if len(parts) != 6:
                continue
            n, t, kind, code, rc, strict = parts
            total += 1
            strict = strict == "1"
            strict_n += strict
            try:
                with open(f"{sdir}/{n}.body", "rb") as b:
                    body = b.read()
            except OSError:
                body = b""
            why = f"curl exit {rc} (no answer)" if rc != "0" else check(kind, int(code), body, names, strict)
            if why:
                bad += 1
                text = body[:600].decode("utf-8", "replace")
                print(f"BAD sample {n} t={t} kind={kind} code={code} strict={int(strict)}: {why}\n    {text}")
    print(f"@@samples total={total} strict={strict_n} bad={bad}")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
