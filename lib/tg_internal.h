/* tg_internal — what the files of the task-group mechanism share: lib/tg.c (loop, groups,
 * transfers), lib/tg_io.c (the epoll wait, libcurl's socket/timer callbacks), lib/tg_trace.c
 * (traced groups' attempts), lib/tg_timer.c (THE loop timer heap: every timer of the loop,
 * tg_alarm and the public tg_timer included) and lib/tg_attempt.c (the attempts of a call with
 * a policy: retries, hedge, breaker). Not part of tg's public contract (tg.h).
 *
 * A call is a sequence of attempts; an attempt is one transfer (xfer) and, with a hedge, a
 * second identical one beside it (*hedge, allocated when the first hedge is sent, so that a group
 * without hedges does not zero its memory). A call without a policy (tg_call_policy never called)
 * is one attempt of one transfer and never enters tg_attempt.c: the v1.1 path, at its v1.1 cost.
 * Everything here runs on the loop thread only. */
#ifndef CHECKOUTD_TG_INTERNAL_H
#define CHECKOUTD_TG_INTERNAL_H

#include "dns.h"
#include "tg.h"
#include "tg_timer.h"
#include "tg_watch.h"

#include <curl/curl.h>
#include <pthread.h>
#include <stddef.h>
#include <stdatomic.h>
#include <stdint.h>

#define TG_URL_CACHE    64
#define TG_IDLE_HANDLES 1024 /* enough for a few hundred checkouts in flight */
#define TG_EVENTS       256  /* epoll events taken per wait; more simply wait for the next turn */
#define TG_NO_VERDICT   (-1) /* a call holds no breaker admission */

/* epoll_event.data of the loop's own fds; a libcurl socket's is the fd itself (>= 0). */
#define TG_TAG_WAKE  (UINT64_C(1) << 32)
#define TG_TAG_HOOK  (UINT64_C(2) << 32)
#define TG_TAG_WATCH (UINT64_C(3) << 32) /* the epoll fd of tg_watch's set */

typedef struct tg_call tg_call;

/* A host name of this loop's URLs (contract v1.3 "Names"): this loop's copy of the resolver's
 * list, and for each address the CURLOPT_CONNECT_TO entry ("::ADDR:" — any host, any port, to
 * ADDR on the URL's own port) that a transfer is handed, built once per published list. Why
 * CONNECT_TO and not CURLOPT_RESOLVE: libcurl 7.88 (url.c, ConnectionExists) matches a cached
 * connection by the connect-to host under CONNECT_TO but only by the URL's host name under
 * RESOLVE, so with CONNECT_TO a connection to an address that a refresh removed is never picked
 * for a new request: no transfer names that address any more. The other property, moving on to
 * the next address when one refuses, tg makes itself (xfer_failover in tg.c). Host header, SNI
 * and certificate checks keep the URL's name: CONNECT_TO changes only where libcurl connects. */
typedef struct tg_name {
    dns_host *host;  /* NULL: the resolver refused the name (too long, too many): never ready */
    dns_addrs addrs; /* generation 0: not resolved yet */
    unsigned next;   /* the rotation: transfer k starts at address k mod n */
    /* an address that refused a connection is skipped by new requests until then (now_ns clock;
     * cleared with each new list): "localhost" as 127.0.0.1 and ::1 before an upstream that
     * listens on IPv4 only must not cost every other request a refused connect */
    uint64_t down_until[DNS_MAX_ADDRS];
    struct curl_slist connect_to[DNS_MAX_ADDRS]; /* one entry each, next NULL */
    char entry[DNS_MAX_ADDRS][DNS_ADDR_LEN + 8]; /* "::[fd00::7]:" fits */
} tg_name;

/* One HTTP request upstream. */
typedef struct tg_xfer {
    tg_call *call;
    CURL *easy; /* non-NULL while the transfer is in the multi handle */
    char *resp; /* the upstream's body as it arrives; result.raw may point into it */
    size_t resp_len, resp_cap, resp_limit;
    int resp_too_big;
    uint64_t start_ns;
    long timeout_ms; /* CURLOPT_TIMEOUT_MS of this request */
    /* X-Checkout-Attempt and X-Checkout-Timeout-Ms, linked in front of the call's own list:
     * no allocation per request, and the call's list stays shared by its two transfers. */
    struct curl_slist hdr[2];
    char hdr_text[2][32]; /* "X-Checkout-Timeout-Ms: " + 8 digits fit */
    tg_name *name;        /* the URL's host name; NULL: an IP literal (or no resolver) */
    unsigned addr;        /* the index in name->addrs this request connects to */
    unsigned tried;       /* addresses this request tried (a refused one moves on to the next) */
    char curl_error[CURL_ERROR_SIZE]; /* libcurl's detailed reason, e.g. "connection refused" */
} tg_xfer;

struct tg_call {
    tg_group *group;
    struct curl_slist *headers;
    char *url;
    char *body;
    size_t body_len;
    long timeout_ms;
    tg_tls tls;              /* borrowed strings (tg_call_tls) */
    const tg_policy *policy; /* NULL: one attempt, no breaker, no hedge */
    tg_xfer *hedge;          /* the attempt's hedge; NULL until one is sent */
    uint64_t start_ns;       /* the first attempt's start: timeout_ms counts from here */
    uint64_t try_end_ns;     /* the end of the running attempt's window */
    long tries;              /* attempts started */
    int verdict;             /* the breaker's verdict for the running attempt, or TG_NO_VERDICT */
    int hedged;              /* the running attempt sent its hedge */
    tgi_timer timer;         /* the backoff before a retry, or the hedge's after_ms */
    unsigned nattempts;      /* traced groups only: entries of group->attempts used by this call */
    tg_result result;
    /* Last, so that tg_group_new zeroes a call up to xfer.curl_error only (TG_CALL_ZEROED): the
     * error buffer is written by libcurl before it is read, and 256 bytes less to clear per call
     * keep a group of a few calls under glibc's rep-stosb threshold for memset. */
    tg_xfer xfer; /* the attempt's request */
};
#define TG_CALL_ZEROED (offsetof(tg_call, xfer) + offsetof(tg_xfer, curl_error))

struct tg_group {
    tg_group *next; /* submit queue, then the finish list of one turn */
    size_t ncalls;
    size_t pending; /* calls not yet finished (ok or finally failed) */
    size_t nfailed;
    long deadline_ms;
    uint64_t start_ns, deadline_ns, finish_ns;
    tgi_timer deadline;   /* in the loop's timer heap while the group runs */
    int finishing;        /* on this turn's finish list */
    int has_breaker;      /* some call's policy has a breaker: admit them all before any starts */
    tg_attempt *attempts; /* NULL unless traced: TG_MAX_ATTEMPTS per call */
    tg_done_fn done;
    void *user;
    tg_call calls[];
};

struct tg_loop {
    CURLM *multi;
    int epfd;           /* libcurl's sockets, the wake eventfd and the hook's fd */
    int wakefd;         /* eventfd: tg_submit/tg_loop_wakeup/tg_loop_stop from other threads */
    uint64_t timer_due; /* when libcurl's timer is due (now_ns clock), while timer_set */
    int timer_set;
    long max_body_bytes;
    pthread_t thread;
    int thread_started;
    atomic_int stopping;

    pthread_mutex_t lock; /* guards the submit queue and closed */
    tg_group *queue_head, *queue_tail;
    int closed; /* no more submissions (stopping) */

    tgi_timer **timers; /* THE timer heap: deadlines, backoffs, hedges, public tg_timers */
    size_t ntimers, timers_cap;
    size_t ngroups; /* groups started and not yet finished */
    uint64_t rnd;   /* xorshift state for backoff jitter */

    CURL *idle[TG_IDLE_HANDLES]; /* easy handles kept for reuse: a new one costs a ~6 KB calloc */
    size_t nidle;

    /* URLs parsed once (CURLOPT_CURLU) instead of on every transfer; a service calls a handful
     * of upstreams, so a short array searched linearly is the right map. */
    struct {
        char *url;
        CURLU *parsed;
        tg_name *name; /* the host's addresses; NULL for an IP literal or without a resolver */
    } urls[TG_URL_CACHE];
    size_t nurls;
    dns *names; /* tg_loop_options.names: NULL lets libcurl resolve (tests of tg alone) */
    tg_name *hosts[TG_URL_CACHE]; /* one per host name of urls[] */
    size_t nhosts;
    int no_proxy; /* no proxy variable was set at start: skip libcurl's lookups per transfer */
    int has_hook;
    tg_hook hook;
    tgw_set *watches; /* fd watches (lib/tg_watch.c); their timers are in the heap above */
};

/* ---- lib/tg_timer.c ---- */
/* Starts (or moves) t to fire at due_ns. 0 or -ENOMEM. */
int tgi_timer_start(tg_loop *l, tgi_timer *t, uint64_t due_ns, tgi_timer_fn fn, void *arg,
                    tg_group *group);
/* Takes t off the heap; a stopped timer is fine. */
void tgi_timer_stop(tg_loop *l, tgi_timer *t);
/* The earliest due time, UINT64_MAX when no timer runs. */
uint64_t tgi_timer_next(const tg_loop *l);
/* Runs every timer due at now_ns, earliest first. */
void tgi_timers_run(tg_loop *l, uint64_t now_ns, tg_group **finish);
/* The earliest timer, taken off the heap; NULL when none. */
tgi_timer *tgi_timer_pop(tg_loop *l);
/* The loop's stop: takes every timer off the heap; a group's timer puts its group on finish, an
 * alarm is fired with stopped 1 (and freed), a public tg_timer is dropped unfired (not running). */
void tgi_timers_drain(tg_loop *l, tg_group **finish);

/* ---- lib/tg.c, used by lib/tg_attempt.c, lib/tg_io.c, lib/tg_trace.c ---- */
uint64_t tgi_now_ns(void);
static inline double tgi_ms_between(uint64_t from, uint64_t to)
{
    return to > from ? (double)(to - from) / 1e6 : 0.0;
}
/* Starts one request of c on x with a CURLOPT_TIMEOUT_MS of timeout_ms; it gets the next
 * X-Checkout-Attempt number and X-Checkout-Timeout-Ms (timeout_ms, or less when the group's
 * deadline comes first). 0, -ENOMEM, or -EHOSTUNREACH when the URL's host name has not resolved
 * yet (nothing is sent, nothing counted; tgi_result_unresolved then says so in c's result). */
int tgi_xfer_start(tg_loop *l, tg_call *c, tg_xfer *x, long timeout_ms);
/* c's result becomes the contract's failure for a name never resolved: transport, "<host>: not
 * resolved yet". */
void tgi_result_unresolved(tg_loop *l, tg_call *c);
/* lib/tg_names.c: the cache entry of url (parsed once, with its host's tg_name), -1 when the cache
 * is full or out of memory; the number of addresses n has now (0: not resolved yet), its list and
 * CONNECT_TO entries refreshed when the resolver published a new one. */
long tgi_url_entry(tg_loop *l, const char *url);
size_t tgi_name_current(tg_name *n);
/* Aborts x's transfer when it runs (the connection closes); outcome is what it ended with (NULL:
 * cancelled), recorded for a traced group. */
void tgi_xfer_detach(tg_loop *l, tg_xfer *x, const tg_result *outcome);
/* The contract's table: r gets the state, kind, status, body and message of one answer. */
void tgi_classify(tg_result *r, const tg_xfer *x, int curl_code, long status,
                  const char *curl_error);
/* c failed finally (its result holds the failure) or succeeded: counts it, and puts the group on
 * finish when that decides it. */
void tgi_call_final(tg_call *c, tg_group **finish);
void tgi_finish_later(tg_group **list, tg_group *g);
/* Drops the answer part of r (body, status, kind, message), keeps the counters. */
void tgi_result_clear(tg_result *r);

/* ---- lib/tg_io.c: the loop's epoll wait and libcurl's event API ---- */
/* Sets the multi handle's socket and timer callbacks (epoll_ctl on l->epfd, l->timer_due). */
void tgi_curl_events(tg_loop *l);
/* Hands libcurl its timeout when its timer is due. */
void tgi_curl_timer_run(tg_loop *l);
/* The turn's wait (0 ms when nowait; else until the heap's next timer, libcurl's timer, the
 * hook's timeout or max_wait_ms), then every ready socket to libcurl and libcurl's due timer. */
void tgi_wait_and_dispatch(tg_loop *l, int max_wait_ms, int nowait);

/* ---- lib/tg_trace.c: the attempts of a traced group (tg_group_trace) ---- */
/* x's transfer leaves the multi handle with outcome (NULL: cancelled or aborted); g->attempts is
 * non-NULL (the caller tests it, so that an untraced group pays no call). */
void tgi_attempt_note(tg_xfer *x, const tg_result *outcome);

/* ---- lib/tg_attempt.c ---- */
/* Admits every call of g that has a breaker before any request is sent. 1 when a breaker refused
 * one (that call failed as circuit_open, g is on finish, the others will be cancelled unsent). */
int tga_admit_group(tg_loop *l, tg_group *g, tg_group **finish);
/* Starts call c's next attempt (the first one included), or ends it when its breaker refuses. */
void tga_start(tg_loop *l, tg_call *c, tg_group **finish);
/* One of c's transfers ended (libcurl's code, the HTTP status); decides what comes next. */
void tga_xfer_done(tg_loop *l, tg_xfer *x, int curl_code, long status, tg_group **finish);
/* c is cancelled (outcome NULL) or timed out (outcome: its result): its transfers, its timer and
 * its breaker admission are let go. */
void tga_abort(tg_loop *l, tg_call *c, const tg_result *outcome);

#endif
