/* eg — the error group. See eg.h. */
#include "eg.h"

#include <math.h>
#include <stdio.h>
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
    if (from_http && json_is_object(r->body)) {
        const char *msg = json_string_value(json_object_get(r->body, "message"));
        if (msg != NULL && msg[0] != '\0') {
            snprintf(buf, cap, "%s", msg);
            return;
        }
        if (message_from_error_code(r->body, buf, cap) == 0)
            return;
    }
    snprintf(buf, cap, "%s %s", name, r->message);
}

static json_t *error_entry(const char *name, const tg_result *r)
{
    char msg[256];
    eg_message(name, r, msg, sizeof(msg));
    json_t *upstream = r->body ? json_incref(r->body) : json_null();
    json_t *status = r->http_status > 0 ? json_integer(r->http_status) : json_null();
    return json_pack("{s:s, s:s, s:o, s:s, s:o, s:o}", "validation", name, "kind",
                     tg_kind_name(r->kind), "http_status", status, "message", msg, "upstream",
                     upstream, "elapsed_ms", eg_ms(r->elapsed_ms));
}

/* The errors array, ordered by fail_seq. O(n^2) over at most 64 calls: fine. */
static int add_errors(json_t *errors, const tg_group *g, const char *const names[])
{
    size_t n = tg_group_size(g), nfailed = tg_group_failures(g);
    for (unsigned seq = 1; seq <= nfailed; seq++) {
        for (size_t i = 0; i < n; i++) {
            const tg_result *r = tg_group_result(g, i);
            if (r->state != TG_FAILED || r->fail_seq != seq)
                continue;
            if (json_array_append_new(errors, error_entry(names[i], r)) != 0)
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

int eg_build(const tg_group *g, const char *const names[], const char *order_id, double elapsed_ms,
             eg_answer *out)
{
    json_t *root = json_object();
    json_t *results = json_object(), *completed = json_array(), *cancelled = json_array();
    json_t *errors = json_array();
    int rc = -1;
    memset(out, 0, sizeof(*out));
    if (root == NULL || results == NULL || completed == NULL || cancelled == NULL || errors == NULL)
        goto fail;

    choose_status(g, out);
    size_t n = tg_group_size(g);
    for (size_t i = 0; i < n; i++) {
        const tg_result *r = tg_group_result(g, i);
        if (r->state == TG_OK) {
            json_object_set(results, names[i], r->body);
            json_array_append_new(completed, json_string(names[i]));
        } else if (r->state == TG_CANCELLED) {
            json_array_append_new(cancelled, json_string(names[i]));
        }
    }
    if (add_errors(errors, g, names) != 0)
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
    }
    json_object_set_new(root, "elapsed_ms", eg_ms(elapsed_ms));

    out->body = json_dumps(root, JSON_COMPACT | JSON_REAL_PRECISION(7));
    if (out->body == NULL)
        goto fail;
    out->body_len = strlen(out->body);
    rc = 0;
fail:
    json_decref(root);
    json_decref(results);
    json_decref(completed);
    json_decref(cancelled);
    json_decref(errors);
    return rc;
}
