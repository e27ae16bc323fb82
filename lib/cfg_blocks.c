/* cfg_blocks — the table of nested config keys and the file that parses each (see cfg_internal.h).
 * One line per key; keep each area's parser in its own lib/cfg_<area>.c. */
#include "cfg_internal.h"

#include <stddef.h>

int cfg_trace_load(const cfg_loader *ld, const json_t *value, cfg *out);      /* cfg_trace.c */
int cfg_edge_admin_load(const cfg_loader *ld, const json_t *value, cfg *out); /* cfg_edge.c */
void cfg_edge_admin_free(cfg *out);
int cfg_edge_tls_load(const cfg_loader *ld, const json_t *value, cfg *out);
void cfg_edge_tls_free(cfg *out);

/* cfg_schema.c: "$schema", accepted and ignored (docs/config.schema.json, for editors) */
int cfg_schema_load(const cfg_loader *ld, const json_t *value, cfg *out);

const cfg_val_block cfg_val_blocks[] = {
    {"headers", cfg_headers_load, cfg_headers_free}, /* cfg_upstream.c */
    {"tls", cfg_tls_load, cfg_tls_free},             /* cfg_upstream.c */
    {"idempotent", cfg_policy_idempotent, NULL},     /* cfg_policy.c, before hedge */
    {"retry", cfg_policy_retry, NULL},               /* cfg_policy.c */
    {"breaker", cfg_policy_breaker, NULL},           /* cfg_policy.c */
    {"hedge", cfg_policy_hedge, NULL},               /* cfg_policy.c */
    {"compensate", cfg_comp_load, cfg_comp_free},    /* cfg_comp.c, after headers/tls */
    {NULL, NULL, NULL},
};

const cfg_top_block cfg_top_blocks[] = {
    {"idempotency", cfg_idem_load, cfg_idem_free},
    {"trace", cfg_trace_load, NULL},
    {"journal", cfg_journal_load, cfg_journal_free}, /* cfg_journal.c */
    {"$schema", cfg_schema_load, NULL},
    {"admin_listen", cfg_edge_admin_load, cfg_edge_admin_free}, /* cfg_edge.c */
    {"tls", cfg_edge_tls_load, cfg_edge_tls_free},              /* cfg_edge.c */
    {NULL, NULL, NULL},
};
