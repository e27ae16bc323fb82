/* tg_watch — fd watches and timers on a tg_loop. See tg_watch.h. */
#include "tg_watch.h"

#include <errno.h>
#include <stdlib.h>
#include <sys/epoll.h>
#include <time.h>
#include <unistd.h>

#define TGW_MAX_READY 16 /* watches run per turn; more wait for the next turn */

struct tgw_set {
    int epfd;
    tg_timer **heap;
    size_t len, cap;
};

static uint64_t now_ns(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (uint64_t)t.tv_sec * 1000000000u + (uint64_t)t.tv_nsec;
}

tgw_set *tgw_new(int loop_epfd, uint64_t tag)
{
    tgw_set *s = calloc(1, sizeof(*s));
    if (s == NULL)
        return NULL;
    s->epfd = epoll_create1(EPOLL_CLOEXEC);
    struct epoll_event ev = {.events = EPOLLIN, .data.u64 = tag};
    if (s->epfd < 0 || epoll_ctl(loop_epfd, EPOLL_CTL_ADD, s->epfd, &ev) != 0) {
        if (s->epfd >= 0)
            close(s->epfd);
        free(s);
        return NULL;
    }
    return s;
}

void tgw_free(tgw_set *s)
{
    if (s == NULL)
        return;
    close(s->epfd);
    free(s->heap);
    free(s);
}

/* ---- watches ---- */

static uint32_t epoll_events(unsigned events)
{
    return ((events & TG_WATCH_READ) ? EPOLLIN : 0u) | ((events & TG_WATCH_WRITE) ? EPOLLOUT : 0u);
}

int tg_watch_start(tg_loop *l, tg_watch *w, int fd, unsigned events, tg_watch_fn cb, void *arg)
{
    tgw_set *s = tg_loop_watches(l);
    struct epoll_event ev = {.events = epoll_events(events), .data.ptr = w};
    w->fd = fd;
    w->events = events;
    w->cb = cb;
    w->arg = arg;
    if (epoll_ctl(s->epfd, EPOLL_CTL_ADD, fd, &ev) != 0) {
        w->fd = -1;
        return -errno;
    }
    return 0;
}

int tg_watch_set(tg_loop *l, tg_watch *w, unsigned events)
{
    struct epoll_event ev = {.events = epoll_events(events), .data.ptr = w};
    if (w->fd < 0)
        return -EBADF;
    if (events == w->events)
        return 0;
    w->events = events;
    return epoll_ctl(tg_loop_watches(l)->epfd, EPOLL_CTL_MOD, w->fd, &ev) == 0 ? 0 : -errno;
}

void tg_watch_stop(tg_loop *l, tg_watch *w)
{
    if (w->fd < 0)
        return;
    epoll_ctl(tg_loop_watches(l)->epfd, EPOLL_CTL_DEL, w->fd, NULL);
    w->fd = -1;
    w->events = 0;
}

/* ---- timers: a binary min-heap on due_ns ---- */

static void heap_set(tgw_set *s, size_t i, tg_timer *t)
{
    s->heap[i] = t;
    t->index = i;
}

static void heap_up(tgw_set *s, size_t i)
{
    tg_timer *t = s->heap[i];
    while (i > 0 && s->heap[(i - 1) / 2]->due_ns > t->due_ns) {
        heap_set(s, i, s->heap[(i - 1) / 2]);
        i = (i - 1) / 2;
    }
    heap_set(s, i, t);
}

static void heap_down(tgw_set *s, size_t i)
{
    tg_timer *t = s->heap[i];
    for (;;) {
        size_t c = 2 * i + 1;
        if (c >= s->len)
            break;
        if (c + 1 < s->len && s->heap[c + 1]->due_ns < s->heap[c]->due_ns)
            c++;
        if (s->heap[c]->due_ns >= t->due_ns)
            break;
        heap_set(s, i, s->heap[c]);
        i = c;
    }
    heap_set(s, i, t);
}

static void heap_remove(tgw_set *s, tg_timer *t)
{
    size_t i = t->index;
    tg_timer *last = s->heap[--s->len];
    t->index = SIZE_MAX;
    if (i == s->len)
        return;
    heap_set(s, i, last);
    heap_up(s, i);
    heap_down(s, last->index);
}

void tg_timer_init(tg_timer *t)
{
    t->index = SIZE_MAX;
    t->cb = NULL;
    t->arg = NULL;
    t->due_ns = 0;
}

int tg_timer_running(const tg_timer *t)
{
    return t->index != SIZE_MAX;
}

int tg_timer_start(tg_loop *l, tg_timer *t, long ms, tg_timer_fn cb, void *arg)
{
    tgw_set *s = tg_loop_watches(l);
    if (tg_timer_running(t))
        heap_remove(s, t);
    if (s->len == s->cap) {
        size_t cap = s->cap ? 2 * s->cap : 16;
        tg_timer **h = realloc(s->heap, cap * sizeof(*h));
        if (h == NULL)
            return -ENOMEM;
        s->heap = h;
        s->cap = cap;
    }
    t->due_ns = now_ns() + (uint64_t)(ms > 0 ? ms : 0) * 1000000u;
    t->cb = cb;
    t->arg = arg;
    heap_set(s, s->len++, t);
    heap_up(s, t->index);
    return 0;
}

void tg_timer_stop(tg_loop *l, tg_timer *t)
{
    if (tg_timer_running(t))
        heap_remove(tg_loop_watches(l), t);
}

/* ---- the loop's side ---- */

long tgw_next_ms(const tgw_set *s)
{
    if (s == NULL || s->len == 0)
        return -1;
    uint64_t now = now_ns(), due = s->heap[0]->due_ns;
    return due <= now ? 0 : (long)((due - now + 999999u) / 1000000u);
}

void tgw_run(tgw_set *s)
{
    if (s == NULL)
        return;
    /* One ready fd at a time: a callback may stop another watch, and then no stale event of it
     * can be delivered (it left the epoll set before the next epoll_wait). */
    for (int i = 0; i < TGW_MAX_READY; i++) {
        struct epoll_event ev;
        if (epoll_wait(s->epfd, &ev, 1, 0) != 1)
            break;
        tg_watch *w = ev.data.ptr;
        unsigned events = 0;
        if (ev.events & (EPOLLIN | EPOLLHUP | EPOLLERR))
            events |= TG_WATCH_READ;
        if (ev.events & (EPOLLOUT | EPOLLERR))
            events |= TG_WATCH_WRITE;
        events &= w->events ? w->events : events;
        if (w->fd >= 0 && w->cb != NULL)
            w->cb(w, events, w->arg);
    }
    uint64_t now = now_ns();
    while (s->len > 0 && s->heap[0]->due_ns <= now) {
        tg_timer *t = s->heap[0];
        heap_remove(s, t);
        t->cb(t, t->arg);
    }
}
