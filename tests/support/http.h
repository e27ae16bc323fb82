/* http — an HTTP/1.1 client for tests, on libcurl easy (one connection per request, no reuse).
 *
 * No setup needed: curl_global_init runs once on first use (pthread_once); every function is
 * thread-safe. Proxies from the environment are ignored and redirects are not followed, so what a
 * test sees is exactly what the server sent. http_request fills an http_reply that owns all its
 * memory; http_reply_free releases it (and is safe on a zeroed or already-freed reply).
 * http_raw speaks plain TCP for malformed-request tests; http_free_port finds a free loopback port
 * (it can be taken by someone else before use: prefer port 0 where a program supports it). */
#ifndef CHECKOUTD_TEST_HTTP_H
#define CHECKOUTD_TEST_HTTP_H

#include <jansson.h>
#include <stddef.h>

typedef struct http_reply {
    long status;     /* HTTP status of the final answer; 0 when no HTTP answer came */
    char *body;      /* malloc'd, NUL-terminated (also when empty); NULL only on setup failure */
    size_t body_len; /* bytes of body, not counting the NUL */
    char *headers;   /* raw header block of the final answer ("HTTP/1.1 200 OK\r\n..."), or NULL */
    double elapsed_ms; /* wall time of the whole exchange */
    json_t *json;      /* body parsed (any JSON value, duplicate keys refused), or NULL */
    int curl_code;     /* CURLcode of the transfer: 0 ok, 7 refused, 28 timed out, ... */
    char error[256];   /* curl's message when curl_code != 0, else "" */
    /* private: parsed header lines for http_reply_header */
    char *hdr_store;
    char **hdr_name;
    char **hdr_value;
    size_t hdr_count;
} http_reply;

/* method: "GET", "POST", "PUT", ... ("HEAD" sends no body and reads none). headers: NULL or a
 * NULL-terminated list of "Name: value" lines; "Name:" removes a header curl would add (e.g.
 * "Expect:"). body: NULL for none; with a body and method GET/DELETE/... it is still sent. r is
 * overwritten (not freed first). 0 when the transfer completed with an HTTP answer; -1 otherwise
 * (r->status may be non-zero if the answer broke off mid-body, e.g. on timeout). */
int http_request(const char *method, const char *url, const char *const headers[], const char *body,
                 size_t body_len, long timeout_ms, http_reply *r);

/* Like http_request, but the body goes out with Transfer-Encoding: chunked, chunk_bytes (>= 1) per
 * chunk, sleeping chunk_delay_ms (>= 0) before every chunk after the first (a slow client). */
int http_request_chunked(const char *method, const char *url, const char *const headers[],
                         const char *body, size_t body_len, size_t chunk_bytes, int chunk_delay_ms,
                         long timeout_ms, http_reply *r);

/* The value of the first header called name (case-insensitive) of the final answer, without
 * surrounding blanks, or NULL. The string belongs to r: valid until http_reply_free(r). */
const char *http_reply_header(const http_reply *r, const char *name);

void http_reply_free(http_reply *r);

/* Connects to 127.0.0.1:port, writes all n bytes, then reads until the peer closes, timeout_ms
 * passes (counted from the start) or replycap - 1 bytes came. reply is always NUL-terminated.
 * Returns the bytes read (a timeout is not an error: send "Connection: close" when you want the
 * server to end the exchange), or -1 when the connect or the write failed. */
int http_raw(int port, const void *bytes, size_t n, char *reply, size_t replycap, int timeout_ms);

/* A loopback TCP port that was free a moment ago, or -1. */
int http_free_port(void);

#endif
