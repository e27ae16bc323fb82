/* metrics — checkoutd's counters, gauges and histograms, rendered as Prometheus text (0.0.4).
 *
 * Recording (mx_checkout, mx_upstream, mx_cancelled, mx_inflight, mx_connections) is safe from any
 * number of threads at once and costs one to three relaxed atomic adds on cells allocated by
 * mx_new: no lock, no allocation, no syscall. Shared cells bounce between cores under contention
 * (tens of ns per add), which is the whole price. Never a crash on the request path: an
 * out-of-range validation or kind is ignored, an out-of-range outcome counts as "internal", and a
 * negative or NaN duration counts as 0.
 * Rendering (GET /metrics) allocates one buffer, O(validations x buckets), and reads every cell
 * once with relaxed loads: each value is exact, the set is not a snapshot (a checkout recorded
 * meanwhile may show in one series and not yet in another). A histogram's _count is derived from
 * its own buckets, so buckets are cumulative and +Inf == _count in every render; _sum is read
 * separately and may lag or lead by the observations of that instant.
 * Lifetime: mx_new before any thread records, mx_free after every thread has stopped. */
#ifndef CHECKOUTD_METRICS_H
#define CHECKOUTD_METRICS_H

#include "tg.h"

#include <stddef.h>

/* checkoutd_checkouts_total{outcome}: how every request on /checkout (or an unknown path) ended.
 * The first three ran a task group; the rest are the client-error codes of the contract, plus
 * "internal" for a 500. */
typedef enum mx_outcome {
    MX_ACCEPTED,
    MX_REJECTED,
    MX_FAILED,
    MX_INVALID_JSON,
    MX_INVALID_REQUEST,
    MX_BODY_TOO_LARGE,
    MX_UNSUPPORTED_MEDIA_TYPE,
    MX_METHOD_NOT_ALLOWED,
    MX_NOT_FOUND,
    MX_OVERLOADED,
    MX_SHUTTING_DOWN,
    MX_IDEMPOTENCY_IN_PROGRESS,
    MX_IDEMPOTENCY_KEY_REUSED,
    MX_IDEMPOTENCY_UNAVAILABLE,
    MX_REQUEST_TIMEOUT, /* v1.3 request_timeout_ms: 408 */
    MX_JOURNAL_UNAVAILABLE,
    MX_INTERNAL,
    MX_OUTCOMES /* count, not an outcome */
} mx_outcome;

/* Histogram upper bounds in seconds (le), shared by both histograms; +Inf comes after them. */
#define MX_BOUNDS 13

typedef struct mx mx;

/* "invalid_json" -> MX_INVALID_JSON, "accepted" -> MX_ACCEPTED, ...; unknown or NULL ->
 * MX_INTERNAL. O(outcomes) string compares. */
mx_outcome mx_outcome_from_code(const char *code);
/* The label value ("accepted", "invalid_json", ...); "internal" when out of range. */
const char *mx_outcome_name(mx_outcome outcome);

/* A registry with every series at 0. validation_names[i] names validation i (copied, escaped once
 * here for rendering); nvalidations may be 0. NULL when out of memory or a name is NULL. */
mx *mx_new(const char *const validation_names[], size_t nvalidations);
void mx_free(mx *m); /* NULL is fine */

/* One request ended with outcome. seconds is its duration, observed in
 * checkoutd_checkout_duration_seconds only for accepted/rejected/failed (the checkouts that ran a
 * task group); ignored otherwise. */
void mx_checkout(mx *m, mx_outcome outcome, double seconds);
/* A call of validation ended: kind TG_KIND_NONE ("ok") or the failure kind, with its latency.
 * Cancelled calls never got an answer: count them with mx_cancelled instead. */
void mx_upstream(mx *m, size_t validation, tg_kind kind, double seconds);
void mx_cancelled(mx *m, size_t validation);
/* checkoutd_idempotency_total{result}: what a keyed checkout's claim found (idem_result order:
 * new, replayed, in_progress, mismatch, unavailable); out of range is ignored. */
#define MX_IDEM_RESULTS 5
void mx_idem(mx *m, int result);
/* v1.2: what a call's attempts did beyond its final request: the earlier requests (each counted
 * in checkoutd_upstream_requests_total by its outcome, without a latency), retries
 * (checkoutd_upstream_retries_total) and hedges (checkoutd_upstream_hedges_total{result}). A few
 * relaxed adds; a call of one request need not call it. */
void mx_attempts(mx *m, size_t validation, const tg_result *r);
/* The breakers (breakers[i] NULL: validation i has none) that checkoutd_circuit_state and
 * checkoutd_circuit_rejections_total read at each render; they must outlive m's renders. Set
 * once, before any render. */
void mx_set_breakers(mx *m, breaker *const breakers[], size_t n);
/* Retries, and hedges sent (won + lost), of validation i since start; 0 when out of range. */
unsigned long long mx_retries(const mx *m, size_t validation);
unsigned long long mx_hedges(const mx *m, size_t validation);
/* v1.2 compensation: an undo request of validation ended with kind (TG_KIND_NONE: "ok", it ended
 * the compensation); a compensation started (checkoutd_compensations_pending + 1) or ended, done
 * or given up (pending - 1, checkoutd_compensations_total{outcome}). */
void mx_comp_request(mx *m, size_t validation, tg_kind kind);
void mx_comp_started(mx *m);
void mx_comp_ended(mx *m, size_t validation, int done);
/* v1.3: an undo step of validation taken up from the journal at start
 * (checkoutd_compensations_recovered_total); the journal whose commits /metrics shows (NULL: none;
 * set once, before any render). */
void mx_comp_recovered(mx *m, size_t validation);
struct jr;
void mx_set_journal(mx *m, const struct jr *journal);
/* Gauges: add delta (+1 on start, -1 on end). */
void mx_inflight(mx *m, long delta);    /* checkoutd_inflight_checkouts */
void mx_connections(mx *m, long delta); /* checkoutd_open_connections */

/* The exposition text, NUL-terminated, malloc'd (the caller frees it); *len gets its length when
 * len is not NULL. NULL when out of memory. */
char *mx_render(const mx *m, size_t *len);

#endif
