/* server — libmicrohttpd glue. See server.h.
 *
 * One worker per task-group loop: each worker is a libmicrohttpd daemon in external epoll mode,
 * driven by its loop's thread through the loop's hook (tg_hook), and all of them listen on the same
 * port (SO_REUSEPORT: the kernel spreads new connections over them). A checkout therefore lives on
 * one thread from its first byte to its answer: no hand-off between threads, no wake-up of another
 * thread, and what it allocates is freed by the thread that allocated it.
 *
 * A request's life: the first call of the access handler routes it (404/405/415/413 by declared
 * length are answered at once); body chunks are copied into our buffer, counted against
 * max_body_bytes (0.9.75 has no option for that); the last call hands the body to co_accept. A
 * launched checkout suspends the connection; reply() (same thread, later turn) stores the answer
 * and resumes it, and the next call of the access handler sends it. The suspension always happens
 * before co_launch, so a fast reply cannot be lost. */
#include "server.h"

#include "admin.h"
#include "clen.h"
#include "edge.h"
#include "frame.h"
#include "jlog.h"
#include "listen_tls.h"
#include "metrics.h"
#include "status.h"

#include <arpa/inet.h>
#include <microhttpd.h>
#include <netdb.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#define SRV_CONNECTION_LIMIT 16384
/* After an early 413 the rest of the body is read and dropped for at most EDGE_LINGER_MS and
 * this many bytes (a lingering close: see answer_too_large), then the connection is closed. */
#define SRV_LINGER_BYTES (1u << 20)
/* libmicrohttpd's per-connection memory pool: the read buffer (request line, headers, body chunks
 * as they arrive), the parsed headers and the answer's header block. Allocated whole and cleared
 * on every request, so it is resident for every open client connection, idle or not. 8 KiB takes
 * request headers up to about 7 KiB (a Cookie header up to about 3.5 KiB: cookies are parsed into
 * the pool too); beyond that libmicrohttpd answers 431 and closes the connection. The body is
 * not limited by it (it is handed over in chunks). */
#define SRV_CONNECTION_MEMORY (8u << 10)

#define SRV_MAX_WORKERS 8

typedef struct srv_worker {
    srv *server;
    struct MHD_Daemon *daemon;
    tg_loop *loop;
    size_t index;
    int quiesced; /* touched by the thread that drives the daemon only */
    edge edge;    /* its connections' deadlines; touched by that thread only */
    clen clen;    /* the malformed Content-Length's connection (clen.h); that thread only */
} srv_worker;

struct srv {
    srv_worker workers[SRV_MAX_WORKERS];
    size_t nworkers;
    const cfg *cfg;
    co_service *checkout;
    edge_ipcap *cap;    /* max_connections_per_ip, or NULL */
    int tls;            /* listen speaks HTTPS: never write on a client's socket ourselves */
    adm *admin;         /* admin_listen's daemon, or NULL */
    lt_files tls_files; /* tls: the PEM texts the daemons use (kept until they stop) */
    int port;
    atomic_int draining;
    atomic_long pending; /* launched checkouts whose request has not completed */
};

/* ROUTE_HEALTHZ..ROUTE_METRICS answer on the request's last call rather than its first: an answer
 * queued before the (empty) body was read makes libmicrohttpd close the connection, and probes and
 * scrapes should be able to keep theirs. */
/* ROUTE_LINGER: answered 413 mid-body on the socket itself; the rest of the body is dropped. */
typedef enum route {
    ROUTE_CHECKOUT,
    ROUTE_HEALTHZ,
    ROUTE_READYZ,
    ROUTE_METRICS,
    ROUTE_STATUS,      /* GET /status: the page (service/status.c) */
    ROUTE_STATUS_JSON, /* GET /status.json: its data */
    ROUTE_DONE,
    ROUTE_LINGER
} route;

typedef struct srv_request {
    srv *server;
    srv_worker *worker;
    struct MHD_Connection *conn;
    edge_conn *edge; /* the connection's deadlines (its socket context), or NULL */
    route route;
    char *body;
    size_t body_len, body_cap;
    int too_large;
    size_t discarded; /* bytes read past the limit, not kept */
    int launched;     /* counted in pending until the request completes */
    int answered;     /* reply() stored the answer; the next access-handler call sends it */
    char request_id[CO_ID_MAX + 1];
    int close_connection; /* the request's framing is doubtful: answer, then close */
    co_answer answer;
} srv_request;

/* The response of a JSON answer, which takes a->body (MHD frees it with the response). A NULL
 * body (out of memory) becomes a 500; *status gets the status to send. allow: the Allow header of
 * a 405, or NULL. NULL when out of memory (a->body then stays ours: on_completed frees it). */
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
static enum MHD_Result send_answer(struct MHD_Connection *conn, co_answer *a, const char *allow,
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
 * For the two moments libmicrohttpd 0.9.75 cannot send an answer (see answer_too_large and
 * on_completed): the same response make_response builds, its header block copied by
 * MHD_get_response_headers, written with one sendmsg, without waiting (an answer is small and
 * nothing else is queued on the socket then). */

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
static int write_answer(int fd, co_answer *a)
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

/* An answer decided here rather than by a task group (a client error, overload, a 500): counted
 * and logged like a checkout, then sent. */
static enum MHD_Result send_decided(srv_request *req, const char *allow)
{
    co_answer *a = &req->answer;
    mx_checkout(req->server->checkout->metrics, mx_outcome_from_code(a->code), 0);
    co_log(req->server->checkout, a);
    return send_answer(req->conn, a, allow, req->close_connection);
}

static enum MHD_Result send_error(srv_request *req, int status, const char *code,
                                  const char *message, const char *allow)
{
    co_error_answer(&req->answer, status, code, message);
    memcpy(req->answer.request_id, req->request_id, sizeof(req->request_id));
    return send_decided(req, allow);
}

/* application/json, with or without parameters ("; charset=utf-8"), any letter case. */
static int is_json_content_type(const char *ct)
{
    static const char want[] = "application/json";
    if (ct == NULL)
        return 0;
    while (*ct == ' ' || *ct == '\t')
        ct++;
    if (strncasecmp(ct, want, sizeof(want) - 1) != 0)
        return 0;
    char next = ct[sizeof(want) - 1];
    return next == '\0' || next == ';' || next == ' ' || next == '\t';
}

/* reply() of co_launch: runs on the thread that drives the connection's daemon (or, when shutting
 * down, on the thread that stopped the loops while no daemon runs), before the resume. */
static void on_checkout_reply(void *conn_ctx, co_answer *answer)
{
    srv_request *req = conn_ctx;
    req->answer = *answer;
    req->answered = 1;
    MHD_resume_connection(req->conn);
}

static enum MHD_Result frame_each(void *cls, enum MHD_ValueKind kind, const char *key,
                                  size_t key_size, const char *value, size_t value_size)
{
    (void)kind;
    frame_field(cls, key, key_size, value, value_size);
    return MHD_YES;
}

static enum MHD_Result count_idempotency_keys(void *cls, enum MHD_ValueKind kind, const char *key,
                                              const char *value)
{
    (void)kind;
    (void)value;
    if (strcasecmp(key, "Idempotency-Key") == 0)
        (*(int *)cls)++;
    return MHD_YES;
}

/* The framing rules of frame.h over the request's headers: NULL, or why it is refused. */
static const char *framing_error(struct MHD_Connection *conn, const char *version)
{
    frame_scan f;
    frame_begin(&f, version);
    MHD_get_connection_values_n(conn, MHD_HEADER_KIND, frame_each, &f);
    return frame_verdict(&f);
}

static enum MHD_Result route_first(srv *s, srv_request *req, struct MHD_Connection *conn,
                                   const char *url, const char *method, const char *version)
{
    const char *framing = framing_error(conn, version);
    if (framing != NULL) {
        req->route = ROUTE_DONE;
        req->close_connection = 1;
        return send_error(req, 400, "invalid_request", framing, NULL);
    }
    route probe = ROUTE_DONE;
    if (strcmp(url, "/healthz") == 0)
        probe = ROUTE_HEALTHZ;
    else if (strcmp(url, "/readyz") == 0)
        probe = ROUTE_READYZ;
    else if (strcmp(url, "/metrics") == 0)
        probe = ROUTE_METRICS;
    else if (strcmp(url, "/status") == 0)
        probe = ROUTE_STATUS;
    else if (strcmp(url, "/status.json") == 0)
        probe = ROUTE_STATUS_JSON;
    /* with admin_listen, the operator's pages are there only (health stays here too) */
    if (probe >= ROUTE_METRICS && probe <= ROUTE_STATUS_JSON && s->cfg->admin_host != NULL)
        probe = ROUTE_DONE;
    if (probe != ROUTE_DONE) {
        req->route = ROUTE_DONE;
        if (strcmp(method, "GET") != 0 && strcmp(method, "HEAD") != 0)
            return send_error(req, 405, "method_not_allowed", "use GET", "GET, HEAD");
        req->route = probe;
        return MHD_YES;
    }
    if (strcmp(url, "/checkout") != 0) {
        req->route = ROUTE_DONE;
        char msg[160];
        snprintf(msg, sizeof(msg), "no such path: %.100s", url);
        return send_error(req, 404, "not_found", msg, NULL);
    }
    req->route = ROUTE_DONE;
    if (strcmp(method, "POST") != 0)
        return send_error(req, 405, "method_not_allowed", "/checkout accepts POST only", "POST");
    if (atomic_load(&s->draining))
        return send_error(req, 503, "shutting_down", "the service is shutting down", NULL);
    const char *ct =
        MHD_lookup_connection_value(conn, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_TYPE);
    if (!is_json_content_type(ct))
        return send_error(req, 415, "unsupported_media_type",
                          "Content-Type must be application/json", NULL);
    const char *cl =
        MHD_lookup_connection_value(conn, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_LENGTH);
    if (cl != NULL && strtoull(cl, NULL, 10) > (unsigned long long)s->cfg->max_body_bytes) {
        char msg[96];
        snprintf(msg, sizeof(msg), "body is larger than %ld bytes", s->cfg->max_body_bytes);
        return send_error(req, 413, "body_too_large", msg, NULL);
    }
    req->route = ROUTE_CHECKOUT;
    return MHD_YES;
}

/* Copies a chunk into the body, never beyond max_body_bytes: past it the body is dropped and
 * too_large set (the caller answers 413 at once). */
static void take_chunk(srv *s, srv_request *req, const char *data, size_t n)
{
    size_t limit = (size_t)s->cfg->max_body_bytes;
    if (req->too_large) {
        req->discarded += n;
        return;
    }
    if (n > limit - req->body_len) {
        req->discarded = req->body_len + n;
        req->too_large = 1;
        free(req->body);
        req->body = NULL;
        req->body_len = req->body_cap = 0;
        return;
    }
    if (req->body_len + n > req->body_cap) {
        size_t cap = req->body_cap ? req->body_cap : 1024;
        while (cap < req->body_len + n)
            cap *= 2;
        if (cap > limit)
            cap = limit;
        char *p = realloc(req->body, cap);
        if (p == NULL) {
            req->too_large = 1; /* answered as 413: we cannot hold it */
            return;
        }
        req->body = p;
        req->body_cap = cap;
    }
    memcpy(req->body + req->body_len, data, n);
    req->body_len += n;
}

/* The connection's edge_conn (its socket context), or NULL. */
static edge_conn *edge_of(struct MHD_Connection *conn)
{
    const union MHD_ConnectionInfo *i =
        MHD_get_connection_info(conn, MHD_CONNECTION_INFO_SOCKET_CONTEXT);
    return i != NULL ? i->socket_context : NULL;
}

/* The body just passed max_body_bytes (under tls: closed unanswered, see below). libmicrohttpd
 * 0.9.75 refuses to queue a response while it reads a body (MHD_queue_response wants the state
 * HEADERS_PROCESSED or FULL_REQ_RECEIVED, see its connection.c), and MHD_NO from here closes the
 * connection unanswered. So the 413 is written here, on the connection's socket itself: nothing
 * else is written on it while its body is read (a 100 Continue went out before the body), and it is
 * small enough for an empty socket buffer. Then the write side is shut: the client reads the 413
 * and an end-of-file at once. What it still sends is read and dropped for EDGE_LINGER_MS or
 * SRV_LINGER_BYTES at most, then the connection is closed (a lingering close, like nginx's: closing
 * at once with unread bytes would answer them with a reset, which can destroy the 413 before the
 * client read it). Every other answer still goes through libmicrohttpd; this one is counted and
 * logged like them. */
static enum MHD_Result answer_too_large(srv *s, srv_request *req)
{
    co_answer *a = &req->answer;
    char msg[96];
    snprintf(msg, sizeof(msg), "body is larger than %ld bytes", s->cfg->max_body_bytes);
    co_error_answer(a, 413, "body_too_large", msg);
    memcpy(a->request_id, req->request_id, sizeof(req->request_id));
    mx_checkout(s->checkout->metrics, mx_outcome_from_code(a->code), 0);
    co_log(s->checkout, a);
    req->route = ROUTE_LINGER;
    req->discarded = 0;
    const union MHD_ConnectionInfo *fd =
        MHD_get_connection_info(req->conn, MHD_CONNECTION_INFO_CONNECTION_FD);
    if (fd == NULL || s->tls) /* under TLS only the TLS library writes: closed unanswered */
        return MHD_NO;
    int ok = write_answer(fd->connect_fd, a);
    shutdown(fd->connect_fd, SHUT_WR);
    if (ok != 0 || req->edge == NULL)
        return MHD_NO;
    edge_linger(&req->worker->edge, req->edge, edge_now_ms());
    return MHD_YES;
}

/* request_timeout_ms passed while the body was still coming (edge's sweep, on the worker's
 * thread, before MHD_run): 408 request_timeout, written on the socket like the early 413 and for
 * the same reason (libmicrohttpd 0.9.75 refuses to queue an answer while it reads a body), then
 * the same lingering close. Under TLS nothing may be written beside the TLS library: the
 * connection is shut unanswered (0). */
static int answer_request_timeout(void *arg, edge_conn *ec)
{
    srv_worker *w = arg;
    srv *s = w->server;
    srv_request *req = ec->owner;
    if (s->tls || req == NULL || req->route == ROUTE_DONE || req->route == ROUTE_LINGER ||
        req->launched)
        return 0;
    co_answer *a = &req->answer;
    char msg[96];
    snprintf(msg, sizeof(msg), "the request did not arrive within %ld ms",
             s->cfg->request_timeout_ms);
    co_error_answer(a, 408, "request_timeout", msg);
    memcpy(a->request_id, req->request_id, sizeof(req->request_id));
    mx_checkout(s->checkout->metrics, mx_outcome_from_code(a->code), 0);
    co_log(s->checkout, a);
    req->route = ROUTE_LINGER;
    req->discarded = 0;
    free(req->body);
    req->body = NULL;
    req->body_len = req->body_cap = 0;
    int ok = write_answer(ec->fd, a);
    shutdown(ec->fd, SHUT_WR);
    if (ok != 0)
        return 0;
    edge_linger(&w->edge, ec, edge_now_ms());
    return 1;
}

static enum MHD_Result start_checkout(srv *s, srv_request *req, struct MHD_Connection *conn)
{
    co_request cr = {
        .body = req->body ? req->body : "",
        .body_len = req->body_len,
        .request_id = req->request_id,
        .idempotency_key = MHD_lookup_connection_value(conn, MHD_HEADER_KIND, "Idempotency-Key"),
        .traceparent = MHD_lookup_connection_value(conn, MHD_HEADER_KIND, "traceparent"),
        /* looked up only when trace is on: the fast path pays nothing for it otherwise */
        .trace = s->cfg->trace
                     ? MHD_lookup_connection_value(conn, MHD_HEADER_KIND, "X-Checkout-Trace")
                     : NULL,
    };
    co_checkout *c = NULL;
    if (cr.idempotency_key != NULL) /* two of them are refused: which one would be the key? */
        MHD_get_connection_values(conn, MHD_HEADER_KIND, count_idempotency_keys,
                                  &cr.idempotency_keys);
    req->route = ROUTE_DONE;
    if (co_accept(s->checkout, &cr, on_checkout_reply, req, &c, &req->answer) != 0)
        return send_decided(req, NULL);
    free(req->body); /* the checkout holds what it needs */
    req->body = NULL;
    req->launched = 1;
    atomic_fetch_add(&s->pending, 1);
    MHD_suspend_connection(conn);
    co_launch(s->checkout, c, req->worker->index);
    /* Answered inside co_launch (a replay, 409, 422 or 503 of the idempotency claim): the resumed
     * connection is served by the next MHD_run, so that turn must not wait for I/O. The reply of
     * a task group comes on a later turn, which runs MHD_run after it anyway. */
    if (req->answered)
        tg_loop_wakeup(req->worker->loop);
    return MHD_YES;
}

/* The last call of GET /healthz, /readyz, /metrics, /status or /status.json (service/admin.c
 * builds the answers, for both listeners). */
static enum MHD_Result answer_probe(srv *s, srv_request *req, struct MHD_Connection *conn)
{
    route r = req->route;
    req->route = ROUTE_DONE;
    adm_page page = r == ROUTE_HEALTHZ       ? ADM_HEALTHZ
                    : r == ROUTE_READYZ      ? ADM_READYZ
                    : r == ROUTE_METRICS     ? ADM_METRICS
                    : r == ROUTE_STATUS      ? ADM_STATUS
                    : r == ROUTE_STATUS_JSON ? ADM_STATUS_JSON
                                             : ADM_NONE;
    if (page == ADM_NONE)
        return MHD_YES; /* answered already */
    return adm_answer_page(conn, page, s->checkout, atomic_load(&s->draining));
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *conn, const char *url,
                                  const char *method, const char *version, const char *upload_data,
                                  size_t *upload_data_size, void **con_cls)
{
    srv_worker *w = cls;
    srv *s = w->server;
    srv_request *req = *con_cls;
    if (req == NULL) {
        req = calloc(1, sizeof(*req));
        if (req == NULL)
            return MHD_NO;
        req->server = s;
        req->worker = w;
        req->conn = conn;
        *con_cls = req;
        clen_forget(&w->clen, conn);
        req->edge = edge_of(conn);
        edge_headers_done(&w->edge, req->edge);
        edge_request_owner(req->edge, req);
        co_request_id(MHD_lookup_connection_value(conn, MHD_HEADER_KIND, "X-Request-Id"),
                      req->request_id, sizeof(req->request_id));
        enum MHD_Result r = route_first(s, req, conn, url, method, version);
        if (req->route == ROUTE_DONE) /* answered: libmicrohttpd sends it, not a 408 of ours */
            edge_request_done(&w->edge, req->edge);
        return r;
    }
    if (req->answered) {
        req->answered = 0;
        co_log(s->checkout, &req->answer); /* here, not on the loop thread: see co_log */
        return send_answer(conn, &req->answer, NULL, 0);
    }
    if (req->route == ROUTE_LINGER) {
        /* answered already: drop what still comes, within the linger's byte budget; at the end
         * of the body (or past the budget) MHD_NO makes libmicrohttpd close the connection */
        req->discarded += *upload_data_size;
        int more = *upload_data_size > 0 && req->discarded <= SRV_LINGER_BYTES;
        *upload_data_size = 0;
        return more ? MHD_YES : MHD_NO;
    }
    if (*upload_data_size == 0) /* the whole request came: no request deadline any more */
        edge_request_done(&w->edge, req->edge);
    if (req->route != ROUTE_CHECKOUT) {
        if (*upload_data_size > 0) {
            *upload_data_size = 0; /* an answer is queued already, or a probe: discard the body */
            return MHD_YES;
        }
        return answer_probe(s, req, conn);
    }
    if (*upload_data_size > 0) {
        take_chunk(s, req, upload_data, *upload_data_size);
        *upload_data_size = 0;
        if (req->too_large)
            return answer_too_large(s, req);
        return MHD_YES;
    }
    if (req->too_large) {
        req->route = ROUTE_DONE;
        char msg[96];
        snprintf(msg, sizeof(msg), "body is larger than %ld bytes", s->cfg->max_body_bytes);
        return send_error(req, 413, "body_too_large", msg, NULL);
    }
    return start_checkout(s, req, conn);
}

static void on_completed(void *cls, struct MHD_Connection *conn, void **con_cls,
                         enum MHD_RequestTerminationCode toe)
{
    srv_worker *w = cls;
    srv *s = w->server;
    srv_request *req = *con_cls;
    if (req == NULL)
        return;
    /* If libmicrohttpd keeps the connection, the idle watch starts; if it closes it, its
     * NOTIFY_CONNECTION (CLOSED) follows at once and ends the watch. */
    edge_request_owner(req->edge, NULL);
    edge_request_done(&w->edge, req->edge);
    if (toe == MHD_REQUEST_TERMINATED_COMPLETED_OK)
        edge_answered(&w->edge, req->edge, edge_now_ms());
    /* The answer is ready but libmicrohttpd ends the request without sending it. It does so
     * when it reads end-of-file on a connection whose request is complete but not yet answered:
     * a client that half-closed after its request (shutdown(SHUT_WR), nc -N, some proxies),
     * which RFC 9112 §9.6 says still gets its answer. On resume, 0.9.75 reads before it lets the
     * handler send (connection.c: "closed by remote side with incomplete request"). The socket
     * is still open here (libmicrohttpd shuts and closes it after this call), so the answer is
     * written on it directly; for a client that is really gone the write just fails. This costs
     * nothing on the path of an answer that libmicrohttpd sends. The checkout gets its log line
     * either way. */
    if (req->answered) {
        const union MHD_ConnectionInfo *fd =
            MHD_get_connection_info(conn, MHD_CONNECTION_INFO_CONNECTION_FD);
        if (fd != NULL && req->answer.body != NULL && !s->tls)
            write_answer(fd->connect_fd, &req->answer);
        co_log(s->checkout, &req->answer);
    }
    if (req->launched)
        atomic_fetch_sub(&s->pending, 1);
    free(req->body);
    free(req->answer.body);
    free(req);
    *con_cls = NULL;
}

/* Every connection gets its edge_conn (the header deadline starts) as its socket context, freed
 * when libmicrohttpd closes it. */
static void on_connection(void *cls, struct MHD_Connection *conn, void **socket_context,
                          enum MHD_ConnectionNotificationCode code)
{
    srv_worker *w = cls;
    srv *s = w->server;
    if (code == MHD_CONNECTION_NOTIFY_STARTED) {
        mx_connections(s->checkout->metrics, 1);
        const union MHD_ConnectionInfo *fd =
            MHD_get_connection_info(conn, MHD_CONNECTION_INFO_CONNECTION_FD);
        const union MHD_ConnectionInfo *addr =
            MHD_get_connection_info(conn, MHD_CONNECTION_INFO_CLIENT_ADDRESS);
        const struct sockaddr *sa = addr != NULL ? addr->client_addr : NULL;
        socklen_t salen = 0;
        if (sa != NULL)
            salen = sa->sa_family == AF_INET6 ? sizeof(struct sockaddr_in6)
                                              : sizeof(struct sockaddr_in);
        if (fd != NULL)
            *socket_context = edge_open(&w->edge, fd->connect_fd, sa, salen, edge_now_ms());
        if (s->tls_files.client_ca != NULL) { /* mTLS: before the handshake's first byte */
            const union MHD_ConnectionInfo *tls =
                MHD_get_connection_info(conn, MHD_CONNECTION_INFO_GNUTLS_SESSION);
            if (tls != NULL)
                lt_require_client_cert(tls->tls_session);
        }
        return;
    }
    mx_connections(s->checkout->metrics, -1);
    clen_forget(&w->clen, conn);
    edge_close(&w->edge, *socket_context);
    *socket_context = NULL;
}

/* listen's host may be an IP literal or a name ("localhost"); the first address wins. */

static int parse_listen(const cfg *c, struct sockaddr_storage *ss, int *v6)
{
    struct addrinfo hints = {
        .ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM, .ai_flags = AI_PASSIVE};
    struct addrinfo *found = NULL;
    if (getaddrinfo(c->listen_host, NULL, &hints, &found) != 0 || found == NULL)
        return -1;
    memset(ss, 0, sizeof(*ss));
    memcpy(ss, found->ai_addr, found->ai_addrlen);
    *v6 = found->ai_family == AF_INET6;
    freeaddrinfo(found);
    if (*v6)
        ((struct sockaddr_in6 *)ss)->sin6_port = htons((uint16_t)c->listen_port);
    else
        ((struct sockaddr_in *)ss)->sin_port = htons((uint16_t)c->listen_port);
    return 0;
}

/* The hook of the worker's loop: quiesce once draining (here, on the thread that drives the
 * daemon, not on the thread that got the signal), then serve whatever is ready. */
static void worker_run(void *arg)
{
    srv_worker *w = arg;
    if (!w->quiesced && atomic_load(&w->server->draining)) {
        w->quiesced = 1;
        MHD_socket fd = MHD_quiesce_daemon(w->daemon);
        if (fd != MHD_INVALID_SOCKET)
            close(fd);
    }
    /* before MHD_run: a socket shut down here is seen (end-of-file) and closed in the same turn */
    edge_sweep(&w->edge, edge_now_ms());
    MHD_run(w->daemon);
}

/* How long the daemon may wait: libmicrohttpd's idle timeouts and our deadlines; -1: no timer. */
static long worker_timeout_ms(void *arg)
{
    srv_worker *w = arg;
    MHD_UNSIGNED_LONG_LONG ms = 0;
    long wait = -1;
    if (MHD_get_timeout(w->daemon, &ms) == MHD_YES)
        wait = ms > 60000 ? 60000 : (long)ms;
    long due = edge_wait_ms(&w->edge, edge_now_ms());
    if (due >= 0 && (wait < 0 || due < wait))
        wait = due;
    return wait;
}

/* ---- a malformed Content-Length: one JSON answer instead of libmicrohttpd 0.9.75's two heads
 * (service/clen.h says why and how the connection is found). Our answer is written on the socket
 * and its write side shut: libmicrohttpd's own answer then fails to send (EPIPE) and it closes the
 * connection. Under TLS no byte may be written beside the TLS library: shut down unanswered. */

static void *on_request_line(void *cls, const char *uri, struct MHD_Connection *conn)
{
    srv_worker *w = cls;
    (void)uri;
    clen_line(&w->clen, conn);
    return NULL; /* the request's context: on_request's first call sees NULL */
}

static void answer_malformed_length(srv_worker *w, struct MHD_Connection *conn, int too_large)
{
    const union MHD_ConnectionInfo *fd =
        MHD_get_connection_info(conn, MHD_CONNECTION_INFO_CONNECTION_FD);
    if (fd == NULL)
        return;
    srv *s = w->server;
    co_answer a = {0};
    if (too_large) {
        char msg[96];
        snprintf(msg, sizeof(msg), "body is larger than %ld bytes", s->cfg->max_body_bytes);
        co_error_answer(&a, 413, "body_too_large", msg);
    } else {
        co_error_answer(&a, 400, "invalid_request", "Content-Length is not a decimal number");
    }
    co_request_id(MHD_lookup_connection_value(conn, MHD_HEADER_KIND, "X-Request-Id"), a.request_id,
                  sizeof(a.request_id));
    mx_checkout(s->checkout->metrics, mx_outcome_from_code(a.code), 0);
    co_log(s->checkout, &a);
    if (s->tls) {
        shutdown(fd->connect_fd, SHUT_RDWR);
    } else {
        write_answer(fd->connect_fd, &a);
        shutdown(fd->connect_fd, SHUT_WR);
    }
    free(a.body);
}

/* libmicrohttpd's own messages (a client's malformed request, a connection it closes): one JSON
 * line each at debug level, so that every line on stderr stays JSON. Called on the thread that
 * drives the worker's daemon (cls). */
static void on_mhd_log(void *cls, const char *fmt, va_list ap)
{
    srv_worker *w = cls;
    char msg[512];
    int too_large = 0;
    struct MHD_Connection *refused = w != NULL ? clen_refused(&w->clen, fmt, &too_large) : NULL;
    if (refused != NULL)
        answer_malformed_length(w, refused, too_large);
    if (!jlog_enabled(JLOG_DEBUG))
        return;
    vsnprintf(msg, sizeof(msg), fmt, ap);
    size_t n = strlen(msg);
    while (n > 0 && (msg[n - 1] == '\n' || msg[n - 1] == '\r'))
        msg[--n] = '\0';
    jlog_event(JLOG_DEBUG, "http", json_pack("{s:s}", "message", msg));
}

/* libmicrohttpd's connection timeout is an idle timeout in whole seconds, reset by every byte:
 * it is idle_timeout_ms rounded up (it also bounds a stalled body or a client that does not read
 * its answer); the header deadline and the idle close after an answer are ours (edge). */
static struct MHD_Daemon *start_daemon(srv_worker *w, const struct sockaddr_storage *ss, int v6,
                                       unsigned connection_limit)
{
    srv *s = w->server;
    unsigned idle_timeout_s = (unsigned)((s->cfg->idle_timeout_ms + 999) / 1000);
    unsigned flags = MHD_USE_EPOLL | MHD_ALLOW_SUSPEND_RESUME | MHD_USE_ERROR_LOG;
    if (v6)
        flags |= MHD_USE_IPv6;
    /* tls: HTTPS only on listen (GnuTLS inside libmicrohttpd; the texts stay until srv_stop) */
    struct MHD_OptionItem tls[] = {
        {MHD_OPTION_HTTPS_MEM_CERT, 0, s->tls_files.cert},
        {MHD_OPTION_HTTPS_MEM_KEY, 0, s->tls_files.key},
        {s->tls_files.client_ca != NULL ? MHD_OPTION_HTTPS_MEM_TRUST : MHD_OPTION_END, 0,
         s->tls_files.client_ca},
        {MHD_OPTION_END, 0, NULL},
    };
    if (s->tls)
        flags |= MHD_USE_TLS;
    else
        tls[0].option = MHD_OPTION_END;
    return MHD_start_daemon(
        flags, 0, NULL, NULL, on_request, w, MHD_OPTION_SOCK_ADDR, (const struct sockaddr *)ss,
        MHD_OPTION_CONNECTION_LIMIT, connection_limit, MHD_OPTION_CONNECTION_TIMEOUT,
        idle_timeout_s, MHD_OPTION_LISTEN_BACKLOG_SIZE, 4096U, MHD_OPTION_CONNECTION_MEMORY_LIMIT,
        (size_t)SRV_CONNECTION_MEMORY, MHD_OPTION_LISTENING_ADDRESS_REUSE, 1U,
        MHD_OPTION_NOTIFY_COMPLETED, on_completed, w, MHD_OPTION_NOTIFY_CONNECTION, on_connection,
        w, MHD_OPTION_URI_LOG_CALLBACK, on_request_line, w, MHD_OPTION_EXTERNAL_LOGGER, on_mhd_log,
        w, MHD_OPTION_ARRAY, tls, MHD_OPTION_END);
}

static void set_port(struct sockaddr_storage *ss, int v6, int port)
{
    if (v6)
        ((struct sockaddr_in6 *)ss)->sin6_port = htons((uint16_t)port);
    else
        ((struct sockaddr_in *)ss)->sin_port = htons((uint16_t)port);
}

srv *srv_start(const cfg *c, co_service *checkout, tg_loop *const *loops, size_t nloops, char *err,
               size_t errlen)
{
    struct sockaddr_storage ss;
    int v6 = 0;
    srv *s = calloc(1, sizeof(*s));
    if (s == NULL) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    s->cfg = c;
    s->checkout = checkout;
    if (c->max_connections_per_ip > 0 &&
        (s->cap = edge_ipcap_new(c->max_connections_per_ip)) == NULL) {
        snprintf(err, errlen, "out of memory");
        goto fail;
    }
    if (parse_listen(c, &ss, &v6) != 0) {
        snprintf(err, errlen, "listen: cannot resolve \"%s\"", c->listen_host);
        goto fail;
    }
    if (c->listen_tls.cert_file != NULL) {
        if (lt_load(c, &s->tls_files, err, errlen) != 0)
            goto fail;
        s->tls = 1;
    }
    if (nloops < 1 || nloops > SRV_MAX_WORKERS) {
        snprintf(err, errlen, "1 to %d loops are needed, not %zu", SRV_MAX_WORKERS, nloops);
        goto fail;
    }
    s->port = c->listen_port;
    for (size_t i = 0; i < nloops; i++) {
        srv_worker *w = &s->workers[i];
        w->server = s;
        w->loop = loops[i];
        w->index = i;
        edge_init(&w->edge, c->header_timeout_ms, c->idle_timeout_ms, s->cap);
        edge_set_request(&w->edge, c->request_timeout_ms, answer_request_timeout, w);
        /* The first daemon binds the configured port (0: any); the others join its port. */
        set_port(&ss, v6, s->port);
        w->daemon = start_daemon(w, &ss, v6, (unsigned)(SRV_CONNECTION_LIMIT / nloops));
        if (w->daemon == NULL && s->tls) {
            snprintf(err, errlen,
                     "tls: cannot serve HTTPS on %s:%d with tls.cert_file \"%s\" and "
                     "tls.key_file \"%s\" (not a PEM certificate and its key?), or the port is "
                     "in use",
                     c->listen_host, s->port, c->listen_tls.cert_file, c->listen_tls.key_file);
            goto fail;
        }
        if (w->daemon == NULL) {
            snprintf(err, errlen, "listen: cannot listen on %s:%d (in use, or not an address here)",
                     c->listen_host, s->port);
            goto fail;
        }
        s->nworkers = i + 1;
        if (i == 0) {
            const union MHD_DaemonInfo *info =
                MHD_get_daemon_info(w->daemon, MHD_DAEMON_INFO_BIND_PORT);
            s->port = info ? (int)info->port : c->listen_port;
        }
        const union MHD_DaemonInfo *ep = MHD_get_daemon_info(w->daemon, MHD_DAEMON_INFO_EPOLL_FD);
        tg_hook hook = {.fd = ep ? ep->epoll_fd : -1,
                        .run = worker_run,
                        .timeout_ms = worker_timeout_ms,
                        .arg = w};
        tg_loop_set_hook(w->loop, &hook);
    }
    if (c->admin_host != NULL &&
        (s->admin = adm_start(c, checkout, &s->draining, err, errlen)) == NULL)
        goto fail;
    return s;
fail:
    srv_stop(s);
    return NULL;
}

int srv_port(const srv *s)
{
    return s->port;
}

int srv_admin_port(const srv *s)
{
    return s->admin != NULL ? adm_port(s->admin) : -1;
}

void srv_drain(srv *s)
{
    atomic_store(&s->draining, 1);
    for (size_t i = 0; i < s->nworkers; i++)
        tg_loop_wakeup(s->workers[i].loop);
}

long srv_pending(srv *s)
{
    return atomic_load(&s->pending);
}

void srv_serve_here(srv *s, int ms)
{
    struct timespec tick = {0, 1000 * 1000};
    for (int waited = 0; waited < ms && srv_pending(s) > 0; waited++) {
        for (size_t i = 0; i < s->nworkers; i++)
            worker_run(&s->workers[i]);
        nanosleep(&tick, NULL);
    }
}

void srv_stop_admin(srv *s)
{
    if (s == NULL)
        return;
    adm_stop(s->admin);
    s->admin = NULL;
}

void srv_stop(srv *s)
{
    if (s == NULL)
        return;
    srv_stop_admin(s);
    for (size_t i = 0; i < s->nworkers; i++)
        MHD_stop_daemon(s->workers[i].daemon); /* closes its connections: edge_close for each */
    lt_free(&s->tls_files);
    edge_ipcap_free(s->cap);
    free(s);
}
