/* server — checkoutd's HTTP face on libmicrohttpd: routes, body reading with our own size limit,
 * JSON error answers, and the suspend/resume glue that lets a checkout wait for its task group
 * without holding a thread. One libmicrohttpd daemon per task-group loop, driven by that loop's
 * thread (tg_hook), all on one port; a checkout's connection is suspended while its group runs and
 * resumed by the same thread with the answer.
 *
 * Routes: POST /checkout; GET /healthz, /readyz, /metrics, /status, /status.json; everything else
 * 404 (405 for a wrong method). With admin_listen, /metrics, /status and /status.json answer 404
 * here and are served by service/admin.c on that address. */
#ifndef CHECKOUTD_SERVER_H
#define CHECKOUTD_SERVER_H

#include "cfg.h"
#include "checkout.h"

#include <stddef.h>

typedef struct srv srv;

/* Binds cfg->listen_host:listen_port once per loop (1..8 loops, not started yet: their hooks are
 * set here); serving starts with the loops. NULL with a one-line reason in err. */
srv *srv_start(const cfg *c, co_service *checkout, tg_loop *const *loops, size_t nloops, char *err,
               size_t errlen);
int srv_port(const srv *s);
/* admin_listen's port (service/admin.c, started with the workers' daemons), or -1 when unset. */
int srv_admin_port(const srv *s);
/* Stops accepting (the listening socket closes), /readyz answers 503 and new requests 503. */
void srv_drain(srv *s);
/* Checkouts accepted whose answer has not been sent (or abandoned) yet. */
long srv_pending(srv *s);
/* After the loops stopped (no thread drives the daemons any more): serves from the calling thread
 * for up to ms milliseconds, until every launched checkout's answer went out. */
void srv_serve_here(srv *s, int ms);
/* Stops admin_listen's thread (its connections close): before what it reads (metrics, windows,
 * the idempotency store) is freed. srv_stop does it too. NULL or no admin: nothing. */
void srv_stop_admin(srv *s);
/* Closes every connection and frees. Call after the task-group loops have stopped, so that no
 * connection is still suspended and no thread drives a daemon. */
void srv_stop(srv *s);

#endif
