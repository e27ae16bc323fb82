/* wire — a checkout's answer (co_answer) as HTTP: its JSON body with Content-Type, X-Request-Id,
 * Idempotent-Replayed, Retry-After, Allow and Connection: close as the answer asks. Either queued
 * on a libmicrohttpd connection (the usual way), or written on the connection's socket itself for
 * the moments libmicrohttpd 0.9.75 cannot send one (server.c says which). Both take the answer's
 * body (a->body is NULL after, unless out of memory). No counting or logging here: the caller does
 * that. Cost: one libmicrohttpd response per answer. */
#ifndef CHECKOUTD_WIRE_H
#define CHECKOUTD_WIRE_H

#include "checkout.h"

#include <microhttpd.h>

/* Queues a's answer on conn. allow: the Allow header of a 405, or NULL; close_connection: the
 * request's framing is doubtful, so libmicrohttpd closes the connection after it. MHD_NO when out
 * of memory (a->body then stays the caller's to free). */
enum MHD_Result wire_queue(struct MHD_Connection *conn, co_answer *a, const char *allow,
                           int close_connection);

/* Writes a's answer, with Connection: close, on the socket fd in one sendmsg without waiting (an
 * answer is small and nothing else is queued on the socket then). 0 when all of it went into the
 * socket, -1 otherwise. */
int wire_write(int fd, co_answer *a);

#endif
