/* fault — a tiny raw-TCP upstream on 127.0.0.1 that misbehaves on purpose, for upstream-fault
 * tests. One accept thread, one thread per connection (a test server).
 *
 * Each connection reads one HTTP/1.1 request head (up to 16 KiB) and its Content-Length body
 * (chunked request bodies are not supported: libcurl sends POSTFIELDS with a Content-Length), then
 * answers as the mode says. The mode is chosen by the request path without its query: a path that
 * is "/" + a mode name ("/never_answers", "/reset_mid_answer", ...) gets that mode; any other path
 * gets the server's default mode (fault_set_mode, FAULT_OK at start), so that a program whose
 * upstream URL is fixed (checkoutd) can be switched from fault to fault between requests.
 *
 * Modes:
 *   ok                 200 {"ok":true,"path":"<path>"}, keep-alive (the next request is read)
 *   reject             409 {"error":"out_of_stock","sku":"SKU-9"}, keep-alive
 *   reset_mid_answer   the status line and part of the headers, a 50 ms pause (so that the client
 *                      has read them), then SO_LINGER {1,0} + close: an RST
 *   truncated_body     Content-Length: 100 and 10 bytes of body, then close (FIN)
 *   huge_body          200, Content-Length: 100000000, one valid JSON string of that size streamed
 *                      in 64 KiB writes until done or the client closes
 *   wrong_length_short Content-Length: 2 and then {"ok":true} (more than declared), then close
 *   wrong_length_long  Content-Length: 50 and 12 bytes {"ok":true}, then held open, silent
 *   never_answers      no byte at all, held open
 *   garbage_status     "HTTP/1.1 abc\r\n\r\n", then close
 *   garbage_bytes      64 pseudo-random bytes (fixed seed, never starting with "HTTP"), then close
 *   slow_trickle       headers at once, then the 200 body {"ok":true} one byte per 100 ms,
 * keep-alive close_on_reuse     the first request on a connection is answered as ok (kept alive); a
 * later one is read and the connection closed without a byte: the stale kept-alive connection a
 * client only finds dead after sending on it A held connection waits until the client closes it
 * (counted in closed_early) or fault_stop.
 *
 * Counters: accepted (connections), requests (request heads + bodies read whole), closed_early
 * (clients that closed a connection the server was holding or still writing: a cancel that
 * reached the socket). fault_stop returns promptly with connections open: it shuts every socket
 * down, which wakes every thread, and joins them. All functions are thread-safe. */
#ifndef CHECKOUTD_TEST_FAULT_H
#define CHECKOUTD_TEST_FAULT_H

typedef struct fault fault;

typedef enum fault_mode {
    FAULT_OK = 0,
    FAULT_REJECT,
    FAULT_RESET_MID_ANSWER,
    FAULT_TRUNCATED_BODY,
    FAULT_HUGE_BODY,
    FAULT_WRONG_LENGTH_SHORT,
    FAULT_WRONG_LENGTH_LONG,
    FAULT_NEVER_ANSWERS,
    FAULT_GARBAGE_STATUS,
    FAULT_GARBAGE_BYTES,
    FAULT_SLOW_TRICKLE,
    FAULT_CLOSE_ON_REUSE,
    FAULT_MODE_COUNT,
} fault_mode;

#define FAULT_HUGE_BYTES  100000000L /* the huge_body's declared and streamed length */
#define FAULT_TRICKLE_MS  100        /* slow_trickle: one body byte per this many ms */
#define FAULT_TRICKLE_LEN 11         /* slow_trickle's body: {"ok":true} */

/* Listens on 127.0.0.1:port (0: the kernel picks) with SO_REUSEADDR, so that a server can be
 * restarted on the port of one just stopped. Retries a busy port for up to 2 s. NULL on failure.
 */
fault *fault_start(int port);

/* Stops accepting, shuts down every open connection, joins every thread, frees f. NULL is fine. */
void fault_stop(fault *f);

int fault_port(const fault *f);

/* The mode for paths that name none. */
void fault_set_mode(fault *f, fault_mode mode);

/* "ok", "never_answers", ...; the path that selects it is "/" + the name. NULL when out of range.
 */
const char *fault_mode_name(fault_mode mode);

unsigned fault_accepted(fault *f);
unsigned fault_requests(fault *f);
unsigned fault_closed_early(fault *f);

/* Poll until the counter reaches n: 0, or -1 on timeout. */
int fault_wait_requests(fault *f, unsigned n, int timeout_ms);
int fault_wait_closed_early(fault *f, unsigned n, int timeout_ms);

#endif
