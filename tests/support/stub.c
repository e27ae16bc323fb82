/* stub — in-process test upstream on libmicrohttpd; the contract is in stub.h. */
#include "stub.h"

#include <arpa/inet.h>
#include <errno.h>
#include <jansson.h>
#include <microhttpd.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#define STUB_MAX_BODY     ((size_t)16 * 1024 * 1024)
#define STUB_MAX_BIG      ((long)256 * 1024 * 1024)
#define STUB_DEFAULT_BIG  2097152L
#define STUB_MAX_DELAY    600000L
#define STUB_POLL_STEP_MS 10
#define STUB_HISTORY      64

struct stub {
    struct MHD_Daemon *d;
    int port;
    atomic_uint requests, answered, closed_early;
    atomic_int stopping;
    pthread_mutex_t mu; /* guards the last-request record below */
    int have_last;
    char *last_hdrs; /* "name\0value\0" pairs, last_hdrs_len bytes */
    size_t last_hdrs_len;
    char *last_body;
    /* the headers of every recorded request, in order (the first STUB_HISTORY) */
    char *hist[STUB_HISTORY];
    size_t hist_len[STUB_HISTORY];
    unsigned nhist;
};

/* Per request, from the first handler call to MHD's completion notice. */
typedef struct req {
    char *body;
    size_t len, cap;
    int recorded;
} req;

typedef struct hdrbuf {
    char *data;
    size_t len, cap;
    int oom;
} hdrbuf;

enum wait_result { WAIT_DONE, WAIT_CLOSED, WAIT_STOPPING };

static long long now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static int grow(char **data, size_t *cap, size_t want)
{
    size_t c = *cap > 0 ? *cap : 256;
    char *p;

    if (want <= *cap)
        return 0;
    while (c < want)
        c *= 2;
    p = realloc(*data, c);
    if (p == NULL)
        goto fail;
    *data = p;
    *cap = c;
    return 0;
fail:
    return -1;
}

static enum MHD_Result collect_header(void *cls, enum MHD_ValueKind kind, const char *key,
                                      const char *value)
{
    hdrbuf *h = cls;
    size_t kl = strlen(key), vl = value != NULL ? strlen(value) : 0;

    (void)kind;
    if (grow(&h->data, &h->cap, h->len + kl + vl + 2) != 0) {
        h->oom = 1;
        return MHD_NO;
    }
    memcpy(h->data + h->len, key, kl + 1);
    h->len += kl + 1;
    memcpy(h->data + h->len, value != NULL ? value : "", vl + 1);
    h->len += vl + 1;
    return MHD_YES;
}

/* Replaces the last-request record; on out-of-memory the old record is kept. */
static void record_request(stub *s, struct MHD_Connection *conn, const req *rq)
{
    hdrbuf h = {0};
    char *body = malloc(rq->len + 1);

    if (body == NULL)
        goto fail;
    if (rq->len > 0)
        memcpy(body, rq->body, rq->len);
    body[rq->len] = '\0';
    MHD_get_connection_values(conn, MHD_HEADER_KIND, collect_header, &h);
    if (h.oom)
        goto fail;
    pthread_mutex_lock(&s->mu);
    if (s->nhist < STUB_HISTORY) {
        s->hist[s->nhist] = malloc(h.len + 1);
        if (s->hist[s->nhist] != NULL) {
            memcpy(s->hist[s->nhist], h.data, h.len);
            s->hist_len[s->nhist++] = h.len;
        }
    }
    free(s->last_hdrs);
    free(s->last_body);
    s->last_hdrs = h.data;
    s->last_hdrs_len = h.len;
    s->last_body = body;
    s->have_last = 1;
    pthread_mutex_unlock(&s->mu);
    return;
fail:
    free(h.data);
    free(body);
}

/* Parses query argument name as a whole decimal number in lo..hi; absent gives def. 0 / -1. */
static int arg_long(struct MHD_Connection *conn, const char *name, long def, long lo, long hi,
                    long *out)
{
    const char *v = MHD_lookup_connection_value(conn, MHD_GET_ARGUMENT_KIND, name);
    char *end = NULL;
    long n;

    if (v == NULL) {
        *out = def;
        return 0;
    }
    errno = 0;
    n = strtol(v, &end, 10);
    if (errno != 0 || end == v || *end != '\0' || n < lo || n > hi)
        goto fail;
    *out = n;
    return 0;
fail:
    return -1;
}

/* Waits delay_ms while watching the client's socket, in steps of at most 10 ms so that both a
 * client hang-up and stub_stop are noticed quickly. A plain sleep would keep a cancelled upstream
 * call invisible to the test, which is exactly what the tests want to observe. */
static enum wait_result delay_watching(stub *s, struct MHD_Connection *conn, long delay_ms)
{
    const union MHD_ConnectionInfo *ci =
        MHD_get_connection_info(conn, MHD_CONNECTION_INFO_CONNECTION_FD);
    int fd = ci != NULL ? ci->connect_fd : -1;
    long long deadline = now_ms() + delay_ms;

    for (;;) {
        long long left = deadline - now_ms();
        /* Only hang-up events: POLLIN (a pipelined request) must not end the wait early. */
        struct pollfd pfd = {.fd = fd, .events = POLLRDHUP};
        int rc;

        if (atomic_load(&s->stopping))
            return WAIT_STOPPING;
        if (left <= 0)
            return WAIT_DONE;
        rc = poll(&pfd, fd >= 0 ? 1 : 0, left < STUB_POLL_STEP_MS ? (int)left : STUB_POLL_STEP_MS);
        if (rc > 0 && (pfd.revents & (POLLRDHUP | POLLHUP | POLLERR | POLLNVAL)) != 0) {
            /* stub_stop shuts connections down, which looks like a hang-up: not the client's. */
            if (atomic_load(&s->stopping))
                return WAIT_STOPPING;
            atomic_fetch_add(&s->closed_early, 1);
            return WAIT_CLOSED;
        }
    }
}

/* One JSON string of exactly n (>= 2) bytes, '"', n - 2 times 'a', '"'; malloc'd, or NULL. */
static char *big_json_string(size_t n)
{
    char *out = malloc(n + 1);

    if (out == NULL)
        goto fail;
    memset(out, 'a', n);
    out[0] = '"';
    out[n - 1] = '"';
    out[n] = '\0';
    return out;
fail:
    return NULL;
}

/* The default body: {"ok":true,"path":...} for 2xx, else {"error":"stub_error","status":N}. */
static char *json_body(const char *url, long status)
{
    json_t *j;
    char *out;

    if (status >= 200 && status <= 299)
        j = json_pack("{s:b,s:s}", "ok", 1, "path", url);
    else
        j = json_pack("{s:s,s:I}", "error", "stub_error", "status", (json_int_t)status);
    if (j == NULL)
        goto fail;
    out = json_dumps(j, JSON_COMPACT);
    json_decref(j);
    return out;
fail:
    return NULL;
}

/* The answer's bytes, malloc'd (NULL on out-of-memory); *len gets their count. */
static char *make_body(const char *url, long status, const char *kind, long big_bytes, size_t *len)
{
    const char *fixed = NULL;
    char *out = NULL;

    if (strcmp(kind, "garbage") == 0)
        fixed = "not json at all";
    else if (strcmp(kind, "array") == 0)
        fixed = "[1,2,3]";
    else if (strcmp(kind, "empty") == 0)
        fixed = "";

    if (fixed != NULL) {
        out = strdup(fixed);
    } else if (strcmp(kind, "big") == 0) {
        out = big_json_string((size_t)big_bytes);
    } else {
        out = json_body(url, status);
    }
    if (out == NULL)
        goto fail;
    *len = strlen(out);
    return out;
fail:
    return NULL;
}

static enum MHD_Result queue(stub *s, struct MHD_Connection *conn, unsigned status, char *body,
                             size_t len, long retry_after)
{
    struct MHD_Response *resp;
    enum MHD_Result rc;

    /* MUST_FREE hands body to MHD, which frees it with the response; an empty body is not kept,
     * so that ownership of a zero-length buffer never depends on MHD's special cases. */
    if (len == 0) {
        free(body);
        resp = MHD_create_response_from_buffer(0, (void *)"", MHD_RESPMEM_PERSISTENT);
    } else {
        resp = MHD_create_response_from_buffer(len, body, MHD_RESPMEM_MUST_FREE);
        if (resp == NULL)
            free(body);
    }
    if (resp == NULL)
        return MHD_NO;
    MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, "application/json");
    if (retry_after >= 0) {
        char secs[24];
        snprintf(secs, sizeof secs, "%ld", retry_after);
        MHD_add_response_header(resp, MHD_HTTP_HEADER_RETRY_AFTER, secs);
    }
    rc = MHD_queue_response(conn, status, resp);
    MHD_destroy_response(resp);
    if (rc == MHD_YES)
        atomic_fetch_add(&s->answered, 1);
    return rc;
}

static enum MHD_Result bad_arg(stub *s, struct MHD_Connection *conn, const char *arg)
{
    char buf[128];
    int n = snprintf(buf, sizeof buf, "{\"error\":\"stub_bad_arg\",\"arg\":\"%s\"}", arg);
    char *body = n > 0 ? strdup(buf) : NULL;

    if (body == NULL)
        return MHD_NO;
    return queue(s, conn, MHD_HTTP_BAD_REQUEST, body, strlen(body), -1);
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *conn, const char *url,
                                  const char *method, const char *version, const char *upload_data,
                                  size_t *upload_data_size, void **con_cls)
{
    stub *s = cls;
    req *rq = *con_cls;
    long status, delay_ms, big_bytes, upto, retry_after;
    const char *kind;
    char *body;
    size_t len = 0;

    (void)method;
    (void)version;
    /* First call: headers only. Answering later lets MHD send "100 Continue" and read the body. */
    if (rq == NULL) {
        rq = calloc(1, sizeof *rq);
        if (rq == NULL)
            return MHD_NO;
        *con_cls = rq;
        atomic_fetch_add(&s->requests, 1);
        return MHD_YES;
    }
    if (*upload_data_size > 0) {
        size_t take = *upload_data_size;
        if (take > STUB_MAX_BODY - rq->len)
            take = STUB_MAX_BODY - rq->len; /* beyond the cap the body is read but not kept */
        if (take > 0) {
            if (grow(&rq->body, &rq->cap, rq->len + take) != 0)
                return MHD_NO;
            memcpy(rq->body + rq->len, upload_data, take);
            rq->len += take;
        }
        *upload_data_size = 0;
        return MHD_YES;
    }
    if (!rq->recorded) {
        record_request(s, conn, rq);
        rq->recorded = 1;
    }

    if (arg_long(conn, "status", 200, 100, 599, &status) != 0)
        return bad_arg(s, conn, "status");
    if (arg_long(conn, "delay_ms", 0, 0, STUB_MAX_DELAY, &delay_ms) != 0)
        return bad_arg(s, conn, "delay_ms");
    if (arg_long(conn, "big_bytes", STUB_DEFAULT_BIG, 2, STUB_MAX_BIG, &big_bytes) != 0)
        return bad_arg(s, conn, "big_bytes");
    if (arg_long(conn, "upto_attempt", 0, 0, 1000, &upto) != 0)
        return bad_arg(s, conn, "upto_attempt");
    if (arg_long(conn, "retry_after", -1, 0, 86400, &retry_after) != 0)
        return bad_arg(s, conn, "retry_after");
    if (upto > 0) {
        const char *a = MHD_lookup_connection_value(conn, MHD_HEADER_KIND, "X-Checkout-Attempt");
        if (a != NULL && atol(a) > upto) { /* a later attempt: the plain 200 at once */
            status = 200;
            delay_ms = 0;
            retry_after = -1;
        }
    }
    kind = MHD_lookup_connection_value(conn, MHD_GET_ARGUMENT_KIND, "body");
    if (kind == NULL)
        kind = "json";
    if (strcmp(kind, "json") != 0 && strcmp(kind, "garbage") != 0 && strcmp(kind, "array") != 0 &&
        strcmp(kind, "empty") != 0 && strcmp(kind, "big") != 0)
        return bad_arg(s, conn, "body");

    /* MHD_NO drops the connection without an answer: what a cancelled upstream call should see. */
    if (delay_ms > 0 && delay_watching(s, conn, delay_ms) != WAIT_DONE)
        return MHD_NO;
    body = make_body(url, status, kind, big_bytes, &len);
    if (body == NULL)
        return MHD_NO;
    return queue(s, conn, (unsigned)status, body, len, retry_after);
}

static void on_completed(void *cls, struct MHD_Connection *conn, void **con_cls,
                         enum MHD_RequestTerminationCode toe)
{
    req *rq = *con_cls;

    (void)cls;
    (void)conn;
    (void)toe;
    if (rq != NULL) {
        free(rq->body);
        free(rq);
        *con_cls = NULL;
    }
}

stub *stub_start(void)
{
    return stub_start_at("127.0.0.1", 0);
}

stub *stub_start_at(const char *ip, int port)
{
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    const union MHD_DaemonInfo *info;
    stub *s = calloc(1, sizeof *s);
    int mutex_ok = 0;

    if (s == NULL)
        goto fail;
    if (pthread_mutex_init(&s->mu, NULL) != 0)
        goto fail;
    mutex_ok = 1;
    if (inet_pton(AF_INET, ip, &sa.sin_addr) != 1)
        goto fail;
    s->d = MHD_start_daemon(MHD_USE_THREAD_PER_CONNECTION | MHD_USE_INTERNAL_POLLING_THREAD, 0,
                            NULL, NULL, on_request, s, MHD_OPTION_SOCK_ADDR, &sa,
                            MHD_OPTION_NOTIFY_COMPLETED, on_completed, s, MHD_OPTION_END);
    if (s->d == NULL)
        goto fail;
    info = MHD_get_daemon_info(s->d, MHD_DAEMON_INFO_BIND_PORT);
    if (info == NULL || info->port == 0)
        goto fail;
    s->port = info->port;
    return s;
fail:
    if (s != NULL && s->d != NULL)
        MHD_stop_daemon(s->d);
    if (mutex_ok)
        pthread_mutex_destroy(&s->mu);
    free(s);
    return NULL;
}

int stub_port(const stub *s)
{
    return s->port;
}

void stub_stop(stub *s)
{
    if (s == NULL)
        return;
    /* Set first: delaying handlers see it within a poll step, so MHD can join their threads. */
    atomic_store(&s->stopping, 1);
    MHD_stop_daemon(s->d);
    free(s->last_hdrs);
    free(s->last_body);
    for (unsigned i = 0; i < s->nhist; i++)
        free(s->hist[i]);
    pthread_mutex_destroy(&s->mu);
    free(s);
}

unsigned stub_requests(stub *s)
{
    return atomic_load(&s->requests);
}

unsigned stub_answered(stub *s)
{
    return atomic_load(&s->answered);
}

unsigned stub_closed_early(stub *s)
{
    return atomic_load(&s->closed_early);
}

int stub_wait_closed_early(stub *s, unsigned n, int timeout_ms)
{
    long long deadline = now_ms() + timeout_ms;

    for (;;) {
        struct timespec step = {.tv_sec = 0, .tv_nsec = 5 * 1000000L};

        if (atomic_load(&s->closed_early) >= n)
            return 0;
        if (now_ms() >= deadline)
            return -1;
        nanosleep(&step, NULL);
    }
}

/* The value of name in the "name\0value\0" pairs of len bytes at h into out; 0 / -1. */
static int find_header(const char *h, size_t len, const char *name, char *out, size_t cap)
{
    for (size_t off = 0; off < len;) {
        const char *key = h + off;
        const char *value = key + strlen(key) + 1;
        off = (size_t)(value - h) + strlen(value) + 1;
        if (strcasecmp(key, name) == 0) {
            if (cap > 0)
                snprintf(out, cap, "%s", value);
            return 0;
        }
    }
    return -1;
}

unsigned stub_recorded(stub *s)
{
    pthread_mutex_lock(&s->mu);
    unsigned n = s->nhist;
    pthread_mutex_unlock(&s->mu);
    return n;
}

int stub_header_of(stub *s, unsigned i, const char *name, char *out, size_t cap)
{
    int found = -1;
    if (cap > 0)
        out[0] = '\0';
    pthread_mutex_lock(&s->mu);
    if (i < s->nhist)
        found = find_header(s->hist[i], s->hist_len[i], name, out, cap);
    pthread_mutex_unlock(&s->mu);
    return found;
}

int stub_last_header(stub *s, const char *name, char *out, size_t cap)
{
    int found = -1;

    if (cap > 0)
        out[0] = '\0';
    pthread_mutex_lock(&s->mu);
    for (size_t off = 0; s->have_last && off < s->last_hdrs_len;) {
        const char *key = s->last_hdrs + off;
        const char *value = key + strlen(key) + 1;

        off = (size_t)(value - s->last_hdrs) + strlen(value) + 1;
        if (strcasecmp(key, name) == 0) {
            if (cap > 0)
                snprintf(out, cap, "%s", value);
            found = 0;
            break;
        }
    }
    pthread_mutex_unlock(&s->mu);
    return found;
}

char *stub_last_body(stub *s)
{
    char *copy = NULL;

    pthread_mutex_lock(&s->mu);
    if (s->have_last)
        copy = strdup(s->last_body);
    pthread_mutex_unlock(&s->mu);
    return copy;
}
