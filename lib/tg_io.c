/* tg_io — the loop's epoll wait and libcurl's event API (curl_multi_socket_action), for lib/tg.c.
 * libcurl tells the loop which sockets to watch (CURLMOPT_SOCKETFUNCTION -> epoll_ctl on the
 * loop's epfd) and when its timer is due (CURLMOPT_TIMERFUNCTION); a turn waits once in
 * epoll_wait, until the earliest of THE loop timer heap's next node (lib/tg_timer.c), libcurl's
 * timer, the hook's timeout and the caller's bound, then hands libcurl only the sockets that were
 * reported: O(ready sockets), not O(transfers in flight). Loop thread only. */
#include "tg_internal.h"

#include <curl/curl.h>
#include <errno.h>
#include <stdint.h>
#include <sys/epoll.h>
#include <unistd.h>

#define now_ns tgi_now_ns

/* ms until the earliest of the next timer, libcurl's timer and max_wait_ms; rounded up, so that
 * the wait never ends before what it waits for. */
static int wait_ms(const tg_loop *l, int max_wait_ms)
{
    uint64_t now = now_ns(), due = tgi_timer_next(l);
    if (l->timer_set && l->timer_due < due)
        due = l->timer_due;
    if (due == UINT64_MAX)
        return max_wait_ms;
    if (due <= now)
        return 0;
    uint64_t ms = (due - now + 999999u) / 1000000u;
    return ms < (uint64_t)max_wait_ms ? (int)ms : max_wait_ms;
}

/* CURLMOPT_SOCKETFUNCTION: libcurl says what to watch on s. socketp is NULL until the socket is in
 * the epoll set (curl_multi_assign marks it), so each socket costs one EPOLL_CTL_ADD, then MODs. */
static int on_socket(CURL *easy, curl_socket_t s, int what, void *userp, void *socketp)
{
    (void)easy;
    tg_loop *l = userp;
    if (what == CURL_POLL_REMOVE) {
        /* libcurl says so before it closes s; ENOENT/EBADF are harmless and ignored. */
        epoll_ctl(l->epfd, EPOLL_CTL_DEL, s, NULL);
        return 0;
    }
    struct epoll_event ev = {.events = 0, .data.u64 = (uint64_t)s};
    if (what == CURL_POLL_IN || what == CURL_POLL_INOUT)
        ev.events |= EPOLLIN;
    if (what == CURL_POLL_OUT || what == CURL_POLL_INOUT)
        ev.events |= EPOLLOUT;
    if (socketp != NULL) {
        epoll_ctl(l->epfd, EPOLL_CTL_MOD, s, &ev);
        return 0;
    }
    if (epoll_ctl(l->epfd, EPOLL_CTL_ADD, s, &ev) != 0 && errno == EEXIST)
        epoll_ctl(l->epfd, EPOLL_CTL_MOD, s, &ev);
    curl_multi_assign(l->multi, s, l);
    return 0;
}

/* CURLMOPT_TIMERFUNCTION: when libcurl wants curl_multi_socket_action(CURL_SOCKET_TIMEOUT). */
static int on_timer(CURLM *multi, long timeout_ms, void *userp)
{
    (void)multi;
    tg_loop *l = userp;
    l->timer_set = timeout_ms >= 0;
    l->timer_due = timeout_ms > 0 ? now_ns() + (uint64_t)timeout_ms * 1000000u : now_ns();
    return 0;
}

void tgi_curl_timer_run(tg_loop *l)
{
    int running = 0;
    if (l->timer_set && l->timer_due <= now_ns()) {
        l->timer_set = 0;
        curl_multi_socket_action(l->multi, CURL_SOCKET_TIMEOUT, 0, &running);
    }
}

static void drain_wakeups(tg_loop *l)
{
    uint64_t count;
    while (read(l->wakefd, &count, sizeof count) == (ssize_t)sizeof count)
        ;
}

/* The turn's wait (none when groups already wait to finish), then every ready socket to libcurl. */
void tgi_wait_and_dispatch(tg_loop *l, int max_wait_ms, int nowait)
{
    struct epoll_event events[TG_EVENTS];
    int ms = nowait ? 0 : wait_ms(l, max_wait_ms);
    if (l->has_hook && ms > 0 && l->hook.timeout_ms) {
        long hook_ms = l->hook.timeout_ms(l->hook.arg);
        if (hook_ms >= 0 && hook_ms < ms)
            ms = (int)hook_ms;
    }
    int n = epoll_wait(l->epfd, events, TG_EVENTS, ms);
    for (int i = 0; i < n; i++) {
        uint64_t tag = events[i].data.u64;
        if (tag == TG_TAG_WAKE) {
            drain_wakeups(l);
            continue;
        }
        if (tag == TG_TAG_HOOK || tag == TG_TAG_WATCH)
            continue; /* the hook and the watches run first in the next turn */
        int flags = 0;
        if (events[i].events & EPOLLIN)
            flags |= CURL_CSELECT_IN;
        if (events[i].events & EPOLLOUT)
            flags |= CURL_CSELECT_OUT;
        if (events[i].events & (EPOLLERR | EPOLLHUP))
            flags |= CURL_CSELECT_ERR;
        int running = 0;
        curl_multi_socket_action(l->multi, (curl_socket_t)tag, flags, &running);
    }
    tgi_curl_timer_run(l);
}

void tgi_curl_events(tg_loop *l)
{
    curl_multi_setopt(l->multi, CURLMOPT_SOCKETFUNCTION, on_socket);
    curl_multi_setopt(l->multi, CURLMOPT_SOCKETDATA, l);
    curl_multi_setopt(l->multi, CURLMOPT_TIMERFUNCTION, on_timer);
    curl_multi_setopt(l->multi, CURLMOPT_TIMERDATA, l);
}
