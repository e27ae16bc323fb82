/* eg — the error group. See eg.h. */
#include "eg.h"

#include "jw.h"
#include "utf8.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

json_t *eg_ms(double ms)
{
    return json_real(round(ms * 10.0) / 10.0);
}

/* Appends "text" to buf at *len, bounded by cap; the result is always NUL-terminated. */
static void append(char *buf, size_t cap, size_t *len, const char *text)
{
    int n = snprintf(buf + *len, cap - *len, "%s", text);
    if (n > 0)
        *len = *len + (size_t)n < cap ? *len + (size_t)n : cap - 1;
}

/* {"error": "out_of_stock", "sku": "SKU-9"} -> "out of stock: SKU-9" (scalar fields only). */
static int message_from_error_code(const json_t *body, char *buf, size_t cap)
{
    const char *code = json_string_value(json_object_get(body, "error"));
    if (code == NULL || code[0] == '\0')
        return -1;
    size_t len = 0;
    buf[0] = '\0';
    append(buf, cap, &len, code);
    for (size_t i = 0; i < len; i++)
        if (buf[i] == '_')
            buf[i] = ' ';
    const char *key;
    json_t *value;
    const char *sep = ": ";
    char num[32];
    json_object_foreach((json_t *)body, key, value)
    {
        const char *text = NULL;
        if (strcmp(key, "error") == 0)
            continue;
        if (json_is_string(value)) {
            text = json_string_value(value);
        } else if (json_is_integer(value)) {
            snprintf(num, sizeof(num), "%" JSON_INTEGER_FORMAT, json_integer_value(value));
            text = num;
        }
        if (text == NULL)
            continue;
        append(buf, cap, &len, sep);
        append(buf, cap, &len, text);
        sep = ", ";
    }
    return 0;
}

void eg_message(const char *name, const tg_result *r, char *buf, size_t cap)
{
    int from_http = r->kind == TG_REJECTED || r->kind == TG_UPSTREAM_ERROR;
    const char *msg = from_http ? json_string_value(json_object_get(r->body, "message")) : NULL;
    if (msg != NULL && msg[0] != '\0')
        snprintf(buf, cap, "%s", msg);
    else if (!from_http || message_from_error_code(r->body, buf, cap) != 0)
        snprintf(buf, cap, "%s %s", name, r->message);
    utf8_cut(buf); /* a cut may end inside a character: jansson would refuse the string */
}

/* Upstream bodies go into the answer as the bytes that came, not re-serialised: jansson would
 * print their numbers with the answer's precision (1.00000000000000012 is not 1.0), and copying is
 * cheaper. Each one is first a placeholder string, replaced in the dumped text. */
typedef struct raw_slot {
    const char *raw;
    size_t raw_len;
    char placeholder[48]; /* the placeholder as dumped, quotes included; "" when unused */
} raw_slot;

/* The value of an upstream body in the answer: a placeholder for its raw bytes when there are
 * any, else jansson's value (or null). The placeholder is DEL "eg" <slot address> DEL: jansson
 * prints DEL unescaped, so its dumped form is simply the token in quotes, made without a dump. */
static json_t *upstream_value(const tg_result *r, raw_slot *slot)
{
    if (r->body == NULL)
        return json_null();
    if (r->raw == NULL || slot == NULL)
        return json_incref(r->body);
    char token[40];
    int n = snprintf(token, sizeof(token),
                     "\x7f"
                     "eg%p\x7f",
                     (const void *)slot);
    json_t *placeholder = n > 0 ? json_stringn(token, (size_t)n) : NULL;
    if (placeholder == NULL)
        return json_incref(r->body);
    snprintf(slot->placeholder, sizeof(slot->placeholder), "\"%s\"", token);
    slot->raw = r->raw;
    slot->raw_len = r->raw_len;
    return placeholder;
}

static const char *find(const char *hay, size_t hay_len, const char *needle, size_t needle_len)
{
    return memmem(hay, hay_len, needle, needle_len);
}

/* Replaces each slot's placeholder in text by its raw bytes. NULL (text kept by the caller) when
 * a placeholder does not occur exactly once: a client or upstream string may imitate one, and
 * then the caller falls back to plain jansson output. O(text x slots). */
static char *splice(const char *text, size_t len, const raw_slot *slots, size_t n, size_t *out_len)
{
    size_t total = len;
    for (size_t i = 0; i < n; i++) {
        if (slots[i].placeholder[0] == '\0')
            continue;
        size_t plen = strlen(slots[i].placeholder);
        const char *at = find(text, len, slots[i].placeholder, plen);
        if (at == NULL || find(at + 1, len - (size_t)(at + 1 - text), slots[i].placeholder, plen))
            return NULL;
        total = total - plen + slots[i].raw_len;
    }
    char *out = malloc(total + 1);
    if (out == NULL)
        return NULL;
    size_t o = 0, pos = 0;
    while (pos < len) {
        const raw_slot *next = NULL;
        const char *next_at = text + len;
        for (size_t i = 0; i < n; i++) {
            if (slots[i].placeholder[0] == '\0')
                continue;
            const char *at =
                find(text + pos, len - pos, slots[i].placeholder, strlen(slots[i].placeholder));
            if (at != NULL && at < next_at) {
                next_at = at;
                next = &slots[i];
            }
        }
        size_t plain = (size_t)(next_at - (text + pos));
        memcpy(out + o, text + pos, plain);
        o += plain;
        pos += plain;
        if (next == NULL)
            break;
        memcpy(out + o, next->raw, next->raw_len);
        o += next->raw_len;
        pos += strlen(next->placeholder);
    }
    out[o] = '\0';
    *out_len = o;
    return out;
}

static json_t *error_entry(const char *name, const tg_result *r, raw_slot *slot)
{
    char msg[256];
    eg_message(name, r, msg, sizeof(msg));
    json_t *upstream = upstream_value(r, slot);
    json_t *status = r->http_status > 0 ? json_integer(r->http_status) : json_null();
    return json_pack("{s:s, s:s, s:o, s:s, s:o, s:o, s:I}", "validation", name, "kind",
                     tg_kind_name(r->kind), "http_status", status, "message", msg, "upstream",
                     upstream, "elapsed_ms", eg_ms(r->elapsed_ms), "attempts",
                     (json_int_t)r->attempts);
}

/* The errors array, ordered by fail_seq. O(n^2) over at most 64 calls: fine. */
static int add_errors(json_t *errors, const tg_group *g, const char *const names[], raw_slot *slots)
{
    size_t n = tg_group_size(g), nfailed = tg_group_failures(g);
    for (unsigned seq = 1; seq <= nfailed; seq++) {
        for (size_t i = 0; i < n; i++) {
            const tg_result *r = tg_group_result(g, i);
            if (r->state != TG_FAILED || r->fail_seq != seq)
                continue;
            if (json_array_append_new(errors, error_entry(names[i], r, slots ? &slots[i] : NULL)) !=
                0)
                return -1;
        }
    }
    return 0;
}

static void choose_status(const tg_group *g, eg_answer *out)
{
    int rejected = 0, timeout = 0;
    for (size_t i = 0; i < tg_group_size(g); i++) {
        const tg_result *r = tg_group_result(g, i);
        if (r->state != TG_FAILED)
            continue;
        rejected |= r->kind == TG_REJECTED;
        timeout |= r->kind == TG_TIMEOUT;
    }
    if (tg_group_failures(g) == 0) {
        out->http_status = 200;
        out->status = "accepted";
    } else if (rejected) {
        out->http_status = 422;
        out->status = "rejected";
    } else {
        out->http_status = timeout ? 504 : 502;
        out->status = "failed";
    }
}

/* The answer; with use_raw, upstream bodies are spliced in as they came. 0, -1 when out of
 * memory, 1 when a placeholder was imitated (try again without use_raw). */
static int build(const tg_group *g, const char *const names[], const char *order_id,
                 double elapsed_ms, uint64_t compensating, int use_raw, eg_answer *out)
{
    json_t *root = json_object();
    json_t *results = json_object(), *completed = json_array(), *cancelled = json_array();
    json_t *errors = json_array(), *comp = json_array();
    raw_slot slots[TG_MAX_CALLS];
    char *text = NULL;
    int rc = -1;
    memset(out, 0, sizeof(*out));
    memset(slots, 0, sizeof(slots));
    if (root == NULL || results == NULL || completed == NULL || cancelled == NULL ||
        errors == NULL || comp == NULL)
        goto fail;

    choose_status(g, out);
    size_t n = tg_group_size(g);
    for (size_t i = 0; i < n; i++) {
        const tg_result *r = tg_group_result(g, i);
        if (r->state == TG_OK) {
            /* results exist only in a 200: a placeholder elsewhere would never be found */
            if (out->http_status == 200)
                json_object_set_new(results, names[i],
                                    upstream_value(r, use_raw ? &slots[i] : NULL));
            json_array_append_new(completed, json_string(names[i]));
        } else if (r->state == TG_CANCELLED) {
            json_array_append_new(cancelled, json_string(names[i]));
        }
        if (i < 64 && (compensating >> i & 1u))
            json_array_append_new(comp, json_string(names[i]));
    }
    if (add_errors(errors, g, names, use_raw ? slots : NULL) != 0)
        goto fail;

    json_object_set_new(root, "order_id", json_string(order_id));
    json_object_set_new(root, "status", json_string(out->status));
    if (out->http_status == 200) {
        json_object_set(root, "results", results);
    } else {
        char msg[96];
        snprintf(msg, sizeof(msg), "checkout failed: %zu of %zu validations failed",
                 tg_group_failures(g), n);
        json_object_set_new(root, "error_group",
                            json_pack("{s:s, s:O}", "message", msg, "errors", errors));
        json_object_set(root, "completed", completed);
        json_object_set(root, "cancelled", cancelled);
        json_object_set(root, "compensating", comp);
    }
    json_object_set_new(root, "elapsed_ms", eg_ms(elapsed_ms));

    /* With use_raw, the only numbers jansson prints are ours (elapsed_ms, rounded to 0.1): 15
     * significant digits print them as 14.2, not 14.199999999999999. Without, upstream numbers
     * are printed too and need all 17. */
    text = json_dumps(root, JSON_COMPACT | JSON_REAL_PRECISION(use_raw ? 15 : 17));
    if (text == NULL)
        goto fail;
    if (use_raw) {
        out->body = splice(text, strlen(text), slots, n, &out->body_len);
        rc = out->body != NULL ? 0 : 1;
    } else {
        out->body = text;
        out->body_len = strlen(text);
        text = NULL;
        rc = 0;
    }
fail:
    free(text);
    json_decref(root);
    json_decref(results);
    json_decref(completed);
    json_decref(cancelled);
    json_decref(errors);
    json_decref(comp);
    return rc;
}

/* Whether the accepted answer can be written by accepted_direct: every result has its raw bytes,
 * every string is valid UTF-8 (jansson refuses others) and no name repeats (jansson would keep
 * one). O(n^2) over at most 64 names: fine. */
static int direct_possible(const tg_group *g, const char *const names[], const char *order_id,
                           double elapsed_ms)
{
    size_t n = tg_group_size(g);
    if (order_id == NULL || utf8_valid_prefix(order_id, strlen(order_id)) != strlen(order_id) ||
        !isfinite(elapsed_ms))
        return 0;
    for (size_t i = 0; i < n; i++) {
        const tg_result *r = tg_group_result(g, i);
        if (r->state != TG_OK || r->raw == NULL || names[i] == NULL ||
            utf8_valid_prefix(names[i], strlen(names[i])) != strlen(names[i]))
            return 0;
        for (size_t k = 0; k < i; k++)
            if (strcmp(names[k], names[i]) == 0)
                return 0;
    }
    return 1;
}

/* The 200 answer, {"order_id":..,"status":"accepted","results":{name:<raw>,..},"elapsed_ms":..},
 * written straight into one buffer: the bytes build() gives, at ~1/20 of its cost. 0; -1 when out
 * of memory; 1 when jw cannot write it (build() then does). */
static int accepted_direct(const tg_group *g, const char *const names[], const char *order_id,
                           double elapsed_ms, eg_answer *out)
{
    size_t n = tg_group_size(g);
    size_t cap = 96 + 6 * strlen(order_id); /* fixed text, a number, and \u00XX for every byte */
    for (size_t i = 0; i < n; i++)
        cap += 8 + 6 * strlen(names[i]) + tg_group_result(g, i)->raw_len;
    jw w = {.p = malloc(cap + 1), .len = 0, .cap = cap, .fail = 0};
    if (w.p == NULL)
        return -1;
    JW_LIT(&w, "{\"order_id\":");
    jw_string(&w, order_id, strlen(order_id));
    JW_LIT(&w, ",\"status\":\"accepted\",\"results\":{");
    for (size_t i = 0; i < n; i++) {
        const tg_result *r = tg_group_result(g, i);
        if (i > 0)
            jw_char(&w, ',');
        jw_string(&w, names[i], strlen(names[i]));
        jw_char(&w, ':');
        jw_raw(&w, r->raw, r->raw_len);
    }
    JW_LIT(&w, "},\"elapsed_ms\":");
    jw_tenths(&w, elapsed_ms);
    jw_char(&w, '}');
    if (w.fail) {
        free(w.p);
        return 1;
    }
    w.p[w.len] = '\0';
    memset(out, 0, sizeof(*out));
    out->http_status = 200;
    out->status = "accepted";
    out->body = w.p;
    out->body_len = w.len;
    return 0;
}

static int build_tree(const tg_group *g, const char *const names[], const char *order_id,
                      double elapsed_ms, uint64_t compensating, eg_answer *out)
{
    int rc = build(g, names, order_id, elapsed_ms, compensating, 1, out);
    if (rc == 1)
        rc = build(g, names, order_id, elapsed_ms, compensating, 0, out);
    return rc;
}

int eg_build_tree(const tg_group *g, const char *const names[], const char *order_id,
                  double elapsed_ms, eg_answer *out)
{
    return build_tree(g, names, order_id, elapsed_ms, 0, out);
}

int eg_build(const tg_group *g, const char *const names[], const char *order_id, double elapsed_ms,
             eg_answer *out)
{
    return eg_build_comp(g, names, order_id, elapsed_ms, 0, out);
}

int eg_build_comp(const tg_group *g, const char *const names[], const char *order_id,
                  double elapsed_ms, uint64_t compensating, eg_answer *out)
{
    if (tg_group_failures(g) == 0 && direct_possible(g, names, order_id, elapsed_ms)) {
        int rc = accepted_direct(g, names, order_id, elapsed_ms, out);
        if (rc != 1)
            return rc;
    }
    return build_tree(g, names, order_id, elapsed_ms, compensating, out);
}
