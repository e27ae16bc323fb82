/* fuzz_upstream — the upstream-answer surface: how each call ended (curl code, HTTP status, body
 * bytes, size limit) -> tg_call_record on every call of a group -> eg_build -> the answer JSON.
 *
 * Input: byte 0 picks the number of calls (1..4); then FUP_CALL_BYTES per call:
 *   [0] the transfer's result: most values mean CURLE_OK (a whole HTTP answer came), the rest pick
 *       from fup_curl_codes (refused, reset, timeout, garbage, ...);
 *   [1..2] the HTTP status, 100..599 (big-endian, modulo 500);
 *   [3] flags: bit 0 the body passed max_upstream_body_bytes, bit 1 no HTTP answer (status 0, as
 *       the loop reports a transport failure), bit 2 libcurl's message is made of the body bytes
 *       (as printable ASCII, like libcurl's own) instead of curl_easy_strerror's.
 * The rest is the bodies, call after call, separated by FUP_SEP (an invalid UTF-8 pair that no
 * JSON holds); a missing part is an empty body.
 *
 * Every call is recorded: without the loop nothing marks a call TG_CANCELLED, and a call left
 * TG_PENDING would appear nowhere in the answer, which is not a state the loop ever hands to eg.
 * The driver classifies each call again by the contract's table and checks the answer (abort on a
 * violation): valid JSON; each validation exactly once across results / errors / completed /
 * cancelled; the status 200/422/504/502 and the "status" word consistent with the kinds; errors in
 * the order observed, each with its fields; results and upstream bodies as the upstream sent them.
 */
#include "eg.h"
#include "tg.h"

#include <curl/curl.h>
#include <jansson.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define FUP_MAX_CALLS  4
#define FUP_CALL_BYTES 4
#define FUP_SEP        "\xff\xfe"
#define FUP_ORDER_ID   "ord-fuzz"

#define FUP_CHECK(cond, ...)                                                                       \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            fprintf(stderr, "fuzz_upstream: invariant failed: %s: ", #cond);                       \
            fprintf(stderr, __VA_ARGS__);                                                          \
            fputc('\n', stderr);                                                                   \
            abort();                                                                               \
        }                                                                                          \
    } while (0)

static const char *const fup_names[FUP_MAX_CALLS] = {"address", "inventory", "payment", "fraud"};

/* What the loop can hand to tg_call_record besides CURLE_OK: each class of the table. */
static const int fup_curl_codes[] = {
    CURLE_OPERATION_TIMEDOUT,   CURLE_WEIRD_SERVER_REPLY, CURLE_BAD_CONTENT_ENCODING,
    CURLE_UNSUPPORTED_PROTOCOL, CURLE_COULDNT_CONNECT,    CURLE_COULDNT_RESOLVE_HOST,
    CURLE_RECV_ERROR,           CURLE_SEND_ERROR,         CURLE_GOT_NOTHING,
    CURLE_PARTIAL_FILE,         CURLE_WRITE_ERROR,        CURLE_SSL_CONNECT_ERROR,
};
#define FUP_NCODES (sizeof(fup_curl_codes) / sizeof(fup_curl_codes[0]))

typedef struct fup_call {
    int curl_code;
    long status;
    int too_big;
    int curl_msg_from_body;
    const char *body;
    size_t len;
    /* The contract's reading of it. */
    int ok;
    const char *kind;
    long answered_status; /* http_status of the answer: 0 (null) when no whole answer came */
    json_t *parsed;       /* the body as JSON when a whole answer came and it is JSON */
} fup_call;

/* A missing or non-string member reads as "", so that a wrong answer fails a check, not strcmp. */
static const char *fup_str(const json_t *v)
{
    const char *s = json_string_value(v);
    return s ? s : "";
}

static void fup_done(tg_group *g, void *user)
{
    (void)g;
    (void)user;
}

static const char *fup_find(const char *hay, size_t n, const char *needle, size_t nlen)
{
    for (size_t i = 0; i + nlen <= n; i++) {
        if (memcmp(hay + i, needle, nlen) == 0)
            return hay + i;
    }
    return NULL;
}

/* A libcurl error text made of the body bytes: libcurl's messages are ASCII (host names, ports,
 * reasons), printable, and at most CURL_ERROR_SIZE bytes with the NUL; long ones test the cut. */
static char *fup_curl_message(const char *body, size_t len)
{
    size_t n = len < CURL_ERROR_SIZE - 1 ? len : CURL_ERROR_SIZE - 1;
    char *msg = malloc(n + 1);
    if (msg == NULL)
        return NULL;
    for (size_t i = 0; i < n; i++) {
        char ch = (char)(body[i] & 0x7f);
        msg[i] = ch < 0x20 || ch == 0x7f ? '?' : ch;
    }
    msg[n] = '\0';
    return msg;
}

/* The contract's table, written out again: a timeout is a timeout; a reply libcurl could not read
 * as HTTP is invalid_response; any other transfer error is transport; then by status. */
static void fup_classify(fup_call *c)
{
    /* Only a whole answer is one: after a reset, a cut body or a timeout, the status and the bytes
     * that did arrive are not an answer (http_status and upstream null). A body over the limit is
     * a whole answer, too big to keep. A body with a NUL byte is not JSON. */
    int answered = c->curl_code == CURLE_OK || c->too_big;
    int text = c->curl_code == CURLE_OK && c->len > 0 && !c->too_big &&
               memchr(c->body, '\0', c->len) == NULL;
    c->answered_status = answered ? c->status : 0;
    c->parsed =
        text ? json_loadb(c->body, c->len, JSON_DECODE_ANY | JSON_REJECT_DUPLICATES, NULL) : NULL;
    c->ok = 0;
    if (c->too_big)
        c->kind = "invalid_response";
    else if (c->curl_code == CURLE_OPERATION_TIMEDOUT)
        c->kind = "timeout";
    else if (c->curl_code == CURLE_WEIRD_SERVER_REPLY ||
             c->curl_code == CURLE_BAD_CONTENT_ENCODING ||
             c->curl_code == CURLE_UNSUPPORTED_PROTOCOL)
        c->kind = "invalid_response";
    else if (c->curl_code != CURLE_OK)
        c->kind = "transport";
    else if (c->status >= 200 && c->status < 300) {
        c->ok = json_is_object(c->parsed);
        c->kind = c->ok ? "ok" : "invalid_response";
    } else if (c->status >= 400 && c->status < 500)
        c->kind = "rejected";
    else if (c->status >= 500)
        c->kind = "upstream_error";
    else
        c->kind = "invalid_response"; /* 1xx, 3xx, no status at all */
}

/* name occurs exactly once in the JSON array of strings arr (NULL: an absent array). */
static size_t fup_count_in(const json_t *arr, const char *name)
{
    size_t i, n = 0;
    json_t *v;
    json_array_foreach(arr, i, v)
    {
        const char *s = json_string_value(v);
        FUP_CHECK(s != NULL, "a non-string in completed/cancelled");
        n += strcmp(s, name) == 0;
    }
    return n;
}

static void fup_check_error(const json_t *e, const fup_call *c, const char *name)
{
    FUP_CHECK(json_is_object(e) && json_object_size(e) == 7, "error entry of %s", name);
    FUP_CHECK(strcmp(fup_str(json_object_get(e, "kind")), c->kind) == 0, "%s: kind %s, expected %s",
              name, fup_str(json_object_get(e, "kind")), c->kind);
    const json_t *st = json_object_get(e, "http_status");
    if (c->answered_status > 0)
        FUP_CHECK(json_integer_value(st) == c->answered_status, "%s: http_status", name);
    else
        FUP_CHECK(json_is_null(st), "%s: http_status without an HTTP answer", name);
    const char *msg = fup_str(json_object_get(e, "message"));
    FUP_CHECK(msg != NULL && msg[0] != '\0', "%s: empty message", name);
    const json_t *up = json_object_get(e, "upstream");
    FUP_CHECK(c->parsed ? json_equal(up, c->parsed) : json_is_null(up),
              "%s: upstream is not the body as sent", name);
    FUP_CHECK(json_is_number(json_object_get(e, "elapsed_ms")), "%s: elapsed_ms", name);
    /* tg_call_record sends nothing: no request was counted */
    FUP_CHECK(json_integer_value(json_object_get(e, "attempts")) == 0, "%s: attempts", name);
}

static void fup_check_answer(const eg_answer *a, fup_call *calls, size_t n)
{
    size_t nfailed = 0;
    int rejected = 0, timeout = 0;
    for (size_t i = 0; i < n; i++) {
        nfailed += !calls[i].ok;
        rejected |= strcmp(calls[i].kind, "rejected") == 0;
        timeout |= strcmp(calls[i].kind, "timeout") == 0;
    }
    int want = nfailed == 0 ? 200 : rejected ? 422 : timeout ? 504 : 502;
    const char *word = want == 200 ? "accepted" : want == 422 ? "rejected" : "failed";
    FUP_CHECK(a->http_status == want, "status %d, expected %d", a->http_status, want);
    FUP_CHECK(strcmp(a->status, word) == 0, "status word %s, expected %s", a->status, word);
    FUP_CHECK(a->body != NULL && a->body_len == strlen(a->body), "body length");

    json_error_t jerr;
    json_t *doc = json_loadb(a->body, a->body_len, JSON_REJECT_DUPLICATES, &jerr);
    FUP_CHECK(doc != NULL, "answer is not JSON (%s): %s", jerr.text, a->body);
    FUP_CHECK(strcmp(fup_str(json_object_get(doc, "order_id")), FUP_ORDER_ID) == 0, "order_id");
    FUP_CHECK(strcmp(fup_str(json_object_get(doc, "status")), word) == 0, "status");
    FUP_CHECK(json_is_number(json_object_get(doc, "elapsed_ms")), "elapsed_ms");

    const json_t *results = json_object_get(doc, "results");
    const json_t *group = json_object_get(doc, "error_group");
    const json_t *completed = json_object_get(doc, "completed");
    const json_t *cancelled = json_object_get(doc, "cancelled");
    const json_t *errors = json_object_get(group, "errors");
    if (want == 200) {
        FUP_CHECK(json_is_object(results) && json_object_size(results) == n, "results");
        FUP_CHECK(!group && !completed && !cancelled, "a 200 with an error group");
        FUP_CHECK(json_object_size(doc) == 4, "unexpected keys in a 200");
    } else {
        FUP_CHECK(results == NULL, "results outside a 200");
        FUP_CHECK(json_is_array(errors) && json_array_size(errors) == nfailed, "errors");
        FUP_CHECK(json_is_array(completed) && json_is_array(cancelled), "completed/cancelled");
        FUP_CHECK(json_array_size(cancelled) == 0, "cancelled without a loop");
        /* v1.2: "compensating" is always there; eg_build starts none (checkout.c decides) */
        const json_t *comp = json_object_get(doc, "compensating");
        FUP_CHECK(json_is_array(comp) && json_array_size(comp) == 0, "compensating");
        FUP_CHECK(json_object_size(doc) == 7, "unexpected keys in an error group");
        char msg[96];
        snprintf(msg, sizeof(msg), "checkout failed: %zu of %zu validations failed", nfailed, n);
        FUP_CHECK(strcmp(fup_str(json_object_get(group, "message")), msg) == 0, "group message");
    }

    /* Every validation exactly once; errors in the order they were recorded (call order here). */
    size_t next_error = 0;
    for (size_t i = 0; i < n; i++) {
        const char *name = fup_names[i];
        size_t seen = (json_object_get(results, name) != NULL) + fup_count_in(completed, name) +
                      fup_count_in(cancelled, name);
        size_t in_errors = 0;
        size_t k;
        json_t *e;
        json_array_foreach(errors, k, e)
        {
            in_errors += strcmp(fup_str(json_object_get(e, "validation")), name) == 0;
        }
        FUP_CHECK(seen + in_errors == 1, "%s appears %zu times", name, seen + in_errors);
        if (calls[i].ok) {
            const json_t *body = want == 200 ? json_object_get(results, name) : NULL;
            FUP_CHECK(want != 200 || json_equal(body, calls[i].parsed), "%s: result != body", name);
            FUP_CHECK(want == 200 || fup_count_in(completed, name) == 1, "%s not completed", name);
        } else {
            e = json_array_get(errors, next_error++);
            FUP_CHECK(strcmp(fup_str(json_object_get(e, "validation")), name) == 0,
                      "errors out of order at %s", name);
            fup_check_error(e, &calls[i], name);
        }
    }
    json_decref(doc);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    fup_call calls[FUP_MAX_CALLS];
    if (size < 1)
        return 0;
    size_t n = 1 + data[0] % FUP_MAX_CALLS;
    if (size < 1 + n * FUP_CALL_BYTES)
        return 0;
    const char *rest = (const char *)data + 1 + n * FUP_CALL_BYTES;
    size_t rest_len = size - 1 - n * FUP_CALL_BYTES;

    memset(calls, 0, sizeof(calls));
    for (size_t i = 0; i < n; i++) {
        const uint8_t *p = data + 1 + i * FUP_CALL_BYTES;
        fup_call *c = &calls[i];
        /* Mostly CURLE_OK: that is where the statuses and bodies matter. */
        c->curl_code = p[0] < 0x80 ? CURLE_OK : fup_curl_codes[p[0] % FUP_NCODES];
        c->status = 100 + ((long)p[1] << 8 | p[2]) % 500;
        c->too_big = p[3] & 1;
        if (p[3] & 2)
            c->status = 0;
        c->curl_msg_from_body = (p[3] & 4) != 0;
        const char *sep = fup_find(rest, rest_len, FUP_SEP, 2);
        c->body = rest;
        c->len = sep ? (size_t)(sep - rest) : rest_len;
        rest_len -= sep ? c->len + 2 : c->len;
        rest = sep ? sep + 2 : rest + c->len;
        fup_classify(c);
    }

    tg_group *g = tg_group_new(n, 2000, fup_done, NULL);
    if (g == NULL)
        abort();
    for (size_t i = 0; i < n; i++) {
        fup_call *c = &calls[i];
        char *msg = NULL;
        if (c->curl_msg_from_body) {
            msg = fup_curl_message(c->body, c->len);
            if (msg == NULL)
                abort();
        }
        tg_call_record(g, i, c->curl_code, c->status, c->body, c->len, c->too_big, msg);
        free(msg);
        const tg_result *r = tg_group_result(g, i);
        FUP_CHECK(r->state == (c->ok ? TG_OK : TG_FAILED), "call %zu: state %d", i, r->state);
        FUP_CHECK(strcmp(tg_kind_name(r->kind), c->kind) == 0, "call %zu: kind %s, expected %s", i,
                  tg_kind_name(r->kind), c->kind);
    }

    eg_answer a;
    int rc = eg_build(g, fup_names, FUP_ORDER_ID, 12.34, &a);
    FUP_CHECK(rc == 0, "eg_build failed (not out of memory under the fuzzer)");
    fup_check_answer(&a, calls, n);
    free(a.body);
    tg_group_free(g);
    for (size_t i = 0; i < n; i++)
        json_decref(calls[i].parsed);
    return 0;
}
