/* server — checkoutd's HTTP face on libmicrohttpd: routes, body reading with our own size limit,
 * JSON error answers, and the suspend/resume glue that lets a checkout wait for its task group
 * without holding a thread. Internal epoll thread pool; every checkout's connection is suspended
 * while its group runs and resumed by the loop thread with the answer.
 *
 * Routes: POST /checkout; GET /healthz, /readyz; everything else 404 (405 for a wrong method). */
#ifndef CHECKOUTD_SERVER_H
#define CHECKOUTD_SERVER_H

#include "cfg.h"
#include "checkout.h"

#include <stddef.h>

typedef struct srv srv;

/* Binds cfg->listen_host:listen_port and starts serving; prints "listening on HOST:PORT" on
 * stdout. NULL with a one-line reason in err. */
srv *srv_start(const cfg *c, co_service *checkout, char *err, size_t errlen);
int srv_port(const srv *s);
/* Stops accepting (the listening socket closes), /readyz answers 503 and new requests 503. */
void srv_drain(srv *s);
/* Checkouts accepted whose answer has not been sent (or abandoned) yet. */
long srv_pending(srv *s);
/* Closes every connection and frees. Call after the task-group loop has stopped, so that no
 * connection is still suspended. */
void srv_stop(srv *s);

#endif
