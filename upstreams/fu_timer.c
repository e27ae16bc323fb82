/* fu_timer — one thread that resumes held (suspended) MHD connections when their answer is due, and
 * notices clients that hang up while held (see fu_timer.h for the contract).
 *
 * Costs: fu_timer_hold is an O(log n) heap push plus one epoll_ctl; the thread wakes once per due
 * time or hang-up (epoll_wait timeout = time to the earliest due hold, an eventfd wakes it when an
 * earlier hold arrives) and releases at most FU_TIMER_BATCH holds per wake-up, so it never spins.
 *
 * Invariants (under mu): a hold is in the heap iff its fd is in the epoll set iff its connection is
 * suspended and not yet released. Only this thread removes holds, so an epoll event always names a
 * hold that is still in the heap. The lock is never held while calling MHD or on_release: the MHD
 * thread takes mu (in fu_timer_hold) from inside MHD, so the reverse order would risk a deadlock.
 */
#include "fu_timer.h"

#include <errno.h>
#include <limits.h>
#include <stddef.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <time.h>
#include <unistd.h>

#define FU_TIMER_BATCH 256 /* holds released per wake-up; bounds the stack arrays below */
#define FU_NS_PER_MS   1000000ULL

struct fu_timer {
    pthread_mutex_t mu;
    fu_heap heap;  /* guarded by mu: every pending hold, by due time */
    bool stopping; /* guarded by mu: set once by fu_timer_stop */
    bool joined;   /* only touched by the thread calling fu_timer_stop/destroy */
    int epfd;      /* held sockets (data.ptr = hold) and the eventfd (data.ptr = NULL) */
    int evfd;      /* written to wake the thread: earlier due time or stop */
    pthread_t thread;
};

uint64_t fu_timer_now_ns(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ULL + (uint64_t)ts.tv_nsec;
}

static void fu_timer_wake(fu_timer *t)
{
    uint64_t one = 1;

    /* Can only fail with EAGAIN when the counter is near 2^64: the thread is awake then anyway. */
    if (write(t->evfd, &one, sizeof(one)) < 0 && errno != EAGAIN)
        fprintf(stderr, "{\"event\":\"error\",\"what\":\"eventfd write\",\"errno\":%d}\n", errno);
}

static void fu_timer_drain_wake(fu_timer *t)
{
    uint64_t n;

    /* Non-blocking; one read resets the counter. Nothing to do if it was already drained. */
    if (read(t->evfd, &n, sizeof(n)) < 0 && errno != EAGAIN)
        fprintf(stderr, "{\"event\":\"error\",\"what\":\"eventfd read\",\"errno\":%d}\n", errno);
}

/* epoll_wait timeout in ms: 0 when something is due (or stopping), -1 when nothing is held, else
 * the time to the earliest due hold rounded up, so the thread never wakes early and spins. */
static int fu_timer_wait_ms(fu_timer *t)
{
    int ms = -1;
    fu_heap_node *top;

    pthread_mutex_lock(&t->mu);
    top = fu_heap_peek(&t->heap);
    if (t->stopping) {
        ms = 0;
    } else if (top != NULL) {
        uint64_t now = fu_timer_now_ns();
        uint64_t wait = top->key > now ? (top->key - now + FU_NS_PER_MS - 1) / FU_NS_PER_MS : 0;
        ms = wait > INT_MAX ? INT_MAX : (int)wait;
    }
    pthread_mutex_unlock(&t->mu);
    return ms;
}

_Static_assert(offsetof(fu_hold, node) == 0, "fu_hold must start with its heap node");

static fu_hold *fu_timer_hold_of(fu_heap_node *n)
{
    /* node is the first member of fu_hold, so the node's address is the hold's. */
    return (fu_hold *)(void *)n;
}

/* Under mu: takes h out of the heap and the epoll set. The fd must leave the epoll set before the
 * connection is resumed: once MHD closes it, the number may be reused by a new connection. */
static void fu_timer_take(fu_timer *t, fu_hold *h)
{
    fu_heap_remove(&t->heap, &h->node);
    if (epoll_ctl(t->epfd, EPOLL_CTL_DEL, h->fd, NULL) != 0)
        fprintf(stderr, "{\"event\":\"error\",\"what\":\"epoll_ctl del\",\"errno\":%d}\n", errno);
}

static void *fu_timer_main(void *arg)
{
    fu_timer *t = arg;
    struct epoll_event evs[FU_TIMER_BATCH];
    fu_hold *batch[FU_TIMER_BATCH];
    bool closed[FU_TIMER_BATCH];
    bool done = false;

    while (!done) {
        int n = epoll_wait(t->epfd, evs, FU_TIMER_BATCH, fu_timer_wait_ms(t));
        size_t nb = 0;
        uint64_t now;

        if (n < 0) {
            if (errno != EINTR)
                fprintf(stderr, "{\"event\":\"error\",\"what\":\"epoll_wait\",\"errno\":%d}\n",
                        errno);
            n = 0;
        }
        pthread_mutex_lock(&t->mu);
        /* Hang-ups first: each event names a hold still in the heap (see the invariants). */
        for (int i = 0; i < n; i++) {
            fu_hold *h = evs[i].data.ptr;
            if (h == NULL) {
                fu_timer_drain_wake(t);
                continue;
            }
            if (h->node.idx == FU_HEAP_NONE)
                continue; /* defensive; unreachable while the invariants hold */
            fu_timer_take(t, h);
            batch[nb] = h;
            closed[nb] = true;
            nb++;
        }
        /* Then every hold that is due (all of them when stopping), up to the batch size; the rest
         * are picked up on the next round, which then waits 0 ms. */
        now = fu_timer_now_ns();
        while (nb < FU_TIMER_BATCH) {
            fu_heap_node *top = fu_heap_peek(&t->heap);
            if (top == NULL || (!t->stopping && top->key > now))
                break;
            fu_timer_take(t, fu_timer_hold_of(top));
            batch[nb] = fu_timer_hold_of(top);
            closed[nb] = false;
            nb++;
        }
        done = t->stopping && t->heap.len == 0;
        pthread_mutex_unlock(&t->mu);

        /* Outside the lock: the hold is ours alone now (out of heap and epoll set). After
         * MHD_resume_connection the MHD thread may complete and free it, so conn is read first. */
        for (size_t i = 0; i < nb; i++) {
            fu_hold *h = batch[i];
            struct MHD_Connection *conn = h->conn;
            uint64_t waited = now > h->held_ns ? (now - h->held_ns) / FU_NS_PER_MS : 0;
            h->on_release(h, closed[i], waited);
            MHD_resume_connection(conn);
        }
    }
    return NULL;
}

fu_status fu_timer_create(fu_timer **out)
{
    fu_status st = FU_OK;
    fu_timer *t = NULL;
    struct epoll_event ev;
    sigset_t all;
    sigset_t old;
    bool mu_ok = false;
    int rc;

    *out = NULL;
    t = calloc(1, sizeof(*t));
    if (t == NULL) {
        st = FU_ENOMEM;
        goto fail;
    }
    t->epfd = -1;
    t->evfd = -1;
    fu_heap_init(&t->heap);
    if (pthread_mutex_init(&t->mu, NULL) != 0) {
        st = FU_ESYS;
        goto fail;
    }
    mu_ok = true;
    t->epfd = epoll_create1(EPOLL_CLOEXEC);
    t->evfd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (t->epfd < 0 || t->evfd < 0) {
        st = FU_ESYS;
        goto fail;
    }
    memset(&ev, 0, sizeof(ev));
    ev.events = EPOLLIN;
    ev.data.ptr = NULL;
    if (epoll_ctl(t->epfd, EPOLL_CTL_ADD, t->evfd, &ev) != 0) {
        st = FU_ESYS;
        goto fail;
    }
    /* The timer thread must never take SIGTERM/SIGINT: the main thread waits for them. */
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    rc = pthread_create(&t->thread, NULL, fu_timer_main, t);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (rc != 0) {
        errno = rc;
        st = FU_ESYS;
        goto fail;
    }
    *out = t;
    return FU_OK;
fail:
    if (t != NULL) {
        if (t->evfd >= 0)
            close(t->evfd);
        if (t->epfd >= 0)
            close(t->epfd);
        if (mu_ok)
            pthread_mutex_destroy(&t->mu);
        free(t);
    }
    return st;
}

fu_status fu_timer_hold(fu_timer *t, fu_hold *h, struct MHD_Connection *conn, uint64_t delay_ns,
                        fu_timer_release_fn on_release, void *owner)
{
    fu_status st = FU_OK;
    const union MHD_ConnectionInfo *ci;
    struct epoll_event ev;
    bool locked = false;
    bool wake;
    uint64_t now = fu_timer_now_ns();

    ci = MHD_get_connection_info(conn, MHD_CONNECTION_INFO_CONNECTION_FD);
    if (ci == NULL) {
        st = FU_ESYS;
        goto fail;
    }
    h->node.key = now + delay_ns;
    h->node.idx = FU_HEAP_NONE;
    h->conn = conn;
    h->fd = ci->connect_fd;
    h->held_ns = now;
    h->on_release = on_release;
    h->owner = owner;

    pthread_mutex_lock(&t->mu);
    locked = true;
    if (t->stopping) {
        st = FU_ESTOPPED;
        goto fail;
    }
    /* Everything that can fail happens before the suspend, so failure needs no undo. */
    st = fu_heap_reserve(&t->heap, 1);
    if (st != FU_OK)
        goto fail;
    /* Hang-up only (EPOLLHUP is implied); no EPOLLIN, so pipelined bytes do not wake us. An fd
     * that has already hung up reports at once (level-triggered), so no close is missed. */
    memset(&ev, 0, sizeof(ev));
    ev.events = EPOLLRDHUP | EPOLLHUP;
    ev.data.ptr = h;
    if (epoll_ctl(t->epfd, EPOLL_CTL_ADD, h->fd, &ev) != 0) {
        st = FU_ESYS;
        goto fail;
    }
    MHD_suspend_connection(conn);
    (void)fu_heap_push(&t->heap, &h->node); /* cannot fail: room was reserved */
    wake = h->node.idx == 0;                /* a new earliest due time: shorten the wait */
    pthread_mutex_unlock(&t->mu);
    if (wake)
        fu_timer_wake(t);
    return FU_OK;
fail:
    if (locked)
        pthread_mutex_unlock(&t->mu);
    return st;
}

void fu_timer_stop(fu_timer *t)
{
    if (t->joined)
        return;
    pthread_mutex_lock(&t->mu);
    t->stopping = true;
    pthread_mutex_unlock(&t->mu);
    fu_timer_wake(t);
    pthread_join(t->thread, NULL);
    t->joined = true;
}

void fu_timer_destroy(fu_timer *t)
{
    if (t == NULL)
        return;
    fu_timer_stop(t);
    close(t->evfd);
    close(t->epfd);
    fu_heap_free(&t->heap);
    pthread_mutex_destroy(&t->mu);
    free(t);
}
