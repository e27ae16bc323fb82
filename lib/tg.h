/* tg — task groups of concurrent HTTP POSTs over one libcurl multi loop (structured concurrency).
 *
 * A tg_loop owns a CURLM handle and the thread that drives it. A tg_group is N calls submitted
 * together: the loop starts them all at once and finishes the group exactly once, calling its done
 * callback on the loop thread, when
 *   - every call succeeded (2xx with a JSON object body), or
 *   - a call failed: every call still running is removed from the multi handle (its transfer is
 *     aborted and its connection closed) and marked TG_CANCELLED; the callback fires at once,
 * without waiting for them. Failures observed in the same turn of the loop are all reported, in
 * order, or
 *   - the group's deadline passed: every call still running fails with kind TG_TIMEOUT.
 * A call with a policy (tg_call_policy) may take several attempts: a failed attempt that its
 * retry policy retries is not a failure of the group; it waits its backoff on the loop's timer
 * heap (no thread sleeps) and goes again, but only when a whole per-try window still fits before
 * the call's timeout and the group's deadline. A hedge is a second identical request after
 * hedge_after_ms; the first success or rejection of the two decides, the other is aborted. A
 * breaker that refuses fails the call at once as TG_CIRCUIT_OPEN. Only a call's final failure
 * fails the group; a call waiting to retry or hedging is cancelled like any other.
 * Connections to upstreams stay alive in the multi handle's cache and are reused across groups.
 *
 * Ownership: the caller fills a group (tg_group_new, tg_call_set), submits it and must not touch it
 * until done runs; from done on, the group is the caller's again and tg_group_free releases it
 * (calling it inside done is fine and keeps allocation and free on the loop thread).
 * Threads: tg_submit, tg_loop_wakeup and tg_loop_stop are safe from any thread; everything else
 * runs on one thread at a time. tg_loop_run_once lets a test drive the loop by hand instead of
 * tg_loop_start. */
#ifndef CHECKOUTD_TG_H
#define CHECKOUTD_TG_H

#include "breaker.h"
#include "dns.h"
#include "retry.h"

#include <jansson.h>
#include <stddef.h>

#define TG_MAX_CALLS 64 /* calls in one group */

typedef struct tg_loop tg_loop;
typedef struct tg_group tg_group;

typedef enum tg_state {
    TG_PENDING = 0, /* not finished (only seen before done) */
    TG_OK,          /* 2xx with a JSON object: result.body holds it */
    TG_FAILED,      /* see result.kind */
    TG_CANCELLED,   /* aborted because another call of the group failed */
} tg_state;

typedef enum tg_kind {
    TG_KIND_NONE = 0,
    TG_REJECTED,         /* 4xx */
    TG_UPSTREAM_ERROR,   /* 5xx */
    TG_INVALID_RESPONSE, /* 2xx without a JSON object, 1xx/3xx, body too large, garbage */
    TG_TRANSPORT,        /* refused, reset, unresolvable, cut off */
    TG_TIMEOUT,          /* the call's timeout or the group's deadline passed */
    TG_CIRCUIT_OPEN,     /* the call's breaker refused it: no request was sent */
} tg_kind;

#define TG_MAX_REQUESTS 10 /* 5 attempts, each with its hedge */

typedef struct tg_result {
    tg_state state;
    tg_kind kind;
    long http_status; /* the upstream's status, 0 when no HTTP answer came */
    json_t *body;     /* the upstream body parsed as JSON (any value), else NULL; owned by group */
    const char *raw;  /* the body's bytes as they came when body is set, else NULL; owned by */
    size_t raw_len;   /* the group, so that an answer can carry them unchanged */
    /* a short sentence for failures of kind transport, timeout or invalid_response */
    char message[160];
    double elapsed_ms; /* from the call's start to its end (0 for cancelled calls) */
    unsigned fail_seq; /* 1, 2, ...: the order in which the group's failures were observed */
    /* v1.2 attempts. The answer fields above are the last attempt's. */
    unsigned attempts;    /* requests sent upstream, retries and hedges included; 0: none */
    unsigned retries;     /* attempts after the first */
    unsigned hedges_won;  /* hedges sent that decided the attempt */
    unsigned hedges_lost; /* hedges sent whose first request decided it */
    /* the outcomes (tg_kind, TG_KIND_NONE for ok) of the requests that ended before the final one
     * (failed attempts, a failed half of a hedged pair), for metrics; aborted ones are not here */
    unsigned char nearlier;
    unsigned char earlier[TG_MAX_REQUESTS];
    /* v1.2 compensation: 1 when one of the call's requests may have reached its upstream (see
     * tgi_xfer_detach for how libcurl tells); kept through retries and a cancel. */
    unsigned char sent;
} tg_result;

/* One transfer of a call, kept only for a traced group (tg_group_trace): when it started and
 * libcurl's view of it. Each request of a call is one, retries and hedges included (a hedge
 * pair's loser as TG_CANCELLED); at most TG_MAX_ATTEMPTS are kept per call. */
#define TG_MAX_ATTEMPTS 8
typedef struct tg_attempt {
    double start_ms; /* after the group's start (the checkout's fan-out) */
    /* libcurl's CURLINFO_{NAMELOOKUP,CONNECT,APPCONNECT,STARTTRANSFER,TOTAL}_TIME_T in ms, each
     * from the attempt's start to the end of that phase (so cumulative); 0 for a phase that did
     * not happen (no TLS, a reused connection, cancelled before the first byte) */
    double dns_ms, connect_ms, tls_ms, first_byte_ms, total_ms;
    int reused;       /* the request went out on a cached connection */
    long http_status; /* 0: no HTTP answer */
    tg_state state;   /* TG_OK, TG_FAILED (see kind) or TG_CANCELLED */
    tg_kind kind;
} tg_attempt;

/* What a call may do beyond one request (contract v1.2, "Resilience"). Owned by the caller and
 * read by the loop thread while groups run: it must outlive every group that uses it. */
typedef struct tg_policy {
    retry_policy retry;  /* attempts 1: no retry; per_try_ms bounds each attempt */
    breaker *breaker;    /* NULL: none; shared by every loop (lib/breaker is thread-safe) */
    long hedge_after_ms; /* 0: no hedge */
} tg_policy;

typedef void (*tg_done_fn)(tg_group *g, void *user);

typedef struct tg_loop_options {
    long max_body_bytes;  /* an upstream body larger than this fails as TG_INVALID_RESPONSE */
    long max_connections; /* connection cache size (CURLMOPT_MAXCONNECTS); 0: libcurl's default */
    /* v1.3 "Names": the process's resolver. Every URL whose host is a name connects to the
     * addresses it published (CURLOPT_CONNECT_TO, spread over them in turn, a refused one moving
     * on to the next within the request), so libcurl never resolves a name on the loop's thread;
     * a name not resolved yet fails its call at once (transport, "<host>: not resolved yet",
     * attempts 0, nothing sent). A name the resolver does not know yet is added to it. NULL:
     * libcurl resolves names itself (tests of tg alone). Must outlive the loop. */
    dns *names;
} tg_loop_options;

/* Creates a loop (not yet running). NULL on failure. Calls curl_global_init once per process. */
tg_loop *tg_loop_new(const tg_loop_options *opts);

/* Another event source served by the loop's own thread, so that one thread per core can run both
 * an HTTP server and the upstream calls (no hand-off between threads per checkout). Each turn
 * calls run(arg) first — it may submit groups, which then start in the same turn without a wake-up
 * — and the loop's wait also ends when fd is readable or after timeout_ms(arg) ms (< 0: no limit
 * of its own). */
typedef struct tg_hook {
    int fd;
    void (*run)(void *arg);
    long (*timeout_ms)(void *arg);
    void *arg;
} tg_hook;
/* Sets the hook (copied) of a loop that has not started. */
void tg_loop_set_hook(tg_loop *loop, const tg_hook *hook);
/* Makes the loop's current or next wait return at once (thread-safe): the hook runs soon. */
void tg_loop_wakeup(tg_loop *loop);
/* Starts the loop's own thread. 0 or a negative errno. */
int tg_loop_start(tg_loop *loop);
/* Stops and joins the loop thread; groups still running finish with their calls cancelled (their
 * done runs on the calling thread). Safe to call twice. */
void tg_loop_stop(tg_loop *loop);
/* Stops if needed, then frees. */
void tg_loop_free(tg_loop *loop);
/* One turn by hand (no thread started): take submitted groups, wait up to max_wait_ms for I/O,
 * progress transfers, finish groups. Returns the number of groups still running. */
int tg_loop_run_once(tg_loop *loop, int max_wait_ms);

/* A group of ncalls (1..TG_MAX_CALLS) with a deadline in ms from its submission. NULL on failure.
 */
tg_group *tg_group_new(size_t ncalls, long deadline_ms, tg_done_fn done, void *user);
/* Sets call i: POST body (the group takes ownership of body: malloc'd, freed with the group) to
 * url with headers (NULL-terminated "Name: value" strings, copied) and a timeout. 0 or -ENOMEM. */
int tg_call_set(tg_group *g, size_t i, const char *url, char *body, size_t body_len,
                const char *const headers[], long timeout_ms);
/* The TLS files of call i's https:// transfer (lib/tg_tls.h); a NULL member keeps libcurl's
 * default (the system CAs, no client certificate). The strings are not copied: they must outlive
 * the group (checkoutd's live in its cfg). Certificates are always verified; a TLS failure is
 * TG_TRANSPORT, its message "failed TLS certificate verification: <libcurl's reason>" or "failed
 * the TLS handshake: <reason>". A call never given one uses no TLS files. */
typedef struct tg_tls {
    const char *ca_file;   /* replaces the system CAs */
    const char *cert_file; /* client certificate (PEM), with key_file */
    const char *key_file;
} tg_tls;
void tg_call_tls(tg_group *g, size_t i, const tg_tls *tls);
/* Gives call i a policy (retries, breaker, hedge); p NULL or never set: one request, as v1.1.
 * Every request carries X-Checkout-Attempt and X-Checkout-Timeout-Ms either way. */
void tg_call_policy(tg_group *g, size_t i, const tg_policy *p);
/* Records call i's outcome as the loop does when its transfer ends, by the contract's table:
 * curl_code (a CURLcode; 0 when a whole HTTP answer came), the HTTP status (0: none), the body
 * bytes, whether the body passed the size limit, and libcurl's message (NULL: its generic one).
 * The loop uses it; it is public so that fuzzers and tests can feed answers without a network. */
void tg_call_record(tg_group *g, size_t i, int curl_code, long http_status, const char *body,
                    size_t len, int too_big, const char *curl_error);
/* Hands the group to the loop; the loop wakes and starts every call. 0 or -ESHUTDOWN. */
int tg_submit(tg_loop *loop, tg_group *g);
void tg_group_free(tg_group *g);
/* Before tg_submit: keep a tg_attempt for each transfer of the group's calls (a few libcurl
 * getinfo reads per transfer). Untraced groups pay nothing. 0 or -ENOMEM. */
int tg_group_trace(tg_group *g);
/* The attempts of call i of a traced group, in the order they started; 0 (and *out NULL) for an
 * untraced group. */
size_t tg_call_attempts(const tg_group *g, size_t i, const tg_attempt **out);

size_t tg_group_size(const tg_group *g);
const tg_result *tg_group_result(const tg_group *g, size_t i);
/* Number of failed calls (0 means the group succeeded). */
size_t tg_group_failures(const tg_group *g);
/* Milliseconds from submission to finish. */
double tg_group_elapsed_ms(const tg_group *g);
void *tg_group_user(const tg_group *g);

const char *tg_kind_name(tg_kind kind);

/* ---- work that outlives a group (v1.2 compensation) -------------------------------------------
 * A compensation runs after its checkout's group has answered: a group of one call per request,
 * with waits between them. These two are all it needs from tg; loop thread only. */

/* Call i's first request says X-Checkout-Attempt: n + 1: n requests of the same logical call
 * were sent before, by other groups. */
void tg_call_attempts_before(tg_group *g, size_t i, unsigned n);

/* fn(arg, 0) on the loop thread after ms; fn(arg, 1) instead when the loop stops first (then at
 * its stop, on the stopping thread). One small allocation, freed before fn runs. Loop thread only
 * (a done callback, another alarm). 0, -ENOMEM, or -ESHUTDOWN when the loop is stopping. */
typedef void (*tg_alarm_fn)(void *arg, int stopped);
int tg_alarm(tg_loop *loop, long ms, tg_alarm_fn fn,
             void *arg); /* "rejected", "timeout", ... ; "ok" for TG_KIND_NONE */

#endif
