/* tg_watch — fd watches on a tg_loop. See tg_watch.h; its timers are in lib/tg_timer.c. */
#include "tg_watch.h"

#include <errno.h>
#include <stdlib.h>
#include <sys/epoll.h>
#include <unistd.h>

#define TGW_MAX_READY 16 /* watches run per turn; more wait for the next turn */

struct tgw_set {
    int epfd;
};

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

/* ---- the loop's side ---- */

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
}
