/* fu_rules — decides the status and body each fake upstream role gives to a POST body, by the
 * rules of the contract's "Fake upstreams" section (see fu_rules.h). Pure functions over jansson;
 * answers are rendered compact, with Content-Type application/json except the tok_garbage one. */
#include "fu_rules.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define FU_RULES_MSG_MAX 256 /* human messages are short; longer ones are truncated */

static const char fu_rules_json_type[] = "application/json";
static const char fu_rules_text_type[] = "text/plain";

const char *fu_rules_role_name(fu_rules_role role)
{
    switch (role) {
    case FU_RULES_ADDRESS:
        return "address";
    case FU_RULES_INVENTORY:
        return "inventory";
    case FU_RULES_PAYMENT:
        return "payment";
    case FU_RULES_NROLES:
        break;
    }
    return "unknown";
}

void fu_rules_answer_free(fu_rules_answer *a)
{
    free(a->body);
    free(a->order_id);
    memset(a, 0, sizeof(*a));
}

fu_status fu_rules_json(unsigned int status, json_t *doc, fu_rules_answer *out)
{
    fu_status st = FU_OK;
    char *s = NULL;

    if (doc == NULL) {
        st = FU_ENOMEM;
        goto fail;
    }
    s = json_dumps(doc, JSON_COMPACT);
    if (s == NULL) {
        st = FU_ENOMEM;
        goto fail;
    }
    json_decref(doc);
    free(out->body);
    out->status = status;
    out->body = s;
    out->body_len = strlen(s);
    out->content_type = fu_rules_json_type;
    return FU_OK;
fail:
    json_decref(doc);
    return st;
}

fu_status fu_rules_error(unsigned int status, const char *error, const char *message,
                         fu_rules_answer *out)
{
    json_t *doc = json_pack("{s:s}", "error", error);

    if (doc != NULL && message != NULL &&
        json_object_set_new(doc, "message", json_string(message)) != 0) {
        json_decref(doc);
        doc = NULL;
    }
    return fu_rules_json(status, doc, out);
}

static fu_status fu_rules_address(const json_t *v, const char *field, fu_rules_answer *out)
{
    char msg[FU_RULES_MSG_MAX];
    const char *country;
    const json_t *postal;
    json_t *doc;

    if (!json_is_object(v)) {
        snprintf(msg, sizeof(msg), "%s must be a JSON object", field);
        return fu_rules_error(400, "bad_request", msg, out);
    }
    country = json_string_value(json_object_get(v, "country"));
    postal = json_object_get(v, "postal_code");
    if (country != NULL && strcmp(country, "ZZ") == 0)
        return fu_rules_error(422, "invalid_address", "country ZZ is not served", out);
    if (postal == NULL || json_is_null(postal))
        return fu_rules_error(422, "invalid_address", "postal_code is missing", out);
    doc = json_pack("{s:b}", "valid", 1);
    if (doc != NULL && country != NULL &&
        json_object_set_new(doc, "country", json_string(country)) != 0) {
        json_decref(doc);
        doc = NULL;
    }
    return fu_rules_json(200, doc, out);
}

static fu_status fu_rules_inventory(const json_t *v, const char *field, fu_rules_answer *out)
{
    char msg[FU_RULES_MSG_MAX];
    size_t i;
    const json_t *item;

    if (!json_is_array(v)) {
        snprintf(msg, sizeof(msg), "%s must be a JSON array", field);
        return fu_rules_error(400, "bad_request", msg, out);
    }
    /* O(items): the first out-of-stock item decides. */
    json_array_foreach(v, i, item)
    {
        const char *sku = json_string_value(json_object_get(item, "sku"));
        if (sku != NULL && strncmp(sku, "OOS-", 4) == 0)
            return fu_rules_json(409, json_pack("{s:s,s:s}", "error", "out_of_stock", "sku", sku),
                                 out);
    }
    return fu_rules_json(
        200, json_pack("{s:b,s:I}", "reserved", 1, "items", (json_int_t)json_array_size(v)), out);
}

/* The v1.2 rules that depend on the attempt (see fu_rules.h); 1 when one answered. */
static int fu_rules_attempt_rule(const char *token, unsigned long attempt, fu_rules_answer *out,
                                 fu_status *st)
{
    unsigned long fails = 0;
    if (attempt == 0)
        attempt = 1;
    if (strcmp(token, "tok_hedge") == 0) {
        out->slow = attempt == 1;
        return 0; /* the usual 200, only later on the first attempt */
    }
    if (strcmp(token, "tok_retry_after") == 0 && attempt == 1) {
        *st = fu_rules_json(503, json_pack("{s:s}", "error", "unavailable"), out);
        out->retry_after_s = 1;
        return 1;
    }
    if (strncmp(token, "tok_flaky", 9) != 0)
        return 0;
    if (token[9] == '\0')
        fails = 1;
    else if (token[9] >= '1' && token[9] <= '9' && token[10] == '\0')
        fails = (unsigned long)(token[9] - '0');
    if (fails == 0 || attempt > fails)
        return 0;
    *st = fu_rules_json(503, json_pack("{s:s}", "error", "unavailable"), out);
    return 1;
}

static fu_status fu_rules_payment(const json_t *v, const char *field, unsigned long seq,
                                  unsigned long attempt, fu_rules_answer *out)
{
    fu_status st = FU_OK;
    char msg[FU_RULES_MSG_MAX];
    char auth_id[48];
    const char *token;
    char *text;

    if (!json_is_object(v)) {
        snprintf(msg, sizeof(msg), "%s must be a JSON object", field);
        return fu_rules_error(400, "bad_request", msg, out);
    }
    token = json_string_value(json_object_get(v, "token"));
    if (token != NULL && strcmp(token, "tok_declined") == 0)
        return fu_rules_json(402, json_pack("{s:s}", "error", "card_declined"), out);
    if (token != NULL && strcmp(token, "tok_error") == 0)
        return fu_rules_json(500, json_pack("{s:s}", "error", "internal_error"), out);
    if (token != NULL && strcmp(token, "tok_garbage") == 0) {
        text = strdup("this is not json");
        if (text == NULL)
            return FU_ENOMEM;
        free(out->body);
        out->status = 200;
        out->body = text;
        out->body_len = strlen(text);
        out->content_type = fu_rules_text_type;
        return FU_OK;
    }
    if (token != NULL && fu_rules_attempt_rule(token, attempt, out, &st))
        return st;
    out->slow = out->slow || (token != NULL && strcmp(token, "tok_slow") == 0);
    snprintf(auth_id, sizeof(auth_id), "auth-%06lu", seq);
    return fu_rules_json(200, json_pack("{s:b,s:s}", "authorized", 1, "authorization_id", auth_id),
                         out);
}

/* Picks the rule for a parsed body (doc NULL: not JSON, jerr says why). Fills out; no cleanup. */
static fu_status fu_rules_dispatch(fu_rules_role role, json_t *doc, const json_error_t *jerr,
                                   unsigned long seq, unsigned long attempt, fu_rules_answer *out)
{
    char msg[FU_RULES_MSG_MAX];
    const char *order_id;
    const char *key;
    json_t *val;

    if (doc == NULL) {
        snprintf(msg, sizeof(msg), "body is not JSON: %s (line %d, column %d)", jerr->text,
                 jerr->line, jerr->column);
        return fu_rules_error(400, "bad_request", msg, out);
    }
    if (!json_is_object(doc))
        return fu_rules_error(400, "bad_request", "body is not a JSON object", out);
    order_id = json_string_value(json_object_get(doc, "order_id"));
    if (order_id != NULL) {
        out->order_id = strdup(order_id);
        if (out->order_id == NULL)
            return FU_ENOMEM;
    }
    /* jansson keeps insertion order, so "the field" is the first key that is not order_id. */
    json_object_foreach(doc, key, val)
    {
        if (strcmp(key, "order_id") == 0)
            continue;
        switch (role) {
        case FU_RULES_ADDRESS:
            return fu_rules_address(val, key, out);
        case FU_RULES_INVENTORY:
            return fu_rules_inventory(val, key, out);
        case FU_RULES_PAYMENT:
        case FU_RULES_NROLES:
            break;
        }
        return fu_rules_payment(val, key, seq, attempt, out);
    }
    return fu_rules_error(400, "bad_request", "no field besides order_id", out);
}

fu_status fu_rules_decide(fu_rules_role role, const char *body, size_t len, unsigned long seq,
                          unsigned long attempt, fu_rules_answer *out)
{
    fu_status st = FU_OK;
    json_error_t jerr;
    json_t *doc;

    memset(out, 0, sizeof(*out));
    doc = json_loadb(body, len, 0, &jerr);
    st = fu_rules_dispatch(role, doc, &jerr, seq, attempt, out);
    if (st != FU_OK)
        goto fail;
    json_decref(doc);
    return FU_OK;
fail:
    json_decref(doc);
    fu_rules_answer_free(out);
    return st;
}
