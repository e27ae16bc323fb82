/* win — sliding windows of one-second buckets, for the live view (/status): checkouts by outcome
 * and, per series (a validation), calls, errors by kind, cancellations and a latency histogram.
 *
 * Writers: each writer (a worker thread) has its own ring of WIN_SLOTS one-second buckets, so
 * recording takes no lock, allocates nothing and shares no cache line with another writer: a few
 * relaxed loads and stores of its own counters (plain moves on x86), and, once per second, the
 * clearing of the bucket it moves into. Invariant: one thread at a time records as a given writer
 * index (a worker records as its own index; at shutdown the thread that stopped a worker may take
 * its place once it has stopped).
 * Readers (any thread, any number) merge every writer's buckets of a range of seconds. A bucket
 * that its writer recycles during the read is left out (its second tag is read before and after),
 * so a read may miss the events of a bucket, never mixes two seconds. Counts are exact per bucket
 * up to that; the current second is still being written, so readers take complete seconds.
 * Latency: a fixed log-linear histogram (4 buckets per doubling, 1/32 ms .. 65 s): percentiles
 * are interpolated inside one bucket, so they are within 25 % of the true value (much closer in
 * practice). Time: seconds of CLOCK_MONOTONIC_COARSE (win_now), passed in so tests choose it.
 * Memory: WIN_SLOTS x (outcomes + nseries x (counters + histogram)) x 4 bytes per writer. */
#ifndef CHECKOUTD_WIN_H
#define CHECKOUTD_WIN_H

#include <stddef.h>
#include <stdint.h>

#define WIN_SLOTS    64 /* seconds kept per writer: a 60 s window plus the second being written */
#define WIN_MAX_SPAN 60 /* the longest range a reader may ask for */
#define WIN_KINDS    6  /* 0 = ok, then tg_kind's failure kinds 1..5 (rejected .. timeout) */
#define WIN_HBUCKETS 84 /* 21 doublings x 4: [1/32 ms, 65536 ms), the ends clamp */

typedef enum win_outcome { WIN_ACCEPTED, WIN_REJECTED, WIN_FAILED, WIN_OUTCOMES } win_outcome;

typedef struct win win;

/* Totals of one series over a range of seconds. */
typedef struct win_series {
    uint64_t calls;            /* finished calls (ok or failed), not cancelled ones */
    uint64_t kinds[WIN_KINDS]; /* kinds[0]: ok; kinds[k]: failures of tg_kind k */
    uint64_t cancelled;
    uint64_t hist[WIN_HBUCKETS]; /* latency of the finished calls */
} win_series;

typedef struct win_totals {
    uint64_t outcomes[WIN_OUTCOMES];
    size_t nseries;
    win_series series[]; /* nseries of them */
} win_totals;

/* nwriters >= 1, nseries 0..64. NULL when out of memory or out of range. */
win *win_new(size_t nwriters, size_t nseries);
void win_free(win *w); /* NULL is fine */
size_t win_writers(const win *w);
size_t win_nseries(const win *w);

/* Seconds of CLOCK_MONOTONIC_COARSE (a vDSO read, ~10 ns). */
int64_t win_now(void);

/* Recording, as writer (< nwriters), in second sec (>= 0). Out-of-range arguments are ignored. */
void win_checkout(win *w, size_t writer, int64_t sec, win_outcome outcome);
/* A call of series ended with kind (0 ok, 1..5 a failure kind) after ms milliseconds. */
void win_call(win *w, size_t writer, int64_t sec, size_t series, unsigned kind, double ms);
void win_cancelled(win *w, size_t writer, int64_t sec, size_t series);

/* A zeroed totals for w's series (malloc'd; free()), or NULL. */
win_totals *win_totals_new(const win *w);
/* Every writer's buckets of the seconds [from, to) merged into *out (zeroed first). A range longer
 * than WIN_MAX_SPAN is cut to its last WIN_MAX_SPAN seconds. O(writers x seconds x series x
 * WIN_HBUCKETS) relaxed loads. */
void win_read(const win *w, int64_t from, int64_t to, win_totals *out);

/* The q-quantile (0 < q <= 1) in ms of histogram hist, interpolated inside its bucket; 0 when the
 * histogram is empty. */
double win_quantile(const uint64_t hist[WIN_HBUCKETS], double q);
/* The histogram bucket of ms, and the lower bound of bucket i (ms): for tests and documentation. */
unsigned win_bucket(double ms);
double win_bucket_low(unsigned i);

#endif
