/* cfg_internal — what lib/cfg.c shares with the parsers of the nested v1.2 blocks (lib/cfg_*.c).
 *
 * Not part of cfg's public contract: only lib/cfg*.c include it. A block parser gets the loader
 * (for messages and the environment), checks its value with the same helpers as the flat keys, and
 * fills its part of the cfg; its messages have the same "<source>: <key>: <reason>" form.
 *
 * Adding a block: write its load (and free, if it owns memory) in its own lib/cfg_<area>.c, and add
 * one line to the table in lib/cfg_blocks.c. The key is then accepted where the table says (in a
 * validation, or at the top level), named in "unknown key" messages, and loaded after the flat keys
 * of its object, so that load may read them (out->url, c->deadline_ms, ...). */
#ifndef CHECKOUTD_CFG_INTERNAL_H
#define CHECKOUTD_CFG_INTERNAL_H

#include "cfg.h"

#include <jansson.h>
#include <stddef.h>

#define CFG_KEY_MAX  96 /* "CHECKOUTD_VALIDATIONS[31].retry.per_try_timeout_ms" fits */
#define CFG_SHOW_MAX 72 /* a value shown after "got", quotes and "..." included */

typedef struct loader cfg_loader;

/* Where a value came from, for the start of a message: "<source>: <key>: ". source is NULL for a
 * value from the environment (key is then the variable); key is "" for the text as a whole. */
typedef struct cfg_where {
    const char *source;
    char key[CFG_KEY_MAX];
} cfg_where;

typedef int (*cfg_string_check)(const char *s);

/* Writes "<source>: <key>: <reason>" into the loader's err; returns -1 ("return cfg_errf(...)"). */
int cfg_errf(const cfg_loader *ld, const cfg_where *w, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* s quoted, escaped and cut into buf; a JSON value as shown after "got". */
void cfg_show_string(const char *s, char buf[CFG_SHOW_MAX]);
void cfg_show_json(const json_t *v, char buf[CFG_SHOW_MAX]);
/* An integer in min..max into *out, else -1 after "expected an integer in min..max, got ...". */
int cfg_get_int(const cfg_loader *ld, const cfg_where *w, const json_t *v, long min, long max,
                long *out);
/* The string v when check passes; NULL after "missing, expected <what>" or "expected <what>, got".
 */
const char *cfg_get_string(const cfg_loader *ld, const cfg_where *w, const json_t *v,
                           const char *what, cfg_string_check check);
/* strdup, or NULL after "out of memory". */
char *cfg_dup(const cfg_loader *ld, const cfg_where *w, const char *s);
/* Refuses a key of obj that is not one of the n names of list; expected lists them for people. */
int cfg_check_keys(const cfg_loader *ld, const cfg_where *w, const json_t *obj,
                   const char *const *list, size_t n, const char *expected);
/* path opens for reading and is a regular file (or a link to one); *err: an errno, or 0 for "not a
 * regular file" (lib/cfg_upstream.c). */
int cfg_file_readable(const char *path, int *err);
/* An environment variable through the loader's getenv (NULL: unset or no environment). */
const char *cfg_env(const cfg_loader *ld, const char *name);
/* The longest host name DNS allows; also bounds an IPv6 literal with its zone. */
#define CFG_HOST_MAX 253
/* [a-z0-9_]{1,32}; a non-empty string. */
int cfg_name_ok(const char *s);
int cfg_nonempty_ok(const char *s);
/* "host:port" with a port in 0..65535 (0: any free port); IPv6 as "[::1]:8080", brackets go. */
int cfg_parse_listen(const char *s, char host[CFG_HOST_MAX + 1], int *port);
/* Strict decimal integer (a leading '-' allowed; no '+', blank, hex or junk): 0 or -1. */
int cfg_parse_long(const char *s, long *out);
/* The contract's URL syntax (http:// or https://, host, port, no blank or control character). */
int cfg_url_ok(const char *u);
/* The key label of key (may be dotted: "retry.attempts") of validation i: "validations[i].key", or
 * "CHECKOUTD_VALIDATIONS[i].key" when the list came from that variable. */
void cfg_val_where(const cfg_loader *ld, size_t i, const char *key, cfg_where *w);
/* The key label of a top-level key (may be dotted: "idempotency.store"). */
void cfg_top_where(const cfg_loader *ld, const char *key, cfg_where *w);
/* The key label of key inside the top-level block (block "dns", key "refresh_ms"): env_used, the
 * variable, when the value came from one, else "block.key" in the config file. */
void cfg_block_where(const cfg_loader *ld, const char *block, const char *key, const char *env_used,
                     cfg_where *w);

/* A nested key of a validation. load runs for every validation, value NULL when the key is absent
 * (set the defaults then); entry is the whole validation object (its other keys). 0 or -1 after a
 * message. free releases what load allocated (may run on a partly loaded or zeroed validation). */
typedef struct cfg_val_block {
    const char *key;
    int (*load)(const cfg_loader *ld, size_t i, const json_t *entry, const json_t *value,
                cfg_validation *out);
    void (*free)(cfg_validation *out);
} cfg_val_block;

/* A top-level key with its own parser (an object such as "idempotency", or a value of a kind the
 * flat table has not). load runs after the flat keys and the validations, value NULL when absent.
 */
typedef struct cfg_top_block {
    const char *key;
    int (*load)(const cfg_loader *ld, const json_t *value, cfg *out);
    void (*free)(cfg *out);
} cfg_top_block;

/* lib/cfg_upstream.c: "headers" and "tls" of a validation (cfg_val_block load and free). */
int cfg_headers_load(const cfg_loader *ld, size_t i, const json_t *entry, const json_t *value,
                     cfg_validation *out);
void cfg_headers_free(cfg_validation *out);
int cfg_tls_load(const cfg_loader *ld, size_t i, const json_t *entry, const json_t *value,
                 cfg_validation *out);
void cfg_tls_free(cfg_validation *out);
/* lib/cfg_policy.c: idempotent, retry, breaker, hedge (in this order: hedge needs idempotent). */
int cfg_policy_idempotent(const cfg_loader *ld, size_t i, const json_t *entry, const json_t *value,
                          cfg_validation *out);
int cfg_policy_retry(const cfg_loader *ld, size_t i, const json_t *entry, const json_t *value,
                     cfg_validation *out);
int cfg_policy_breaker(const cfg_loader *ld, size_t i, const json_t *entry, const json_t *value,
                       cfg_validation *out);
int cfg_policy_hedge(const cfg_loader *ld, size_t i, const json_t *entry, const json_t *value,
                     cfg_validation *out);
/* The blocks' parsers, each in its own lib/cfg_<area>.c. */
int cfg_comp_load(const cfg_loader *ld, size_t i, const json_t *entry, const json_t *value,
                  cfg_validation *out); /* cfg_comp.c: "compensate" */
void cfg_comp_free(cfg_validation *out);

/* The parsers of the blocks (one lib/cfg_<area>.c each). */
int cfg_idem_load(const cfg_loader *ld, const json_t *value, cfg *out);
void cfg_idem_free(cfg *out);
int cfg_journal_load(const cfg_loader *ld, const json_t *value, cfg *out); /* cfg_journal.c */
void cfg_journal_free(cfg *out);

/* lib/cfg_dns.c: the top-level "dns" block. */
int cfg_dns_load(const cfg_loader *ld, const json_t *value, cfg *out);
void cfg_dns_free(cfg *out);

/* The tables (lib/cfg_blocks.c), each ended by an entry whose key is NULL. */
extern const cfg_val_block cfg_val_blocks[];
extern const cfg_top_block cfg_top_blocks[];

#endif
