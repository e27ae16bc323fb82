/* fuzz_request — the checkout request surface: body bytes -> co_accept (parse, order checks,
 * admission, one upstream body per validation) -> co_discard.
 *
 * co_accept never touches a loop, so no loop, thread or socket is needed: an accepted checkout is
 * released with co_discard. Besides ASan/UBSan, the driver checks the contract itself and aborts on
 * a violation:
 *   - the decision (accepted, invalid_json, invalid_request) matches an independent reading of the
 *     contract's rules, computed here from the parsed body;
 *   - a client error's body is exactly {"error": {"code", "message"}} with a contract code, status
 *     400 (or 503 overloaded, with Retry-After), and the request id survives;
 *   - admission is counted: a second checkout while one is in flight is refused (max_inflight is 1
 *     here), and co_discard brings inflight back to 0;
 *   - the upstream bodies forward each field's bytes as the client sent them, found by jspan: on
 *     every object jansson accepts, each member span jspan reports must parse to exactly that
 *     member of the parsed order (the built bodies themselves are inside the opaque group). */
#include "cfg.h"
#include "checkout.h"
#include "jspan.h"
#include "metrics.h"

#include <jansson.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* Kept as given by co_accept: printable ASCII of 1..128 characters. */
#define FREQ_REQUEST_ID "fuzz-request-0001"

static cfg freq_cfg;
static co_service freq_service;
/* The same service with a memory store: the input's first line is also tried as an
 * Idempotency-Key (with a fixed valid body), against an independent reading of its syntax. */
static co_service freq_keyed;
static const char freq_valid_order[] =
    "{\"address\": {\"country\": \"US\"}, \"items\": [], \"payment\": {\"token\": \"t\"}}";
static mx *freq_metrics;
/* Longer than the 512 bytes that are forwarded, so that the cut is exercised on every input. */
static char freq_idempotency[700];

#define FREQ_CHECK(cond, ...)                                                                      \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            fprintf(stderr, "fuzz_request: invariant failed: %s: ", #cond);                        \
            fprintf(stderr, __VA_ARGS__);                                                          \
            fputc('\n', stderr);                                                                   \
            abort();                                                                               \
        }                                                                                          \
    } while (0)

/* max_inflight 1, so that every accepted body also exercises the overload refusal; the rest is the
 * built-in default (the three validations of the contract). */
static const char *freq_getenv(const char *name)
{
    return strcmp(name, "CHECKOUTD_MAX_INFLIGHT") == 0 ? "1" : NULL;
}

static void freq_noop_reply(void *conn, co_answer *answer)
{
    (void)conn;
    (void)answer;
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    char err[512];
    (void)argc;
    (void)argv;
    if (cfg_load_string(&freq_cfg, cfg_default_json(), "default", freq_getenv, err, sizeof(err)) !=
        0) {
        fprintf(stderr, "fuzz_request: default config refused: %s\n", err);
        abort();
    }
    const char *names[CFG_MAX_VALIDATIONS];
    for (size_t i = 0; i < freq_cfg.nvalidations; i++)
        names[i] = freq_cfg.validations[i].name;
    freq_metrics = mx_new(names, freq_cfg.nvalidations);
    if (freq_metrics == NULL)
        abort();
    co_service_init(&freq_service, &freq_cfg, NULL, 0, freq_metrics);
    co_service_init(&freq_keyed, &freq_cfg, NULL, 0, freq_metrics);
    freq_keyed.idem = idem_mem_new(1000, 1 << 20, 1000, 1000, NULL);
    if (freq_keyed.idem == NULL)
        abort();
    memset(freq_idempotency, 'k', sizeof(freq_idempotency) - 1);
    return 0;
}

/* Code points of valid UTF-8 (jansson only hands out valid UTF-8): every byte but continuations. */
static size_t freq_code_points(const char *s, size_t len)
{
    size_t n = 0;
    for (size_t i = 0; i < len; i++)
        n += ((unsigned char)s[i] & 0xC0) != 0x80;
    return n;
}

/* What the contract says of this body: NULL when it may go upstream, else the expected code, and
 * in *missing the first configured field it lacks (for the message). */
static const char *freq_expected(const json_t *order, const char **missing)
{
    *missing = NULL;
    if (order == NULL)
        return "invalid_json";
    if (!json_is_object(order))
        return "invalid_request";
    const json_t *id = json_object_get(order, "order_id");
    if (id != NULL) {
        if (!json_is_string(id))
            return "invalid_request";
        const char *text = json_string_value(id);
        size_t len = json_string_length(id);
        size_t points = freq_code_points(text, len);
        /* A NUL inside the string would be cut by every C consumer downstream. */
        if (points < 1 || points > 128 || memchr(text, '\0', len) != NULL)
            return "invalid_request";
    }
    for (size_t i = 0; i < freq_cfg.nvalidations; i++) {
        if (json_object_get(order, freq_cfg.validations[i].field) == NULL) {
            *missing = freq_cfg.validations[i].field;
            return "invalid_request";
        }
    }
    return NULL;
}

/* jspan's spans against jansson's tree: the same members, in text order, each key and value span
 * parsing to that member (so a body spliced from them carries the value unchanged). */
static void freq_check_spans(const char *body, size_t len, const json_t *order)
{
    jspan_member m[JSPAN_MAX];
    int n = jspan_members(body, len, m, JSPAN_MAX);
    size_t size = json_object_size(order);
    FREQ_CHECK(n >= 0, "jspan refused an object jansson accepted");
    FREQ_CHECK((size_t)n == (size < JSPAN_MAX ? size : JSPAN_MAX), "jspan found %d of %zu members",
               n, size);
    for (int i = 0; i < n; i++) {
        json_t *key = json_loadb(m[i].key, m[i].key_len, JSON_DECODE_ANY, NULL);
        json_t *value =
            json_loadb(m[i].value, m[i].value_len, JSON_DECODE_ANY | JSON_REJECT_DUPLICATES, NULL);
        FREQ_CHECK(json_is_string(key), "member %d: key span \"%.*s\" is not a string", i,
                   (int)m[i].key_len, m[i].key);
        const json_t *want =
            json_object_getn(order, json_string_value(key), json_string_length(key));
        FREQ_CHECK(value != NULL && json_equal(value, want), "member %d: value span \"%.*s\"", i,
                   (int)m[i].value_len, m[i].value);
        json_decref(key);
        json_decref(value);
    }
    for (size_t i = 0; i < freq_cfg.nvalidations; i++) {
        const char *field = freq_cfg.validations[i].field;
        const jspan_member *f = jspan_find(m, (size_t)n, field);
        FREQ_CHECK(f == NULL || (f->key_len == strlen(field) + 2 &&
                                 memcmp(f->key + 1, field, strlen(field)) == 0),
                   "jspan_find(%s) gave another member", field);
    }
}

/* {"error": {"code": <expected code>, "message": "<non-empty>"}} and nothing else. */
static void freq_check_error_body(const co_answer *a, const char *code, const char *missing)
{
    FREQ_CHECK(a->code != NULL && strcmp(a->code, code) == 0, "answer code %s, expected %s",
               a->code ? a->code : "-", code);
    FREQ_CHECK(a->body != NULL, "client error %d without a body", a->http_status);
    FREQ_CHECK(a->body_len == strlen(a->body), "body_len %zu != %zu", a->body_len, strlen(a->body));
    json_error_t jerr;
    json_t *doc = json_loadb(a->body, a->body_len, JSON_REJECT_DUPLICATES, &jerr);
    FREQ_CHECK(doc != NULL, "error body is not JSON (%s): %s", jerr.text, a->body);
    FREQ_CHECK(json_is_object(doc) && json_object_size(doc) == 1, "%s", a->body);
    json_t *e = json_object_get(doc, "error");
    FREQ_CHECK(json_is_object(e) && json_object_size(e) == 2, "%s", a->body);
    const char *got = json_string_value(json_object_get(e, "code"));
    const char *msg = json_string_value(json_object_get(e, "message"));
    FREQ_CHECK(got != NULL && strcmp(got, code) == 0, "code %s, expected %s", got ? got : "-",
               code);
    FREQ_CHECK(msg != NULL && msg[0] != '\0', "empty message: %s", a->body);
    if (strcmp(code, "invalid_json") == 0)
        FREQ_CHECK(strstr(msg, "line ") != NULL && strstr(msg, "column ") != NULL,
                   "invalid_json message without line and column: %s", msg);
    if (missing != NULL) {
        char want[300];
        snprintf(want, sizeof(want), "missing field \"%s\"", missing);
        FREQ_CHECK(strncmp(msg, want, strlen(want)) == 0, "message %s, expected %s...", msg, want);
    }
    json_decref(doc);
}

/* The contract's key syntax, read independently: 1 when value is a valid Idempotency-Key. */
static int freq_key_ok(const char *v)
{
    size_t len = strlen(v), n = 0;
    int quoted = len >= 2 && v[0] == '"' && v[len - 1] == '"';
    if (!quoted && len > 0 && v[0] == '"')
        return 0;
    for (size_t i = quoted ? 1 : 0; i < (quoted ? len - 1 : len); i++, n++) {
        unsigned char c = (unsigned char)v[i];
        if (c < 0x21 || c > 0x7e)
            return 0;
        if (quoted && c == '"')
            return 0;
        if (quoted && c == '\\') {
            if (i + 1 >= len - 1 || (v[i + 1] != '"' && v[i + 1] != '\\'))
                return 0;
            i++;
        }
    }
    return n >= 1 && n <= 255;
}

static void freq_check_key(const uint8_t *data, size_t size)
{
    char key[400];
    size_t n = 0;
    while (n < size && n < sizeof(key) - 1 && data[n] != '\n' && data[n] != '\0') {
        key[n] = (char)data[n];
        n++;
    }
    key[n] = '\0';
    co_request req = {.body = freq_valid_order,
                      .body_len = sizeof(freq_valid_order) - 1,
                      .idempotency_key = key,
                      .idempotency_keys = 1};
    co_checkout *c = NULL;
    co_answer now;
    int rc = co_accept(&freq_keyed, &req, freq_noop_reply, NULL, &c, &now);
    int ok = freq_key_ok(key);
    FREQ_CHECK(rc == (ok ? 0 : 1), "key \"%s\": co_accept %d, the syntax says %s", key, rc,
               ok ? "valid" : "invalid");
    if (rc == 1) {
        FREQ_CHECK(now.http_status == 400, "status %d for a bad key", now.http_status);
        freq_check_error_body(&now, "invalid_request", NULL);
        FREQ_CHECK(strstr(now.body, "Idempotency-Key") != NULL, "message does not name it: %s",
                   now.body);
        free(now.body);
        return;
    }
    co_discard(&freq_keyed, c);
    req.idempotency_keys = 2; /* sent twice: refused whatever its value */
    rc = co_accept(&freq_keyed, &req, freq_noop_reply, NULL, &c, &now);
    FREQ_CHECK(rc == 1 && now.http_status == 400, "two Idempotency-Key headers accepted");
    free(now.body);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    co_request req = {
        .body = (const char *)data,
        .body_len = size,
        .request_id = FREQ_REQUEST_ID,
        .idempotency_key = freq_idempotency,
        .traceparent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
    };
    co_checkout *c = NULL;
    co_answer now;

    /* The oracle parses the body as co_accept must: duplicate keys are an invalid_json. */
    json_t *order =
        json_loadb(req.body, req.body_len, JSON_DECODE_ANY | JSON_REJECT_DUPLICATES, NULL);
    const char *missing;
    const char *expected = freq_expected(order, &missing);
    if (json_is_object(order))
        freq_check_spans(req.body, req.body_len, order);
    json_decref(order);

    int rc = co_accept(&freq_service, &req, freq_noop_reply, NULL, &c, &now);
    FREQ_CHECK(rc == 0 || rc == 1, "co_accept returned %d (out of memory?)", rc);
    FREQ_CHECK(strcmp(now.request_id, FREQ_REQUEST_ID) == 0, "request id became %s",
               now.request_id);
    if (rc == 1) {
        FREQ_CHECK(c == NULL, "a refused checkout came with a checkout");
        FREQ_CHECK(expected != NULL, "refused (%d) a body the contract accepts", now.http_status);
        FREQ_CHECK(now.http_status == 400, "status %d for a client error", now.http_status);
        freq_check_error_body(&now, expected, missing);
        free(now.body);
        FREQ_CHECK(atomic_load(&freq_service.inflight) == 0, "inflight %ld after a refusal",
                   (long)atomic_load(&freq_service.inflight));
        freq_check_key(data, size);
        return 0;
    }

    FREQ_CHECK(expected == NULL, "accepted a body the contract refuses as %s", expected);
    FREQ_CHECK(c != NULL && now.body == NULL, "accepted without a checkout, or with a body");
    FREQ_CHECK(atomic_load(&freq_service.inflight) == 1, "inflight %ld after one accept",
               (long)atomic_load(&freq_service.inflight));

    /* max_inflight is 1: the same body again must be shed with 503 overloaded + Retry-After. */
    co_checkout *second = NULL;
    co_answer shed;
    rc = co_accept(&freq_service, &req, freq_noop_reply, NULL, &second, &shed);
    FREQ_CHECK(rc == 1 && second == NULL, "second checkout admitted over max_inflight 1");
    FREQ_CHECK(shed.http_status == 503 && shed.retry_after == 1, "overload answered %d, retry %d",
               shed.http_status, shed.retry_after);
    freq_check_error_body(&shed, "overloaded", NULL);
    free(shed.body);

    co_discard(&freq_service, c);
    FREQ_CHECK(atomic_load(&freq_service.inflight) == 0, "inflight %ld after discard",
               (long)atomic_load(&freq_service.inflight));
    freq_check_key(data, size);
    return 0;
}
