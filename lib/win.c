/* win — per-writer rings of one-second buckets. See win.h.
 *
 * A writer's ring is one cache-line-aligned block: the second tag of each slot, then the slots'
 * counters, each slot `stride` 32-bit cells: the outcomes, then per series its kinds, its
 * cancellations and its histogram. Only the owning writer stores into it, so an increment is a
 * relaxed load and a relaxed store (no read-modify-write instruction, no lock prefix).
 * Moving into a slot that holds another second is a seqlock write: tag -1, release fence, clear
 * the cells, tag = sec (release). A reader takes the tag (acquire), copies the cells, fences
 * (acquire) and takes the tag again: the copy counts only if both are the second it wants. */
#include "win.h"

#include <math.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define WIN_MAX_SERIES 64
#define CELL           (WIN_KINDS + 1 + WIN_HBUCKETS) /* kinds, cancelled, histogram */
#define OFF_CANCELLED  WIN_KINDS
#define OFF_HIST       (WIN_KINDS + 1)
#define LOW_EXP        (-5) /* the first bucket starts at 2^-5 ms */

typedef _Atomic uint32_t cell_t;

typedef struct win_ring {
    _Atomic int64_t sec[WIN_SLOTS]; /* the second each slot holds, -1: none (or being cleared) */
    cell_t cells[];                 /* WIN_SLOTS x stride */
} win_ring;

struct win {
    size_t nwriters, nseries, stride;
    win_ring *rings[];
};

int64_t win_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC_COARSE, &ts);
    return (int64_t)ts.tv_sec;
}

win *win_new(size_t nwriters, size_t nseries)
{
    if (nwriters == 0 || nwriters > 1024 || nseries > WIN_MAX_SERIES)
        return NULL;
    win *w = calloc(1, sizeof(*w) + nwriters * sizeof(win_ring *));
    if (w == NULL)
        return NULL;
    w->nwriters = nwriters;
    w->nseries = nseries;
    w->stride = WIN_OUTCOMES + nseries * CELL;
    size_t bytes = sizeof(win_ring) + WIN_SLOTS * w->stride * sizeof(cell_t);
    bytes = (bytes + 63) / 64 * 64; /* aligned_alloc wants a multiple of the alignment */
    for (size_t i = 0; i < nwriters; i++) {
        win_ring *r = aligned_alloc(64, bytes);
        if (r == NULL)
            goto fail;
        memset(r, 0, bytes); /* before any thread sees it: plain stores are fine */
        for (size_t s = 0; s < WIN_SLOTS; s++)
            atomic_init(&r->sec[s], -1);
        w->rings[i] = r;
    }
    return w;
fail:
    win_free(w);
    return NULL;
}

void win_free(win *w)
{
    if (w == NULL)
        return;
    for (size_t i = 0; i < w->nwriters; i++)
        free(w->rings[i]);
    free(w);
}

size_t win_writers(const win *w)
{
    return w->nwriters;
}

size_t win_nseries(const win *w)
{
    return w->nseries;
}

/* The writer's slot for sec, cleared when it held another second. NULL for bad arguments. */
static cell_t *slot_for(win *w, size_t writer, int64_t sec)
{
    if (w == NULL || writer >= w->nwriters || sec < 0)
        return NULL;
    win_ring *r = w->rings[writer];
    size_t i = (size_t)sec & (WIN_SLOTS - 1);
    cell_t *cells = r->cells + i * w->stride;
    if (atomic_load_explicit(&r->sec[i], memory_order_relaxed) != sec) {
        atomic_store_explicit(&r->sec[i], -1, memory_order_relaxed);
        atomic_thread_fence(memory_order_release);
        for (size_t k = 0; k < w->stride; k++)
            atomic_store_explicit(&cells[k], 0, memory_order_relaxed);
        atomic_store_explicit(&r->sec[i], sec, memory_order_release);
    }
    return cells;
}

/* Only the owning writer stores here: load + store instead of an atomic read-modify-write. */
static void bump(cell_t *c)
{
    atomic_store_explicit(c, atomic_load_explicit(c, memory_order_relaxed) + 1,
                          memory_order_relaxed);
}

unsigned win_bucket(double ms)
{
    if (!(ms >= 0x1p-5)) /* also NaN and negative values */
        return 0;
    if (ms >= 0x1p16)
        return WIN_HBUCKETS - 1;
    int e = 0;
    double m = frexp(ms, &e); /* ms = m * 2^e, m in [0.5, 1) */
    unsigned sub = (unsigned)((m - 0.5) * 8.0);
    return (unsigned)(e - 1 - LOW_EXP) * 4u + (sub > 3 ? 3 : sub);
}

double win_bucket_low(unsigned i)
{
    return ldexp(1.0 + (double)(i % 4) / 4.0, (int)(i / 4) + LOW_EXP);
}

void win_checkout(win *w, size_t writer, int64_t sec, win_outcome outcome)
{
    if ((unsigned)outcome >= WIN_OUTCOMES)
        return;
    cell_t *cells = slot_for(w, writer, sec);
    if (cells != NULL)
        bump(&cells[outcome]);
}

void win_call(win *w, size_t writer, int64_t sec, size_t series, unsigned kind, double ms)
{
    if (w == NULL || series >= w->nseries || kind >= WIN_KINDS)
        return;
    cell_t *cells = slot_for(w, writer, sec);
    if (cells == NULL)
        return;
    cell_t *s = cells + WIN_OUTCOMES + series * CELL;
    bump(&s[kind]);
    bump(&s[OFF_HIST + win_bucket(ms)]);
}

void win_cancelled(win *w, size_t writer, int64_t sec, size_t series)
{
    if (w == NULL || series >= w->nseries)
        return;
    cell_t *cells = slot_for(w, writer, sec);
    if (cells != NULL)
        bump(&cells[WIN_OUTCOMES + series * CELL + OFF_CANCELLED]);
}

win_totals *win_totals_new(const win *w)
{
    win_totals *t = calloc(1, sizeof(*t) + w->nseries * sizeof(win_series));
    if (t != NULL)
        t->nseries = w->nseries;
    return t;
}

static void add_slot(const win *w, const uint32_t *copy, win_totals *out)
{
    for (size_t o = 0; o < WIN_OUTCOMES; o++)
        out->outcomes[o] += copy[o];
    for (size_t s = 0; s < w->nseries && s < out->nseries; s++) {
        const uint32_t *c = copy + WIN_OUTCOMES + s * CELL;
        win_series *ws = &out->series[s];
        for (size_t k = 0; k < WIN_KINDS; k++) {
            ws->kinds[k] += c[k];
            ws->calls += c[k];
        }
        ws->cancelled += c[OFF_CANCELLED];
        for (size_t h = 0; h < WIN_HBUCKETS; h++)
            ws->hist[h] += c[OFF_HIST + h];
    }
}

void win_read(const win *w, int64_t from, int64_t to, win_totals *out)
{
    size_t nseries = out->nseries;
    memset(out, 0, sizeof(*out) + nseries * sizeof(win_series));
    out->nseries = nseries;
    if (to - from > WIN_MAX_SPAN)
        from = to - WIN_MAX_SPAN;
    if (from < 0)
        from = 0;
    uint32_t *copy = malloc(w->stride * sizeof(uint32_t));
    if (copy == NULL)
        return;
    for (int64_t sec = from; sec < to; sec++) {
        size_t i = (size_t)sec & (WIN_SLOTS - 1);
        for (size_t k = 0; k < w->nwriters; k++) {
            win_ring *r = w->rings[k];
            if (atomic_load_explicit(&r->sec[i], memory_order_acquire) != sec)
                continue;
            const cell_t *cells = r->cells + i * w->stride;
            for (size_t c = 0; c < w->stride; c++)
                copy[c] = atomic_load_explicit(&cells[c], memory_order_relaxed);
            atomic_thread_fence(memory_order_acquire);
            if (atomic_load_explicit(&r->sec[i], memory_order_relaxed) != sec)
                continue; /* recycled while we copied */
            add_slot(w, copy, out);
        }
    }
    free(copy);
}

double win_quantile(const uint64_t hist[WIN_HBUCKETS], double q)
{
    uint64_t total = 0;
    for (unsigned i = 0; i < WIN_HBUCKETS; i++)
        total += hist[i];
    if (total == 0 || !(q > 0))
        return 0;
    if (q > 1)
        q = 1;
    double rank = q * (double)total, below = 0;
    for (unsigned i = 0; i < WIN_HBUCKETS; i++) {
        if (hist[i] == 0)
            continue;
        if (below + (double)hist[i] >= rank) {
            double lo = win_bucket_low(i), hi = win_bucket_low(i + 1);
            return lo + (hi - lo) * (rank - below) / (double)hist[i];
        }
        below += (double)hist[i];
    }
    return win_bucket_low(WIN_HBUCKETS);
}
