/* cfg_policy — the resilience keys of a validation (contract v1.2, "Resilience"): idempotent,
 * retry, breaker, hedge. Registered in cfg_blocks.c, in that order: hedge reads idempotent, retry
 * reads timeout_ms (a flat key, loaded before any block). Fills cfg_validation's fields (cfg.h);
 * owns no memory. */
#include "cfg_internal.h"

#include <string.h>

#define RETRY_BACKOFF_DEFAULT   25
#define RETRY_MAX_BACKOFF_FLOOR 250
#define BREAKER_OPEN_DEFAULT    5000
#define RETRY_KIND_NAMES        "transport, upstream_error, timeout, invalid_response"

/* The object of key `key` of validation i, or -1 after a message; absent (NULL) is fine. */
static int check_object(const cfg_loader *ld, size_t i, const char *key, const json_t *value,
                        const char *const *keys, size_t n, const char *expected)
{
    cfg_where w;
    char shown[CFG_SHOW_MAX];
    cfg_val_where(ld, i, key, &w);
    if (!json_is_object(value)) {
        cfg_show_json(value, shown);
        return cfg_errf(ld, &w, "expected an object with %s, got %s", expected, shown);
    }
    return cfg_check_keys(ld, &w, value, keys, n, expected);
}

/* Member `name` of obj in min..max into *out; def when absent (required: refused when absent). */
static int get_member(const cfg_loader *ld, size_t i, const char *block, const json_t *obj,
                      const char *name, long min, long max, long def, int required, long *out)
{
    char key[CFG_KEY_MAX];
    cfg_where w;
    const json_t *v = json_object_get(obj, name);
    snprintf(key, sizeof key, "%s.%s", block, name);
    cfg_val_where(ld, i, key, &w);
    if (v == NULL) {
        if (required)
            return cfg_errf(ld, &w, "missing, expected an integer in %ld..%ld", min, max);
        *out = def;
        return 0;
    }
    return cfg_get_int(ld, &w, v, min, max, out);
}

int cfg_policy_idempotent(const cfg_loader *ld, size_t i, const json_t *entry, const json_t *value,
                          cfg_validation *out)
{
    cfg_where w;
    char shown[CFG_SHOW_MAX];
    (void)entry;
    out->idempotent = 0;
    if (value == NULL)
        return 0;
    if (!json_is_boolean(value)) {
        cfg_val_where(ld, i, "idempotent", &w);
        cfg_show_json(value, shown);
        return cfg_errf(ld, &w, "expected true or false, got %s", shown);
    }
    out->idempotent = json_is_true(value);
    return 0;
}

static int load_retry_on(const cfg_loader *ld, size_t i, const json_t *on, unsigned *bits)
{
    cfg_where w;
    char shown[CFG_SHOW_MAX];
    size_t k;
    const json_t *item;
    cfg_val_where(ld, i, "retry.on", &w);
    if (!json_is_array(on)) {
        cfg_show_json(on, shown);
        return cfg_errf(ld, &w, "expected a list of error kinds (%s), got %s", RETRY_KIND_NAMES,
                        shown);
    }
    *bits = 0;
    json_array_foreach(on, k, item)
    {
        const char *name = json_string_value(item);
        unsigned bit = name ? retry_kind_bit(name) : 0;
        if (name != NULL && strcmp(name, "rejected") == 0)
            return cfg_errf(ld, &w,
                            "\"rejected\" is never retried (a 4xx is the upstream's decision)");
        if (bit == 0) {
            cfg_show_json(item, shown);
            return cfg_errf(ld, &w, "unknown kind %s (expected some of %s)", shown,
                            RETRY_KIND_NAMES);
        }
        *bits |= bit;
    }
    return 0;
}

int cfg_policy_retry(const cfg_loader *ld, size_t i, const json_t *entry, const json_t *value,
                     cfg_validation *out)
{
    static const char *const keys[] = {"attempts", "per_try_timeout_ms", "backoff_ms",
                                       "max_backoff_ms", "on"};
    static const char expected[] = "attempts, per_try_timeout_ms, backoff_ms, max_backoff_ms, on";
    retry_policy *p = &out->retry;
    const json_t *obj = value;
    (void)entry;
    p->attempts = 1;
    p->per_try_ms = out->timeout_ms;
    p->backoff_ms = RETRY_BACKOFF_DEFAULT;
    p->max_backoff_ms = RETRY_MAX_BACKOFF_FLOOR;
    p->on = RETRY_ON_DEFAULT;
    if (value == NULL)
        return 0;
    if (check_object(ld, i, "retry", value, keys, 5, expected) != 0)
        return -1;
    if (get_member(ld, i, "retry", obj, "attempts", 1, RETRY_MAX_ATTEMPTS, 1, 0, &p->attempts) != 0)
        return -1;
    long per_try_default = out->timeout_ms / p->attempts;
    if (per_try_default < 1)
        per_try_default = 1;
    if (get_member(ld, i, "retry", obj, "per_try_timeout_ms", 1, out->timeout_ms, per_try_default,
                   0, &p->per_try_ms) != 0 ||
        get_member(ld, i, "retry", obj, "backoff_ms", 0, 10000, RETRY_BACKOFF_DEFAULT, 0,
                   &p->backoff_ms) != 0)
        return -1;
    long max_default =
        p->backoff_ms > RETRY_MAX_BACKOFF_FLOOR ? p->backoff_ms : RETRY_MAX_BACKOFF_FLOOR;
    if (get_member(ld, i, "retry", obj, "max_backoff_ms", p->backoff_ms, 60000, max_default, 0,
                   &p->max_backoff_ms) != 0)
        return -1;
    const json_t *on = json_object_get(obj, "on");
    return on == NULL ? 0 : load_retry_on(ld, i, on, &p->on);
}

int cfg_policy_breaker(const cfg_loader *ld, size_t i, const json_t *entry, const json_t *value,
                       cfg_validation *out)
{
    static const char *const keys[] = {"consecutive_failures", "open_ms"};
    (void)entry;
    out->breaker_failures = 0;
    out->breaker_open_ms = BREAKER_OPEN_DEFAULT;
    if (value == NULL)
        return 0;
    if (check_object(ld, i, "breaker", value, keys, 2, "consecutive_failures, open_ms") != 0)
        return -1;
    if (get_member(ld, i, "breaker", value, "consecutive_failures", 1, 1000, 0, 1,
                   &out->breaker_failures) != 0)
        return -1;
    return get_member(ld, i, "breaker", value, "open_ms", 100, 600000, BREAKER_OPEN_DEFAULT, 0,
                      &out->breaker_open_ms);
}

int cfg_policy_hedge(const cfg_loader *ld, size_t i, const json_t *entry, const json_t *value,
                     cfg_validation *out)
{
    static const char *const keys[] = {"after_ms"};
    cfg_where w;
    (void)entry;
    out->hedge_after_ms = 0;
    if (value == NULL)
        return 0;
    if (check_object(ld, i, "hedge", value, keys, 1, "after_ms") != 0)
        return -1;
    if (get_member(ld, i, "hedge", value, "after_ms", 1, 600000, 0, 1, &out->hedge_after_ms) != 0)
        return -1;
    if (!out->idempotent) {
        cfg_val_where(ld, i, "hedge", &w);
        return cfg_errf(ld, &w,
                        "needs \"idempotent\": true in the validation (a hedge sends the same "
                        "request twice)");
    }
    return 0;
}
