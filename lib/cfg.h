/* cfg — checkoutd's configuration: parsed from JSON with jansson, overridden by CHECKOUTD_*
 * environment variables, and validated against the ranges of the contract
 * (shared/checkout-api.md, "Config").
 *
 * Order: built-in defaults < the JSON text < the environment. Every error names the key it is about
 * (e.g. "validations[1].url: expected an http:// or https:// URL") in one line, written into err.
 * A cfg owns all its strings; cfg_free releases them. Not thread-safe while loading; read-only
 * after.
 *
 * Keys. A top-level key missing from the text takes its default (validations missing: the three
 * defaults); a validation without timeout_ms gets 1000; its name, field and url are required. An
 * unknown key (top level or in a validation) is refused, and so is a key given twice. Numbers must
 * be JSON integers (2000.0, "2000" and true are refused).
 * listen is "host:port" with a port in 0..65535 and a non-empty host, a name or an address: IPv6 in
 * brackets ("[::1]:8080"), all interfaces as "0.0.0.0:PORT" or "[::]:PORT".
 * A url is "http://" or "https://" (lower case), [userinfo@]host, an optional port 1..65535, then
 * any path, query and fragment, kept as written; no blank or control character anywhere.
 *
 * Environment: read only through the cfg_getenv_fn given (NULL: none), and applied to the parsed
 * text before any check, so that the same checks apply to it.
 *   CHECKOUTD_LISTEN                   listen
 *   CHECKOUTD_DEADLINE_MS              deadline_ms
 *   CHECKOUTD_MAX_BODY_BYTES           max_body_bytes
 *   CHECKOUTD_MAX_INFLIGHT             max_inflight
 *   CHECKOUTD_MAX_UPSTREAM_BODY_BYTES  max_upstream_body_bytes
 *   CHECKOUTD_HEADER_TIMEOUT_MS        header_timeout_ms       (v1.2, absent from default_json)
 *   CHECKOUTD_IDLE_TIMEOUT_MS          idle_timeout_ms         (v1.2, absent from default_json)
 *   CHECKOUTD_MAX_CONNECTIONS_PER_IP   max_connections_per_ip  (absent from default_json)
 *   CHECKOUTD_REQUEST_TIMEOUT_MS       request_timeout_ms      (v1.3, absent from default_json)
 *   CHECKOUTD_TRACE                    trace (true, false, 1 or 0)
 *   CHECKOUTD_VALIDATIONS              the whole list: a JSON array in the form of the file's
 *                                      "validations"; it replaces the file's (or default) list
 *   CHECKOUTD_<NAME>_URL               url         of the validation called <name>, upper-cased
 *   CHECKOUTD_<NAME>_TIMEOUT_MS        timeout_ms  (payment: CHECKOUTD_PAYMENT_URL, ...)
 *   CHECKOUTD_<NAME>_FIELD             field
 * The per-validation variables apply after CHECKOUTD_VALIDATIONS, to the list then in force, and
 * may supply a key an entry lacks; a variable for a name that is not in the list is ignored
 * (variables are looked up by name, never listed). Numbers are strict: the whole value is one
 * decimal integer that fits a long (a leading "-" allowed; no "+", blank, hex, fraction or junk).
 * A variable set to "" is a value, not "unset": it is refused for every key.
 *
 * Messages are "<source>: <key>: <reason>", indexes counting from 0, for example
 *   config/x.json: validations[2].name: duplicate name "payment" (first at index 0)
 *   config/x.json: unknown key "foo" (expected one of listen, ...)
 *   config/x.json: invalid JSON at line 3, column 5: <jansson's reason>
 * A value that came from a variable is named by the variable alone, without the source (the file
 * is not where it is wrong):
 *   CHECKOUTD_DEADLINE_MS: expected an integer in 1..600000, got "abc"
 *   CHECKOUTD_VALIDATIONS[0].url: expected an http:// or https:// URL, got "ftp://x"
 * Values shown are quoted, escaped and cut, so that a message is always one line; the whole
 * message is cut to errlen.
 *
 * v1.2 per-validation keys (lib/cfg_upstream.c):
 *   headers  {"Name": "value", ...}: at most 32, names HTTP tokens (RFC 9110), unique ignoring
 *            case, none of the names the service sets itself (Host, Content-Type,
 *            Content-Length, Transfer-Encoding, Connection, Expect, X-Request-Id,
 *            Idempotency-Key, traceparent, X-Checkout-Attempt, X-Checkout-Timeout-Ms, any
 *            case). In a value every "${NAME}" (NAME in [A-Z0-9_]+) is replaced by that
 *            variable, read through getenv_fn at load; "${" always starts a reference (no
 *            escape). After expansion a value is printable ASCII (0x20..0x7e: no CR, LF, tab or
 *            control character) and names plus values take at most 8192 bytes. Values are
 *            secrets: no message shows one, expanded or not (messages name the header and the
 *            variable), e.g.
 *              x.json: validations[2].headers.Authorization: environment variable
 *              PAYMENT_API_TOKEN is not set
 *   tls      {"ca_file": P, "cert_file": P, "key_file": P}, each optional, a non-empty path to
 *            a regular file (or a link to one) that can be opened for reading at load
 * ("...tls.ca_file: cannot read "/x.pem": No such file or directory"); cert_file and key_file both
 * or neither; refused when the url is http://. The contents are checked by the TLS library at the
 * first connection (a bad file is then a transport error of that validation).
 */
#ifndef CHECKOUTD_CFG_H
#define CHECKOUTD_CFG_H

#include "retry.h"

#include <stddef.h>

#define CFG_MAX_VALIDATIONS 32
#define CFG_NAME_MAX        32

#define CFG_MAX_HEADERS   32   /* headers of one validation */
#define CFG_HEADERS_BYTES 8192 /* their names and (expanded) values, in all */

/* One configured upstream header (lib/cfg_upstream.c). line is a secret (it holds the value):
 * it goes into upstream requests and nowhere else — no log, message, metric or status page. */
typedef struct cfg_header {
    char *name; /* an HTTP token, as written: safe to show */
    char *line; /* "Name: value" as libcurl sends it ("Name;" for an empty value) */
} cfg_header;

/* The TLS files of an https:// validation; NULL when not given. */
typedef struct cfg_tls {
    char *ca_file;   /* PEM bundle that replaces the system CAs */
    char *cert_file; /* client certificate; set exactly when key_file is */
    char *key_file;
} cfg_tls;

/* compensate (v1.2, "Compensation"): the undo step of a validation that may have taken effect in a
 * checkout that failed. url NULL: none configured. */
typedef struct cfg_compensate {
    char *url;           /* same scheme as the validation's url */
    long timeout_ms;     /* 1..600000 [1000], per undo request */
    long attempts;       /* 1..20 [5] undo requests at most */
    long backoff_ms;     /* 1..60000 [200] */
    long max_backoff_ms; /* backoff_ms..600000 [max(5000, backoff_ms)] */
} cfg_compensate;

typedef struct cfg_validation {
    char name[CFG_NAME_MAX + 1]; /* [a-z0-9_]{1,32} */
    char *field;                 /* non-empty */
    char *url;                   /* http:// or https://, query string kept */
    long timeout_ms;             /* 1..600000, default 1000 */
    /* v1.2 "headers": 0..CFG_MAX_HEADERS extra request headers, ${NAME} expanded at load */
    size_t nheaders;
    cfg_header *headers;
    cfg_tls tls; /* v1.2 "tls": only on an https:// url */
    /* v1.2 resilience (lib/cfg_policy.c; contract "Resilience"). Absent keys give the defaults:
     * no retry (attempts 1, per_try_ms = timeout_ms), no breaker, no hedge. */
    int idempotent;        /* "idempotent" [false]: needed by hedge */
    retry_policy retry;    /* "retry": attempts 1..5 [1], per_try_timeout_ms 1..timeout_ms
                            * [timeout_ms / attempts], backoff_ms 0..10000 [25], max_backoff_ms
                            * backoff_ms..60000 [max(250, backoff_ms)], on [transport,
                            * upstream_error] ("rejected" refused) */
    long breaker_failures; /* "breaker.consecutive_failures" 1..1000 (required); 0: no breaker */
    long breaker_open_ms;  /* "breaker.open_ms" 100..600000 [5000] */
    long hedge_after_ms;   /* "hedge.after_ms" 1..600000 (required); 0: no hedge */
    cfg_compensate compensate; /* compensate.url NULL: no undo step */
} cfg_validation;

/* idempotency (contract "Idempotency-Key"), all optional:
 *   store       "memory" | "redis" | "off"         [memory]   CHECKOUTD_IDEMPOTENCY_STORE
 *   redis_url   "redis://HOST:PORT[/DB]"            required for redis
 * CHECKOUTD_IDEMPOTENCY_REDIS_URL (HOST a name or an address, IPv6 in brackets; PORT 1..65535; DB
 * 0..15) ttl_s       1..604800 [86400]: how long a stored answer is replayed
 * CHECKOUTD_IDEMPOTENCY_TTL_S max_keys    1..10000000 [100000] (memory)
 * CHECKOUTD_IDEMPOTENCY_MAX_KEYS timeout_ms  1..10000 [200] (redis: the most one store operation
 * may take) CHECKOUTD_IDEMPOTENCY_TIMEOUT_MS A redis_url given with another store is checked but
 * unused. */
typedef enum cfg_idem_store { CFG_IDEM_MEMORY = 0, CFG_IDEM_REDIS, CFG_IDEM_OFF } cfg_idem_store;

typedef struct cfg_idempotency {
    cfg_idem_store store;
    char *redis_url;  /* as written, NULL when absent */
    char *redis_host; /* from redis_url, brackets stripped */
    int redis_port;
    int redis_db;
    long ttl_s;
    long max_keys;
    long timeout_ms;
} cfg_idempotency;

/* v1.3 top-level "tls" of listen (lib/cfg_edge.c); cert_file NULL: listen speaks plain HTTP. */
typedef struct cfg_listen_tls {
    char *cert_file;      /* PEM certificate (chain), checked not expired at load */
    char *key_file;       /* its PEM private key */
    char *client_ca_file; /* NULL, or PEM CAs a client certificate must be signed by (mTLS) */
} cfg_listen_tls;
/* journal (v1.3, "Durable compensation"; lib/cfg_journal.c), all optional:
 *   store  "file" | "off"  ["file" when some validation has compensate]  CHECKOUTD_JOURNAL_STORE
 *   path   the SQLite file [/var/lib/checkoutd/journal.db]               CHECKOUTD_JOURNAL_PATH
 * on is 1 when checkouts journal: store "file" and some validation has compensate. The path is
 * checked at load without being taken: the file, or its nearest existing directory, must be
 * writable (lib/jr creates the missing directories at start). */
typedef struct cfg_journal {
    int on;
    int off_given; /* "off" was asked for while some validation has compensate: warn at start */
    char *path;
} cfg_journal;

typedef struct cfg {
    char *listen_host;            /* "127.0.0.1", "0.0.0.0", "::1" (brackets stripped) */
    int listen_port;              /* 0..65535; 0 picks a free port */
    long deadline_ms;             /* 1..600000, default 2000 */
    long max_body_bytes;          /* 1..16777216, default 65536 */
    long max_inflight;            /* 1..1000000, default 10000 */
    long max_upstream_body_bytes; /* 1024..67108864, default 1048576 */
    /* v1.2 "Slow clients": a request header must be complete within header_timeout_ms of the
     * connection's opening (or of a kept-alive connection's next request); a kept-alive connection
     * silent for idle_timeout_ms after an answer is closed. */
    long header_timeout_ms; /* 100..600000, default 10000 */
    long idle_timeout_ms;   /* 1000..3600000, default 30000 */
    /* Open connections one client address may hold (0: no cap). */
    long max_connections_per_ip; /* 0..16384, default 0 */
    /* v1.3: a request's header and body must both have arrived within request_timeout_ms of its
     * first byte (a trickled body does not extend it), else 408 or a close. */
    long request_timeout_ms; /* 100..600000, default 30000 */
    /* v1.3 admin_listen "HOST:PORT" (CHECKOUTD_ADMIN_LISTEN; lib/cfg_edge.c): /metrics, /status,
     * /status.json only there. admin_host NULL: unset (they answer on listen). */
    char *admin_host;
    int admin_port;
    cfg_listen_tls
        listen_tls;      /* v1.3 "tls" (CHECKOUTD_TLS_CERT_FILE, _KEY_FILE, _CLIENT_CA_FILE) */
    size_t nvalidations; /* 1..32 */
    cfg_validation validations[CFG_MAX_VALIDATIONS];
    cfg_idempotency idempotency; /* lib/cfg_idem.c */
    /* v1.2 "trace": a JSON boolean, default false (CHECKOUTD_TRACE: "true"/"false"/"1"/"0").
     * When true, a client that sends X-Checkout-Trace: 1 gets per-attempt upstream timings in a
     * "trace" member of its answer (docs/operations.md, "Tracing one checkout"). Off by default:
     * internal services' timings are not for the public. */
    int trace;
    cfg_journal journal; /* lib/cfg_journal.c */
} cfg;

/* Looks up an environment variable; getenv in production, a table in tests. NULL when unset. */
typedef const char *(*cfg_getenv_fn)(const char *name);

/* The built-in default, equal to config/checkoutd.json. */
const char *cfg_default_json(void);

/* Parses json_text (source names it in messages, e.g. the file path; NULL: no prefix), applies the
 * environment through getenv_fn (NULL: no overrides), validates. 0 on success; -1 with a one-line
 * reason in err (err NULL or errlen 0: no message).
 * *out is overwritten, not freed: pass a new cfg, or one already given to cfg_free. On failure *out
 * is all zero, so cfg_free on it is a harmless no-op; nothing is leaked on any path. */
int cfg_load_string(cfg *out, const char *json_text, const char *source, cfg_getenv_fn getenv_fn,
                    char *err, size_t errlen);

/* Reads path and calls cfg_load_string with path as the source. path NULL: the built-in default
 * (with the environment still applied). A file that cannot be read, is larger than 1 MiB or holds a
 * NUL byte is refused ("<path>: cannot open: No such file or directory"). *out as for
 * cfg_load_string. */
int cfg_load_file(cfg *out, const char *path, cfg_getenv_fn getenv_fn, char *err, size_t errlen);

/* url with its userinfo (user:password@) replaced by "***@", for logs: http:// + *** + @h/x. A URL
 * without userinfo is copied as it is; out is cut to cap (always NUL-terminated when cap > 0). */
void cfg_url_redact(const char *url, char *out, size_t cap);

/* Releases what c owns and zeroes it; safe on a zeroed cfg, twice in a row, and on NULL. */
void cfg_free(cfg *c);

#endif
