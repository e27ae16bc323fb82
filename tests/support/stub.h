/* stub — a tiny in-process HTTP upstream on 127.0.0.1 (a free port) for unit tests, on
 * libmicrohttpd with a thread per connection.
 *
 * Any path, any method; query arguments choose the answer:
 *   status=N     (default 200, 100..599)
 *   delay_ms=N   (default 0) wait before answering, watching the socket: a client that closes
 *                meanwhile is counted in closed_early and its connection dropped, no answer
 *   body=json    (default) {"ok":true,"path":"/x"} for 2xx, {"error":"stub_error","status":N} else
 *        garbage `not json at all` | array `[1,2,3]` | empty (no bytes)
 *        big     big_bytes=N (default 2097152, >= 2) bytes of one JSON string "aaa...a"
 *   upto_attempt=N  (default 0: every request) the arguments above apply only to requests whose
 *                X-Checkout-Attempt is at most N; a later attempt gets the plain 200 at once
 *   retry_after=S  send Retry-After: S with the answer
 * e.g. http://127.0.0.1:PORT/x?status=409&delay_ms=200. A bad argument gets a 400
 * {"error":"stub_bad_arg","arg":"..."}. Every answer has Content-Type: application/json.
 * Counters: requests (seen), answered (answer queued), closed_early. The last request whose body
 * was fully received is recorded (headers, body up to 16 MiB) under a mutex. stub_stop returns
 * promptly even while handlers are delaying. All functions are thread-safe. */
#ifndef CHECKOUTD_TEST_STUB_H
#define CHECKOUTD_TEST_STUB_H

#include <stddef.h>

typedef struct stub stub;

/* Starts listening on 127.0.0.1, port chosen by the kernel. NULL on failure. */
stub *stub_start(void);
/* The same on IPv4 address ip (127.0.0.2: the whole 127/8 is local) and port (0: a free one), so
 * that stubs on several addresses can share one port, as the addresses of one name do. */
stub *stub_start_at(const char *ip, int port);

int stub_port(const stub *s);

/* Stops the daemon (open connections are cut), then frees s. NULL is fine. */
void stub_stop(stub *s);

unsigned stub_requests(stub *s);
unsigned stub_answered(stub *s);
unsigned stub_closed_early(stub *s);

/* Polls until closed_early >= n: 0, or -1 on timeout. */
int stub_wait_closed_early(stub *s, unsigned n, int timeout_ms);

/* The value of header name (case-insensitive) of the last recorded request, NUL-terminated and
 * truncated to cap, into out. 0 found, -1 not found or no request yet. */
int stub_last_header(stub *s, const char *name, char *out, size_t cap);

/* Requests recorded so far (the first 64 are kept), and the value of header name of the i-th
 * (0-based, in the order their bodies were complete): 0 found, -1 not. */
unsigned stub_recorded(stub *s);
int stub_header_of(stub *s, unsigned i, const char *name, char *out, size_t cap);
/* A malloc'd, NUL-terminated copy of the last recorded request's body (the caller frees it), or
 * NULL when no request was recorded yet or memory ran out. */
char *stub_last_body(stub *s);

#endif
