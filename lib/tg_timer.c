/* tg_timer — THE loop timer heap: the one binary min-heap of a tg_loop, of tgi_timer pointers by
 * due time, each node keeping its index (libuv's timer.c), so start/stop are O(log n) and the
 * next due is O(1). Every timer of the loop is a node here: group deadlines, retry backoffs and
 * hedge delays (tgi_timer_start), the compensation backoffs (tg_alarm of tg.h, a node in its own
 * allocation) and the public tg_timer of tg_watch.h (the Redis client's command timeouts and
 * reconnect backoff), which embeds its node. The loop's wait ends at the
 * earliest node; due nodes run at the end of a turn (tgi_timers_run). Loop thread only.
 * The node is lib/tg_timer.h; these functions are declared in tg_internal.h and tg_watch.h. */
#include "tg_internal.h"
#include "tg_watch.h"

#include <errno.h>
#include <stdlib.h>

static void swap(tg_loop *l, size_t a, size_t b)
{
    tgi_timer *t = l->timers[a];
    l->timers[a] = l->timers[b];
    l->timers[b] = t;
    l->timers[a]->index = a;
    l->timers[b]->index = b;
}

static void up(tg_loop *l, size_t i)
{
    while (i > 0) {
        size_t parent = (i - 1) / 2;
        if (l->timers[parent]->due_ns <= l->timers[i]->due_ns)
            break;
        swap(l, i, parent);
        i = parent;
    }
}

static void down(tg_loop *l, size_t i)
{
    for (;;) {
        size_t left = 2 * i + 1, right = left + 1, min = i;
        if (left < l->ntimers && l->timers[left]->due_ns < l->timers[min]->due_ns)
            min = left;
        if (right < l->ntimers && l->timers[right]->due_ns < l->timers[min]->due_ns)
            min = right;
        if (min == i)
            return;
        swap(l, i, min);
        i = min;
    }
}

void tgi_timer_stop(tg_loop *l, tgi_timer *t)
{
    size_t i = t->index;
    if (i == SIZE_MAX)
        return;
    t->index = SIZE_MAX;
    l->ntimers--;
    if (i == l->ntimers)
        return;
    l->timers[i] = l->timers[l->ntimers];
    l->timers[i]->index = i;
    up(l, i);
    down(l, l->timers[i]->index);
}

int tgi_timer_start(tg_loop *l, tgi_timer *t, uint64_t due_ns, tgi_timer_fn fn, void *arg,
                    tg_group *group)
{
    tgi_timer_stop(l, t);
    if (l->ntimers == l->timers_cap) {
        size_t cap = l->timers_cap ? l->timers_cap * 2 : 256;
        tgi_timer **h = realloc(l->timers, cap * sizeof(*h));
        if (h == NULL)
            return -ENOMEM;
        l->timers = h;
        l->timers_cap = cap;
    }
    t->due_ns = due_ns;
    t->fn = fn;
    t->arg = arg;
    t->group = group;
    t->index = l->ntimers;
    l->timers[l->ntimers++] = t;
    up(l, t->index);
    return 0;
}

uint64_t tgi_timer_next(const tg_loop *l)
{
    return l->ntimers > 0 ? l->timers[0]->due_ns : UINT64_MAX;
}

tgi_timer *tgi_timer_pop(tg_loop *l)
{
    if (l->ntimers == 0)
        return NULL;
    tgi_timer *t = l->timers[0];
    tgi_timer_stop(l, t);
    return t;
}

void tgi_timers_run(tg_loop *l, uint64_t now_ns, tg_group **finish)
{
    while (l->ntimers > 0 && l->timers[0]->due_ns <= now_ns) {
        tgi_timer *t = tgi_timer_pop(l);
        t->fn(l, t, finish);
    }
}

/* ---- tg_alarm (tg.h): a node of this heap in its own allocation ---- */

/* A tg_alarm: the node first, so that the heap's element is the allocation. */
typedef struct tg_alarm_timer {
    tgi_timer timer;
    tg_alarm_fn fn;
    void *arg;
} tg_alarm_timer;

/* An alarm fired (stopped 0) or the loop stopped first (1): frees it, then calls its function. */
static void alarm_fire(tgi_timer *t, int stopped)
{
    tg_alarm_timer *a = (tg_alarm_timer *)t;
    tg_alarm_fn fn = a->fn;
    void *arg = a->arg;
    free(a);
    fn(arg, stopped);
}

static void on_alarm(tg_loop *l, tgi_timer *t, tg_group **finish)
{
    (void)l;
    (void)finish;
    alarm_fire(t, 0);
}

int tg_alarm(tg_loop *l, long ms, tg_alarm_fn fn, void *arg)
{
    if (atomic_load(&l->stopping))
        return -ESHUTDOWN;
    tg_alarm_timer *a = malloc(sizeof *a);
    if (a == NULL)
        return -ENOMEM;
    a->timer.index = SIZE_MAX;
    a->fn = fn;
    a->arg = arg;
    uint64_t due = tgi_now_ns() + (uint64_t)(ms > 0 ? ms : 0) * 1000000u;
    if (tgi_timer_start(l, &a->timer, due, on_alarm, a, NULL) != 0) {
        free(a);
        return -ENOMEM;
    }
    return 0;
}

void tgi_timers_drain(tg_loop *l, tg_group **finish)
{
    /* every running group has its deadline on the heap; backoffs and hedges name theirs; an
     * alarm has none and is told that the loop stopped; a public tg_timer has none either: it is
     * dropped unfired, its memory is its owner's */
    for (tgi_timer *t = tgi_timer_pop(l); t != NULL; t = tgi_timer_pop(l)) {
        if (t->group != NULL)
            tgi_finish_later(finish, t->group);
        else if (t->fn == on_alarm)
            alarm_fire(t, 1);
    }
}

/* ---- the public tg_timer (tg_watch.h): a node of this heap and a callback ---- */

static void on_public_timer(tg_loop *l, tgi_timer *node, tg_group **finish)
{
    (void)l;
    (void)finish;
    tg_timer *t = node->arg;
    t->cb(t, t->arg);
}

void tg_timer_init(tg_timer *t)
{
    t->node.due_ns = 0;
    t->node.index = SIZE_MAX;
    t->node.fn = NULL;
    t->node.arg = NULL;
    t->node.group = NULL;
    t->cb = NULL;
    t->arg = NULL;
}

int tg_timer_running(const tg_timer *t)
{
    return t->node.index != SIZE_MAX;
}

int tg_timer_start(tg_loop *l, tg_timer *t, long ms, tg_timer_fn cb, void *arg)
{
    uint64_t due = tgi_now_ns() + (uint64_t)(ms > 0 ? ms : 0) * 1000000u;
    t->cb = cb;
    t->arg = arg;
    return tgi_timer_start(l, &t->node, due, on_public_timer, t, NULL);
}

void tg_timer_stop(tg_loop *l, tg_timer *t)
{
    tgi_timer_stop(l, &t->node);
}
