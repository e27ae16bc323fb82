/* tg_timer — the node of THE loop timer heap (lib/tg_timer.c), the one heap that every timer of a
 * tg_loop lives in: group deadlines, retry backoffs and hedge delays (lib/tg.c, lib/tg_attempt.c)
 * and the public tg_timer of tg_watch.h (which embeds a node as its first member). The loop's wait
 * ends at the earliest node; the heap's functions are declared in tg_internal.h.
 * A node keeps its heap index (libuv's model): start/stop O(log n), the next due O(1). */
#ifndef CHECKOUTD_TG_TIMER_H
#define CHECKOUTD_TG_TIMER_H

#include "tg.h"

#include <stddef.h>
#include <stdint.h>

typedef struct tgi_timer tgi_timer;

/* fn runs on the loop thread once due, after the node was taken off the heap; it may add groups
 * to finish. */
typedef void (*tgi_timer_fn)(tg_loop *l, tgi_timer *t, tg_group **finish);
struct tgi_timer {
    uint64_t due_ns;
    size_t index; /* in the heap; SIZE_MAX when not in it */
    tgi_timer_fn fn;
    void *arg;
    tg_group *group; /* whose timer it is: the loop's stop finishes that group; NULL: none */
};

#endif
