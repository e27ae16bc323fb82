/* cfg — checkoutd's configuration: parsed from JSON with jansson, overridden by CHECKOUTD_* environment
 * variables, and validated against the ranges of the contract (shared/checkout-api.md, "Config").
 *
 * Order: built-in defaults < the JSON text < the environment. Every error names the key it is about
 * (e.g. "validations[1].url: expected an http:// or https:// URL") in one line, written into err.
 * A cfg owns all its strings; cfg_free releases them. Not thread-safe while loading; read-only after. */
#ifndef CHECKOUTD_CFG_H
#define CHECKOUTD_CFG_H

#include <stddef.h>

#define CFG_MAX_VALIDATIONS 32
#define CFG_NAME_MAX        32

typedef struct cfg_validation {
    char name[CFG_NAME_MAX + 1]; /* [a-z0-9_]{1,32} */
    char *field;                 /* non-empty */
    char *url;                   /* http:// or https://, query string kept */
    long timeout_ms;             /* 1..600000, default 1000 */
} cfg_validation;

typedef struct cfg {
    char *listen_host; /* "127.0.0.1", "0.0.0.0", "::1" (brackets stripped) */
    int listen_port;   /* 0..65535; 0 picks a free port */
    long deadline_ms;  /* 1..600000, default 2000 */
    long max_body_bytes;          /* 1..16777216, default 65536 */
    long max_inflight;            /* 1..1000000, default 10000 */
    long max_upstream_body_bytes; /* 1024..67108864, default 1048576 */
    size_t nvalidations;          /* 1..32 */
    cfg_validation validations[CFG_MAX_VALIDATIONS];
} cfg;

/* Looks up an environment variable; getenv in production, a table in tests. NULL when unset. */
typedef const char *(*cfg_getenv_fn)(const char *name);

/* The built-in default, equal to config/checkoutd.json. */
const char *cfg_default_json(void);

/* Parses json_text (source names it in messages, e.g. the file path), applies the environment
 * through getenv_fn (NULL: no overrides), validates. 0 on success; -1 with a one-line reason in err. */
int cfg_load_string(cfg *out, const char *json_text, const char *source, cfg_getenv_fn getenv_fn,
                    char *err, size_t errlen);

/* Reads path and calls cfg_load_string. path NULL: the built-in default. */
int cfg_load_file(cfg *out, const char *path, cfg_getenv_fn getenv_fn, char *err, size_t errlen);

void cfg_free(cfg *c);

#endif
