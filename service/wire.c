/* wire — a co_answer as HTTP. See wire.h.
 *
 * Both paths build the same libmicrohttpd response (make_response), so an answer written on the
 * socket itself carries exactly the headers of one libmicrohttpd sends. */
#include "wire.h"

#include <stdio.h>
#include <sys/socket.h>
#include <sys/uio.h>

/* The response of a JSON answer, which takes a->body (MHD frees it with the response). A NULL
 * body (out of memory) becomes a 500; *status gets the status to send. allow: the Allow header of
 * a 405, or NULL. NULL when out of memory (a->body then stays the caller's to free). */
static struct MHD_Response *make_response(co_answer *a, const char *allow, int close_connection,
                                          int *status_out)
{
    static const char oom[] = "{\"error\":{\"code\":\"internal\",\"message\":\"out of memory\"}}";
    struct MHD_Response *r;
    int status = a->http_status;
    if (a->body != NULL) {
        r = MHD_create_response_from_buffer(a->body_len, a->body, MHD_RESPMEM_MUST_FREE);
    } else {
        status = 500;
        r = MHD_create_response_from_buffer(sizeof(oom) - 1, (void *)oom, MHD_RESPMEM_PERSISTENT);
    }
    if (r == NULL)
        return NULL;
    a->body = NULL;
    MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, "application/json");
    if (a->request_id[0] != '\0')
        MHD_add_response_header(r, "X-Request-Id", a->request_id);
    if (a->replayed)
        MHD_add_response_header(r, "Idempotent-Replayed", "true");
    if (a->retry_after > 0) {
        char secs[16];
        snprintf(secs, sizeof(secs), "%d", a->retry_after);
        MHD_add_response_header(r, MHD_HTTP_HEADER_RETRY_AFTER, secs);
    }
    if (allow != NULL)
        MHD_add_response_header(r, MHD_HTTP_HEADER_ALLOW, allow);
    if (close_connection)
        MHD_add_response_header(r, MHD_HTTP_HEADER_CONNECTION, "close");
    *status_out = status;
    return r;
}

/* Queues a JSON answer (see make_response). */
enum MHD_Result wire_queue(struct MHD_Connection *conn, co_answer *a, const char *allow,
                           int close_connection)
{
    int status = 0;
    struct MHD_Response *r = make_response(a, allow, close_connection, &status);
    if (r == NULL)
        return MHD_NO;
    enum MHD_Result ok = MHD_queue_response(conn, (unsigned)status, r);
    MHD_destroy_response(r);
    return ok;
}

/* ---- answers written on the socket itself ------------------------------------------------------
 * For the moments libmicrohttpd 0.9.75 cannot send an answer (server.c: the early 413, the 408
 * mid-body, a half-closed client's answer in on_completed, a malformed Content-Length): the same
 * response make_response builds, its header block copied by MHD_get_response_headers, written
 * with one sendmsg, without waiting (an answer is small and nothing else is queued on the socket
 * then). */

typedef struct raw_head {
    char buf[1024];
    size_t len;
    int overflow;
} raw_head;

static enum MHD_Result raw_header(void *cls, enum MHD_ValueKind kind, const char *key,
                                  const char *value)
{
    raw_head *h = cls;
    (void)kind;
    int n = snprintf(h->buf + h->len, sizeof(h->buf) - h->len, "%s: %s\r\n", key, value);
    if (n < 0 || (size_t)n >= sizeof(h->buf) - h->len)
        h->overflow = 1;
    else
        h->len += (size_t)n;
    return h->overflow ? MHD_NO : MHD_YES;
}

/* Writes a (taking a->body, as make_response) with Connection: close. 0 when all of it went into
 * the socket, -1 otherwise. */
int wire_write(int fd, co_answer *a)
{
    const char *body = a->body;
    size_t body_len = a->body_len;
    int status = 0;
    struct MHD_Response *r = make_response(a, NULL, 1, &status);
    if (r == NULL)
        return -1;
    if (status != a->http_status) { /* the 500 of a NULL body: not worth a raw path */
        MHD_destroy_response(r);
        return -1;
    }
    raw_head h = {.len = 0};
    const char *reason = MHD_get_reason_phrase_for((unsigned)status);
    int n = snprintf(h.buf, sizeof(h.buf), "HTTP/1.1 %d %s\r\n", status, reason ? reason : "");
    h.len = n > 0 ? (size_t)n : 0;
    MHD_get_response_headers(r, raw_header, &h);
    n = snprintf(h.buf + h.len, sizeof(h.buf) - h.len, "Content-Length: %zu\r\n\r\n", body_len);
    if (n < 0 || (size_t)n >= sizeof(h.buf) - h.len)
        h.overflow = 1;
    else
        h.len += (size_t)n;
    ssize_t sent = -1;
    if (!h.overflow) {
        struct iovec iov[2] = {{h.buf, h.len}, {(void *)body, body_len}};
        struct msghdr mh = {.msg_iov = iov, .msg_iovlen = 2};
        sent = sendmsg(fd, &mh, MSG_NOSIGNAL | MSG_DONTWAIT);
    }
    MHD_destroy_response(r);
    return sent >= 0 && (size_t)sent == h.len + body_len ? 0 : -1;
}
