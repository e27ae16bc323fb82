/* cfg_schema — the top-level "$schema" key: the URI (or path) of the config's JSON Schema
 * (docs/config.schema.json), for editors that complete and check keys from it. checkoutd never
 * reads the schema: the key must be a non-empty string and is otherwise ignored (it sets nothing,
 * has no environment variable and no default). Refused in a validation like any unknown key. */
#include "cfg_internal.h"

#include <stdio.h>

int cfg_schema_load(const cfg_loader *ld, const json_t *value, cfg *out);

int cfg_schema_load(const cfg_loader *ld, const json_t *value, cfg *out)
{
    (void)out;
    if (value == NULL || (json_is_string(value) && json_string_length(value) > 0))
        return 0;
    char shown[CFG_SHOW_MAX];
    cfg_where w;
    cfg_top_where(ld, "$schema", &w);
    cfg_show_json(value, shown);
    return cfg_errf(ld, &w, "expected the schema's URI, a non-empty string, got %s", shown);
}
