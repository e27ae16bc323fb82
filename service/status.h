/* status — the live view for people: GET /status.json (the data) and GET /status (a page that
 * polls it every second). Contract: shared/checkout-api.md, "Operations".
 *
 * /status.json: version, uptime, workers, in-flight checkouts, checkouts per second by outcome over
 * the last 10 s and 60 s, and per validation over the last 60 s: requests per second, p50/p99
 * latency, error counts and rates by kind, cancellations, retries, hedges and circuit state, plus
 * per-second series of the last 60 s for sparklines. Read from the per-worker windows (lib/win)
 * of complete seconds; built with jansson on the HTTP thread that asks, never on a checkout's
 * path. Cost per request: O(60 x workers x validations x histogram buckets) loads, ~1 ms.
 * Nothing secret is shown: validation names only, never a URL, a header value or request data.
 * /status: service/status.html, embedded at build time (the Makefile turns it into a C array). */
#ifndef CHECKOUTD_STATUS_H
#define CHECKOUTD_STATUS_H

#include "checkout.h"

#include <stddef.h>

/* Resilience figures of one validation: retries and hedges since start, the circuit state now. */
typedef struct st_resilience {
    unsigned long retries, hedges;
    const char *circuit; /* "closed", "open" or "half_open" (static text) */
} st_resilience;

/* Validation i's resilience figures: the one place that reads them from the resilience work. */
void st_resilience_of(const co_service *s, size_t i, st_resilience *out);

/* The /status.json text (malloc'd, NUL-terminated; the caller frees it), *len its length; NULL
 * when out of memory. draining: the server is shutting down. now: win_now() (tests pass theirs).
 */
char *st_json(const co_service *s, int draining, int64_t now, size_t *len);

/* The /status page: static bytes, never freed. */
const char *st_page(size_t *len);

#endif
