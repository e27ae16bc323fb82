/* cfg_comp — the per-validation "compensate" block (contract v1.2, "Compensation").
 *
 * {"url": required, the validation's scheme; "timeout_ms": 1..600000 [1000]; "attempts": 1..20 [5];
 *  "backoff_ms": 1..60000 [200]; "max_backoff_ms": backoff_ms..600000 [max(5000, backoff_ms)]}.
 * A validation whose field is order_id, validation or result cannot have one: those are the undo
 * body's own members. */
#include "cfg_internal.h"

#include <stdlib.h>
#include <string.h>

#define COMP_KEYS "url, timeout_ms, attempts, backoff_ms, max_backoff_ms"

static int same_scheme(const char *a, const char *b)
{
    return (strncmp(a, "https://", 8) == 0) == (strncmp(b, "https://", 8) == 0);
}

/* One optional integer member of the block: its default when absent. */
static int comp_int(const cfg_loader *ld, size_t i, const json_t *block, const char *key, long min,
                    long max, long def, long *out)
{
    const json_t *v = json_object_get(block, key);
    char label[CFG_KEY_MAX];
    cfg_where w;

    *out = def;
    if (v == NULL)
        return 0;
    snprintf(label, sizeof label, "compensate.%s", key);
    cfg_val_where(ld, i, label, &w);
    return cfg_get_int(ld, &w, v, min, max, out);
}

int cfg_comp_load(const cfg_loader *ld, size_t i, const json_t *entry, const json_t *value,
                  cfg_validation *out)
{
    static const char *const keys[] = {"url", "timeout_ms", "attempts", "backoff_ms",
                                       "max_backoff_ms"};
    cfg_compensate *c = &out->compensate;
    char shown[CFG_SHOW_MAX];
    const char *url;
    cfg_where w;

    (void)entry;
    memset(c, 0, sizeof *c);
    if (value == NULL)
        return 0;
    cfg_val_where(ld, i, "compensate", &w);
    if (!json_is_object(value)) {
        cfg_show_json(value, shown);
        return cfg_errf(ld, &w, "expected an object with %s, got %s", COMP_KEYS, shown);
    }
    if (cfg_check_keys(ld, &w, value, keys, sizeof keys / sizeof keys[0], COMP_KEYS) != 0)
        return -1;
    if (strcmp(out->field, "order_id") == 0 || strcmp(out->field, "validation") == 0 ||
        strcmp(out->field, "result") == 0) {
        cfg_show_string(out->field, shown);
        return cfg_errf(ld, &w,
                        "not allowed for a validation whose field is %s (order_id, validation and "
                        "result are members of the undo request's own body)",
                        shown);
    }
    cfg_val_where(ld, i, "compensate.url", &w);
    url = cfg_get_string(ld, &w, json_object_get(value, "url"), "an http:// or https:// URL",
                         cfg_url_ok);
    if (url == NULL)
        return -1;
    if (!same_scheme(url, out->url)) {
        cfg_show_string(url, shown);
        return cfg_errf(ld, &w, "expected the same scheme as the validation's url (%s), got %s",
                        strncmp(out->url, "https://", 8) == 0 ? "https" : "http", shown);
    }
    if (comp_int(ld, i, value, "timeout_ms", 1, 600000, 1000, &c->timeout_ms) != 0 ||
        comp_int(ld, i, value, "attempts", 1, 20, 5, &c->attempts) != 0 ||
        comp_int(ld, i, value, "backoff_ms", 1, 60000, 200, &c->backoff_ms) != 0 ||
        comp_int(ld, i, value, "max_backoff_ms", c->backoff_ms, 600000,
                 c->backoff_ms > 5000 ? c->backoff_ms : 5000, &c->max_backoff_ms) != 0)
        return -1;
    c->url = cfg_dup(ld, &w, url);
    return c->url ? 0 : -1;
}

void cfg_comp_free(cfg_validation *out)
{
    free(out->compensate.url);
    out->compensate.url = NULL;
}
