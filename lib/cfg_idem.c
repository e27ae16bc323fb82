/* cfg_idem — the top-level "idempotency" block (see cfg.h for the keys, ranges and variables).
 *
 * The environment overrides each key after the text; a variable's value is checked like the text's
 * and a message about it names the variable alone. Cost: a handful of lookups, once at start. */
#include "cfg_internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *const idem_keys[] = {"store", "redis_url", "ttl_s", "max_keys", "timeout_ms"};
#define IDEM_NKEYS (sizeof(idem_keys) / sizeof(idem_keys[0]))

typedef struct idem_int {
    const char *key, *env;
    long min, max, def;
    size_t offset;
} idem_int;

static const idem_int idem_ints[] = {
    {"ttl_s", "CHECKOUTD_IDEMPOTENCY_TTL_S", 1, 604800, 86400, offsetof(cfg_idempotency, ttl_s)},
    {"max_keys", "CHECKOUTD_IDEMPOTENCY_MAX_KEYS", 1, 10000000, 100000,
     offsetof(cfg_idempotency, max_keys)},
    {"timeout_ms", "CHECKOUTD_IDEMPOTENCY_TIMEOUT_MS", 1, 10000, 200,
     offsetof(cfg_idempotency, timeout_ms)},
};

static int store_ok(const char *s)
{
    return strcmp(s, "memory") == 0 || strcmp(s, "redis") == 0 || strcmp(s, "off") == 0;
}

/* redis://HOST:PORT[/DB] with HOST a name, an IPv4 address or [IPv6]; 0 or -1. */
static int parse_redis_url(const char *u, cfg_idempotency *out, char *host, size_t hostcap)
{
    static const char scheme[] = "redis://";
    if (strncmp(u, scheme, sizeof(scheme) - 1) != 0)
        return -1;
    const char *h = u + sizeof(scheme) - 1, *hend, *p;
    if (*h == '[') {
        hend = strchr(h, ']');
        if (hend == NULL || hend[1] != ':')
            return -1;
        h++;
        p = hend + 2;
    } else {
        hend = strchr(h, ':');
        if (hend == NULL)
            return -1;
        p = hend + 1;
    }
    size_t hlen = (size_t)(hend - h);
    if (hlen == 0 || hlen >= hostcap)
        return -1;
    for (size_t i = 0; i < hlen; i++) {
        char c = h[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '.' || c == '-' || c == ':' || c == '_' || c == '%'))
            return -1;
    }
    memcpy(host, h, hlen);
    host[hlen] = '\0';
    long port = 0, db = 0;
    size_t digits = 0;
    for (; *p >= '0' && *p <= '9' && digits < 6; p++, digits++)
        port = port * 10 + (*p - '0');
    if (digits == 0 || port < 1 || port > 65535)
        return -1;
    if (*p == '/') {
        p++;
        digits = 0;
        for (; *p >= '0' && *p <= '9' && digits < 3; p++, digits++)
            db = db * 10 + (*p - '0');
        if (digits == 0 || db > 15)
            return -1;
    }
    if (*p != '\0')
        return -1;
    out->redis_port = (int)port;
    out->redis_db = (int)db;
    return 0;
}

/* The string of key: the variable's when set, else the text's (NULL: neither). */
static const json_t *pick(const cfg_loader *ld, const json_t *obj, const char *key, const char *env,
                          json_t **owned, const char **env_used)
{
    const char *val = cfg_env(ld, env);
    *env_used = NULL;
    if (val != NULL) {
        *owned = json_string(val);
        *env_used = env;
        return *owned;
    }
    return obj ? json_object_get(obj, key) : NULL;
}

int cfg_idem_load(const cfg_loader *ld, const json_t *value, cfg *out)
{
    cfg_idempotency *c = &out->idempotency;
    cfg_where w;
    json_t *owned = NULL;
    const char *env_used;
    int rc = -1;

    memset(c, 0, sizeof(*c));
    if (value != NULL) {
        cfg_top_where(ld, "idempotency", &w);
        if (!json_is_object(value)) {
            char shown[CFG_SHOW_MAX];
            cfg_show_json(value, shown);
            return cfg_errf(ld, &w, "expected an object, got %s", shown);
        }
        if (cfg_check_keys(ld, &w, value, idem_keys, IDEM_NKEYS,
                           "store, redis_url, ttl_s, max_keys, timeout_ms") != 0)
            return -1;
    }

    const json_t *v = pick(ld, value, "store", "CHECKOUTD_IDEMPOTENCY_STORE", &owned, &env_used);
    c->store = CFG_IDEM_MEMORY;
    if (v != NULL) {
        cfg_block_where(ld, "idempotency", "store", env_used, &w);
        const char *s = cfg_get_string(ld, &w, v, "\"memory\", \"redis\" or \"off\"", store_ok);
        if (s == NULL)
            goto fail;
        c->store = strcmp(s, "redis") == 0 ? CFG_IDEM_REDIS
                   : strcmp(s, "off") == 0 ? CFG_IDEM_OFF
                                           : CFG_IDEM_MEMORY;
    }
    json_decref(owned);
    owned = NULL;

    for (size_t i = 0; i < sizeof(idem_ints) / sizeof(idem_ints[0]); i++) {
        const idem_int *k = &idem_ints[i];
        long *dst = (long *)((char *)c + k->offset);
        const char *val = cfg_env(ld, k->env);
        *dst = k->def;
        if (val != NULL) {
            cfg_block_where(ld, "idempotency", k->key, k->env, &w);
            long n;
            if (cfg_parse_long(val, &n) != 0 || n < k->min || n > k->max) {
                char shown[CFG_SHOW_MAX];
                cfg_show_string(val, shown);
                cfg_errf(ld, &w, "expected an integer in %ld..%ld, got %s", k->min, k->max, shown);
                goto fail;
            }
            *dst = n;
        } else if (value != NULL && json_object_get(value, k->key) != NULL) {
            cfg_block_where(ld, "idempotency", k->key, NULL, &w);
            if (cfg_get_int(ld, &w, json_object_get(value, k->key), k->min, k->max, dst) != 0)
                goto fail;
        }
    }

    v = pick(ld, value, "redis_url", "CHECKOUTD_IDEMPOTENCY_REDIS_URL", &owned, &env_used);
    cfg_block_where(ld, "idempotency", "redis_url", env_used, &w);
    if (v == NULL) {
        if (c->store == CFG_IDEM_REDIS) {
            cfg_errf(ld, &w, "required when idempotency.store is \"redis\"");
            goto fail;
        }
    } else {
        const char *u = cfg_get_string(ld, &w, v, "redis://HOST:PORT[/DB]", cfg_nonempty_ok);
        char host[CFG_HOST_MAX + 1];
        if (u == NULL)
            goto fail;
        if (parse_redis_url(u, c, host, sizeof host) != 0) {
            char shown[CFG_SHOW_MAX];
            cfg_show_string(u, shown);
            cfg_errf(ld, &w, "expected redis://HOST:PORT[/DB] (DB 0..15), got %s", shown);
            goto fail;
        }
        c->redis_url = cfg_dup(ld, &w, u);
        c->redis_host = c->redis_url ? cfg_dup(ld, &w, host) : NULL;
        if (c->redis_host == NULL)
            goto fail;
    }
    rc = 0;
fail:
    json_decref(owned);
    return rc;
}

void cfg_idem_free(cfg *out)
{
    free(out->idempotency.redis_url);
    free(out->idempotency.redis_host);
    out->idempotency.redis_url = NULL;
    out->idempotency.redis_host = NULL;
}
