/* tg — task groups over libcurl multi. See tg.h for the contract.
 *
 * One loop thread owns the CURLM handle, every easy handle and every running group; other threads
 * only push groups onto the submit queue (a mutex-guarded list) and wake the loop through an
 * eventfd. Group deadlines, retry backoffs, hedge delays and the public tg_timers live in THE loop
 * timer heap (lib/tg_timer.c); the attempts of a call with a policy are decided in
 * lib/tg_attempt.c; the addresses of named hosts (v1.3) lib/tg_names.c; the epoll wait and
 * libcurl's socket/timer callbacks are lib/tg_io.c; the per-transfer trace of a traced group is
 * lib/tg_trace.c. They share only tg_internal.h.
 *
 * The loop drives libcurl with its event API (curl_multi_socket_action): libcurl tells the loop
 * which sockets to watch (CURLMOPT_SOCKETFUNCTION -> epoll_ctl) and when its next timer is due
 * (CURLMOPT_TIMERFUNCTION), and the loop hands it only the sockets that epoll_wait reported. So a
 * turn costs O(ready sockets + finished transfers + expired groups), not O(transfers in flight):
 * curl_multi_perform and curl_multi_poll walk every transfer on every call, which is what made
 * thousands of checkouts in flight cost more CPU each than a few.
 *
 * A turn: run the fd watches and the hook; take submitted groups and start their calls; wait in
 * epoll_wait until I/O, curl's timer, the next group deadline, the hook's fd or timeout, or a
 * wakeup; hand each ready socket and a due timer to libcurl; read every finished transfer and
 * classify it; expire due timers (deadlines, backoffs, hedges, public timers); then finish every
 * group that failed or completed in this turn (cancelling its remaining calls). Finishing after
 * reading all messages is what makes "failures observed in the same turn are all reported" hold. */
#include "tg_internal.h"
#include "tg_tls.h"
#include "tg_watch.h"

#include <curl/curl.h>
#include <errno.h>
#include <limits.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <time.h>
#include <unistd.h>

static pthread_once_t curl_once = PTHREAD_ONCE_INIT;
static _Thread_local tg_loop *tls_running_loop; /* the loop whose thread this is, if any */

static void curl_init_once(void)
{
    curl_global_init(CURL_GLOBAL_DEFAULT);
}

uint64_t tgi_now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}
#define now_ns tgi_now_ns

/* ---- calls ------------------------------------------------------------------------------------
 */

/* Appends what arrives; past resp_limit it returns 0, which makes curl abort with
 * CURLE_WRITE_ERROR, so an oversized answer costs at most resp_limit bytes of memory. */
static size_t xfer_on_data(char *data, size_t size, size_t nmemb, void *userp)
{
    tg_xfer *x = userp;
    size_t n = size * nmemb;
    if (n > x->resp_limit - x->resp_len) {
        x->resp_too_big = 1;
        return 0;
    }
    if (x->resp_len + n + 1 > x->resp_cap) {
        size_t cap = x->resp_cap ? x->resp_cap : 512;
        while (cap < x->resp_len + n + 1)
            cap *= 2;
        char *p = realloc(x->resp, cap);
        if (p == NULL)
            return 0;
        x->resp = p;
        x->resp_cap = cap;
    }
    memcpy(x->resp + x->resp_len, data, n);
    x->resp_len += n;
    x->resp[x->resp_len] = '\0';
    return n;
}

__attribute__((format(printf, 3, 4))) static void result_fail(tg_result *r, tg_kind kind,
                                                              const char *fmt, ...)
{
    va_list ap;
    r->state = TG_FAILED;
    r->kind = kind;
    va_start(ap, fmt);
    vsnprintf(r->message, sizeof(r->message), fmt, ap);
    va_end(ap);
    /* some of libcurl's messages end in a blank ("... in connection to 127.0.0.1:9103 ") */
    for (size_t n = strlen(r->message); n > 0 && r->message[n - 1] == ' '; n--)
        r->message[n - 1] = '\0';
}

static void record_failure(tg_call *c)
{
    c->group->nfailed++;
    c->result.fail_seq = (unsigned)c->group->nfailed;
}

void tgi_result_clear(tg_result *r)
{
    json_decref(r->body);
    r->body = NULL;
    r->raw = NULL;
    r->raw_len = 0;
    r->state = TG_PENDING;
    r->kind = TG_KIND_NONE;
    r->http_status = 0;
    r->message[0] = '\0';
}

/* The contract's table: 2xx + JSON object is a success, 4xx rejected, 5xx upstream_error, anything
 * else that answered is invalid_response; no answer is transport or timeout. */
void tgi_classify(tg_result *r, const tg_xfer *x, int curl_code, long status,
                  const char *curl_error)
{
    const char *body = x->resp;
    size_t len = x->resp_len;
    int too_big = x->resp_too_big;
    /* Only a whole answer is one: after a reset, a cut body or a timeout, the status line and the
     * bytes that did arrive are the start of an answer that never came (http_status null, upstream
     * null). A body over the limit is a whole answer, just too big to keep. */
    int answered = curl_code == CURLE_OK || too_big;
    r->http_status = answered ? status : 0;
    /* jansson reads a NUL byte as the end of the text ("{}\0garbage" would pass as {}), and a
     * key given twice makes the body ambiguous, and the answer too once it carries the bytes:
     * neither is taken as JSON. */
    if (curl_code == CURLE_OK && len > 0 && !too_big && memchr(body, '\0', len) == NULL)
        r->body = json_loadb(body, len, JSON_DECODE_ANY | JSON_REJECT_DUPLICATES, NULL);
    if (r->body != NULL) {
        r->raw = body;
        r->raw_len = len;
    }

    if (too_big) {
        result_fail(r, TG_INVALID_RESPONSE, "answered a body larger than %ld bytes",
                    (long)x->resp_limit);
    } else if (curl_code == CURLE_OPERATION_TIMEDOUT) {
        result_fail(r, TG_TIMEOUT, "did not answer within %ld ms", x->timeout_ms);
    } else if (curl_code == CURLE_WEIRD_SERVER_REPLY || curl_code == CURLE_BAD_CONTENT_ENCODING ||
               curl_code == CURLE_UNSUPPORTED_PROTOCOL) {
        result_fail(r, TG_INVALID_RESPONSE, "answered garbage: %s", curl_error);
    } else if (tg_tls_failure((CURLcode)curl_code, curl_error) != NULL) {
        result_fail(r, TG_TRANSPORT, "%s: %s", tg_tls_failure((CURLcode)curl_code, curl_error),
                    curl_error);
    } else if (curl_code != CURLE_OK) {
        result_fail(r, TG_TRANSPORT, "unreachable: %s", curl_error);
    } else if (status >= 200 && status < 300) {
        if (json_is_object(r->body))
            r->state = TG_OK;
        else
            result_fail(r, TG_INVALID_RESPONSE, "answered HTTP %ld without a JSON object", status);
    } else if (status >= 400 && status < 500) {
        result_fail(r, TG_REJECTED, "rejected with HTTP %ld", status);
    } else if (status >= 500) {
        result_fail(r, TG_UPSTREAM_ERROR, "failed with HTTP %ld", status);
    } else {
        result_fail(r, TG_INVALID_RESPONSE, "answered HTTP %ld (redirects are not followed)",
                    status);
    }
}

void tg_call_record(tg_group *g, size_t i, int curl_code, long http_status, const char *body,
                    size_t len, int too_big, const char *curl_error)
{
    tg_call *c = &g->calls[i];
    tg_xfer *x = &c->xfer;
    /* keep a copy, as the loop keeps what it received: result.raw points into it */
    free(x->resp);
    x->resp = malloc(len + 1);
    x->resp_len = 0;
    x->resp_cap = 0;
    x->resp_too_big = too_big;
    x->timeout_ms = c->timeout_ms;
    if (x->resp != NULL) {
        memcpy(x->resp, body, len);
        x->resp[len] = '\0';
        x->resp_len = len;
        x->resp_cap = len + 1;
    }
    tgi_classify(&c->result, x, curl_code, http_status,
                 curl_error ? curl_error : curl_easy_strerror((CURLcode)curl_code));
    if (c->result.state == TG_FAILED)
        record_failure(c);
}

/* Removing a running easy handle from the multi handle aborts its transfer: libcurl closes the
 * connection (it cannot be reused mid-answer), which is what the upstream sees as a cancel.
 * outcome is the transfer's (NULL: cancelled); a traced group records it. */
void tgi_xfer_detach(tg_loop *l, tg_xfer *x, const tg_result *outcome)
{
    if (x->easy == NULL)
        return;
    if (x->call->group->attempts != NULL) /* traced: the untraced path pays one test */
        tgi_attempt_note(x, outcome);
    /* Whether the request may have reached the upstream (compensation needs it): libcurl counts
     * the request's header bytes in CURLINFO_REQUEST_SIZE once it wrote them to the socket, and
     * sets the pretransfer time when the connection is ready and it is about to write. A
     * transfer still resolving, connecting or in its TLS handshake has neither: nothing left.
     * The window between the two (bytes handed to the kernel, or about to be) cannot be told
     * apart from outside, so it counts as sent: compensating a request that never arrived is
     * harmless (the undo endpoint answers "nothing to undo"), not compensating one that did is
     * not. A failed query counts as sent too. */
    if (!x->call->result.sent) {
        curl_off_t pre = 0;
        long req = 0;
        if (curl_easy_getinfo(x->easy, CURLINFO_REQUEST_SIZE, &req) != CURLE_OK || req > 0 ||
            curl_easy_getinfo(x->easy, CURLINFO_PRETRANSFER_TIME_T, &pre) != CURLE_OK || pre > 0)
            x->call->result.sent = 1;
    }
    curl_multi_remove_handle(l->multi, x->easy);
    if (l->nidle < TG_IDLE_HANDLES) {
        curl_easy_reset(x->easy);
        l->idle[l->nidle++] = x->easy;
    } else {
        curl_easy_cleanup(x->easy);
    }
    x->easy = NULL;
}

void tgi_result_unresolved(tg_loop *l, tg_call *c)
{
    long i = tgi_url_entry(l, c->url);
    const tg_name *n = i >= 0 ? l->urls[i].name : NULL;
    tgi_result_clear(&c->result);
    result_fail(&c->result, TG_TRANSPORT, "%s: not resolved yet",
                n != NULL && n->host != NULL ? dns_host_name(n->host) : "the upstream's host");
    c->result.elapsed_ms = tgi_ms_between(c->start_ns, now_ns());
}

/* libcurl looks up five proxy variables on every transfer; when none is set at start, saying so
 * once (CURLOPT_PROXY "") behaves the same and skips them. */
static int proxy_variables_unset(void)
{
    static const char *const names[] = {"http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY",
                                        "all_proxy",  "ALL_PROXY",  "no_proxy",    "NO_PROXY"};
    for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++)
        if (getenv(names[i]) != NULL)
            return 0;
    return 1;
}

/* "Name: <n>" into buf, without printf: two of these per request. */
static void header_number(char *buf, size_t cap, const char *name, size_t name_len, unsigned long n)
{
    char digits[24];
    size_t nd = 0;
    do {
        digits[nd++] = (char)('0' + n % 10);
        n /= 10;
    } while (n > 0 && nd < sizeof digits);
    if (name_len + nd + 1 > cap)
        nd = cap - name_len - 1; /* never: cap fits the longest name and a 64-bit number */
    memcpy(buf, name, name_len);
    for (size_t i = 0; i < nd; i++)
        buf[name_len + i] = digits[nd - 1 - i];
    buf[name_len + nd] = '\0';
}

/* The milliseconds from now to end, rounded up, at least 1. */
static long ms_until(uint64_t now, uint64_t end)
{
    if (end <= now)
        return 1;
    uint64_t ms = (end - now + 999999u) / 1000000u;
    return ms > (uint64_t)LONG_MAX ? LONG_MAX : (long)ms;
}

/* again: xfer_failover restarts x on its name's next address (same request). */
static int xfer_start(tg_loop *l, tg_call *c, tg_xfer *x, long timeout_ms, int again)
{
    static const char attempt_name[] = "X-Checkout-Attempt: ";
    static const char timeout_name[] = "X-Checkout-Timeout-Ms: ";
    long u = tgi_url_entry(l, c->url);
    tg_name *name = u >= 0 ? l->urls[u].name : NULL;
    size_t naddrs = name != NULL ? tgi_name_current(name) : 0;
    if (name != NULL && naddrs == 0)
        return -EHOSTUNREACH; /* before anything is counted or sent */
    CURL *e = l->nidle > 0 ? l->idle[--l->nidle] : curl_easy_init();
    if (e == NULL)
        return -ENOMEM;
    x->call = c;
    x->name = name;
    if (name != NULL) {
        if (!again) { /* a new request: the next address in turn, so connections spread */
            x->addr = name->next++ % (unsigned)naddrs;
            x->tried = 0;
            uint64_t now = now_ns();
            for (size_t k = 0; k < naddrs && name->down_until[x->addr] > now; k++)
                x->addr = (x->addr + 1) % (unsigned)naddrs; /* all down: the first one tried */
        } else { /* the address after the one that refused */
            x->addr = (x->addr + 1) % (unsigned)naddrs;
        }
        x->tried++;
        curl_easy_setopt(e, CURLOPT_CONNECT_TO, &name->connect_to[x->addr]);
    }
    x->resp_len = 0;
    x->resp_too_big = 0;
    x->curl_error[0] = '\0';
    x->resp_limit = (size_t)l->max_body_bytes;
    x->start_ns = now_ns();
    x->timeout_ms = timeout_ms;
    /* Deadline propagation: what this request has before the service abandons it. */
    long left = ms_until(x->start_ns, c->group->deadline_ns);
    c->result.attempts++;
    header_number(x->hdr_text[0], sizeof x->hdr_text[0], attempt_name, sizeof attempt_name - 1,
                  c->result.attempts);
    long budget = left < timeout_ms ? left : timeout_ms;
    if (budget > 99999999) /* 8 digits fit hdr_text; config timeouts are at most 600000 */
        budget = 99999999;
    header_number(x->hdr_text[1], sizeof x->hdr_text[1], timeout_name, sizeof timeout_name - 1,
                  (unsigned long)budget);
    x->hdr[0].data = x->hdr_text[0];
    x->hdr[0].next = &x->hdr[1];
    x->hdr[1].data = x->hdr_text[1];
    x->hdr[1].next = c->headers;
    if (u >= 0)
        curl_easy_setopt(e, CURLOPT_CURLU, l->urls[u].parsed);
    else
        curl_easy_setopt(e, CURLOPT_URL, c->url);
    /* A second line of defence: should libcurl ever resolve a name here after all (a URL whose
     * host the resolver does not cover), removing the transfer must not join libcurl's resolver
     * thread on this loop (libcurl 7.88 asyn-thread.c: Curl_resolver_kill waits for getaddrinfo
     * unless quick_exit is set). curl_easy_reset clears it: set on every start. */
    curl_easy_setopt(e, CURLOPT_QUICK_EXIT, 1L);
    if (l->no_proxy)
        curl_easy_setopt(e, CURLOPT_PROXY, "");
    curl_easy_setopt(e, CURLOPT_POST, 1L);
    curl_easy_setopt(e, CURLOPT_POSTFIELDS, c->body);
    curl_easy_setopt(e, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)c->body_len);
    curl_easy_setopt(e, CURLOPT_HTTPHEADER, &x->hdr[0]);
    curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, xfer_on_data);
    curl_easy_setopt(e, CURLOPT_WRITEDATA, x);
    curl_easy_setopt(e, CURLOPT_PRIVATE, x);
    curl_easy_setopt(e, CURLOPT_ERRORBUFFER, x->curl_error);
    curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, timeout_ms);
    curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(e, CURLOPT_FOLLOWLOCATION, 0L);
    curl_easy_setopt(e, CURLOPT_PROTOCOLS_STR, "http,https");
    /* Upstream answers are small (under 200 bytes here): libcurl's smallest receive buffer,
     * 1 KiB instead of its 16 KiB default, allocated per transfer while it runs (three per
     * checkout). Bigger bodies, and header lines, just take more reads; header lines are
     * collected in a buffer of their own, not limited by this one. */
    curl_easy_setopt(e, CURLOPT_BUFFERSIZE, 1024L);
    tg_tls_apply(e, &c->tls); /* on every start: see tg_tls.h */
    if (curl_multi_add_handle(l->multi, e) != CURLM_OK) {
        curl_easy_cleanup(e);
        c->result.attempts--;
        return -ENOMEM;
    }
    x->easy = e;
    return 0;
}

int tgi_xfer_start(tg_loop *l, tg_call *c, tg_xfer *x, long timeout_ms)
{
    return xfer_start(l, c, x, timeout_ms, 0);
}

/* ---- groups -----------------------------------------------------------------------------------
 */

tg_group *tg_group_new(size_t ncalls, long deadline_ms, tg_done_fn done, void *user)
{
    if (ncalls == 0 || ncalls > TG_MAX_CALLS || done == NULL)
        return NULL;
    tg_group *g = malloc(sizeof(*g) + ncalls * sizeof(tg_call));
    if (g == NULL)
        return NULL;
    memset(g, 0, sizeof(*g));
    for (size_t i = 0; i < ncalls; i++) {
        memset(&g->calls[i], 0, TG_CALL_ZEROED);
        g->calls[i].xfer.curl_error[0] = '\0';
    }
    g->ncalls = ncalls;
    g->deadline_ms = deadline_ms;
    g->deadline.index = SIZE_MAX;
    g->done = done;
    g->user = user;
    for (size_t i = 0; i < ncalls; i++) {
        g->calls[i].group = g;
        g->calls[i].timer.index = SIZE_MAX;
        g->calls[i].verdict = TG_NO_VERDICT;
    }
    return g;
}

int tg_call_set(tg_group *g, size_t i, const char *url, char *body, size_t body_len,
                const char *const headers[], long timeout_ms)
{
    tg_call *c = &g->calls[i];
    struct curl_slist *list = NULL;
    char *url_copy = strdup(url);
    if (url_copy == NULL)
        goto fail;
    for (size_t h = 0; headers != NULL && headers[h] != NULL; h++) {
        struct curl_slist *next = curl_slist_append(list, headers[h]);
        if (next == NULL)
            goto fail;
        list = next;
    }
    /* "Expect:" stops libcurl from waiting for a 100-continue on larger bodies; "Accept:" drops a
     * header nobody reads (libcurl formats each header it sends). */
    static const char *const drop[] = {"Expect:", "Accept:"};
    for (size_t d = 0; d < 2; d++) {
        struct curl_slist *next = curl_slist_append(list, drop[d]);
        if (next == NULL)
            goto fail;
        list = next;
    }
    free(c->url);
    free(c->body);
    curl_slist_free_all(c->headers);
    c->url = url_copy;
    c->headers = list;
    c->body = body;
    c->body_len = body_len;
    c->timeout_ms = timeout_ms;
    return 0;
fail:
    free(url_copy);
    curl_slist_free_all(list);
    return -ENOMEM;
}

void tg_call_tls(tg_group *g, size_t i, const tg_tls *tls)
{
    g->calls[i].tls = *tls;
}

void tg_call_policy(tg_group *g, size_t i, const tg_policy *p)
{
    g->calls[i].policy = p;
    if (p != NULL && p->breaker != NULL)
        g->has_breaker = 1;
}

void tg_call_attempts_before(tg_group *g, size_t i, unsigned n)
{
    g->calls[i].result.attempts = n;
}

void tg_group_free(tg_group *g)
{
    if (g == NULL)
        return;
    for (size_t i = 0; i < g->ncalls; i++) {
        tg_call *c = &g->calls[i];
        free(c->url);
        free(c->body);
        free(c->xfer.resp);
        if (c->hedge != NULL)
            free(c->hedge->resp);
        free(c->hedge);
        curl_slist_free_all(c->headers);
        json_decref(c->result.body);
    }
    free(g->attempts);
    free(g);
}

size_t tg_group_size(const tg_group *g)
{
    return g->ncalls;
}

const tg_result *tg_group_result(const tg_group *g, size_t i)
{
    return i < g->ncalls ? &g->calls[i].result : NULL;
}

size_t tg_group_failures(const tg_group *g)
{
    return g->nfailed;
}

double tg_group_elapsed_ms(const tg_group *g)
{
    return tgi_ms_between(g->start_ns, g->finish_ns);
}

void *tg_group_user(const tg_group *g)
{
    return g->user;
}

const char *tg_kind_name(tg_kind kind)
{
    switch (kind) {
    case TG_REJECTED:
        return "rejected";
    case TG_UPSTREAM_ERROR:
        return "upstream_error";
    case TG_INVALID_RESPONSE:
        return "invalid_response";
    case TG_TRANSPORT:
        return "transport";
    case TG_TIMEOUT:
        return "timeout";
    case TG_CIRCUIT_OPEN:
        return "circuit_open";
    case TG_KIND_NONE:
        break;
    }
    return "ok";
}

/* Marks g to finish at the end of this turn (once). */
void tgi_finish_later(tg_group **list, tg_group *g)
{
    if (g->finishing)
        return;
    g->finishing = 1;
    g->next = *list;
    *list = g;
}

/* Cancels what still runs, takes g off the heap and hands it back through done. After done the
 * group may be freed: nothing touches it afterwards. */
static void group_finish(tg_loop *l, tg_group *g)
{
    for (size_t i = 0; i < g->ncalls; i++) {
        tg_call *c = &g->calls[i];
        if (c->result.state == TG_PENDING) {
            tgi_result_clear(&c->result);
            c->result.state = TG_CANCELLED;
            if (c->policy != NULL)
                tga_abort(l, c, NULL);
            else
                tgi_xfer_detach(l, &c->xfer, NULL);
        }
    }
    tgi_timer_stop(l, &g->deadline);
    if (g->start_ns != 0) /* a group still queued at the loop's stop never started */
        l->ngroups--;
    g->finish_ns = now_ns();
    g->done(g, g->user);
}

/* Finishes groups in the order they were observed; the list was built by prepending, so reverse
 * it first. O(groups finished this turn). */
static void finish_all(tg_loop *l, tg_group *list)
{
    tg_group *ordered = NULL;
    while (list != NULL) {
        tg_group *next = list->next;
        list->next = ordered;
        ordered = list;
        list = next;
    }
    while (ordered != NULL) {
        tg_group *next = ordered->next;
        ordered->next = NULL;
        group_finish(l, ordered);
        ordered = next;
    }
}

void tgi_call_final(tg_call *c, tg_group **finish)
{
    tg_group *g = c->group;
    g->pending--;
    if (c->result.state == TG_FAILED) {
        record_failure(c);
        tgi_finish_later(finish, g);
    } else if (g->pending == 0) {
        tgi_finish_later(finish, g);
    }
}

/* The group's deadline: every call still running or waiting to retry becomes a timeout. */
static void on_deadline(tg_loop *l, tgi_timer *t, tg_group **finish)
{
    tg_group *g = t->arg;
    uint64_t now = now_ns();
    for (size_t i = 0; i < g->ncalls; i++) {
        tg_call *c = &g->calls[i];
        if (c->result.state != TG_PENDING)
            continue;
        tgi_result_clear(&c->result);
        c->result.elapsed_ms = tgi_ms_between(c->start_ns, now);
        result_fail(&c->result, TG_TIMEOUT, "checkout deadline of %ld ms passed", g->deadline_ms);
        record_failure(c);
        if (c->policy != NULL)
            tga_abort(l, c, &c->result);
        else
            tgi_xfer_detach(l, &c->xfer, &c->result);
    }
    tgi_finish_later(finish, g);
}

static void not_started(tg_call *c, tg_group **finish)
{
    result_fail(&c->result, TG_TRANSPORT, "not started: out of memory");
    record_failure(c);
    tgi_finish_later(finish, c->group);
}

static void group_start(tg_loop *l, tg_group *g, tg_group **finish)
{
    g->start_ns = now_ns();
    g->deadline_ns = g->start_ns + (uint64_t)g->deadline_ms * 1000000u;
    g->pending = g->ncalls;
    l->ngroups++;
    if (tgi_timer_start(l, &g->deadline, g->deadline_ns, on_deadline, g, g) != 0) {
        for (size_t i = 0; i < g->ncalls; i++)
            not_started(&g->calls[i], finish);
        return;
    }
    /* A breaker that refuses fails the group before any request is sent. */
    if (g->has_breaker && tga_admit_group(l, g, finish))
        return;
    for (size_t i = 0; i < g->ncalls; i++) {
        tg_call *c = &g->calls[i];
        c->start_ns = g->start_ns;
        if (c->policy != NULL) {
            tga_start(l, c, finish);
            if (g->nfailed > 0)
                return;
        } else {
            int rc = tgi_xfer_start(l, c, &c->xfer, c->timeout_ms);
            if (rc == -EHOSTUNREACH) {
                tgi_result_unresolved(l, c);
                tgi_call_final(c, finish);
                return;
            }
            if (rc != 0) {
                not_started(c, finish);
                return;
            }
        }
    }
}

static tg_group *queue_take(tg_loop *l)
{
    pthread_mutex_lock(&l->lock);
    tg_group *head = l->queue_head;
    l->queue_head = l->queue_tail = NULL;
    pthread_mutex_unlock(&l->lock);
    return head;
}

#define TG_ADDR_DOWN_NS (1000u * 1000000u) /* a refusing address rests 1 s, then is tried again */

/* x could not connect (refused, unreachable): nothing was sent. When its name has an address it
 * has not tried, the same request (same X-Checkout-Attempt, the time left of its timeout) starts
 * again on the next one: 1. Else 0, and the failure stands. */
static int xfer_failover(tg_loop *l, tg_xfer *x)
{
    tg_call *c = x->call;
    if (x->tried >= x->name->addrs.n)
        return 0;
    uint64_t start = x->start_ns, now = now_ns();
    long timeout = x->timeout_ms;
    long left = timeout - (long)((now - start) / 1000000u);
    if (left < 1)
        return 0;
    unsigned addr = x->addr, tried = x->tried;
    x->name->down_until[addr] = now + TG_ADDR_DOWN_NS;
    tg_result refused = {.state = TG_FAILED, .kind = TG_TRANSPORT}; /* what a trace shows */
    tgi_xfer_detach(l, x, &refused);
    x->addr = addr;
    x->tried = tried;
    c->result.attempts--; /* the same request, on another address */
    if (xfer_start(l, c, x, left, 1) != 0) {
        c->result.attempts++;
        return 0; /* out of memory: the failure stands */
    }
    x->start_ns = start;
    x->timeout_ms = timeout;
    return 1;
}

/* Reads every finished transfer of this turn; a failure or a completed group goes on finish. */
static void read_finished(tg_loop *l, tg_group **finish)
{
    CURLMsg *msg;
    int left = 0;
    for (;;) {
        msg = curl_multi_info_read(l->multi, &left);
        if (msg == NULL)
            break;
        if (msg->msg != CURLMSG_DONE)
            continue;
        tg_xfer *x = NULL;
        curl_easy_getinfo(msg->easy_handle, CURLINFO_PRIVATE, (char **)&x);
        CURLcode rc = msg->data.result;
        long status = 0;
        curl_easy_getinfo(msg->easy_handle, CURLINFO_RESPONSE_CODE, &status);
        tg_call *c = x->call;
        if (rc == CURLE_COULDNT_CONNECT && x->name != NULL && xfer_failover(l, x))
            continue;
        if (c->policy != NULL) {
            tga_xfer_done(l, x, rc, status, finish);
            continue;
        }
        c->result.elapsed_ms = tgi_ms_between(x->start_ns, now_ns());
        tgi_classify(&c->result, x, rc, status,
                     x->curl_error[0] ? x->curl_error : curl_easy_strerror(rc));
        tgi_xfer_detach(l, x, &c->result);
        tgi_call_final(c, finish);
    }
}

int tg_loop_run_once(tg_loop *l, int max_wait_ms)
{
    tg_group *finish = NULL;
    tgw_run(l->watches); /* before the hook: what its callbacks resume or submit goes this turn */
    if (l->has_hook)
        l->hook.run(l->hook.arg);
    tg_group *g = queue_take(l);
    while (g != NULL) {
        tg_group *next = g->next;
        g->next = NULL;
        group_start(l, g, &finish);
        g = next;
    }
    tgi_curl_timer_run(
        l); /* a new transfer's timer is due at once: it connects now, not next turn */
    read_finished(l, &finish);
    tgi_wait_and_dispatch(l, max_wait_ms, finish != NULL);
    read_finished(l, &finish);
    tgi_timers_run(l, now_ns(), &finish);
    finish_all(l, finish);
    return (int)l->ngroups;
}

/* ---- the loop ---------------------------------------------------------------------------------
 */

static int epoll_add(int epfd, int fd, uint64_t tag)
{
    struct epoll_event ev = {.events = EPOLLIN, .data.u64 = tag};
    return epoll_ctl(epfd, EPOLL_CTL_ADD, fd, &ev);
}

tg_loop *tg_loop_new(const tg_loop_options *opts)
{
    pthread_once(&curl_once, curl_init_once);
    tg_loop *l = calloc(1, sizeof(*l));
    if (l == NULL)
        return NULL;
    l->epfd = epoll_create1(EPOLL_CLOEXEC);
    l->wakefd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (l->epfd < 0 || l->wakefd < 0 || epoll_add(l->epfd, l->wakefd, TG_TAG_WAKE) != 0)
        goto fail;
    l->watches = tgw_new(l->epfd, TG_TAG_WATCH);
    if (l->watches == NULL)
        goto fail;
    l->max_body_bytes = opts && opts->max_body_bytes > 0 ? opts->max_body_bytes : 1048576;
    l->no_proxy = proxy_variables_unset();
    l->names = opts ? opts->names : NULL;
    l->rnd = (now_ns() ^ (uint64_t)(uintptr_t)l) | 1u; /* jitter needs spread, not secrecy */
    l->multi = curl_multi_init();
    if (l->multi == NULL)
        goto fail;
    tgi_curl_events(l);
    if (opts && opts->max_connections > 0)
        curl_multi_setopt(l->multi, CURLMOPT_MAXCONNECTS, opts->max_connections);
    pthread_mutex_init(&l->lock, NULL);
    return l;
fail:
    tgw_free(l->watches);
    if (l->epfd >= 0)
        close(l->epfd);
    if (l->wakefd >= 0)
        close(l->wakefd);
    free(l);
    return NULL;
}

tgw_set *tg_loop_watches(tg_loop *l)
{
    return l->watches;
}

void tg_loop_set_hook(tg_loop *l, const tg_hook *hook)
{
    l->hook = *hook;
    l->has_hook = hook->run != NULL;
    if (l->has_hook && hook->fd >= 0)
        epoll_add(l->epfd, hook->fd, TG_TAG_HOOK);
}

void tg_loop_wakeup(tg_loop *l)
{
    uint64_t one = 1;
    ssize_t n = write(l->wakefd, &one, sizeof one);
    (void)n; /* EAGAIN: the counter is full, so a wake-up is already pending */
}

static void *loop_main(void *arg)
{
    tg_loop *l = arg;
    tls_running_loop = l;
    while (!atomic_load(&l->stopping))
        tg_loop_run_once(l, 1000);
    return NULL;
}

int tg_loop_start(tg_loop *l)
{
    if (l->thread_started)
        return -EALREADY;
    int rc = pthread_create(&l->thread, NULL, loop_main, l);
    if (rc != 0)
        return -rc;
    l->thread_started = 1;
    return 0;
}

int tg_submit(tg_loop *l, tg_group *g)
{
    pthread_mutex_lock(&l->lock);
    if (l->closed) {
        pthread_mutex_unlock(&l->lock);
        return -ESHUTDOWN;
    }
    g->next = NULL;
    if (l->queue_tail != NULL)
        l->queue_tail->next = g;
    else
        l->queue_head = g;
    l->queue_tail = g;
    pthread_mutex_unlock(&l->lock);
    /* From the loop's own thread (its hook) the group starts in this turn: no wake-up needed. */
    if (tls_running_loop != l)
        tg_loop_wakeup(l);
    return 0;
}

void tg_loop_stop(tg_loop *l)
{
    pthread_mutex_lock(&l->lock);
    l->closed = 1;
    pthread_mutex_unlock(&l->lock);
    atomic_store(&l->stopping, 1);
    if (l->thread_started) {
        tg_loop_wakeup(l);
        pthread_join(l->thread, NULL);
        l->thread_started = 0;
    }
    /* Whatever still runs or waits is cancelled, so every group's done runs exactly once. */
    tg_group *finish = NULL;
    tg_group *g = queue_take(l);
    while (g != NULL) {
        tg_group *next = g->next;
        g->next = NULL;
        tgi_finish_later(&finish, g);
        g = next;
    }
    tgi_timers_drain(l, &finish); /* the groups whose timers run; public timers are dropped */
    finish_all(l, finish);
}

void tg_loop_free(tg_loop *l)
{
    if (l == NULL)
        return;
    tg_loop_stop(l);
    while (l->nidle > 0)
        curl_easy_cleanup(l->idle[--l->nidle]);
    for (size_t i = 0; i < l->nurls; i++) {
        curl_url_cleanup(l->urls[i].parsed);
        free(l->urls[i].url);
    }
    for (size_t i = 0; i < l->nhosts; i++)
        free(l->hosts[i]);
    curl_multi_cleanup(l->multi);
    tgw_free(l->watches);
    close(l->epfd);
    close(l->wakefd);
    pthread_mutex_destroy(&l->lock);
    free(l->timers);
    free(l);
}
