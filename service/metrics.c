/* metrics — the registry and its Prometheus rendering. See metrics.h.
 *
 * Every cell is a lock-free atomic integer updated with relaxed order: counters need no ordering
 * with anything else, only no lost updates. Histograms keep per-bucket (non-cumulative) counts plus
 * a sum in whole microseconds, so no atomic double is needed; the render accumulates the buckets
 * and derives _count from them. */
#include "metrics.h"

#include "jr.h"

#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* "Lock-free" is the contract: refuse to build where these atomics would hide a lock. */
_Static_assert(ATOMIC_LLONG_LOCK_FREE == 2, "metrics need lock-free 64-bit atomics");
_Static_assert(ATOMIC_LONG_LOCK_FREE == 2, "metrics need lock-free long atomics");

/* tg_kind values TG_KIND_NONE (ok) .. TG_TIMEOUT index the upstream outcome counters. */
#define MX_KINDS (TG_TIMEOUT + 1)

/* A duration above this (~31,700 years) is clamped so that its microseconds fit one add. */
#define MAX_SECONDS 1e12

/* The first render buffer; it doubles when a render needs more (a fresh registry with three
 * validations renders ~9 KiB). */
#define RENDER_START_BYTES 16384

/* The bounds as numbers (to pick a bucket) and as text (to print them exactly as written). */
static const double bounds[MX_BOUNDS] = {0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1,
                                         0.25,  0.5,    1,     2.5,  5,     10};
static const char *const bound_text[MX_BOUNDS] = {"0.001", "0.0025", "0.005", "0.01", "0.025",
                                                  "0.05",  "0.1",    "0.25",  "0.5",  "1",
                                                  "2.5",   "5",      "10"};

static const char *const outcome_names[MX_OUTCOMES] = {"accepted",
                                                       "rejected",
                                                       "failed",
                                                       "invalid_json",
                                                       "invalid_request",
                                                       "body_too_large",
                                                       "unsupported_media_type",
                                                       "method_not_allowed",
                                                       "not_found",
                                                       "overloaded",
                                                       "shutting_down",
                                                       "idempotency_in_progress",
                                                       "idempotency_key_reused",
                                                       "idempotency_unavailable",
                                                       "request_timeout",
                                                       "journal_unavailable",
                                                       "internal"};
static const char *const idem_names[MX_IDEM_RESULTS] = {"new", "replayed", "in_progress",
                                                        "mismatch", "unavailable"};

typedef struct mx_hist {
    atomic_ullong bucket[MX_BOUNDS + 1]; /* bucket[i]: (bounds[i-1], bounds[i]]; last: > 10 s */
    atomic_ullong sum_us;
} mx_hist;

typedef struct mx_validation {
    char *label; /* the name, escaped for a label value */
    atomic_ullong requests[MX_KINDS];
    atomic_ullong cancelled;
    atomic_ullong retries;
    atomic_ullong hedges_won, hedges_lost;
    /* v1.2 compensation: undo requests by outcome (ok or the kind), ends by done/given up */
    atomic_ullong comp_requests[MX_KINDS];
    atomic_ullong comp_done, comp_given_up;
    atomic_ullong comp_recovered; /* v1.3 */
    breaker *breaker;             /* NULL: none (the circuit is always closed) */
    mx_hist latency;
} mx_validation;

struct mx {
    atomic_ullong checkouts[MX_OUTCOMES];
    atomic_ullong idem[MX_IDEM_RESULTS];
    mx_hist duration;
    atomic_long inflight;
    atomic_long connections;
    atomic_long comp_pending;
    size_t nvalidations;
    mx_validation *v;
    const jr *journal; /* v1.3: NULL when checkouts do not journal */
};

mx_outcome mx_outcome_from_code(const char *code)
{
    if (code == NULL)
        return MX_INTERNAL;
    for (size_t i = 0; i < MX_OUTCOMES; i++)
        if (strcmp(code, outcome_names[i]) == 0)
            return (mx_outcome)i;
    return MX_INTERNAL;
}

const char *mx_outcome_name(mx_outcome outcome)
{
    if ((unsigned)outcome >= MX_OUTCOMES)
        return outcome_names[MX_INTERNAL];
    return outcome_names[outcome];
}

/* ---- registry ---------------------------------------------------------------------------------
 * calloc gives zero bytes, which is the value 0 of a lock-free atomic integer on every platform
 * the asserts above admit; atomic_init would store the same bytes. */

/* A label value with \ " and newline escaped as the format requires; malloc'd, NULL on OOM. */
static char *escape_label(const char *s)
{
    size_t n = strlen(s), j = 0;
    char *out = malloc(2 * n + 1); /* every byte at most doubles */
    if (out == NULL)
        return NULL;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        if (c == '\\' || c == '"' || c == '\n')
            out[j++] = '\\';
        out[j++] = c == '\n' ? 'n' : c;
    }
    out[j] = '\0';
    return out;
}

mx *mx_new(const char *const validation_names[], size_t nvalidations)
{
    mx *m = calloc(1, sizeof(*m));
    if (m == NULL)
        goto fail;
    m->v = calloc(nvalidations ? nvalidations : 1, sizeof(*m->v));
    if (m->v == NULL)
        goto fail;
    m->nvalidations = nvalidations;
    for (size_t i = 0; i < nvalidations; i++) {
        if (validation_names[i] == NULL)
            goto fail;
        m->v[i].label = escape_label(validation_names[i]);
        if (m->v[i].label == NULL)
            goto fail;
    }
    return m;
fail:
    mx_free(m);
    return NULL;
}

void mx_free(mx *m)
{
    if (m == NULL)
        return;
    for (size_t i = 0; m->v != NULL && i < m->nvalidations; i++)
        free(m->v[i].label);
    free(m->v);
    free(m);
}

/* ---- recording: relaxed adds only ------------------------------------------------------------ */

static void add(atomic_ullong *cell)
{
    atomic_fetch_add_explicit(cell, 1, memory_order_relaxed);
}

/* Two adds: the bucket (found by a scan of 13 bounds, le meaning <=) and the sum. */
static void observe(mx_hist *h, double seconds)
{
    if (!(seconds > 0)) /* negative, zero or NaN */
        seconds = 0;
    if (seconds > MAX_SECONDS)
        seconds = MAX_SECONDS;
    size_t b = 0;
    while (b < MX_BOUNDS && seconds > bounds[b])
        b++;
    add(&h->bucket[b]);
    unsigned long long us = (unsigned long long)(seconds * 1e6 + 0.5);
    atomic_fetch_add_explicit(&h->sum_us, us, memory_order_relaxed);
}

void mx_checkout(mx *m, mx_outcome outcome, double seconds)
{
    if ((unsigned)outcome >= MX_OUTCOMES)
        outcome = MX_INTERNAL;
    add(&m->checkouts[outcome]);
    if (outcome == MX_ACCEPTED || outcome == MX_REJECTED || outcome == MX_FAILED)
        observe(&m->duration, seconds);
}

void mx_upstream(mx *m, size_t validation, tg_kind kind, double seconds)
{
    if (validation >= m->nvalidations || (unsigned)kind >= MX_KINDS)
        return;
    add(&m->v[validation].requests[kind]);
    observe(&m->v[validation].latency, seconds);
}

void mx_cancelled(mx *m, size_t validation)
{
    if (validation >= m->nvalidations)
        return;
    add(&m->v[validation].cancelled);
}

void mx_idem(mx *m, int result)
{
    if (result >= 0 && result < MX_IDEM_RESULTS)
        add(&m->idem[result]);
}

void mx_attempts(mx *m, size_t validation, const tg_result *r)
{
    if (validation >= m->nvalidations)
        return;
    mx_validation *v = &m->v[validation];
    for (unsigned i = 0; i < r->nearlier && i < TG_MAX_REQUESTS; i++)
        if (r->earlier[i] < MX_KINDS)
            add(&v->requests[r->earlier[i]]);
    if (r->retries > 0)
        atomic_fetch_add_explicit(&v->retries, r->retries, memory_order_relaxed);
    if (r->hedges_won > 0)
        atomic_fetch_add_explicit(&v->hedges_won, r->hedges_won, memory_order_relaxed);
    if (r->hedges_lost > 0)
        atomic_fetch_add_explicit(&v->hedges_lost, r->hedges_lost, memory_order_relaxed);
}

unsigned long long mx_retries(const mx *m, size_t validation)
{
    if (m == NULL || validation >= m->nvalidations)
        return 0;
    return atomic_load_explicit(&m->v[validation].retries, memory_order_relaxed);
}

unsigned long long mx_hedges(const mx *m, size_t validation)
{
    if (m == NULL || validation >= m->nvalidations)
        return 0;
    return atomic_load_explicit(&m->v[validation].hedges_won, memory_order_relaxed) +
           atomic_load_explicit(&m->v[validation].hedges_lost, memory_order_relaxed);
}

void mx_set_breakers(mx *m, breaker *const breakers[], size_t n)
{
    if (m == NULL)
        return;
    for (size_t i = 0; i < n && i < m->nvalidations; i++)
        m->v[i].breaker = breakers[i];
}

void mx_inflight(mx *m, long delta)
{
    atomic_fetch_add_explicit(&m->inflight, delta, memory_order_relaxed);
}

void mx_connections(mx *m, long delta)
{
    atomic_fetch_add_explicit(&m->connections, delta, memory_order_relaxed);
}

/* ---- rendering ------------------------------------------------------------------------------- */

/* A growing text buffer. After a failure every put is a no-op and failed stays set, so a render
 * checks once at the end. */
typedef struct text {
    char *p;
    size_t len, cap;
    int failed;
} text;

static int grow(text *t, size_t need)
{
    size_t cap = t->cap;
    while (cap < need)
        cap *= 2;
    char *p = realloc(t->p, cap);
    if (p == NULL)
        return -1;
    t->p = p;
    t->cap = cap;
    return 0;
}

__attribute__((format(printf, 2, 3))) static void put(text *t, const char *fmt, ...)
{
    va_list ap, again;
    if (t->failed)
        return;
    va_start(ap, fmt);
    va_copy(again, ap);
    int n = vsnprintf(t->p + t->len, t->cap - t->len, fmt, ap);
    if (n < 0)
        goto fail;
    if ((size_t)n >= t->cap - t->len) {
        if (grow(t, t->len + (size_t)n + 1) != 0)
            goto fail;
        vsnprintf(t->p + t->len, t->cap - t->len, fmt, again);
    }
    t->len += (size_t)n;
    va_end(again);
    va_end(ap);
    return;
fail:
    t->failed = 1;
    va_end(again);
    va_end(ap);
}

static unsigned long long load(const atomic_ullong *cell)
{
    return atomic_load_explicit(cell, memory_order_relaxed);
}

static void family(text *t, const char *name, const char *type, const char *help)
{
    put(t, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

/* One histogram series: 14 cumulative buckets, _sum, _count; validation is its (escaped) label
 * value, or NULL for an unlabelled series. O(buckets). */
static void histogram(text *t, const char *name, const char *validation, const mx_hist *h)
{
    const char *open = validation ? "validation=\"" : "";
    const char *value = validation ? validation : "";
    const char *close = validation ? "\"," : "";
    unsigned long long cumulative = 0;
    for (size_t b = 0; b <= MX_BOUNDS; b++) {
        cumulative += load(&h->bucket[b]);
        put(t, "%s_bucket{%s%s%sle=\"%s\"} %llu\n", name, open, value, close,
            b < MX_BOUNDS ? bound_text[b] : "+Inf", cumulative);
    }
    unsigned long long us = load(&h->sum_us);
    if (validation != NULL) {
        put(t, "%s_sum{validation=\"%s\"} %llu.%06llu\n", name, validation, us / 1000000,
            us % 1000000);
        put(t, "%s_count{validation=\"%s\"} %llu\n", name, validation, cumulative);
    } else {
        put(t, "%s_sum %llu.%06llu\n", name, us / 1000000, us % 1000000);
        put(t, "%s_count %llu\n", name, cumulative);
    }
}

static void render_checkouts(text *t, const mx *m)
{
    family(t, "checkoutd_checkouts_total", "counter",
           "Requests on /checkout (and unknown paths) by how they ended: accepted, rejected, "
           "failed, or the client-error code.");
    for (size_t i = 0; i < MX_OUTCOMES; i++)
        put(t, "checkoutd_checkouts_total{outcome=\"%s\"} %llu\n", outcome_names[i],
            load(&m->checkouts[i]));
    family(t, "checkoutd_checkout_duration_seconds", "histogram",
           "Time from receiving a checkout to its answer, for checkouts that ran their "
           "validations (accepted, rejected, failed).");
    histogram(t, "checkoutd_checkout_duration_seconds", NULL, &m->duration);
    family(t, "checkoutd_idempotency_total", "counter",
           "Checkouts with an Idempotency-Key by what their claim found: new (ran), replayed "
           "(the stored answer), in_progress, mismatch (key reused), unavailable (store down).");
    for (size_t i = 0; i < MX_IDEM_RESULTS; i++)
        put(t, "checkoutd_idempotency_total{result=\"%s\"} %llu\n", idem_names[i],
            load(&m->idem[i]));
}

/* O(validations x kinds) plus O(validations x buckets). */
static void render_upstreams(text *t, const mx *m)
{
    family(t, "checkoutd_upstream_requests_total", "counter",
           "Upstream requests that ended, retries and hedges included, by validation and outcome "
           "(ok or the failure kind).");
    for (size_t i = 0; i < m->nvalidations; i++)
        for (int k = 0; k < MX_KINDS; k++)
            put(t, "checkoutd_upstream_requests_total{validation=\"%s\",outcome=\"%s\"} %llu\n",
                m->v[i].label, tg_kind_name((tg_kind)k), load(&m->v[i].requests[k]));
    family(t, "checkoutd_upstream_duration_seconds", "histogram",
           "Latency of upstream validation calls that ended (cancelled calls excluded).");
    for (size_t i = 0; i < m->nvalidations; i++)
        histogram(t, "checkoutd_upstream_duration_seconds", m->v[i].label, &m->v[i].latency);
    family(t, "checkoutd_validations_cancelled_total", "counter",
           "Upstream validation calls aborted because another validation of the checkout failed.");
    for (size_t i = 0; i < m->nvalidations; i++)
        put(t, "checkoutd_validations_cancelled_total{validation=\"%s\"} %llu\n", m->v[i].label,
            load(&m->v[i].cancelled));
}

static uint64_t mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

/* v1.2: retries, hedges, circuit state and rejections. O(validations). */
static void render_resilience(text *t, const mx *m)
{
    static const breaker_state states[] = {BREAKER_CLOSED, BREAKER_OPEN, BREAKER_HALF_OPEN};
    uint64_t now = mono_ms();
    family(t, "checkoutd_upstream_retries_total", "counter",
           "Retries sent upstream (attempts after a validation's first).");
    for (size_t i = 0; i < m->nvalidations; i++)
        put(t, "checkoutd_upstream_retries_total{validation=\"%s\"} %llu\n", m->v[i].label,
            load(&m->v[i].retries));
    family(t, "checkoutd_upstream_hedges_total", "counter",
           "Hedged requests sent, by whether the hedge (won) or the request it hedged (lost) "
           "decided the attempt.");
    for (size_t i = 0; i < m->nvalidations; i++) {
        put(t, "checkoutd_upstream_hedges_total{validation=\"%s\",result=\"won\"} %llu\n",
            m->v[i].label, load(&m->v[i].hedges_won));
        put(t, "checkoutd_upstream_hedges_total{validation=\"%s\",result=\"lost\"} %llu\n",
            m->v[i].label, load(&m->v[i].hedges_lost));
    }
    family(t, "checkoutd_circuit_state", "gauge",
           "1 for the current state of each validation's circuit breaker, 0 for the others "
           "(closed when it has none).");
    for (size_t i = 0; i < m->nvalidations; i++) {
        breaker *b = m->v[i].breaker;
        breaker_state now_state = b != NULL ? breaker_state_at(b, now) : BREAKER_CLOSED;
        for (size_t k = 0; k < 3; k++)
            put(t, "checkoutd_circuit_state{validation=\"%s\",state=\"%s\"} %d\n", m->v[i].label,
                breaker_state_name(states[k]), states[k] == now_state);
    }
    family(t, "checkoutd_circuit_rejections_total", "counter",
           "Validation calls refused without a request because the circuit breaker was open.");
    for (size_t i = 0; i < m->nvalidations; i++)
        put(t, "checkoutd_circuit_rejections_total{validation=\"%s\"} %llu\n", m->v[i].label,
            m->v[i].breaker != NULL ? (unsigned long long)breaker_rejections(m->v[i].breaker)
                                    : 0ull);
}

/* v1.2 compensation. O(validations x kinds). */
static void render_compensation(text *t, const mx *m)
{
    family(t, "checkoutd_compensations_total", "counter",
           "Compensations (undo steps) that ended, by validation and outcome: done or given_up.");
    for (size_t i = 0; i < m->nvalidations; i++) {
        put(t, "checkoutd_compensations_total{validation=\"%s\",outcome=\"done\"} %llu\n",
            m->v[i].label, load(&m->v[i].comp_done));
        put(t, "checkoutd_compensations_total{validation=\"%s\",outcome=\"given_up\"} %llu\n",
            m->v[i].label, load(&m->v[i].comp_given_up));
    }
    family(t, "checkoutd_compensation_requests_total", "counter",
           "Undo requests that ended, by validation and outcome (ok when it ended the "
           "compensation: 2xx, 404, 409, 410; else the failure kind).");
    for (size_t i = 0; i < m->nvalidations; i++)
        for (int k = 0; k < MX_KINDS; k++)
            put(t,
                "checkoutd_compensation_requests_total{validation=\"%s\",outcome=\"%s\"} "
                "%llu\n",
                m->v[i].label, tg_kind_name((tg_kind)k), load(&m->v[i].comp_requests[k]));
    family(t, "checkoutd_compensations_pending", "gauge",
           "Compensations started and not yet done or given up.");
    put(t, "checkoutd_compensations_pending %ld\n",
        atomic_load_explicit(&m->comp_pending, memory_order_relaxed));
}

void mx_comp_request(mx *m, size_t validation, tg_kind kind)
{
    if (m == NULL || validation >= m->nvalidations || (int)kind < 0 || (int)kind >= MX_KINDS)
        return;
    add(&m->v[validation].comp_requests[kind]);
}

void mx_comp_started(mx *m)
{
    if (m != NULL)
        atomic_fetch_add_explicit(&m->comp_pending, 1, memory_order_relaxed);
}

void mx_comp_ended(mx *m, size_t validation, int done)
{
    if (m == NULL)
        return;
    atomic_fetch_sub_explicit(&m->comp_pending, 1, memory_order_relaxed);
    if (validation >= m->nvalidations)
        return;
    add(done ? &m->v[validation].comp_done : &m->v[validation].comp_given_up);
}

void mx_comp_recovered(mx *m, size_t validation)
{
    if (m != NULL && validation < m->nvalidations)
        add(&m->v[validation].comp_recovered);
}

void mx_set_journal(mx *m, const jr *journal)
{
    if (m != NULL)
        m->journal = journal;
}

/* v1.3 durable compensation: only when the config journals (and the recovered counter then). */
static void render_journal(text *t, const mx *m)
{
    jr_stats st;
    if (m->journal == NULL)
        return;
    jr_get_stats(m->journal, &st);
    family(t, "checkoutd_compensations_recovered_total", "counter",
           "Undo steps taken up from the journal at start (a previous process was killed or "
           "stopped before they ended).");
    for (size_t i = 0; i < m->nvalidations; i++)
        put(t, "checkoutd_compensations_recovered_total{validation=\"%s\"} %llu\n", m->v[i].label,
            load(&m->v[i].comp_recovered));
    family(t, "checkoutd_journal_commits_total", "counter",
           "Journal transactions committed (each one fsync: a group commit).");
    put(t, "checkoutd_journal_commits_total %ld\n", st.commits);
    family(t, "checkoutd_journal_records_per_commit", "histogram",
           "Records written by one journal commit.");
    for (int b = 0; b < JR_RPC_BUCKETS - 1; b++)
        put(t, "checkoutd_journal_records_per_commit_bucket{le=\"%g\"} %ld\n", jr_rpc_bounds[b],
            st.rpc[b]);
    put(t, "checkoutd_journal_records_per_commit_bucket{le=\"+Inf\"} %ld\n",
        st.rpc[JR_RPC_BUCKETS - 1]);
    put(t, "checkoutd_journal_records_per_commit_sum %ld\n", st.records);
    put(t, "checkoutd_journal_records_per_commit_count %ld\n", st.commits);
    family(t, "checkoutd_journal_commit_seconds", "histogram",
           "Time of one journal commit (its statements and its fsync).");
    for (int b = 0; b < JR_SEC_BUCKETS - 1; b++)
        put(t, "checkoutd_journal_commit_seconds_bucket{le=\"%g\"} %ld\n", jr_sec_bounds[b],
            st.sec[b]);
    put(t, "checkoutd_journal_commit_seconds_bucket{le=\"+Inf\"} %ld\n",
        st.sec[JR_SEC_BUCKETS - 1]);
    put(t, "checkoutd_journal_commit_seconds_sum %.6f\n", st.seconds_sum);
    put(t, "checkoutd_journal_commit_seconds_count %ld\n", st.commits);
    family(t, "checkoutd_journal_pending_records", "gauge",
           "Journal records queued and not yet committed.");
    put(t, "checkoutd_journal_pending_records %ld\n", st.pending);
    family(t, "checkoutd_journal_up", "gauge",
           "1 while the journal's last write succeeded, 0 while it cannot write.");
    put(t, "checkoutd_journal_up %d\n", st.healthy);
}

static void render_gauges(text *t, const mx *m)
{
    family(t, "checkoutd_inflight_checkouts", "gauge",
           "Checkouts whose validations are running now.");
    put(t, "checkoutd_inflight_checkouts %ld\n",
        atomic_load_explicit(&m->inflight, memory_order_relaxed));
    family(t, "checkoutd_open_connections", "gauge", "Client connections open now.");
    put(t, "checkoutd_open_connections %ld\n",
        atomic_load_explicit(&m->connections, memory_order_relaxed));
}

char *mx_render(const mx *m, size_t *len)
{
    text t = {malloc(RENDER_START_BYTES), 0, RENDER_START_BYTES, 0};
    if (t.p == NULL)
        goto fail;
    t.p[0] = '\0';
    render_checkouts(&t, m);
    render_upstreams(&t, m);
    render_resilience(&t, m);
    render_compensation(&t, m);
    render_journal(&t, m);
    render_gauges(&t, m);
    if (t.failed)
        goto fail;
    if (len != NULL)
        *len = t.len;
    return t.p;
fail:
    free(t.p);
    return NULL;
}
