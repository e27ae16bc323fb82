/* edge — the deadlines of client connections that libmicrohttpd 0.9.75 does not keep itself, and
 * the per-address connection cap. One edge per HTTP worker, touched only by that worker's thread
 * (the cap's table is shared by the workers and has its own lock).
 *
 * A connection is in at most one of three FIFO lists, each with one fixed duration, so that a list
 * stays ordered by deadline when entries are appended and a sweep only looks at its expired head:
 *   headers  from the connection's opening (or from the moment a kept-alive connection was seen to
 *            have sent something): its request header must be complete by header_ms;
 *   idle     kept alive after an answer: looked at every check_ms (min(header_ms, idle_ms) / 2):
 *            closed once idle_ms passed without a byte; moved to headers once a byte came;
 *   linger   answered early (a 413 mid-body) with the write side shut: closed after EDGE_LINGER_MS.
 * Beside them, a fourth FIFO list with one fixed duration, request_ms (v1.3 request_timeout_ms):
 * from a request's first byte (the connection's opening, or the moment a kept-alive connection was
 * seen to have sent something, or the header of a pipelined request) until its body is complete
 * (edge_request_done). A connection is in it during its header and its body, so a trickled body
 * does not extend it. When it expires before the header is complete the connection is shut; after
 * (edge_request_owner was given the request), the expire callback decides (a 408, then linger).
 * Costs: every transition is O(1) (a doubly-linked unlink or append); a sweep is O(entries due);
 * the idle check is one getsockopt(TCP_INFO) per idle connection per check_ms, never per request.
 *
 * Closing is shutdown(fd, SHUT_RDWR) on the connection's socket, which libmicrohttpd still owns:
 * the socket becomes readable with end-of-file, libmicrohttpd's next read sees it and closes and
 * frees the connection itself (the fd is never closed here). */
#ifndef CHECKOUTD_EDGE_H
#define CHECKOUTD_EDGE_H

#include <netinet/in.h>
#include <pthread.h>
#include <stddef.h>
#include <sys/socket.h>

#define EDGE_LINGER_MS 1000

typedef enum edge_state {
    EDGE_NONE,
    EDGE_HEADERS,
    EDGE_IDLE,
    EDGE_LINGER,
    EDGE_NSTATES
} edge_state;

typedef struct edge_ipcap edge_ipcap;

typedef struct edge_conn {
    struct edge_conn *prev, *next;
    struct edge_conn *rprev, *rnext; /* the request list */
    int in_request;                  /* in the request list */
    void *owner;                     /* the request whose header came (edge_request_owner) */
    long long request_due_ms;
    edge_state state;
    int fd;
    long long due_ms;   /* when the sweep acts on it (its list's head first) */
    long long since_ms; /* idle: when the answer went out */
    int closed_by_edge; /* shut down here (header deadline, idle, linger or cap) */
    int capped;         /* counted in the cap's table (release it on close) */
    int refused;        /* over the cap: shut down at once */
    struct sockaddr_storage addr;
} edge_conn;

typedef struct edge_list {
    edge_conn *head, *tail;
} edge_list;

/* A request's whole-request deadline passed after its header came (owner set). 1: handled (the
 * callee answered and called edge_linger, or shut it itself with edge_shut); 0: shut it. */
typedef int (*edge_expire_fn)(void *arg, edge_conn *c);

typedef struct edge {
    edge_list lists[EDGE_NSTATES];
    edge_list request; /* linked through rprev/rnext */
    long header_ms, idle_ms, check_ms;
    long request_ms; /* 0: no whole-request deadline */
    edge_expire_fn on_expire;
    void *expire_arg;
    edge_ipcap *cap; /* NULL: no per-address cap */
    size_t closed;   /* connections shut down by a deadline (for tests and logs) */
    long long now;   /* the last sweep's time: "now" within a loop turn (0: none yet) */
} edge;

/* Monotonic milliseconds. */
long long edge_now_ms(void);

void edge_init(edge *e, long header_ms, long idle_ms, edge_ipcap *cap);

/* The whole-request deadline (call before any edge_open): request_ms > 0, on_expire may be NULL
 * (then every expired request is shut). */
void edge_set_request(edge *e, long request_ms, edge_expire_fn on_expire, void *arg);

/* A new connection: starts its header deadline (and its request's). addr may be NULL (no cap then).
 * NULL when out of memory (the connection then has no deadline of ours, only libmicrohttpd's idle
 * timeout). */
edge_conn *edge_open(edge *e, int fd, const struct sockaddr *addr, socklen_t addrlen,
                     long long now);
/* The connection is gone (libmicrohttpd closed it): unlinks, releases its cap slot, frees. */
void edge_close(edge *e, edge_conn *c);
/* Its request header is complete: no header deadline while the request runs; the request deadline
 * goes on (starts now for a pipelined request found in the idle list). */
void edge_headers_done(edge *e, edge_conn *c);
/* The request whose header came on c (given to the expire callback); NULL when it goes. */
void edge_request_owner(edge_conn *c, void *owner);
/* Its request (header and body) has arrived, or an answer was queued: no request deadline. O(1). */
void edge_request_done(edge *e, edge_conn *c);
/* Shuts c now (as a deadline does). */
void edge_shut(edge *e, edge_conn *c);
/* Its answer went out and it is kept alive: the idle watch starts. */
void edge_answered(edge *e, edge_conn *c, long long now);
/* Answered early and the write side shut: closed EDGE_LINGER_MS later whatever it sends. */
void edge_linger(edge *e, edge_conn *c, long long now);
/* Milliseconds until the next entry is due (0: overdue), or -1 for none. */
long edge_wait_ms(const edge *e, long long now);
/* Acts on every entry due by now; returns the ms until the next one is due, or -1 for none. The
 * caller sweeps once per loop turn, before the turn's I/O: its now then also starts the request
 * deadline of a request found in the idle list (edge_headers_done). */
long edge_sweep(edge *e, long long now);

/* The per-address cap shared by all workers: max connections per client address (IPv4 or IPv6;
 * an IPv4-mapped IPv6 address counts as its IPv4). NULL when out of memory. */
edge_ipcap *edge_ipcap_new(long max_per_address);
void edge_ipcap_free(edge_ipcap *cap);
/* Connections the cap's table counts for addr now (tests). */
long edge_ipcap_count(edge_ipcap *cap, const struct sockaddr *addr);

/* 1: the connection was over the cap and has been shut down (edge_open did it). */
int edge_refused(const edge_conn *c);

#endif
