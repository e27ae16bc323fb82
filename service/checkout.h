/* checkout — the POST /checkout path, top to bottom: validate the order, fan its validations out as
 * one task group, and turn the group's outcome into the answer (accepted or the error group).
 *
 * HTTP-agnostic: the server hands over the body and the forwarded headers, and gets an answer back
 * either at once (a client error) or later, on the task-group loop thread, through reply().
 * Cost per checkout: one JSON parse of the body, one small JSON dump per validation, one group. */
#ifndef CHECKOUTD_CHECKOUT_H
#define CHECKOUTD_CHECKOUT_H

#include "cfg.h"
#include "idem.h"
#include "comp_run.h"
#include "jr.h"
#include "metrics.h"
#include "tg.h"
#include "win.h"

#include <stdatomic.h>
#include <stddef.h>
#include <time.h>

#define CO_ID_MAX 128 /* request ids and order ids are at most this many bytes/code points */

typedef struct co_service {
    const cfg *cfg;
    tg_loop *const *loops; /* task-group loops; a checkout runs on the one its connection is on */
    size_t nloops;
    mx *metrics;                            /* every answer is counted here */
    const char *names[CFG_MAX_VALIDATIONS]; /* validation names, in config order */
    atomic_long inflight;                   /* checkouts whose group is running */
    idem_store *idem; /* Idempotency-Key replay; NULL (store "off"): the header is only forwarded.
                         Set after co_service_init, before the first checkout. */
    /* The live view's windows (/status), one writer per loop; NULL: not kept. Set after
     * co_service_init, before the first checkout. */
    win *windows;
    struct timespec started; /* CLOCK_MONOTONIC at co_service_init: uptime */
    /* v1.2 resilience, per validation: policy[i] is NULL when validation i has none (the v1.1
     * path, no cost), else &policies[i]; breaker[i] is NULL or &breakers[i], shared by every
     * loop. */
    const tg_policy *policy[CFG_MAX_VALIDATIONS];
    breaker *breaker[CFG_MAX_VALIDATIONS];
    tg_policy policies[CFG_MAX_VALIDATIONS];
    breaker breakers[CFG_MAX_VALIDATIONS];
    /* v1.2 compensation: has_comp when some validation has a compensate block (else a checkout
     * keeps nothing for it); the observer logs and counts every compensation. */
    int has_comp;
    comp_observer comp_events;
    /* v1.3 durable compensation: the journal (lib/jr) when the config journals, else NULL (the
     * v1.2 path, no cost). Set after co_service_init, before the first checkout. */
    jr *journal;
    /* 1 while the journal is taken up at start (the admin listener's thread already answers:
     * /readyz says "recovering" there; listen's connections wait in the backlog). */
    atomic_int recovering;
    /* v1.3 "Names": the process's resolver (NULL: none, tests), and per validation the host of
     * its url (NULL when an IP literal). Set after co_service_init, before the first checkout. */
    dns *resolver;
    dns_host *hosts[CFG_MAX_VALIDATIONS];
} co_service;

typedef struct co_request {
    const char *body;
    size_t body_len;
    const char *request_id;      /* the client's X-Request-Id, or NULL */
    const char *idempotency_key; /* forwarded when present; claimed when s->idem is set */
    int idempotency_keys;        /* how many Idempotency-Key headers came (2+: a 400) */
    const char *traceparent;     /* forwarded when present */
    const char *trace;           /* the client's X-Checkout-Trace, or NULL (see co_trace_wanted) */
} co_request;

/* What the checkout's log line says of one validation (outcome is static text). */
typedef struct co_outcome {
    const char *outcome; /* "ok", a failure kind, or "cancelled" */
    double elapsed_ms;
    long http_status;
    unsigned attempts; /* requests sent upstream */
} co_outcome;

typedef struct co_answer {
    int http_status;
    const char *code; /* static: "accepted"/"rejected"/"failed" or the client-error code */
    char *body;       /* malloc'd JSON text; whoever sends it frees it */
    size_t body_len;
    int retry_after;  /* seconds for a Retry-After header, 0 for none */
    int compensating; /* validations whose compensation the answer announces (a 502/504 with
                       * some is stored for replay like a 422) */
    int replayed;     /* a stored answer: sent with Idempotent-Replayed: true */
    char request_id[CO_ID_MAX + 1];
    /* for the log line, written by tally_log on the HTTP thread: plain data, no JSON objects */
    double elapsed_ms;
    char order_id[4 * CO_ID_MAX + 1]; /* "" before the order was read */
    size_t noutcomes;                 /* 0 for answers that ran no task group */
    co_outcome outcomes[CFG_MAX_VALIDATIONS];
} co_answer;

typedef struct co_checkout co_checkout;

/* Called once per launched checkout, on the loop thread, with its answer (ownership of body moves).
 */
typedef void (*co_reply_fn)(void *conn, co_answer *answer);

/* loops: nloops (>= 1) started task-group loops, or NULL/0 when no checkout will be launched. */
void co_service_init(co_service *s, const cfg *c, tg_loop *const *loops, size_t nloops,
                     mx *metrics);

/* Validates the request. A client error (or overload) fills *now and returns 1. Otherwise returns 0
 * with *out ready to launch: the caller suspends its connection first, then calls co_launch, so
 * that the reply can never overtake the suspension. -1: out of memory (*now holds a 500). */
int co_accept(co_service *s, const co_request *req, co_reply_fn reply, void *conn,
              co_checkout **out, co_answer *now);

/* Starts every validation at once, on loop number loop (modulo nloops); a keyed checkout (with
 * s->idem) first claims its key, whose answer may be the reply (a replay, 409, 422 or 503). Call it
 * on that loop's thread. The reply always comes exactly once: on the loop thread, or on the calling
 * thread when the loop no longer takes work (shutting down: a 503) or the claim answers at once. */
void co_launch(co_service *s, co_checkout *c, size_t loop);

/* Whether a checkout gets a "trace" member in its answer: the config's trace is on and the client
 * sent X-Checkout-Trace: 1 (header: its value, or NULL). */
int co_trace_wanted(const co_service *s, const char *header);

/* The checkout's request id: the client's X-Request-Id (given, may be NULL) when it is 1..128
 * printable ASCII characters, else 32 new random hex digits. */
void co_request_id(const char *given, char *out, size_t cap);

/* Releases an accepted checkout that will not be launched (no reply comes). Fuzzers and tests
 * use it to run co_accept without a loop. */
void co_discard(co_service *s, co_checkout *c);

#define CO_COMMON_HEADERS 4 /* Content-Type, X-Request-Id, Idempotency-Key, traceparent */
/* The header lines of validation v's request: the checkout's own (common, NULL-ended), then v's
 * configured ones; common itself when v has none. out is the room for both. */
const char *const *co_call_headers(const cfg_validation *v, const char *const common[],
                                   const char *out[CO_COMMON_HEADERS + CFG_MAX_HEADERS + 1]);

/* {"error": {"code": code, "message": message}} as an answer; body NULL when out of memory. */
void co_error_answer(co_answer *a, int http_status, const char *code, const char *message);

#endif
