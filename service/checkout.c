/* checkout — the POST /checkout path. See checkout.h.
 *
 *   accept   co_accept: parse the body, check order_id and every configured field (and the
 *            Idempotency-Key's syntax), admit it under max_inflight, build one upstream body per
 *            validation ({"order_id", "<field>": value})
 *   claim    co_launch: a keyed checkout claims its key first (it kept its request instead of
 *            building its calls); on_claimed answers a replay, 409, 422 or 503 at once, with no
 *            task group and no upstream call, or builds the calls and goes on
 *   journal  journal_begin (v1.3, a config with compensate): the checkout's record is handed to
 *            the journal; on_begun fans out once it is durable, or answers 503
 *            journal_unavailable with nothing sent
 *   fan out  fan_out: submit the calls as one task group; the loop starts every call at once
 *   first failure, cancel
 *            tg: the first failure aborts every call still running (its connection closes), the
 *            deadline turns what still runs into timeouts
 *   answer   on_group_done (loop thread): eg_build turns the group into 200 or the error group,
 *            reply() hands it to the server, which resumes the client's connection
 *            (v1.3: a journaled 200 waits in on_accepted for its "accepted" record)
 *   settle   settle_claim (in finish): a keyed checkout's final answer (200, 422) is stored, any
 *            other releases its claim, so that a retry runs again
 *   compensate  what took effect in a failed checkout is undone after the answer (service/undo,
 *            lib/comp_run); a journaled checkout's plan is queued to the journal first. */
#include "checkout.h"

#include "comp.h"
#include "eg.h"
#include "jlog.h"
#include "jspan.h"
#include "trace.h"
#include "undo.h"
#include "utf8.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>

/* What the undo request of validation i needs from the checkout, kept only for validations that
 * have compensate: its upstream body {"order_id":<id>,<key>:<value>} and where key and value are.
 */
typedef struct co_undo {
    char *body;
    size_t len, key_at, key_len, value_at, value_len;
} co_undo;

struct co_checkout {
    co_service *service;
    tg_group *group;
    co_reply_fn reply;
    void *conn;
    size_t loop;
    struct timespec accepted;
    size_t worker;                    /* the loop it runs on: its writer in the windows */
    int traced;                       /* trace on and asked for: the answer gets a "trace" member */
    char order_id[4 * CO_ID_MAX + 1]; /* up to 128 code points of UTF-8 */
    char request_id[CO_ID_MAX + 1];
    int keyed;   /* an Idempotency-Key to claim (the store is on) */
    int claimed; /* claim.result was IDEM_NEW: finish or release it exactly once */
    idem_claim claim;
    /* A keyed checkout builds its group only once its claim says NEW (a replay, 409, 422 or 503
     * builds none): until then it keeps the parsed order and a copy of the request (one
     * allocation: body, Idempotency-Key and traceparent values). */
    json_t *kept_order;
    co_request kept;
    char *kept_mem;
    char *idempotency_key; /* the client's, when some validation has compensate */
    char *traceparent;     /* the client's, when some validation has compensate */
    co_undo *undo;         /* [nvalidations] when some validation has compensate, else NULL */
    int64_t jid;           /* v1.3: its journal record, 0 when not journaled (or not written) */
    co_answer *held;       /* v1.3: a 200 waiting for its "accepted" record to be durable */
};

void co_service_init(co_service *s, const cfg *c, tg_loop *const *loops, size_t nloops, mx *metrics)
{
    memset(s, 0, sizeof(*s));
    s->cfg = c;
    s->loops = loops;
    s->nloops = nloops;
    s->metrics = metrics;
    for (size_t i = 0; i < c->nvalidations; i++) {
        const cfg_validation *v = &c->validations[i];
        s->names[i] = v->name;
        /* A validation with no resilience key keeps the one-request path of v1.1. */
        if (v->retry.attempts <= 1 && v->retry.per_try_ms >= v->timeout_ms &&
            v->breaker_failures == 0 && v->hedge_after_ms == 0)
            continue;
        tg_policy *p = &s->policies[i];
        p->retry = v->retry;
        p->hedge_after_ms = v->hedge_after_ms;
        if (v->breaker_failures > 0 &&
            breaker_init(&s->breakers[i], v->breaker_failures, v->breaker_open_ms) == 0) {
            s->breaker[i] = &s->breakers[i];
            p->breaker = s->breaker[i];
        }
        s->policy[i] = p;
    }
    mx_set_breakers(metrics, s->breaker, c->nvalidations);
    for (size_t i = 0; i < c->nvalidations; i++)
        s->has_comp |= c->validations[i].compensate.url != NULL;
    s->comp_events = undo_observer(s);
    atomic_init(&s->inflight, 0);
    clock_gettime(CLOCK_MONOTONIC, &s->started);
}

int co_trace_wanted(const co_service *s, const char *header)
{
    return s->cfg->trace && header != NULL && strcmp(header, "1") == 0;
}

void co_error_answer(co_answer *a, int http_status, const char *code, const char *message)
{
    char text[512];
    snprintf(text, sizeof(text), "%s", message);
    utf8_cut(text); /* jansson's error text may quote the body's bytes, cut or not UTF-8 */
    json_t *doc = json_pack("{s:{s:s, s:s}}", "error", "code", code, "message", text);
    a->http_status = http_status;
    a->code = code;
    a->body = doc ? json_dumps(doc, JSON_COMPACT) : NULL;
    a->body_len = a->body ? strlen(a->body) : 0;
    json_decref(doc);
}

/* Random hex ids: per-thread xorshift seeded once from getrandom; ids need to be unique, not
 * secret. */
static void random_hex(char *out, size_t nhex)
{
    static _Thread_local unsigned long long state;
    static const char hex[] = "0123456789abcdef";
    while (state == 0) {
        if (getrandom(&state, sizeof(state), 0) != (ssize_t)sizeof(state))
            state = (unsigned long long)time(NULL) ^ (unsigned long long)(size_t)&state;
    }
    for (size_t i = 0; i < nhex; i++) {
        if (i % 16 == 0) {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
        }
        out[i] = hex[(state >> (4 * (i % 16))) & 15];
    }
    out[nhex] = '\0';
}

/* A client's X-Request-Id is kept when it is short printable ASCII (it goes into upstream headers
 * and logs), else replaced. */
void co_request_id(const char *given, char *out, size_t cap)
{
    size_t len = given ? strlen(given) : 0;
    int ok = len > 0 && len < cap;
    for (size_t i = 0; ok && i < len; i++)
        ok = given[i] > 0x20 && given[i] < 0x7f;
    if (ok)
        memcpy(out, given, len + 1);
    else
        random_hex(out, 32);
}

static size_t utf8_code_points(const char *s)
{
    size_t n = 0;
    for (; *s; s++)
        n += ((unsigned char)*s & 0xC0) != 0x80;
    return n;
}

static int client_error(co_answer *now, const char *code, const char *message)
{
    co_error_answer(now, 400, code, message);
    return 1;
}

/* The checks of the contract, in order; 0 when the order may go upstream. */
static int check_order(const co_service *s, json_t *order, const json_error_t *jerr, co_answer *now)
{
    char msg[300];
    if (order == NULL) {
        snprintf(msg, sizeof(msg), "body is not valid JSON: line %d column %d: %s", jerr->line,
                 jerr->column, jerr->text);
        return client_error(now, "invalid_json", msg);
    }
    if (!json_is_object(order))
        return client_error(now, "invalid_request", "body must be a JSON object");
    json_t *id = json_object_get(order, "order_id");
    if (id != NULL) {
        const char *text = json_string_value(id);
        size_t points = text ? utf8_code_points(text) : 0;
        if (text == NULL || points == 0 || points > CO_ID_MAX ||
            strlen(text) != json_string_length(id))
            return client_error(now, "invalid_request",
                                "order_id must be a non-empty string of at most 128 characters");
    }
    for (size_t i = 0; i < s->cfg->nvalidations; i++) {
        const char *field = s->cfg->validations[i].field;
        if (json_object_get(order, field) == NULL) {
            snprintf(msg, sizeof(msg), "missing field \"%.200s\" (needed by validation %s)", field,
                     s->cfg->validations[i].name);
            return client_error(now, "invalid_request", msg);
        }
    }
    return 0;
}

/* {"order_id":<id>,<key>:<value>} from raw JSON texts. O(length), one allocation. */
static char *concat_body(const char *id, size_t id_len, const char *key, size_t key_len,
                         const char *value, size_t value_len, size_t *out_len)
{
    static const char head[] = "{\"order_id\":";
    size_t len = sizeof(head) - 1 + id_len + 1 + key_len + 1 + value_len + 1;
    char *body = malloc(len + 1);
    if (body == NULL)
        return NULL;
    char *p = body;
    memcpy(p, head, sizeof(head) - 1);
    p += sizeof(head) - 1;
    memcpy(p, id, id_len);
    p += id_len;
    *p++ = ',';
    memcpy(p, key, key_len);
    p += key_len;
    *p++ = ':';
    memcpy(p, value, value_len);
    p += value_len;
    *p++ = '}';
    *p = '\0';
    *out_len = len;
    return body;
}

/* The body for validation v: the member's bytes as the client sent them when they can be found
 * byte for byte (jspan), else jansson's serialisation of the parsed value. */
static char *upstream_body(const cfg_validation *v, json_t *order, const jspan_member *m, int nm,
                           const char *id_json, size_t *len, size_t *key_len)
{
    const jspan_member *raw = nm > 0 ? jspan_find(m, (size_t)nm, v->field) : NULL;
    if (raw != NULL) {
        *key_len = raw->key_len;
        return concat_body(id_json, strlen(id_json), raw->key, raw->key_len, raw->value,
                           raw->value_len, len);
    }
    json_t *key = json_string(v->field);
    char *key_json = key ? json_dumps(key, JSON_ENCODE_ANY) : NULL;
    char *value_json = json_dumps(json_object_get(order, v->field), JSON_ENCODE_ANY | JSON_COMPACT);
    char *body = NULL;
    *key_len = key_json ? strlen(key_json) : 0;
    if (key_json != NULL && value_json != NULL)
        body = concat_body(id_json, strlen(id_json), key_json, strlen(key_json), value_json,
                           strlen(value_json), len);
    json_decref(key);
    free(key_json);
    free(value_json);
    return body;
}

/* The header lines of validation v's request: the checkout's own (common, NULL-ended), then v's
 * configured ones, made "Name: value" lines by cfg at start (none is a name set here). Without
 * configured headers, common itself: the default path costs nothing more. */
const char *const *co_call_headers(const cfg_validation *v, const char *const common[],
                                   const char *out[CO_COMMON_HEADERS + CFG_MAX_HEADERS + 1])
{
    size_t n = 0;
    if (v->nheaders == 0)
        return common;
    for (; n < CO_COMMON_HEADERS && common[n] != NULL; n++)
        out[n] = common[n];
    for (size_t h = 0; h < v->nheaders && h < CFG_MAX_HEADERS; h++)
        out[n++] = v->headers[h].line;
    out[n] = NULL;
    return out;
}

/* A copy of a validation's upstream body {"order_id":<id>,<key>:<value>} (concat_body) for its
 * undo request, and where its key and value are. */
static int keep_undo(co_undo *u, const char *body, size_t len, size_t id_len, size_t key_len)
{
    u->body = malloc(len + 1);
    if (u->body == NULL)
        return -1;
    memcpy(u->body, body, len + 1);
    u->len = len;
    u->key_at = sizeof "{\"order_id\":" - 1 + id_len + 1;
    u->key_len = key_len;
    u->value_at = u->key_at + key_len + 1;
    u->value_len = len - 1 - u->value_at;
    return 0;
}

/* {"order_id": ..., "<field>": <that field of the request, unchanged>} for each validation. */
static int build_calls(const co_service *s, co_checkout *c, json_t *order, const co_request *req,
                       const char *const headers[])
{
    jspan_member members[JSPAN_MAX];
    int nm = jspan_members(req->body, req->body_len, members, JSPAN_MAX);
    json_t *id = json_string(c->order_id);
    char *id_json = id ? json_dumps(id, JSON_ENCODE_ANY) : NULL;
    int rc = -1;
    json_decref(id);
    if (id_json == NULL)
        goto fail;
    for (size_t i = 0; i < s->cfg->nvalidations; i++) {
        const cfg_validation *v = &s->cfg->validations[i];
        size_t len = 0, key_len = 0;
        char *body = upstream_body(v, order, members, nm, id_json, &len, &key_len);
        if (body == NULL)
            goto fail;
        if (c->undo != NULL && v->compensate.url != NULL &&
            keep_undo(&c->undo[i], body, len, strlen(id_json), key_len) != 0) {
            free(body);
            goto fail;
        }
        const char *lines[CO_COMMON_HEADERS + CFG_MAX_HEADERS + 1];
        if (tg_call_set(c->group, i, v->url, body, len, co_call_headers(v, headers, lines),
                        v->timeout_ms) != 0) {
            free(body);
            goto fail;
        }
        if (v->tls.ca_file != NULL || v->tls.cert_file != NULL) {
            const tg_tls tls = {v->tls.ca_file, v->tls.cert_file, v->tls.key_file};
            tg_call_tls(c->group, i, &tls);
        }
        if (s->policy[i] != NULL)
            tg_call_policy(c->group, i, s->policy[i]);
    }
    rc = 0;
fail:
    free(id_json);
    return rc;
}

static void on_group_done(tg_group *g, void *user);

/* The task group of the checkout: one call per validation, with the forwarded headers. 0 or -1
 * (out of memory; c->group may then be set, and is freed with c). */
static int build_group(const co_service *s, co_checkout *c, json_t *order, const co_request *req)
{
    char h_id[CO_ID_MAX + 32], h_idem[600], h_trace[600];
    const char *headers[CO_COMMON_HEADERS + 1];
    size_t nh = 0;
    headers[nh++] = "Content-Type: application/json";
    snprintf(h_id, sizeof(h_id), "X-Request-Id: %s", c->request_id);
    headers[nh++] = h_id;
    if (req->idempotency_key != NULL) {
        snprintf(h_idem, sizeof(h_idem), "Idempotency-Key: %.512s", req->idempotency_key);
        headers[nh++] = h_idem;
    }
    if (req->traceparent != NULL) {
        snprintf(h_trace, sizeof(h_trace), "traceparent: %.512s", req->traceparent);
        headers[nh++] = h_trace;
    }
    headers[nh] = NULL;
    /* compensation needs the undo bodies (copies kept by build_calls) and the client's key */
    if (s->has_comp) {
        c->undo = calloc(s->cfg->nvalidations, sizeof *c->undo);
        if (c->undo == NULL)
            return -1;
        if (req->idempotency_key != NULL &&
            (c->idempotency_key = strdup(req->idempotency_key)) == NULL)
            return -1;
        if (req->traceparent != NULL && (c->traceparent = strdup(req->traceparent)) == NULL)
            return -1;
    }
    c->group = tg_group_new(s->cfg->nvalidations, s->cfg->deadline_ms, on_group_done, c);
    return c->group != NULL && build_calls(s, c, order, req, headers) == 0 ? 0 : -1;
}

/* Copies what build_group will need of req (the caller's buffers go after co_accept). */
static int keep_request(co_checkout *c, json_t *order, const co_request *req)
{
    size_t klen = req->idempotency_key ? strlen(req->idempotency_key) + 1 : 0;
    size_t tlen = req->traceparent ? strlen(req->traceparent) + 1 : 0;
    char *m = malloc(req->body_len + klen + tlen + 1);
    if (m == NULL)
        return -1;
    memcpy(m, req->body, req->body_len);
    c->kept.body = m;
    c->kept.body_len = req->body_len;
    m += req->body_len;
    if (klen > 0) {
        memcpy(m, req->idempotency_key, klen);
        c->kept.idempotency_key = m;
        m += klen;
    }
    if (tlen > 0) {
        memcpy(m, req->traceparent, tlen);
        c->kept.traceparent = m;
    }
    c->kept_mem = (char *)c->kept.body;
    c->kept_order = json_incref(order);
    return 0;
}

static void drop_kept(co_checkout *c)
{
    json_decref(c->kept_order);
    free(c->kept_mem);
    c->kept_order = NULL;
    c->kept_mem = NULL;
}

/* The Idempotency-Key's syntax, when the store is on (with "off" it is only forwarded): 0 when
 * absent or well formed (key set, or "" when absent), else 1 with the 400 in *now. */
static int check_key(const co_service *s, const co_request *req, char key[IDEM_KEY_MAX + 1],
                     co_answer *now)
{
    const char *why = NULL;
    key[0] = '\0';
    if (s->idem == NULL || req->idempotency_key == NULL)
        return 0;
    if (req->idempotency_keys > 1)
        return client_error(now, "invalid_request",
                            "Idempotency-Key must be sent once, not in several headers");
    if (idem_parse_key(req->idempotency_key, key, &why) != 0)
        return client_error(now, "invalid_request", why);
    return 0;
}

static void checkout_free(co_checkout *c)
{
    if (c == NULL)
        return;
    drop_kept(c);
    if (c->undo != NULL)
        for (size_t i = 0; i < c->service->cfg->nvalidations; i++)
            free(c->undo[i].body);
    free(c->undo);
    if (c->held != NULL)
        free(c->held->body);
    free(c->held);
    free(c->idempotency_key);
    free(c->traceparent);
    free(c);
}

int co_accept(co_service *s, const co_request *req, co_reply_fn reply, void *conn,
              co_checkout **out, co_answer *now)
{
    json_error_t jerr;
    co_checkout *c = NULL;
    int admitted = 0;
    char key[IDEM_KEY_MAX + 1];
    memset(now, 0, sizeof(*now));
    *out = NULL;
    co_request_id(req->request_id, now->request_id, sizeof(now->request_id));

    json_t *order =
        json_loadb(req->body, req->body_len, JSON_DECODE_ANY | JSON_REJECT_DUPLICATES, &jerr);
    if (check_order(s, order, &jerr, now) != 0 || check_key(s, req, key, now) != 0) {
        json_decref(order);
        return 1;
    }
    if (atomic_fetch_add(&s->inflight, 1) >= s->cfg->max_inflight) {
        atomic_fetch_sub(&s->inflight, 1);
        json_decref(order);
        co_error_answer(now, 503, "overloaded", "too many checkouts in flight; retry shortly");
        now->retry_after = 1;
        return 1;
    }
    admitted = 1;
    mx_inflight(s->metrics, 1);

    c = calloc(1, sizeof(*c));
    if (c == NULL)
        goto fail;
    c->service = s;
    c->reply = reply;
    c->conn = conn;
    clock_gettime(CLOCK_MONOTONIC, &c->accepted);
    memcpy(c->request_id, now->request_id, sizeof(c->request_id));
    if (key[0] != '\0') {
        c->keyed = 1;
        memcpy(c->claim.key, key, sizeof(c->claim.key));
        idem_fingerprint(req->body, req->body_len, c->claim.fp); /* the raw bytes, as they came */
    }
    const char *given_id = json_string_value(json_object_get(order, "order_id"));
    if (given_id != NULL) {
        snprintf(c->order_id, sizeof(c->order_id), "%s", given_id);
    } else {
        char hex[17];
        random_hex(hex, 16);
        snprintf(c->order_id, sizeof(c->order_id), "ord-%s", hex);
    }

    if (c->keyed ? keep_request(c, order, req) != 0 : build_group(s, c, order, req) != 0)
        goto fail;
    if (co_trace_wanted(s, req->trace)) {
        if (tg_group_trace(c->group) != 0)
            goto fail;
        c->traced = 1;
    }
    json_decref(order);
    *out = c;
    return 0;
fail:
    json_decref(order);
    if (c != NULL) {
        tg_group_free(c->group);
    }
    checkout_free(c);
    if (admitted) {
        atomic_fetch_sub(&s->inflight, 1);
        mx_inflight(s->metrics, -1);
    }
    co_error_answer(now, 500, "internal", "out of memory");
    return -1;
}

static double ms_since(const struct timespec *t0)
{
    struct timespec t1;
    clock_gettime(CLOCK_MONOTONIC, &t1);
    return (double)(t1.tv_sec - t0->tv_sec) * 1e3 + (double)(t1.tv_nsec - t0->tv_nsec) / 1e6;
}

/* Whether a claimed checkout's answer is stored for replay: the final ones, 200 and 422, and a
 * 502/504 whose checkout started a compensation (something took effect and is being undone: a
 * rerun under the same key would send the same Idempotency-Key to an upstream that undid it). A
 * 502 or 504 that compensated nothing is released so that a retry runs again (the upstreams get
 * the same Idempotency-Key and know their repeats); so is a 500 or a 503 at shutdown. */
static int answer_is_final(const co_answer *a)
{
    if (a->body == NULL)
        return 0;
    if (a->http_status == 200 || a->http_status == 422)
        return 1;
    return (a->http_status == 502 || a->http_status == 504) && a->compensating > 0;
}

static void settle_claim(co_checkout *c, const co_answer *a)
{
    idem_store *store = c->service->idem;
    if (!c->claimed)
        return;
    c->claimed = 0;
    if (answer_is_final(a))
        idem_finish(store, &c->claim, a->http_status, a->body, a->body_len);
    else
        idem_release(store, &c->claim);
}

/* The checkout's end: its group and itself are freed, it leaves the in-flight count. */
static void release(co_checkout *c)
{
    co_service *s = c->service;
    tg_group_free(c->group);
    checkout_free(c);
    atomic_fetch_sub(&s->inflight, 1);
    mx_inflight(s->metrics, -1);
}

/* The answer goes to the client (after its claim is settled: the body moves to the server). */
static void respond(co_checkout *c, co_answer *a)
{
    settle_claim(c, a);
    memcpy(a->request_id, c->request_id, sizeof(a->request_id));
    c->reply(c->conn, a);
}

static void finish(co_checkout *c, co_answer *a)
{
    respond(c, a);
    release(c);
}

void co_discard(co_service *s, co_checkout *c)
{
    tg_group_free(c->group);
    checkout_free(c);
    atomic_fetch_sub(&s->inflight, 1);
    mx_inflight(s->metrics, -1);
}

static void fan_out(co_service *s, co_checkout *c, size_t loop)
{
    c->worker = s->nloops > 0 ? loop % s->nloops : 0;
    if (s->nloops > 0 && tg_submit(s->loops[loop % s->nloops], c->group) == 0)
        return;
    co_answer a = {0};
    if (c->jid != 0) /* its record is durable and nothing was sent: an empty plan ends it */
        jr_plan(s->journal, c->jid, NULL, 0, 0, NULL, 0);
    co_error_answer(&a, 503, "shutting_down", "the service is shutting down");
    finish(c, &a);
}

/* ---- journal begin (v1.3): the record is durable before the first upstream request --------- */

static void on_begun(void *arg, int status);

/* A journaled checkout hands its record to the journal and fans out in on_begun, once it is on
 * disk; any other fans out at once (the v1.2 path: one pointer test). A journal that cannot
 * write answers 503 at once, nothing sent upstream (fail closed). */
static void journal_begin(co_service *s, co_checkout *c, size_t loop)
{
    jr_field f[CFG_MAX_VALIDATIONS];
    char fp[2 * IDEM_FP_LEN + 1];
    size_t n = 0;
    if (s->journal == NULL) {
        fan_out(s, c, loop);
        return;
    }
    c->worker = s->nloops > 0 ? loop % s->nloops : 0;
    for (size_t i = 0; i < s->cfg->nvalidations; i++) {
        const co_undo *u = &c->undo[i];
        if (u->body != NULL) /* the validations with compensate: what their undo body needs */
            f[n++] = (jr_field){s->names[i], u->body + u->key_at, u->key_len, u->body + u->value_at,
                                u->value_len};
    }
    if (c->claimed)
        idem_hex(c->claim.fp, IDEM_FP_LEN, fp);
    jr_begin_info b = {.request_id = c->request_id,
                       .order_id = c->order_id,
                       .idem_key = c->idempotency_key,
                       .idem_token = c->claimed && c->claim.token[0] ? c->claim.token : NULL,
                       .idem_fp = c->claimed ? fp : NULL,
                       .nfields = n,
                       .fields = f};
    if (jr_healthy(s->journal) && (c->jid = jr_begin(s->journal, &b, c->worker, on_begun, c)) > 0)
        return;
    on_begun(c, JR_FAILED);
}

/* The begin record is durable (status 0): fan out. Else answer 503 without any upstream call. */
static void on_begun(void *arg, int status)
{
    co_checkout *c = arg;
    co_answer a = {0};
    if (status == 0) {
        fan_out(c->service, c, c->worker);
        return;
    }
    c->jid = 0; /* nothing was written */
    co_error_answer(&a, 503, "journal_unavailable",
                    "the journal cannot write (disk full or I/O error); nothing was sent "
                    "upstream; retry");
    a.retry_after = 1;
    mx_checkout(c->service->metrics, mx_outcome_from_code(a.code), 0);
    a.elapsed_ms = ms_since(&c->accepted);
    finish(c, &a);
}

/* The claim's answer, on the loop thread: go on with the checkout (NEW), or answer at once. A
 * replay is the stored status and body as they are, counted as a replay, not as a checkout. */
static void on_claimed(idem_claim *cl, void *arg)
{
    co_checkout *c = arg;
    co_service *s = c->service;
    co_answer a = {0};
    mx_idem(s->metrics, (int)cl->result);
    switch (cl->result) {
    case IDEM_NEW:
        c->claimed = 1;
        if (build_group(s, c, c->kept_order, &c->kept) == 0) {
            drop_kept(c);
            journal_begin(s, c, cl->worker);
            return;
        }
        co_error_answer(&a, 500, "internal", "out of memory"); /* releases the claim */
        break;
    case IDEM_REPLAY:
        a.http_status = cl->status;
        a.code = "replayed";
        a.body = cl->body;
        a.body_len = cl->body_len;
        a.replayed = 1;
        cl->body = NULL;
        break;
    case IDEM_IN_PROGRESS:
        co_error_answer(&a, 409, "idempotency_in_progress",
                        "a checkout with this Idempotency-Key is still running; retry");
        a.retry_after = 1;
        break;
    case IDEM_MISMATCH:
        co_error_answer(&a, 422, "idempotency_key_reused",
                        "this Idempotency-Key was used for a checkout with a different body");
        break;
    case IDEM_UNAVAILABLE:
        co_error_answer(&a, 503, "idempotency_unavailable",
                        cl->why ? cl->why : "the idempotency store cannot be reached; retry");
        a.retry_after = 1;
        break;
    }
    if (!a.replayed)
        mx_checkout(s->metrics, mx_outcome_from_code(a.code), 0);
    a.elapsed_ms = ms_since(&c->accepted);
    finish(c, &a);
}

void co_launch(co_service *s, co_checkout *c, size_t loop)
{
    if (c->keyed) {
        c->claim.worker = s->nloops > 0 ? loop % s->nloops : 0;
        idem_claim_key(s->idem, &c->claim, on_claimed, c);
        return;
    }
    journal_begin(s, c, loop);
}

void co_idem_log(const char *event, const char *detail)
{
    int up = strcmp(event, "idempotency_store_up") == 0;
    jlog_event(up ? JLOG_INFO : JLOG_WARN, event,
               json_pack("{s:s}", "detail", detail ? detail : ""));
}

/* Counts the checkout and each of its calls: in the metrics (relaxed atomic adds) and in this
 * worker's ring of the live view's windows (plain stores, see win.h). O(validations). */
static void record(co_service *s, const co_checkout *c, const tg_group *g, const co_answer *a,
                   double elapsed_ms)
{
    int64_t sec = s->windows != NULL ? win_now() : 0;
    for (size_t i = 0; i < tg_group_size(g); i++) {
        const tg_result *r = tg_group_result(g, i);
        if (r->state == TG_CANCELLED) {
            mx_cancelled(s->metrics, i);
            win_cancelled(s->windows, c->worker, sec, i);
        } else {
            mx_upstream(s->metrics, i, r->kind, r->elapsed_ms / 1000.0);
            win_call(s->windows, c->worker, sec, i, (unsigned)r->kind, r->elapsed_ms);
        }
        if (r->nearlier > 0 || r->retries > 0 || r->hedges_won > 0 || r->hedges_lost > 0)
            mx_attempts(s->metrics, i, r);
    }
    mx_outcome o = mx_outcome_from_code(a->code);
    mx_checkout(s->metrics, o, elapsed_ms / 1000.0);
    if (o == MX_ACCEPTED || o == MX_REJECTED || o == MX_FAILED)
        win_checkout(s->windows, c->worker, sec,
                     o == MX_ACCEPTED   ? WIN_ACCEPTED
                     : o == MX_REJECTED ? WIN_REJECTED
                                        : WIN_FAILED);
}

/* Copies what the log line needs out of the group: the group is freed before the line is written.
 */
static void keep_outcomes(const tg_group *g, co_answer *a)
{
    a->noutcomes = tg_group_size(g);
    for (size_t i = 0; i < a->noutcomes; i++) {
        const tg_result *r = tg_group_result(g, i);
        a->outcomes[i].outcome = r->state == TG_CANCELLED ? "cancelled" : tg_kind_name(r->kind);
        a->outcomes[i].elapsed_ms = r->elapsed_ms;
        a->outcomes[i].http_status = r->http_status;
        a->outcomes[i].attempts = r->attempts;
    }
}

void co_log(const co_service *s, const co_answer *a)
{
    jlog_validation v[CFG_MAX_VALIDATIONS];
    if (!jlog_enabled(JLOG_INFO))
        return;
    for (size_t i = 0; i < a->noutcomes; i++) {
        v[i].name = s->names[i];
        v[i].outcome = a->outcomes[i].outcome;
        v[i].elapsed_ms = a->outcomes[i].elapsed_ms;
        v[i].http_status = a->outcomes[i].http_status;
        v[i].attempts = a->outcomes[i].attempts;
    }
    jlog_checkout(a->request_id, a->order_id[0] ? a->order_id : NULL, a->code, a->http_status,
                  a->elapsed_ms, v, a->noutcomes);
}

/* ---- compensation (v1.2): the decision here, the mechanism in lib/comp_run (service/undo) -- */

/* Which validations of a finished group are undone: bit i for validation i. None when the checkout
 * succeeded; else every one that has compensate and may have taken effect (lib/comp). */
static uint64_t to_compensate(const co_service *s, const tg_group *g)
{
    uint64_t bits = 0;
    if (!s->has_comp || tg_group_failures(g) == 0)
        return 0;
    for (size_t i = 0; i < tg_group_size(g); i++) {
        const tg_result *r = tg_group_result(g, i);
        if (s->cfg->validations[i].compensate.url != NULL && comp_needed(r, r->sent))
            bits |= (uint64_t)1 << i;
    }
    return bits;
}

/* Starts the undo step of validation i of a failed checkout. */
static void compensate_one(co_checkout *c, const tg_group *g, size_t i)
{
    const co_undo *u = &c->undo[i];
    const tg_result *r = tg_group_result(g, i);
    const char *result = r->state == TG_OK ? r->raw : NULL;
    undo_job job = {.worker = c->worker,
                    .validation = i,
                    .order_id = c->order_id,
                    .request_id = c->request_id,
                    .idem_key = c->idempotency_key,
                    .traceparent = c->traceparent,
                    .key_json = u->body + u->key_at,
                    .key_len = u->key_len,
                    .value_json = u->body + u->value_at,
                    .value_len = u->value_len,
                    .result = result,
                    .result_len = result ? r->raw_len : 0,
                    .journal_id = c->jid};
    undo_start(c->service, &job);
}

static void compensate(co_checkout *c, const tg_group *g, uint64_t which)
{
    for (size_t i = 0; which != 0 && i < tg_group_size(g); i++)
        if (which >> i & 1u)
            compensate_one(c, g, i);
}

/* ---- journal end (v1.3) -------------------------------------------------------------------- */

static void on_accepted(void *arg, int status);

/* The validations with compensate: what a 200 whose record could not be written undoes. */
static uint64_t with_compensate(const co_service *s)
{
    uint64_t bits = 0;
    for (size_t i = 0; i < s->cfg->nvalidations; i++)
        if (s->cfg->validations[i].compensate.url != NULL)
            bits |= (uint64_t)1 << i;
    return bits;
}

/* Queues the plan of what is undone (not awaited: the answer goes at once); an empty plan ends
 * the record. A keyed checkout's stored answer goes with it, for a replay after a restart. */
static void journal_plan(co_checkout *c, const tg_group *g, const co_answer *a, uint64_t undo)
{
    jr_step steps[CFG_MAX_VALIDATIONS];
    size_t n = 0;
    int keep = c->claimed && answer_is_final(a);
    for (size_t i = 0; undo != 0 && i < tg_group_size(g); i++) {
        if (!(undo >> i & 1u))
            continue;
        const tg_result *r = tg_group_result(g, i);
        steps[n++] = (jr_step){c->service->names[i], r->state == TG_OK ? r->raw : NULL,
                               r->state == TG_OK ? r->raw_len : 0};
    }
    jr_plan(c->service->journal, c->jid, steps, n, a->http_status, keep ? a->body : NULL,
            a->body_len);
}

/* A journaled checkout's end: a 200 is held until "accepted" is durable (1: on_accepted answers);
 * any other answer queues its plan and goes on (0). */
static int journal_end(co_checkout *c, const tg_group *g, co_answer *a, uint64_t undo)
{
    if (a->http_status == 200) {
        c->held = malloc(sizeof *c->held);
        if (c->held != NULL) {
            *c->held = *a;
            if (jr_accepted(c->service->journal, c->jid, 200, c->claimed ? a->body : NULL,
                            a->body_len, c->worker, on_accepted, c) == 0)
                return 1;
            free(c->held);
            c->held = NULL;
        }
        free(a->body); /* out of memory: the 200 cannot be made durable, so it is not sent */
        co_error_answer(a, 500, "internal", "out of memory");
        undo = with_compensate(c->service);
        a->compensating = __builtin_popcountll(undo);
    }
    journal_plan(c, g, a, undo);
    return 0;
}

/* The "accepted" record is durable: the 200 goes. Else the 200 must not go (a kill now would
 * compensate it at the next start): 503 journal_unavailable, and what took effect is undone. */
static void on_accepted(void *arg, int status)
{
    co_checkout *c = arg;
    co_answer *a = c->held;
    uint64_t undo = 0;
    c->held = NULL;
    if (status != 0) {
        free(a->body);
        co_error_answer(a, 503, "journal_unavailable",
                        "the journal cannot write (disk full or I/O error); retry");
        a->retry_after = 1;
        undo = with_compensate(c->service);
        a->compensating = __builtin_popcountll(undo);
        journal_plan(c, c->group, a, undo);
    }
    respond(c, a);
    compensate(c, c->group, undo);
    release(c);
    free(a);
}

/* Runs on the loop thread: the group allocated its results here, and they are freed here too.
 * answer -> (compensate what took effect): the answer is handed over first, then the undo steps
 * start as tasks of their own, so they never delay it, and they run whether the client is still
 * there or not. */
static void on_group_done(tg_group *g, void *user)
{
    co_checkout *c = user;
    eg_answer e;
    co_answer a = {0};
    double elapsed_ms = ms_since(&c->accepted);
    uint64_t undo = to_compensate(c->service, g);
    if (eg_build_comp(g, c->service->names, c->order_id, elapsed_ms, undo, &e) == 0) {
        a.http_status = e.http_status;
        a.code = e.status;
        a.body = e.body;
        a.body_len = e.body_len;
    } else {
        co_error_answer(&a, 500, "internal", "out of memory while building the answer");
    }
    if (c->traced && a.http_status != 500)
        trace_add(c->service, g, &a);
    record(c->service, c, g, &a, elapsed_ms);
    a.elapsed_ms = elapsed_ms;
    memcpy(a.order_id, c->order_id, sizeof(a.order_id));
    keep_outcomes(g, &a);
    a.compensating = __builtin_popcountll(undo);
    if (c->jid != 0 && journal_end(c, g, &a, undo))
        return; /* a 200 waits for its record (on_accepted) */
    respond(c, &a);
    compensate(c, g, undo);
    release(c);
}
