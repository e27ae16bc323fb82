/* cfg_trace — the top-level "trace" key (v1.2): a JSON boolean, default false, overridden by
 * CHECKOUTD_TRACE ("true", "false", "1" or "0"). See cfg.h. */
#include "cfg_internal.h"

#include <stdio.h>
#include <string.h>

int cfg_trace_load(const cfg_loader *ld, const json_t *value, cfg *out);

int cfg_trace_load(const cfg_loader *ld, const json_t *value, cfg *out)
{
    char shown[CFG_SHOW_MAX];
    cfg_where w;
    const char *env = cfg_env(ld, "CHECKOUTD_TRACE");
    if (env != NULL) {
        if (strcmp(env, "true") == 0 || strcmp(env, "1") == 0) {
            out->trace = 1;
            return 0;
        }
        if (strcmp(env, "false") == 0 || strcmp(env, "0") == 0) {
            out->trace = 0;
            return 0;
        }
        w.source = NULL;
        snprintf(w.key, sizeof w.key, "%s", "CHECKOUTD_TRACE");
        cfg_show_string(env, shown);
        return cfg_errf(ld, &w, "expected true, false, 1 or 0, got %s", shown);
    }
    out->trace = 0;
    if (value == NULL)
        return 0;
    if (!json_is_boolean(value)) {
        cfg_top_where(ld, "trace", &w);
        cfg_show_json(value, shown);
        return cfg_errf(ld, &w, "expected true or false, got %s", shown);
    }
    out->trace = json_is_true(value);
    return 0;
}
