/* breaker — one circuit breaker per validation, shared by every worker thread of the process
 * (contract v1.2, "Circuit breaker").
 *
 *   closed     attempts run; `threshold` failures in a row (transport, upstream_error, timeout,
 *              invalid_response) open it; a success or a rejected answer resets the count
 *   open       for open_ms every admit is refused (REJECT), no upstream request is made
 *   half_open  after open_ms one admit is the probe (PROBE), the others are refused while it runs;
 *              the probe's success closes the breaker, its failure opens it for another open_ms
 * A cancelled attempt counts neither way (a cancelled probe lets the next caller probe).
 *
 * Threads: every function is safe from any thread. The state is one mutex-guarded struct whose
 * critical sections are a few comparisons (never held across I/O or a callback); the rejection
 * count is an atomic, read by /metrics without the lock.
 * Times are milliseconds of one monotonic clock, given by the caller (tests pass their own). */
#ifndef CHECKOUTD_BREAKER_H
#define CHECKOUTD_BREAKER_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>

typedef enum breaker_verdict {
    BREAKER_ADMIT = 0, /* closed: go */
    BREAKER_PROBE,     /* half-open: go, as the one probe; record its outcome */
    BREAKER_REJECT,    /* open, or half-open with a probe running: fail at once */
} breaker_verdict;

typedef enum breaker_outcome {
    BREAKER_SUCCESS = 0, /* a success or a rejected answer: the upstream is alive */
    BREAKER_FAILURE,     /* transport, upstream_error, timeout, invalid_response */
    BREAKER_CANCELLED,   /* the attempt was cancelled: neither way */
} breaker_outcome;

typedef enum breaker_state {
    BREAKER_CLOSED = 0,
    BREAKER_OPEN,
    BREAKER_HALF_OPEN,
} breaker_state;

typedef struct breaker {
    pthread_mutex_t lock;
    long threshold, open_ms;
    long failures;     /* in a row, while closed */
    int open;          /* 1 from tripping until a probe succeeds */
    int probing;       /* a probe is out */
    uint64_t until_ms; /* while open: when it half-opens */
    atomic_uint_fast64_t rejections;
} breaker;

/* threshold 1..1000 failures in a row, open_ms 100..600000. 0 or a negative errno. */
int breaker_init(breaker *b, long threshold, long open_ms);
void breaker_destroy(breaker *b);

/* May an attempt start at now_ms? On REJECT, *half_open_in_ms (may be NULL) gets the ms until the
 * breaker half-opens (0 when half-open with a probe running) and the rejection is counted. */
breaker_verdict breaker_admit(breaker *b, uint64_t now_ms, long *half_open_in_ms);

/* The outcome of an attempt that admit let through with verdict v (ADMIT or PROBE). */
void breaker_record(breaker *b, breaker_verdict v, breaker_outcome o, uint64_t now_ms);

breaker_state breaker_state_at(breaker *b, uint64_t now_ms);
uint64_t breaker_rejections(const breaker *b);
/* "closed", "open", "half_open". */
const char *breaker_state_name(breaker_state s);

#endif
