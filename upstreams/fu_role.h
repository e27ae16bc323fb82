/* fu_role — one fake upstream role (address, inventory or payment) served by its own libmicrohttpd
 * daemon (one internal epoll thread), answering by fu_rules after latency + jitter (+ slow) ms.
 *
 * Delayed answers are held in the shared fu_timer (suspended connection, no thread per request).
 * Besides the role itself, any port answers:
 *   GET /_fake/stats -> 200 {"role":R,"requests":N,"answered":N,"closed_early":N,"pending":N}
 *   GET /_fake/last  -> 200 {"path":P,"query":Q|null,"headers":{lower-case name: value},
 *                            "body":<last POST body as JSON, null if it was not JSON>}
 *                       404 {"error":"not_found",...} before the first POST.
 *                       With https, "tls": {"client_cert": true|false} tells whether the client
 *                       presented a (verified) certificate.
 * requests counts every request to a role path (not /_fake/...); answered those given an answer;
 * closed_early those whose client hung up while held; pending those held now. */
#ifndef FU_ROLE_H
#define FU_ROLE_H

#include <stdint.h>

#include "fu_rules.h"
#include "fu_status.h"
#include "fu_timer.h"

typedef struct fu_role_opts {
    const char *host;         /* numeric IPv4 or IPv6 address to listen on */
    uint16_t port;            /* 0: a free port (see fu_role_port) */
    unsigned long latency_ms; /* base delay of every role answer */
    unsigned long jitter_ms;  /* plus uniform random 0..jitter_ms */
    unsigned long slow_ms;    /* plus this for payment token tok_slow */
    unsigned long max_body;   /* larger POST bodies get 413 */
    /* https (libmicrohttpd with GnuTLS): PEM texts, not paths; NULL cert: plain http. */
    const char *tls_cert; /* server certificate (chain), with tls_key */
    const char *tls_key;
    const char *tls_trust; /* CA of client certificates: then a client certificate signed by it
                            * is required in the TLS handshake (no certificate: the handshake
                            * fails, the client sees a TLS error, not an HTTP answer) */
} fu_role_opts;

typedef struct fu_role fu_role;

/* Starts listening and serving. timer must outlive the role. *out is NULL on failure (FU_EINVAL:
 * host is not a numeric address; FU_ELISTEN: the daemon could not start, e.g. port in use). */
fu_status fu_role_start(fu_role **out, fu_rules_role role, const fu_role_opts *opts,
                        fu_timer *timer);

/* The bound port (the real one when 0 was asked). */
uint16_t fu_role_port(const fu_role *r);

/* "address", "inventory" or "payment". */
const char *fu_role_name(const fu_role *r);

/* Requests begun and not yet completed (answer not fully sent, or body still arriving). Used at
 * shutdown to let the answers released by fu_timer_stop reach their clients. O(1). */
long fu_role_unfinished(const fu_role *r);

/* Stops the daemon (closes every connection). Call only after fu_timer_stop, so no connection is
 * suspended. Idempotent. */
void fu_role_stop(fu_role *r);

/* Stops (if needed) and frees. NULL is ignored. */
void fu_role_destroy(fu_role *r);

#endif
