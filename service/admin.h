/* admin — the v1.3 admin listener (admin_listen): GET /healthz, /readyz, /metrics, /status and
 * /status.json on their own address, so that the checkout port can be the only public one.
 *
 * A second libmicrohttpd daemon with its own thread (MHD_USE_INTERNAL_POLLING_THREAD), not a
 * socket on the workers: the workers' loops, their epoll sets and a checkout's path are exactly as
 * without it (nothing to register, nothing to route per checkout). What it serves is read from the
 * same shared state the workers' probes read (atomics of metrics and windows, the draining flag),
 * rendered on its own thread. Everything else answers 404 not_found (/checkout too), a method
 * other than GET or HEAD 405. Plain HTTP always (an internal port: tls is listen's). */
#ifndef CHECKOUTD_ADMIN_H
#define CHECKOUTD_ADMIN_H

#include "cfg.h"
#include "checkout.h"

#include <microhttpd.h>
#include <stdatomic.h>

typedef struct adm adm;

/* The pages both listeners serve (server.c answers them on listen too, without admin_listen). */
typedef enum adm_page {
    ADM_HEALTHZ,
    ADM_READYZ,
    ADM_METRICS,
    ADM_STATUS,      /* the HTML page (service/status.c) */
    ADM_STATUS_JSON, /* its data */
    ADM_NONE
} adm_page;

/* Queues page's answer on conn: /healthz 200; /readyz 200, or 503 when draining; /metrics rendered
 * per scrape (O(series)); /status, /status.json (no-store). MHD_NO when out of memory. */
enum MHD_Result adm_answer_page(struct MHD_Connection *conn, adm_page page, co_service *checkout,
                                int draining);

/* Binds c->admin_host:admin_port and starts serving. draining: 1 while shutting down (/readyz then
 * answers 503); it must outlive the admin. NULL with a one-line reason in err. */
adm *adm_start(const cfg *c, co_service *checkout, const atomic_int *draining, char *err,
               size_t errlen);
/* The port bound (the configured one, or the one picked for port 0). */
int adm_port(const adm *a);
/* Stops the thread, closes the socket and its connections, frees. NULL is a no-op. */
void adm_stop(adm *a);

#endif
