/* fu_timer — holds suspended libmicrohttpd connections until their answer is due, on ONE thread.
 *
 * A request whose answer is delayed is suspended (MHD_suspend_connection) and registered here as a
 * fu_hold; the timer thread keeps the holds in a min-heap by due time and resumes each connection
 * when it is due, so thousands of delayed answers cost one heap entry each and no thread.
 *
 * MHD does not poll suspended sockets, so the timer thread also watches every held socket in a
 * private epoll set (EPOLLRDHUP|EPOLLHUP only). When a client hangs up early, the hold is released
 * at once with closed_early = true, so the owner can count and log it, and the connection is
 * resumed so MHD notices the close and frees it. This is what makes cancellation visible to tests.
 * (A client that only half-closes, shutdown(SHUT_WR) after its request, also counts as gone; HTTP
 * clients such as libcurl do not do that.)
 *
 * For every hold the timer calls on_release exactly once, on the timer thread, before it resumes
 * the connection: either when due (closed_early false), when the client closed (true), or at
 * fu_timer_stop (false; every held answer is released early so MHD_stop_daemon finds no suspended
 * connection). After on_release returns, the timer no longer touches the hold; the owner may free
 * it once MHD reports the request completed. A hold's fd is removed from the epoll set before its
 * connection is resumed, so a closed-and-reused fd number can never be confused with it. */
#ifndef FU_TIMER_H
#define FU_TIMER_H

#include <stdbool.h>
#include <stdint.h>

#include <microhttpd.h>

#include "fu_heap.h"
#include "fu_status.h"

typedef struct fu_timer fu_timer;
typedef struct fu_hold fu_hold;

/* Called on the timer thread, without the timer's lock held, just before the connection is
 * resumed. waited_ms is the time since fu_timer_hold. Must not block for long. */
typedef void (*fu_timer_release_fn)(fu_hold *h, bool closed_early, uint64_t waited_ms);

struct fu_hold {
    fu_heap_node node;           /* key: due time in CLOCK_MONOTONIC ns */
    struct MHD_Connection *conn; /* suspended from fu_timer_hold until on_release returns */
    int fd;                      /* conn's socket, in the timer's epoll set while held */
    uint64_t held_ns;            /* when fu_timer_hold was called */
    fu_timer_release_fn on_release;
    void *owner; /* for on_release; the timer never reads it */
};

/* Creates the timer and starts its thread. *out is NULL on failure. */
fu_status fu_timer_create(fu_timer **out);

/* Suspends conn and schedules its resumption delay_ns from now. Must be called from the MHD access
 * handler of conn (the only place MHD allows suspending). On any status other than FU_OK the
 * connection is NOT suspended and the caller answers at once; FU_ESTOPPED after fu_timer_stop.
 * O(log n) heap push plus one epoll_ctl. */
fu_status fu_timer_hold(fu_timer *t, fu_hold *h, struct MHD_Connection *conn, uint64_t delay_ns,
                        fu_timer_release_fn on_release, void *owner);

/* Stops taking holds, releases every pending hold (answers go out early) and joins the thread.
 * Call before MHD_stop_daemon. Idempotent. */
void fu_timer_stop(fu_timer *t);

/* Stops (if needed) and frees the timer. NULL is ignored. */
void fu_timer_destroy(fu_timer *t);

/* CLOCK_MONOTONIC in nanoseconds. */
uint64_t fu_timer_now_ns(void);

#endif
