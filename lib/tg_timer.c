/* tgi_timer — the loop's timers: a binary min-heap of tgi_timer pointers by due time, each element
 * keeping its index (libuv's timer.c), so start/stop are O(log n) and the next due is O(1). Group
 * deadlines, retry backoffs and hedge delays all live here; the loop's wait ends at the earliest.
 * Loop thread only. */
#include "tg_internal.h"

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

/* A tg_alarm: the timer first, so that the heap's element is the allocation. */
typedef struct tg_alarm_timer {
    tgi_timer timer;
    tg_alarm_fn fn;
    void *arg;
} tg_alarm_timer;

void tgi_alarm_fire(tgi_timer *t, int stopped)
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
    tgi_alarm_fire(t, 0);
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
