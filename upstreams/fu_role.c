/* fu_role — one fake upstream role on its own libmicrohttpd daemon (see fu_role.h).
 *
 * Request life cycle, on the daemon's single thread (only on_release runs on the timer thread):
 * - URI callback: allocates the fu_req; MHD then always calls the completed callback, which frees.
 * - first call: FU_REQ_BODY; a declared Content-Length over the limit is answered 413 at once.
 * - body calls: append up to max_body bytes, then only discard (the answer becomes 413).
 * - final call: decide the answer; with no delay queue it, else suspend it in fu_timer (HELD).
 * - resumed call: queue the prepared answer, or MHD_NO when the client hung up meanwhile.
 * Per-role state touched only by the daemon thread (rng, seq, last) needs no lock; the counters
 * are atomics because the timer thread updates pending and closed_early, and main reads them. */
#include "fu_role.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <gnutls/gnutls.h>
#include <jansson.h>
#include <microhttpd.h>

#define FU_ROLE_CONN_LIMIT 20000U /* per daemon; the fd rlimit is the real bound */
#define FU_ROLE_BACKLOG    4096U  /* bursts of thousands of connects must not be dropped */
#define FU_ROLE_BUF_MIN    4096U  /* first body buffer; doubles up to max_body */
#define FU_ROLE_NAME_MAX   128U   /* longer header names are left out of /_fake/last */
#define FU_NS_PER_MS       1000000ULL

#define FU_ROLE_KEYS_MAX 1000000U /* Idempotency-Keys counted one by one in /_fake/stats */

struct fu_role {
    fu_rules_role kind;
    fu_timer *timer;
    struct MHD_Daemon *daemon;
    uint16_t port;
    unsigned long latency_ms;
    unsigned long jitter_ms;
    unsigned long slow_ms;
    unsigned long max_body;
    bool tls;                 /* https */
    bool require_cert;        /* https with a client CA: the handshake requires a certificate */
    uint64_t rng;             /* xorshift64 state: daemon thread only */
    unsigned long seq;        /* POSTs so far, numbers authorization ids: daemon thread only */
    uint64_t outage_until_ns; /* POST /_fake/outage?ms=N: 503 to every POST until then */
    json_t *last; /* the /_fake/last document: daemon thread only (and destroy, after stop) */
    /* Idempotency-Key -> requests that carried it (daemon thread only), so that a test can tell
     * whether a checkout ran twice; at most FU_ROLE_KEYS_MAX keys, more are counted untracked. */
    json_t *keys;
    unsigned long keys_untracked;
    /* v1.2 undo endpoints (inventory POST /release, payment POST /void), daemon thread only:
     * per order id, the undo requests received and those answered 200; the next undo_fail undo
     * requests answer undo_status instead (POST /_fake/undo?fail=N&status=S&delay_ms=D), every
     * undo answer comes after undo_delay_ms. */
    json_t *undo_requests, *undone;
    unsigned long undo_fail, undo_status, undo_delay_ms;
    atomic_ulong requests;
    atomic_ulong answered;
    atomic_ulong closed_early;
    atomic_long pending;
    atomic_long unfinished; /* requests begun (URI seen) and not yet completed by MHD */
};

typedef enum fu_req_phase {
    FU_REQ_NEW = 0, /* headers received, handler not yet called */
    FU_REQ_BODY,    /* receiving the body */
    FU_REQ_HELD,    /* suspended in the timer; the answer is ready */
    FU_REQ_DONE     /* answer queued */
} fu_req_phase;

typedef struct fu_req {
    fu_hold hold; /* while FU_REQ_HELD; the timer gives it back to fu_role_release */
    fu_role *role;
    char *uri; /* raw request target, query string included */
    char *buf; /* body bytes, len <= cap <= max_body */
    size_t len;
    size_t cap;
    bool too_large;    /* body passed max_body; buf was dropped */
    bool is_fake;      /* a /_fake/ path: answered at once, not counted */
    bool is_undo;      /* the role's undo path */
    const char *allow; /* Allow header for a 405, else NULL */
    fu_req_phase phase;
    atomic_bool closed_early; /* written by the timer thread before it resumes the connection */
    fu_rules_answer answer;
} fu_req;

static uint64_t fu_role_random(fu_role *r)
{
    /* xorshift64: plenty for jitter, and no shared state between daemon threads. */
    r->rng ^= r->rng << 13;
    r->rng ^= r->rng >> 7;
    r->rng ^= r->rng << 17;
    return r->rng;
}

static void *fu_role_uri_log(void *cls, const char *uri, struct MHD_Connection *conn)
{
    fu_req *q = calloc(1, sizeof(*q));

    (void)conn;
    if (q == NULL)
        goto fail;
    q->role = cls;
    q->hold.node.idx = FU_HEAP_NONE;
    q->uri = strdup(uri != NULL ? uri : "");
    if (q->uri == NULL)
        goto fail;
    atomic_fetch_add(&q->role->unfinished, 1);
    return q; /* becomes *con_cls; the access handler answers MHD_NO when it is NULL */
fail:
    free(q);
    return NULL;
}

static void fu_role_completed(void *cls, struct MHD_Connection *conn, void **con_cls,
                              enum MHD_RequestTerminationCode toe)
{
    fu_req *q = *con_cls;

    (void)cls;
    (void)conn;
    (void)toe;
    if (q == NULL)
        return;
    /* Never called while held: MHD does not complete a suspended request, and fu_role_release
     * has returned before the timer resumes the connection. */
    atomic_fetch_sub(&q->role->unfinished, 1);
    fu_rules_answer_free(&q->answer);
    free(q->buf);
    free(q->uri);
    free(q);
    *con_cls = NULL;
}

/* Timer thread, before the connection is resumed; q stays valid until then. */
static void fu_role_release(fu_hold *h, bool closed_early, uint64_t waited_ms)
{
    fu_req *q = h->owner;
    fu_role *r = q->role;
    json_t *ev;
    char *line;

    if (closed_early) {
        atomic_store(&q->closed_early, true);
        /* Counted before pending drops, so a poller never sees pending 0 without the count. */
        atomic_fetch_add(&r->closed_early, 1);
        ev = json_pack("{s:s,s:s,s:s?,s:I}", "event", "client_closed_early", "role",
                       fu_rules_role_name(r->kind), "order_id", q->answer.order_id, "waited_ms",
                       (json_int_t)waited_ms);
        line = ev != NULL ? json_dumps(ev, JSON_COMPACT) : NULL;
        if (line != NULL)
            fprintf(stderr, "%s\n", line);
        free(line);
        json_decref(ev);
    }
    atomic_fetch_sub(&r->pending, 1);
}

static enum MHD_Result fu_role_send(fu_role *r, fu_req *q, struct MHD_Connection *conn)
{
    struct MHD_Response *resp;
    enum MHD_Result ret = MHD_NO;

    resp =
        MHD_create_response_from_buffer(q->answer.body_len, q->answer.body, MHD_RESPMEM_MUST_COPY);
    if (resp == NULL)
        goto fail;
    if (MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, q->answer.content_type) !=
        MHD_YES)
        goto fail;
    if (q->allow != NULL &&
        MHD_add_response_header(resp, MHD_HTTP_HEADER_ALLOW, q->allow) != MHD_YES)
        goto fail;
    if (q->answer.retry_after_s > 0) {
        char secs[24];
        snprintf(secs, sizeof secs, "%u", q->answer.retry_after_s);
        if (MHD_add_response_header(resp, MHD_HTTP_HEADER_RETRY_AFTER, secs) != MHD_YES)
            goto fail;
    }
    ret = MHD_queue_response(conn, q->answer.status, resp);
    if (ret != MHD_YES)
        goto fail;
    MHD_destroy_response(resp); /* MHD keeps its own reference until the answer is sent */
    q->phase = FU_REQ_DONE;
    if (!q->is_fake)
        atomic_fetch_add(&r->answered, 1);
    return MHD_YES;
fail:
    if (resp != NULL)
        MHD_destroy_response(resp);
    return MHD_NO;
}

static enum MHD_Result fu_role_add_header(void *cls, enum MHD_ValueKind kind, const char *key,
                                          const char *value)
{
    json_t *hdrs = cls;
    char name[FU_ROLE_NAME_MAX];
    size_t n = strlen(key);
    const char *prev;
    char *joined;
    size_t size;

    (void)kind;
    if (n >= sizeof(name))
        return MHD_YES;
    for (size_t i = 0; i < n; i++)
        name[i] = (char)tolower((unsigned char)key[i]);
    name[n] = '\0';
    if (value == NULL)
        value = "";
    /* A repeated header is joined with ", " as HTTP allows; invalid UTF-8 values are left out. */
    prev = json_string_value(json_object_get(hdrs, name));
    if (prev == NULL) {
        json_object_set_new(hdrs, name, json_string(value));
        return MHD_YES;
    }
    size = strlen(prev) + 2 + strlen(value) + 1;
    joined = malloc(size);
    if (joined == NULL)
        return MHD_NO;
    snprintf(joined, size, "%s, %s", prev, value);
    json_object_set_new(hdrs, name, json_string(joined));
    free(joined);
    return MHD_YES;
}

/* Whether the client of an https connection presented a certificate that verified against the
 * client CA (GnuTLS checked it in the handshake when one is required). */
static bool fu_role_client_cert(struct MHD_Connection *conn)
{
    const union MHD_ConnectionInfo *info =
        MHD_get_connection_info(conn, MHD_CONNECTION_INFO_GNUTLS_SESSION);
    unsigned int status = 0;
    unsigned int n = 0;

    if (info == NULL || info->tls_session == NULL)
        return false;
    if (gnutls_certificate_get_peers((gnutls_session_t)info->tls_session, &n) == NULL || n == 0)
        return false;
    return gnutls_certificate_verify_peers2((gnutls_session_t)info->tls_session, &status) == 0 &&
           status == 0;
}

/* A new connection, before its TLS handshake: with a client CA, a certificate is required and
 * verified in the handshake itself (libmicrohttpd only requests one), as an mTLS server does. */
static void fu_role_notify(void *cls, struct MHD_Connection *conn, void **socket_context,
                           enum MHD_ConnectionNotificationCode toe)
{
    fu_role *r = cls;
    const union MHD_ConnectionInfo *info;
    gnutls_session_t session;

    (void)socket_context;
    if (toe != MHD_CONNECTION_NOTIFY_STARTED || !r->require_cert)
        return;
    info = MHD_get_connection_info(conn, MHD_CONNECTION_INFO_GNUTLS_SESSION);
    if (info == NULL || info->tls_session == NULL)
        return;
    session = (gnutls_session_t)info->tls_session;
    gnutls_certificate_server_set_request(session, GNUTLS_CERT_REQUIRE);
    gnutls_session_set_verify_cert(session, NULL, 0);
}

/* Keeps this POST's path, query, headers and body for GET /_fake/last. O(headers + body). */
static fu_status fu_role_record_last(fu_role *r, fu_req *q, struct MHD_Connection *conn,
                                     const char *url)
{
    fu_status st = FU_OK;
    const char *query = strchr(q->uri, '?');
    json_t *hdrs = json_object();
    json_t *body = NULL;
    json_t *doc = NULL;

    if (hdrs == NULL) {
        st = FU_ENOMEM;
        goto fail;
    }
    MHD_get_connection_values(conn, MHD_HEADER_KIND, fu_role_add_header, hdrs);
    if (!q->too_large)
        body = json_loadb(q->buf != NULL ? q->buf : "", q->len, 0, NULL);
    doc = json_pack("{s:s,s:s?,s:O,s:O?}", "path", url, "query", query != NULL ? query + 1 : NULL,
                    "headers", hdrs, "body", body);
    if (doc != NULL && r->tls &&
        json_object_set_new(doc, "tls",
                            json_pack("{s:b}", "client_cert", fu_role_client_cert(conn))) != 0) {
        json_decref(doc);
        doc = NULL;
    }
    if (doc == NULL) {
        st = FU_ENOMEM;
        goto fail;
    }
    json_decref(r->last);
    r->last = doc;
    json_decref(hdrs);
    json_decref(body);
    return FU_OK;
fail:
    json_decref(hdrs);
    json_decref(body);
    return st;
}

static fu_status fu_role_too_large(const fu_role *r, fu_req *q)
{
    char msg[96];

    snprintf(msg, sizeof(msg), "the body is larger than %lu bytes", r->max_body);
    return fu_rules_error(413, "body_too_large", msg, &q->answer);
}

/* POST /_fake/outage?ms=N (0..FU_OUTAGE_MAX_MS): every POST of this role answers 503 for N ms
 * (0 ends an outage), so that a breaker can be opened by hand. */
#define FU_OUTAGE_MAX_MS 3600000UL
static fu_status fu_role_outage(fu_role *r, fu_req *q, struct MHD_Connection *conn)
{
    const char *ms = MHD_lookup_connection_value(conn, MHD_GET_ARGUMENT_KIND, "ms");
    char *end = NULL;
    unsigned long n = ms != NULL ? strtoul(ms, &end, 10) : 0;
    if (ms == NULL || end == ms || *end != '\0' || n > FU_OUTAGE_MAX_MS)
        return fu_rules_error(400, "bad_request", "use /_fake/outage?ms=0..3600000", &q->answer);
    r->outage_until_ns = fu_timer_now_ns() + (uint64_t)n * FU_NS_PER_MS;
    return fu_rules_json(
        200,
        json_pack("{s:s,s:I}", "role", fu_rules_role_name(r->kind), "outage_ms", (json_int_t)n),
        &q->answer);
}

/* An unsigned query argument into *out when present; -1 when present and not a number <= max. */
static int fu_role_arg(struct MHD_Connection *conn, const char *name, unsigned long max,
                       unsigned long *out)
{
    const char *v = MHD_lookup_connection_value(conn, MHD_GET_ARGUMENT_KIND, name);
    char *end = NULL;
    unsigned long n = v != NULL ? strtoul(v, &end, 10) : 0;
    if (v == NULL)
        return 0;
    if (end == v || *end != '\0' || n > max)
        return -1;
    *out = n;
    return 0;
}

/* POST /_fake/undo?fail=N&status=S&delay_ms=D: the next N undo requests answer S (default 503)
 * instead of 200, and every undo answer waits D ms (default 0); a retry can be shown by hand. */
static fu_status fu_role_undo_rule(fu_role *r, fu_req *q, struct MHD_Connection *conn)
{
    unsigned long fail = 0, status = 503, delay = 0;
    if (fu_role_arg(conn, "fail", 1000000, &fail) != 0 ||
        fu_role_arg(conn, "status", 599, &status) != 0 || status < 200 ||
        fu_role_arg(conn, "delay_ms", FU_OUTAGE_MAX_MS, &delay) != 0)
        return fu_rules_error(400, "bad_request",
                              "use /_fake/undo?fail=N&status=200..599&delay_ms=D", &q->answer);
    r->undo_fail = fail;
    r->undo_status = status;
    r->undo_delay_ms = delay;
    return fu_rules_json(200,
                         json_pack("{s:s,s:I,s:I,s:I}", "role", fu_rules_role_name(r->kind), "fail",
                                   (json_int_t)fail, "status", (json_int_t)status, "delay_ms",
                                   (json_int_t)delay),
                         &q->answer);
}

/* The role's undo path: inventory /release, payment /void, address none. */
static const char *fu_role_undo_path(const fu_role *r)
{
    return r->kind == FU_RULES_INVENTORY ? "/release"
           : r->kind == FU_RULES_PAYMENT ? "/void"
                                         : NULL;
}

static void fu_role_count(json_t *counts, const char *order_id)
{
    json_int_t n = json_integer_value(json_object_get(counts, order_id));
    json_object_set_new(counts, order_id, json_integer(n + 1));
}

/* An undo request: {"order_id", "validation", <field>, "result"}; 200 {"undone": true, ...}
 * unless a fail rule is pending. Counted per order id. */
static fu_status fu_role_undo(fu_role *r, fu_req *q)
{
    json_t *body = q->buf != NULL ? json_loadb(q->buf, q->len, 0, NULL) : NULL;
    const char *order = json_string_value(json_object_get(body, "order_id"));
    fu_status st;

    if (order == NULL) {
        json_decref(body);
        return fu_rules_error(400, "bad_request", "an undo request needs an order_id", &q->answer);
    }
    fu_role_count(r->undo_requests, order);
    if (r->undo_fail > 0) {
        r->undo_fail--;
        st = fu_rules_error((unsigned)r->undo_status, "undo_failed",
                            "this undo fails by a /_fake/undo rule", &q->answer);
    } else {
        fu_role_count(r->undone, order);
        st = fu_rules_json(200,
                           json_pack("{s:s,s:b,s:s}", "order_id", order, "undone", 1, "role",
                                     fu_rules_role_name(r->kind)),
                           &q->answer);
    }
    json_decref(body);
    return st;
}

static fu_status fu_role_fake(fu_role *r, fu_req *q, struct MHD_Connection *conn, const char *url,
                              const char *method)
{
    json_t *doc;

    if (strcmp(url, "/_fake/outage") == 0 && strcmp(method, MHD_HTTP_METHOD_POST) == 0)
        return fu_role_outage(r, q, conn);
    if (strcmp(url, "/_fake/undo") == 0 && strcmp(method, MHD_HTTP_METHOD_POST) == 0)
        return fu_role_undo_rule(r, q, conn);

    if (strcmp(method, MHD_HTTP_METHOD_GET) != 0 && strcmp(method, MHD_HTTP_METHOD_HEAD) != 0) {
        q->allow = "GET, HEAD";
        return fu_rules_error(405, "method_not_allowed", "use GET", &q->answer);
    }
    if (strcmp(url, "/_fake/stats") == 0) {
        /* idempotency_repeats: only the keys seen more than once, O(keys) per call */
        json_t *repeats = json_object();
        const char *k;
        json_t *n;
        json_object_foreach(r->keys, k, n)
        {
            if (json_integer_value(n) > 1)
                json_object_set(repeats, k, n);
        }
        doc = json_pack("{s:s,s:I,s:I,s:I,s:I,s:I,s:I,s:o,s:O,s:O}", "role",
                        fu_rules_role_name(r->kind), "requests",
                        (json_int_t)atomic_load(&r->requests), "answered",
                        (json_int_t)atomic_load(&r->answered), "closed_early",
                        (json_int_t)atomic_load(&r->closed_early), "pending",
                        (json_int_t)atomic_load(&r->pending), "idempotency_keys",
                        (json_int_t)json_object_size(r->keys), "idempotency_keys_untracked",
                        (json_int_t)r->keys_untracked, "idempotency_repeats", repeats,
                        "undo_requests", r->undo_requests, "undone", r->undone);
        return fu_rules_json(200, doc, &q->answer);
    }
    if (strcmp(url, "/_fake/keys") == 0) /* every Idempotency-Key seen, with its count */
        return fu_rules_json(200, r->keys != NULL ? json_incref(r->keys) : json_object(),
                             &q->answer);
    if (strcmp(url, "/_fake/last") == 0) {
        if (r->last == NULL)
            return fu_rules_error(404, "not_found", "no POST received yet", &q->answer);
        return fu_rules_json(200, json_incref(r->last), &q->answer);
    }
    return fu_rules_error(404, "not_found",
                          "the fake endpoints are /_fake/stats, /_fake/keys and /_fake/last",
                          &q->answer);
}

/* The request's X-Checkout-Attempt, 0 when absent or not a number. */
static unsigned long fu_role_attempt(struct MHD_Connection *conn)
{
    const char *v = MHD_lookup_connection_value(conn, MHD_HEADER_KIND, "X-Checkout-Attempt");
    char *end = NULL;
    unsigned long n = v != NULL ? strtoul(v, &end, 10) : 0;
    return v != NULL && end != v && *end == '\0' ? n : 0;
}

/* The answer's delay in ms: latency + uniform 0..jitter (+ slow for tok_slow). */
static uint64_t fu_role_delay_ms(fu_role *r, const fu_req *q)
{
    uint64_t ms = r->latency_ms;

    if (r->jitter_ms > 0)
        ms += fu_role_random(r) % ((uint64_t)r->jitter_ms + 1);
    if (q->answer.slow)
        ms += r->slow_ms;
    if (q->is_undo)
        ms += r->undo_delay_ms;
    return ms;
}

/* The final call: the whole request is in. Decide, then answer now or hold. */
static enum MHD_Result fu_role_finish(fu_role *r, fu_req *q, struct MHD_Connection *conn,
                                      const char *url, const char *method)
{
    fu_status st;
    uint64_t delay_ms;

    if (q->is_fake) {
        st = fu_role_fake(r, q, conn, url, method);
        return st == FU_OK ? fu_role_send(r, q, conn) : MHD_NO;
    }
    if (strcmp(method, MHD_HTTP_METHOD_POST) != 0) {
        q->allow = "POST";
        st = fu_rules_error(405, "method_not_allowed", "use POST with a JSON body", &q->answer);
    } else {
        r->seq++;
        st = fu_role_record_last(r, q, conn, url);
        if (st == FU_OK && q->too_large)
            st = fu_role_too_large(r, q);
        else if (st == FU_OK && fu_timer_now_ns() < r->outage_until_ns)
            st = fu_rules_error(503, "outage", "the role is in an outage (/_fake/outage)",
                                &q->answer);
        else if (st == FU_OK && q->is_undo)
            st = fu_role_undo(r, q);
        else if (st == FU_OK)
            st = fu_rules_decide(r->kind, q->buf != NULL ? q->buf : "", q->len, r->seq,
                                 fu_role_attempt(conn), &q->answer);
    }
    if (st != FU_OK)
        return MHD_NO; /* out of memory: drop the connection */
    delay_ms = fu_role_delay_ms(r, q);
    if (delay_ms == 0)
        return fu_role_send(r, q, conn);
    /* pending goes up before the hold, so the timer's decrement can never underflow it. */
    atomic_fetch_add(&r->pending, 1);
    q->phase = FU_REQ_HELD;
    st = fu_timer_hold(r->timer, &q->hold, conn, delay_ms * FU_NS_PER_MS, fu_role_release, q);
    if (st != FU_OK) {
        /* Shutting down (or out of memory): not suspended, so answer at once. */
        atomic_fetch_sub(&r->pending, 1);
        return fu_role_send(r, q, conn);
    }
    return MHD_YES;
}

/* A body chunk: keep up to max_body bytes. Amortised O(chunk) (the buffer doubles). */
static enum MHD_Result fu_role_take_body(fu_role *r, fu_req *q, const char *data, size_t *size)
{
    size_t n = *size;
    size_t cap;
    char *nb;

    *size = 0; /* always consume: an over-long body is read and dropped, then answered 413 */
    if (q->too_large)
        return MHD_YES;
    if (n > r->max_body - q->len) {
        q->too_large = true;
        free(q->buf);
        q->buf = NULL;
        q->len = 0;
        q->cap = 0;
        return MHD_YES;
    }
    if (q->len + n > q->cap) {
        cap = q->cap > 0 ? q->cap : FU_ROLE_BUF_MIN;
        while (cap < q->len + n)
            cap *= 2;
        if (cap > r->max_body)
            cap = r->max_body;
        nb = realloc(q->buf, cap);
        if (nb == NULL)
            return MHD_NO;
        q->buf = nb;
        q->cap = cap;
    }
    memcpy(q->buf + q->len, data, n);
    q->len += n;
    return MHD_YES;
}

/* Counts one request carrying Idempotency-Key key (NULL: none). O(1) amortised. */
static void fu_role_count_key(fu_role *r, const char *key)
{
    if (key == NULL || r->keys == NULL)
        return;
    json_t *n = json_object_get(r->keys, key);
    if (n != NULL) {
        json_integer_set(n, json_integer_value(n) + 1);
        return;
    }
    if (json_object_size(r->keys) >= FU_ROLE_KEYS_MAX ||
        json_object_set_new(r->keys, key, json_integer(1)) != 0)
        r->keys_untracked++;
}

/* The first call: headers are in. A declared oversize body is refused before it is read. */
static enum MHD_Result fu_role_begin(fu_role *r, fu_req *q, struct MHD_Connection *conn,
                                     const char *url, const char *method)
{
    const char *cl;
    char *end;
    unsigned long long declared;

    q->phase = FU_REQ_BODY;
    q->is_fake = strncmp(url, "/_fake/", 7) == 0;
    q->is_undo = fu_role_undo_path(r) != NULL && strcmp(url, fu_role_undo_path(r)) == 0;
    if (q->is_fake)
        return MHD_YES;
    atomic_fetch_add(&r->requests, 1);
    fu_role_count_key(r, MHD_lookup_connection_value(conn, MHD_HEADER_KIND, "Idempotency-Key"));
    if (strcmp(method, MHD_HTTP_METHOD_POST) != 0)
        return MHD_YES;
    cl = MHD_lookup_connection_value(conn, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_LENGTH);
    if (cl == NULL)
        return MHD_YES;
    declared = strtoull(cl, &end, 10);
    if (end == cl || declared <= r->max_body)
        return MHD_YES;
    if (fu_role_too_large(r, q) != FU_OK)
        return MHD_NO;
    return fu_role_send(r, q, conn); /* MHD closes the connection after it */
}

static enum MHD_Result fu_role_access(void *cls, struct MHD_Connection *conn, const char *url,
                                      const char *method, const char *version,
                                      const char *upload_data, size_t *upload_data_size,
                                      void **con_cls)
{
    fu_role *r = cls;
    fu_req *q = *con_cls;
    enum MHD_Result ret;

    (void)version;
    if (q == NULL)
        return MHD_NO; /* the URI callback ran out of memory */
    switch (q->phase) {
    case FU_REQ_NEW:
        ret = fu_role_begin(r, q, conn, url, method);
        if (ret != MHD_YES || q->phase != FU_REQ_BODY || *upload_data_size == 0)
            return ret;
        return fu_role_take_body(r, q, upload_data, upload_data_size);
    case FU_REQ_BODY:
        if (*upload_data_size > 0)
            return fu_role_take_body(r, q, upload_data, upload_data_size);
        return fu_role_finish(r, q, conn, url, method);
    case FU_REQ_HELD:
        if (atomic_load(&q->closed_early))
            return MHD_NO; /* the client is gone: let MHD close the connection and free q */
        return fu_role_send(r, q, conn);
    case FU_REQ_DONE:
        break;
    }
    return MHD_NO;
}

/* Fills *ss from a numeric host; *v6 tells the family. */
static fu_status fu_role_addr(const char *host, uint16_t port, struct sockaddr_storage *ss,
                              bool *v6)
{
    struct sockaddr_in *sin = (struct sockaddr_in *)ss;
    struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)ss;

    memset(ss, 0, sizeof(*ss));
    if (inet_pton(AF_INET, host, &sin->sin_addr) == 1) {
        sin->sin_family = AF_INET;
        sin->sin_port = htons(port);
        *v6 = false;
        return FU_OK;
    }
    if (inet_pton(AF_INET6, host, &sin6->sin6_addr) == 1) {
        sin6->sin6_family = AF_INET6;
        sin6->sin6_port = htons(port);
        *v6 = true;
        return FU_OK;
    }
    return FU_EINVAL;
}

fu_status fu_role_start(fu_role **out, fu_rules_role role, const fu_role_opts *opts,
                        fu_timer *timer)
{
    fu_status st = FU_OK;
    fu_role *r = NULL;
    struct sockaddr_storage ss;
    const union MHD_DaemonInfo *info;
    unsigned int flags;
    bool v6 = false;
    sigset_t all;
    sigset_t old;

    *out = NULL;
    r = calloc(1, sizeof(*r));
    if (r == NULL) {
        st = FU_ENOMEM;
        goto fail;
    }
    r->undo_requests = json_object();
    r->undone = json_object();
    r->undo_status = 503;
    if (r->undo_requests == NULL || r->undone == NULL) {
        st = FU_ENOMEM;
        goto fail;
    }
    r->kind = role;
    r->timer = timer;
    r->latency_ms = opts->latency_ms;
    r->jitter_ms = opts->jitter_ms;
    r->slow_ms = opts->slow_ms;
    r->max_body = opts->max_body;
    r->rng = (fu_timer_now_ns() ^ ((uint64_t)getpid() << 20) ^
              (0x9E3779B97F4A7C15ULL * (uint64_t)(role + 1))) |
             1; /* xorshift state must not be 0 */
    atomic_init(&r->requests, 0);
    r->keys = json_object(); /* NULL (out of memory): keys are simply not counted */
    atomic_init(&r->answered, 0);
    atomic_init(&r->closed_early, 0);
    atomic_init(&r->pending, 0);
    atomic_init(&r->unfinished, 0);
    st = fu_role_addr(opts->host, opts->port, &ss, &v6);
    if (st != FU_OK)
        goto fail;
    flags = MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_EPOLL | MHD_ALLOW_SUSPEND_RESUME;
    if (v6)
        flags |= MHD_USE_IPv6;
    /* The TLS options go in an array so that one call starts both kinds of daemon. */
    struct MHD_OptionItem tls[5];
    size_t ntls = 0;
    if (opts->tls_cert != NULL) {
        flags |= MHD_USE_TLS;
        r->tls = true;
        tls[ntls++] = (struct MHD_OptionItem){MHD_OPTION_HTTPS_MEM_CERT, 0, (void *)opts->tls_cert};
        tls[ntls++] = (struct MHD_OptionItem){MHD_OPTION_HTTPS_MEM_KEY, 0, (void *)opts->tls_key};
        if (opts->tls_trust != NULL) {
            r->require_cert = true;
            tls[ntls++] =
                (struct MHD_OptionItem){MHD_OPTION_HTTPS_MEM_TRUST, 0, (void *)opts->tls_trust};
            /* libmicrohttpd ends a failed handshake without an alert: under TLS 1.3 the client
             * would only see an empty reply after its side of the handshake; under TLS 1.2 it
             * sees the handshake fail, as with an mTLS server that sends its alert. */
            tls[ntls++] = (struct MHD_OptionItem){MHD_OPTION_HTTPS_PRIORITIES, 0,
                                                  (void *)"NORMAL:-VERS-TLS1.3"};
        }
    }
    tls[ntls] = (struct MHD_OptionItem){MHD_OPTION_END, 0, NULL};
    /* The daemon thread inherits this mask: signals are for the main thread only. */
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    r->daemon = MHD_start_daemon(
        flags, opts->port, NULL, NULL, fu_role_access, r, MHD_OPTION_SOCK_ADDR,
        (struct sockaddr *)&ss, MHD_OPTION_CONNECTION_LIMIT, FU_ROLE_CONN_LIMIT,
        MHD_OPTION_LISTEN_BACKLOG_SIZE, FU_ROLE_BACKLOG, MHD_OPTION_URI_LOG_CALLBACK,
        fu_role_uri_log, r, MHD_OPTION_NOTIFY_COMPLETED, fu_role_completed, r,
        MHD_OPTION_NOTIFY_CONNECTION, fu_role_notify, r, MHD_OPTION_ARRAY, tls, MHD_OPTION_END);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (r->daemon == NULL) {
        st = FU_ELISTEN;
        goto fail;
    }
    info = MHD_get_daemon_info(r->daemon, MHD_DAEMON_INFO_BIND_PORT);
    if (info == NULL || info->port == 0) {
        st = FU_ELISTEN;
        goto fail;
    }
    r->port = info->port;
    *out = r;
    return FU_OK;
fail:
    fu_role_destroy(r);
    return st;
}

uint16_t fu_role_port(const fu_role *r)
{
    return r->port;
}

const char *fu_role_name(const fu_role *r)
{
    return fu_rules_role_name(r->kind);
}

long fu_role_unfinished(const fu_role *r)
{
    return atomic_load(&r->unfinished);
}

void fu_role_stop(fu_role *r)
{
    if (r->daemon == NULL)
        return;
    MHD_stop_daemon(r->daemon);
    r->daemon = NULL;
}

void fu_role_destroy(fu_role *r)
{
    if (r == NULL)
        return;
    fu_role_stop(r);
    json_decref(r->last);
    json_decref(r->keys);
    json_decref(r->undo_requests);
    json_decref(r->undone);
    free(r);
}
