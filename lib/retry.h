/* retry — the decisions of a validation's retry policy (contract v1.2, "Retries"). Pure functions:
 * no I/O, no clock, no allocation; the mechanism (lib/tg) asks and obeys.
 *
 *   retry_may_retry  is an attempt that failed with this kind retried at all? (never "rejected")
 *   retry_delay_ms   the wait before attempt n >= 2: full jitter, uniform in
 *                    [0, min(max_backoff_ms, backoff_ms * 2^(n-2))], or a 503's Retry-After
 *   retry_fits       "a retry never starts unless it can run whole": after the wait, at least
 *                    per_try_ms must be left before the validation's end and the group's deadline
 * Times are nanoseconds on one monotonic clock; durations are milliseconds. */
#ifndef CHECKOUTD_RETRY_H
#define CHECKOUTD_RETRY_H

#include <stdint.h>

/* The kinds a policy may retry ("on"), as bits; "rejected" has none: it is never retried. */
#define RETRY_ON_TRANSPORT        (1u << 0)
#define RETRY_ON_UPSTREAM_ERROR   (1u << 1)
#define RETRY_ON_TIMEOUT          (1u << 2)
#define RETRY_ON_INVALID_RESPONSE (1u << 3)
#define RETRY_ON_DEFAULT          (RETRY_ON_TRANSPORT | RETRY_ON_UPSTREAM_ERROR)
#define RETRY_MAX_ATTEMPTS        5

typedef struct retry_policy {
    long attempts;       /* 1..5; 1: no retry */
    long per_try_ms;     /* 1..timeout_ms: the most one attempt may run */
    long backoff_ms;     /* 0..10000 */
    long max_backoff_ms; /* backoff_ms..60000 */
    unsigned on;         /* RETRY_ON_* bits */
} retry_policy;

/* The bit of a kind name ("transport", ...), 0 for any other name (so also for "rejected"). */
unsigned retry_kind_bit(const char *name);

/* 1 when an attempt that failed with kind_bit (0: rejected or not a failure) is retried by p,
 * attempt being the number of attempts made so far (a retry needs attempt < p->attempts). */
int retry_may_retry(const retry_policy *p, unsigned kind_bit, long attempt);

/* One xorshift64 step of *state (non-zero): the jitter's random numbers, cheap, not secret. */
static inline uint64_t retry_xorshift(uint64_t *state)
{
    uint64_t x = *state;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    *state = x;
    return x;
}

/* The milliseconds to wait before attempt n (n >= 2): retry_after_ms when >= 0 (a 503's
 * Retry-After), else rnd reduced uniformly into [0, min(max_backoff_ms, backoff_ms * 2^(n-2))].
 * rnd is any 64-bit random number. Never overflows (the exponent is capped). */
long retry_delay_ms(const retry_policy *p, long n, uint64_t rnd, long retry_after_ms);

/* 1 when an attempt started at now_ns + delay_ms with a window of per_try_ms ends no later than
 * call_end_ns (the validation's timeout_ms from its first attempt) and group_end_ns (the
 * checkout's deadline). */
int retry_fits(const retry_policy *p, uint64_t now_ns, long delay_ms, uint64_t call_end_ns,
               uint64_t group_end_ns);

/* A Retry-After value of a 503, as delay-seconds ("2"), in ms; -1 when it is absent, not a plain
 * number of seconds (an HTTP date is not honoured: the backoff applies) or beyond one day. */
long retry_after_ms(const char *value);

#endif
