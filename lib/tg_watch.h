/* tg_watch — fd watches and timers on a tg_loop, for event sources other than libcurl and the
 * HTTP daemon's hook (the Redis client's socket, its command timeouts), run by the loop's thread.
 *
 * A watch calls cb(w, events, arg) on the loop thread when fd is readable (TG_WATCH_READ) or
 * writable (TG_WATCH_WRITE), level-triggered, while those events are wanted. A timer calls cb once,
 * ms after tg_timer_start, unless stopped first. Each turn of the loop runs the ready watches
 * first, before the hook and before submitted groups start; due timers fire at the end of the
 * turn with the loop's other timers, and the next turn (hook, submitted groups) follows without a
 * wait, so a callback may submit a group or resume a connection without a wake-up.
 * A timer still running when the loop stops is dropped unfired (tg_timer_running is 0 after
 * tg_loop_stop); it owns no memory of the loop, so nothing leaks.
 * Threads: every function here is called on the loop's thread, or before the loop started / after
 * it stopped; no locks. A callback may start or stop any watch or timer, itself included.
 * Costs: a watch is one EPOLL_CTL per change on a second epoll set (nested in the loop's, so tg.c
 * has one more fd, not one more kind of event); a turn with a ready watch costs one epoll_wait
 * (timeout 0) per ready fd. A timer is a node of THE loop timer heap (lib/tg_timer.c, shared
 * with group deadlines, backoffs, hedges and tg_alarm): O(log n) start/stop, O(1) next due, no
 * allocation but the heap's array growing (doubling). */
#ifndef CHECKOUTD_TG_WATCH_H
#define CHECKOUTD_TG_WATCH_H

#include "tg.h"
#include "tg_timer.h"

#include <stddef.h>
#include <stdint.h>

#define TG_WATCH_READ  1u
#define TG_WATCH_WRITE 2u

typedef struct tg_watch tg_watch;
typedef void (*tg_watch_fn)(tg_watch *w, unsigned events, void *arg);
struct tg_watch {
    int fd;          /* -1 when stopped */
    unsigned events; /* wanted */
    tg_watch_fn cb;
    void *arg;
};

typedef struct tg_timer tg_timer;
typedef void (*tg_timer_fn)(tg_timer *t, void *arg);
struct tg_timer {
    tgi_timer node; /* in THE loop timer heap while running (node.index != SIZE_MAX) */
    tg_timer_fn cb;
    void *arg;
};

/* Watches fd for events (0 is allowed: registered, nothing wanted yet). 0 or a negative errno. */
int tg_watch_start(tg_loop *l, tg_watch *w, int fd, unsigned events, tg_watch_fn cb, void *arg);
/* Changes the wanted events of a started watch. 0 or a negative errno. */
int tg_watch_set(tg_loop *l, tg_watch *w, unsigned events);
/* Stops a watch (before fd is closed); no-op on a stopped or zeroed-with-fd--1 watch. */
void tg_watch_stop(tg_loop *l, tg_watch *w);

/* The timers are implemented in lib/tg_timer.c, on the loop's one heap. */
/* A zeroed timer must be initialised once (not running). */
void tg_timer_init(tg_timer *t);
/* (Re)starts t to fire ms (>= 0) from now. 0 or -ENOMEM (then t is not running). */
int tg_timer_start(tg_loop *l, tg_timer *t, long ms, tg_timer_fn cb, void *arg);
/* Stops t; a stopped timer is fine. */
void tg_timer_stop(tg_loop *l, tg_timer *t);
int tg_timer_running(const tg_timer *t);

/* ---- for lib/tg.c only: the loop owns one set ---- */
typedef struct tgw_set tgw_set;
/* A set whose epoll fd is added to the loop's epfd with tag. NULL on failure. */
tgw_set *tgw_new(int loop_epfd, uint64_t tag);
void tgw_free(tgw_set *s);
/* Runs ready watches. */
void tgw_run(tgw_set *s);
/* The loop's set (lib/tg.c). */
tgw_set *tg_loop_watches(tg_loop *l);

#endif
