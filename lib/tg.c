/* tg — task groups over libcurl multi. See tg.h for the contract.
 *
 * One loop thread owns the CURLM handle, every easy handle and every running group; other threads
 * only push groups onto the submit queue (a mutex-guarded list) and wake the loop through an
 * eventfd. Group deadlines live in a binary min-heap (O(log n) push/remove, O(1) peek).
 *
 * The loop drives libcurl with its event API (curl_multi_socket_action): libcurl tells the loop
 * which sockets to watch (CURLMOPT_SOCKETFUNCTION -> epoll_ctl) and when its next timer is due
 * (CURLMOPT_TIMERFUNCTION), and the loop hands it only the sockets that epoll_wait reported. So a
 * turn costs O(ready sockets + finished transfers + expired groups), not O(transfers in flight):
 * curl_multi_perform and curl_multi_poll walk every transfer on every call, which is what made
 * thousands of checkouts in flight cost more CPU each than a few.
 *
 * A turn: run the hook; take submitted groups and start their calls; wait in epoll_wait until I/O,
 * curl's timer, the next group deadline, the hook's fd or timeout, or a wakeup; hand each ready
 * socket and a due timer to libcurl; read every finished transfer and classify it; expire
 * deadlines; then finish every group that failed or completed in this turn (cancelling its
 * remaining calls). Finishing after reading all messages is what makes "failures observed in the
 * same turn are all reported" hold. */
#include "tg.h"
#include "tg_tls.h"

#include "tg_watch.h"

#include <curl/curl.h>
#include <errno.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <time.h>
#include <unistd.h>

#define TG_MAX_CALLS    64
#define TG_URL_CACHE    64
#define TG_IDLE_HANDLES 1024 /* enough for a few hundred checkouts in flight */
#define TG_EVENTS       256  /* epoll events taken per wait; more simply wait for the next turn */
/* epoll_event.data of the loop's own fds; a libcurl socket's is the fd itself (>= 0). */
#define TG_TAG_WAKE  (UINT64_C(1) << 32)
#define TG_TAG_HOOK  (UINT64_C(2) << 32)
#define TG_TAG_WATCH (UINT64_C(3) << 32) /* the epoll fd of tg_watch's set */

typedef struct tg_call {
    tg_group *group;
    CURL *easy; /* non-NULL while the transfer is in the multi handle */
    struct curl_slist *headers;
    char *url;
    char *body;
    size_t body_len;
    long timeout_ms;
    tg_tls tls; /* borrowed strings (tg_call_tls) */
    char *resp; /* the upstream's body as it arrives */
    size_t resp_len, resp_cap, resp_limit;
    int resp_too_big;
    uint64_t start_ns;
    tg_result result;
    unsigned nattempts; /* traced groups only: entries of group->attempts used by this call */
    char curl_error[CURL_ERROR_SIZE]; /* libcurl's detailed reason, e.g. "connection refused" */
} tg_call;

struct tg_group {
    tg_group *next;         /* submit queue, then the finish list of one turn */
    size_t ncalls, running; /* running: calls whose transfer is in the multi handle */
    size_t nfailed;
    long deadline_ms;
    uint64_t start_ns, deadline_ns, finish_ns;
    size_t heap_index; /* position in loop->heap, SIZE_MAX when not in it */
    int finishing;     /* on this turn's finish list */
    tg_done_fn done;
    void *user;
    tg_attempt *attempts; /* NULL unless traced: TG_MAX_ATTEMPTS per call */
    tg_call calls[];
};

struct tg_loop {
    CURLM *multi;
    int epfd;           /* libcurl's sockets, the wake eventfd and the hook's fd */
    int wakefd;         /* eventfd: tg_submit/tg_loop_wakeup/tg_loop_stop from other threads */
    uint64_t timer_due; /* when libcurl's timer is due (now_ns clock), while timer_set */
    int timer_set;
    long max_body_bytes;
    pthread_t thread;
    int thread_started;
    atomic_int stopping;

    pthread_mutex_t lock; /* guards the submit queue and closed */
    tg_group *queue_head, *queue_tail;
    int closed; /* no more submissions (stopping) */

    tg_group **heap; /* running groups, by deadline_ns */
    size_t heap_len, heap_cap;

    CURL *idle[TG_IDLE_HANDLES]; /* easy handles kept for reuse: a new one costs a ~6 KB calloc */
    size_t nidle;

    /* URLs parsed once (CURLOPT_CURLU) instead of on every transfer; a service calls a handful
     * of upstreams, so a short array searched linearly is the right map. */
    struct {
        char *url;
        CURLU *parsed;
    } urls[TG_URL_CACHE];
    size_t nurls;
    int no_proxy; /* no proxy variable was set at start: skip libcurl's lookups per transfer */
    int has_hook;
    tg_hook hook;
    tgw_set *watches; /* fd watches and timers (lib/tg_watch.c) */
};

static pthread_once_t curl_once = PTHREAD_ONCE_INIT;
static _Thread_local tg_loop *tls_running_loop; /* the loop whose thread this is, if any */

static void curl_init_once(void)
{
    curl_global_init(CURL_GLOBAL_DEFAULT);
}

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static double ms_between(uint64_t from, uint64_t to)
{
    return to > from ? (double)(to - from) / 1e6 : 0.0;
}

/* ---- the deadline heap (libuv-style: index kept in the element for O(log n) removal) ----------
 */

static void heap_swap(tg_loop *l, size_t a, size_t b)
{
    tg_group *t = l->heap[a];
    l->heap[a] = l->heap[b];
    l->heap[b] = t;
    l->heap[a]->heap_index = a;
    l->heap[b]->heap_index = b;
}

static void heap_up(tg_loop *l, size_t i)
{
    while (i > 0) {
        size_t parent = (i - 1) / 2;
        if (l->heap[parent]->deadline_ns <= l->heap[i]->deadline_ns)
            break;
        heap_swap(l, i, parent);
        i = parent;
    }
}

static void heap_down(tg_loop *l, size_t i)
{
    for (;;) {
        size_t left = 2 * i + 1, right = left + 1, min = i;
        if (left < l->heap_len && l->heap[left]->deadline_ns < l->heap[min]->deadline_ns)
            min = left;
        if (right < l->heap_len && l->heap[right]->deadline_ns < l->heap[min]->deadline_ns)
            min = right;
        if (min == i)
            return;
        heap_swap(l, i, min);
        i = min;
    }
}

static int heap_push(tg_loop *l, tg_group *g)
{
    if (l->heap_len == l->heap_cap) {
        size_t cap = l->heap_cap ? l->heap_cap * 2 : 256;
        tg_group **h = realloc(l->heap, cap * sizeof(*h));
        if (h == NULL)
            return -ENOMEM;
        l->heap = h;
        l->heap_cap = cap;
    }
    g->heap_index = l->heap_len;
    l->heap[l->heap_len++] = g;
    heap_up(l, g->heap_index);
    return 0;
}

static void heap_remove(tg_loop *l, tg_group *g)
{
    size_t i = g->heap_index;
    if (i == SIZE_MAX)
        return;
    g->heap_index = SIZE_MAX;
    l->heap_len--;
    if (i == l->heap_len)
        return;
    l->heap[i] = l->heap[l->heap_len];
    l->heap[i]->heap_index = i;
    heap_up(l, i);
    heap_down(l, l->heap[i]->heap_index);
}

/* ---- calls ------------------------------------------------------------------------------------
 */

/* Appends what arrives; past resp_limit it returns 0, which makes curl abort with
 * CURLE_WRITE_ERROR, so an oversized answer costs at most resp_limit bytes of memory. */
static size_t call_on_data(char *data, size_t size, size_t nmemb, void *userp)
{
    tg_call *c = userp;
    size_t n = size * nmemb;
    if (n > c->resp_limit - c->resp_len) {
        c->resp_too_big = 1;
        return 0;
    }
    if (c->resp_len + n + 1 > c->resp_cap) {
        size_t cap = c->resp_cap ? c->resp_cap : 512;
        while (cap < c->resp_len + n + 1)
            cap *= 2;
        char *p = realloc(c->resp, cap);
        if (p == NULL)
            return 0;
        c->resp = p;
        c->resp_cap = cap;
    }
    memcpy(c->resp + c->resp_len, data, n);
    c->resp_len += n;
    c->resp[c->resp_len] = '\0';
    return n;
}

__attribute__((format(printf, 3, 4))) static void call_fail(tg_call *c, tg_kind kind,
                                                            const char *fmt, ...)
{
    va_list ap;
    c->result.state = TG_FAILED;
    c->result.kind = kind;
    va_start(ap, fmt);
    vsnprintf(c->result.message, sizeof(c->result.message), fmt, ap);
    va_end(ap);
    /* some of libcurl's messages end in a blank ("... in connection to 127.0.0.1:9103 ") */
    for (size_t n = strlen(c->result.message); n > 0 && c->result.message[n - 1] == ' '; n--)
        c->result.message[n - 1] = '\0';
}

static void record_failure(tg_call *c)
{
    c->group->nfailed++;
    c->result.fail_seq = (unsigned)c->group->nfailed;
}

/* The contract's table: 2xx + JSON object is a success, 4xx rejected, 5xx upstream_error, anything
 * else that answered is invalid_response; no answer is transport or timeout. */
static void call_classify(tg_call *c, int curl_code, long status, const char *body, size_t len,
                          int too_big, const char *curl_error)
{
    tg_result *r = &c->result;
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
        call_fail(c, TG_INVALID_RESPONSE, "answered a body larger than %ld bytes",
                  (long)c->resp_limit);
    } else if (curl_code == CURLE_OPERATION_TIMEDOUT) {
        call_fail(c, TG_TIMEOUT, "did not answer within %ld ms", c->timeout_ms);
    } else if (curl_code == CURLE_WEIRD_SERVER_REPLY || curl_code == CURLE_BAD_CONTENT_ENCODING ||
               curl_code == CURLE_UNSUPPORTED_PROTOCOL) {
        call_fail(c, TG_INVALID_RESPONSE, "answered garbage: %s", curl_error);
    } else if (tg_tls_failure((CURLcode)curl_code, curl_error) != NULL) {
        call_fail(c, TG_TRANSPORT, "%s: %s", tg_tls_failure((CURLcode)curl_code, curl_error),
                  curl_error);
    } else if (curl_code != CURLE_OK) {
        call_fail(c, TG_TRANSPORT, "unreachable: %s", curl_error);
    } else if (status >= 200 && status < 300) {
        if (json_is_object(r->body))
            r->state = TG_OK;
        else
            call_fail(c, TG_INVALID_RESPONSE, "answered HTTP %ld without a JSON object", status);
    } else if (status >= 400 && status < 500) {
        call_fail(c, TG_REJECTED, "rejected with HTTP %ld", status);
    } else if (status >= 500) {
        call_fail(c, TG_UPSTREAM_ERROR, "failed with HTTP %ld", status);
    } else {
        call_fail(c, TG_INVALID_RESPONSE, "answered HTTP %ld (redirects are not followed)", status);
    }
    if (r->state == TG_FAILED)
        record_failure(c);
}

void tg_call_record(tg_group *g, size_t i, int curl_code, long http_status, const char *body,
                    size_t len, int too_big, const char *curl_error)
{
    tg_call *c = &g->calls[i];
    /* keep a copy, as the loop keeps what it received: result.raw points into it */
    free(c->resp);
    c->resp = malloc(len + 1);
    c->resp_len = 0;
    if (c->resp != NULL) {
        memcpy(c->resp, body, len);
        c->resp[len] = '\0';
        c->resp_len = len;
    }
    call_classify(c, curl_code, http_status, c->resp, c->resp_len, too_big,
                  curl_error ? curl_error : curl_easy_strerror((CURLcode)curl_code));
}

/* ---- attempts of a traced group: the one place where a transfer's timings are kept ---------- */

static double info_ms(CURL *e, CURLINFO what)
{
    curl_off_t us = 0;
    return curl_easy_getinfo(e, what, &us) == CURLE_OK && us > 0 ? (double)us / 1000.0 : 0.0;
}

/* Called as c's transfer leaves the multi handle, its outcome already in c->result (ok, failed or
 * cancelled). A few getinfo reads; nothing for an untraced group. */
static void attempt_note(tg_call *c)
{
    tg_group *g = c->group;
    if (g->attempts == NULL || c->nattempts >= TG_MAX_ATTEMPTS)
        return;
    size_t i = (size_t)(c - g->calls);
    tg_attempt *a = &g->attempts[i * TG_MAX_ATTEMPTS + c->nattempts++];
    long connects = 0;
    a->start_ms = ms_between(g->start_ns, c->start_ns);
    a->dns_ms = info_ms(c->easy, CURLINFO_NAMELOOKUP_TIME_T);
    a->connect_ms = info_ms(c->easy, CURLINFO_CONNECT_TIME_T);
    a->tls_ms = info_ms(c->easy, CURLINFO_APPCONNECT_TIME_T);
    a->first_byte_ms = info_ms(c->easy, CURLINFO_STARTTRANSFER_TIME_T);
    a->total_ms = info_ms(c->easy, CURLINFO_TOTAL_TIME_T);
    if (a->total_ms == 0)
        a->total_ms = ms_between(c->start_ns, now_ns()); /* cut off before libcurl timed it */
    curl_easy_getinfo(c->easy, CURLINFO_NUM_CONNECTS, &connects);
    /* no new connection, yet the request went out: it went on a cached one */
    a->reused = connects == 0 && info_ms(c->easy, CURLINFO_PRETRANSFER_TIME_T) > 0;
    a->http_status = c->result.http_status;
    a->state = c->result.state;
    a->kind = c->result.kind;
}

int tg_group_trace(tg_group *g)
{
    if (g->attempts == NULL)
        g->attempts = calloc(g->ncalls * TG_MAX_ATTEMPTS, sizeof(tg_attempt));
    return g->attempts != NULL ? 0 : -ENOMEM;
}

size_t tg_call_attempts(const tg_group *g, size_t i, const tg_attempt **out)
{
    *out = NULL;
    if (g->attempts == NULL || i >= g->ncalls)
        return 0;
    *out = &g->attempts[i * TG_MAX_ATTEMPTS];
    return g->calls[i].nattempts;
}

/* Removing a running easy handle from the multi handle aborts its transfer: libcurl closes the
 * connection (it cannot be reused mid-answer), which is what the upstream sees as a cancel.
 * c->result holds the transfer's outcome by now (the attempt of a traced group records it). */
static void call_detach(tg_loop *l, tg_call *c)
{
    if (c->easy == NULL)
        return;
    attempt_note(c);
    curl_multi_remove_handle(l->multi, c->easy);
    if (l->nidle < TG_IDLE_HANDLES) {
        curl_easy_reset(c->easy);
        l->idle[l->nidle++] = c->easy;
    } else {
        curl_easy_cleanup(c->easy);
    }
    c->easy = NULL;
    c->group->running--;
}

/* The parsed form of url, parsed on first use; NULL when it cannot be (then libcurl parses the
 * string itself and reports what is wrong). */
static CURLU *parsed_url(tg_loop *l, const char *url)
{
    for (size_t i = 0; i < l->nurls; i++)
        if (strcmp(l->urls[i].url, url) == 0)
            return l->urls[i].parsed;
    if (l->nurls == TG_URL_CACHE)
        return NULL;
    CURLU *u = curl_url();
    char *copy = strdup(url);
    if (u == NULL || copy == NULL || curl_url_set(u, CURLUPART_URL, url, 0) != CURLUE_OK) {
        curl_url_cleanup(u);
        free(copy);
        return NULL;
    }
    l->urls[l->nurls].url = copy;
    l->urls[l->nurls].parsed = u;
    l->nurls++;
    return u;
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

static int call_start(tg_loop *l, tg_call *c)
{
    CURL *e = l->nidle > 0 ? l->idle[--l->nidle] : curl_easy_init();
    if (e == NULL)
        return -ENOMEM;
    c->resp_limit = (size_t)l->max_body_bytes;
    c->start_ns = now_ns();
    CURLU *parsed = parsed_url(l, c->url);
    if (parsed != NULL)
        curl_easy_setopt(e, CURLOPT_CURLU, parsed);
    else
        curl_easy_setopt(e, CURLOPT_URL, c->url);
    if (l->no_proxy)
        curl_easy_setopt(e, CURLOPT_PROXY, "");
    curl_easy_setopt(e, CURLOPT_POST, 1L);
    curl_easy_setopt(e, CURLOPT_POSTFIELDS, c->body);
    curl_easy_setopt(e, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)c->body_len);
    curl_easy_setopt(e, CURLOPT_HTTPHEADER, c->headers);
    curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, call_on_data);
    curl_easy_setopt(e, CURLOPT_WRITEDATA, c);
    curl_easy_setopt(e, CURLOPT_PRIVATE, c);
    curl_easy_setopt(e, CURLOPT_ERRORBUFFER, c->curl_error);
    curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, c->timeout_ms);
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
        return -ENOMEM;
    }
    c->easy = e;
    c->group->running++;
    return 0;
}

/* ---- groups -----------------------------------------------------------------------------------
 */

tg_group *tg_group_new(size_t ncalls, long deadline_ms, tg_done_fn done, void *user)
{
    if (ncalls == 0 || ncalls > TG_MAX_CALLS || done == NULL)
        return NULL;
    tg_group *g = calloc(1, sizeof(*g) + ncalls * sizeof(tg_call));
    if (g == NULL)
        return NULL;
    g->ncalls = ncalls;
    g->deadline_ms = deadline_ms;
    g->heap_index = SIZE_MAX;
    g->done = done;
    g->user = user;
    for (size_t i = 0; i < ncalls; i++)
        g->calls[i].group = g;
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

void tg_group_free(tg_group *g)
{
    if (g == NULL)
        return;
    for (size_t i = 0; i < g->ncalls; i++) {
        tg_call *c = &g->calls[i];
        free(c->url);
        free(c->body);
        free(c->resp);
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
    return ms_between(g->start_ns, g->finish_ns);
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
    case TG_KIND_NONE:
        break;
    }
    return "ok";
}

/* Marks g to finish at the end of this turn (once). */
static void finish_later(tg_group **list, tg_group *g)
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
            c->result.state = TG_CANCELLED;
            call_detach(l, c);
        }
    }
    heap_remove(l, g);
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

static void group_start(tg_loop *l, tg_group *g, tg_group **finish)
{
    g->start_ns = now_ns();
    g->deadline_ns = g->start_ns + (uint64_t)g->deadline_ms * 1000000u;
    if (heap_push(l, g) != 0) {
        for (size_t i = 0; i < g->ncalls; i++) {
            call_fail(&g->calls[i], TG_TRANSPORT, "not started: out of memory");
            record_failure(&g->calls[i]);
        }
        finish_later(finish, g);
        return;
    }
    for (size_t i = 0; i < g->ncalls; i++) {
        tg_call *c = &g->calls[i];
        if (call_start(l, c) != 0) {
            call_fail(c, TG_TRANSPORT, "not started: out of memory");
            record_failure(c);
            finish_later(finish, g);
            return;
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
        tg_call *c = NULL;
        curl_easy_getinfo(msg->easy_handle, CURLINFO_PRIVATE, (char **)&c);
        CURLcode rc = msg->data.result;
        long status = 0;
        curl_easy_getinfo(c->easy, CURLINFO_RESPONSE_CODE, &status);
        c->result.elapsed_ms = ms_between(c->start_ns, now_ns());
        call_classify(c, rc, status, c->resp, c->resp_len, c->resp_too_big,
                      c->curl_error[0] ? c->curl_error : curl_easy_strerror(rc));
        call_detach(l, c);
        if (c->result.state == TG_FAILED || c->group->running == 0)
            finish_later(finish, c->group);
    }
}

static void expire_deadlines(tg_loop *l, tg_group **finish)
{
    uint64_t now = now_ns();
    while (l->heap_len > 0 && l->heap[0]->deadline_ns <= now) {
        tg_group *g = l->heap[0];
        heap_remove(l, g);
        for (size_t i = 0; i < g->ncalls; i++) {
            tg_call *c = &g->calls[i];
            if (c->result.state != TG_PENDING)
                continue;
            c->result.elapsed_ms = ms_between(c->start_ns, now);
            call_fail(c, TG_TIMEOUT, "checkout deadline of %ld ms passed", g->deadline_ms);
            record_failure(c);
            call_detach(l, c);
        }
        finish_later(finish, g);
    }
}

/* ms until the earliest of the next group deadline, libcurl's timer and max_wait_ms; rounded up,
 * so that the wait never ends before what it waits for. */
static int wait_ms(const tg_loop *l, int max_wait_ms)
{
    uint64_t now = now_ns(), due = UINT64_MAX;
    if (l->heap_len > 0)
        due = l->heap[0]->deadline_ns;
    if (l->timer_set && l->timer_due < due)
        due = l->timer_due;
    if (due == UINT64_MAX)
        return max_wait_ms;
    if (due <= now)
        return 0;
    uint64_t ms = (due - now + 999999u) / 1000000u;
    return ms < (uint64_t)max_wait_ms ? (int)ms : max_wait_ms;
}

/* CURLMOPT_SOCKETFUNCTION: libcurl says what to watch on s. socketp is NULL until the socket is in
 * the epoll set (curl_multi_assign marks it), so each socket costs one EPOLL_CTL_ADD, then MODs. */
static int on_socket(CURL *easy, curl_socket_t s, int what, void *userp, void *socketp)
{
    (void)easy;
    tg_loop *l = userp;
    if (what == CURL_POLL_REMOVE) {
        /* libcurl says so before it closes s; ENOENT/EBADF are harmless and ignored. */
        epoll_ctl(l->epfd, EPOLL_CTL_DEL, s, NULL);
        return 0;
    }
    struct epoll_event ev = {.events = 0, .data.u64 = (uint64_t)s};
    if (what == CURL_POLL_IN || what == CURL_POLL_INOUT)
        ev.events |= EPOLLIN;
    if (what == CURL_POLL_OUT || what == CURL_POLL_INOUT)
        ev.events |= EPOLLOUT;
    if (socketp != NULL) {
        epoll_ctl(l->epfd, EPOLL_CTL_MOD, s, &ev);
        return 0;
    }
    if (epoll_ctl(l->epfd, EPOLL_CTL_ADD, s, &ev) != 0 && errno == EEXIST)
        epoll_ctl(l->epfd, EPOLL_CTL_MOD, s, &ev);
    curl_multi_assign(l->multi, s, l);
    return 0;
}

/* CURLMOPT_TIMERFUNCTION: when libcurl wants curl_multi_socket_action(CURL_SOCKET_TIMEOUT). */
static int on_timer(CURLM *multi, long timeout_ms, void *userp)
{
    (void)multi;
    tg_loop *l = userp;
    l->timer_set = timeout_ms >= 0;
    l->timer_due = timeout_ms > 0 ? now_ns() + (uint64_t)timeout_ms * 1000000u : now_ns();
    return 0;
}

static void run_due_timer(tg_loop *l)
{
    int running = 0;
    if (l->timer_set && l->timer_due <= now_ns()) {
        l->timer_set = 0;
        curl_multi_socket_action(l->multi, CURL_SOCKET_TIMEOUT, 0, &running);
    }
}

static void drain_wakeups(tg_loop *l)
{
    uint64_t count;
    while (read(l->wakefd, &count, sizeof count) == (ssize_t)sizeof count)
        ;
}

/* The turn's wait (none when groups already wait to finish), then every ready socket to libcurl. */
static void wait_and_dispatch(tg_loop *l, int max_wait_ms, int nowait)
{
    struct epoll_event events[TG_EVENTS];
    int ms = nowait ? 0 : wait_ms(l, max_wait_ms);
    long watch_ms = tgw_next_ms(l->watches);
    if (watch_ms >= 0 && watch_ms < ms)
        ms = (int)watch_ms;
    if (l->has_hook && ms > 0 && l->hook.timeout_ms) {
        long hook_ms = l->hook.timeout_ms(l->hook.arg);
        if (hook_ms >= 0 && hook_ms < ms)
            ms = (int)hook_ms;
    }
    int n = epoll_wait(l->epfd, events, TG_EVENTS, ms);
    for (int i = 0; i < n; i++) {
        uint64_t tag = events[i].data.u64;
        if (tag == TG_TAG_WAKE) {
            drain_wakeups(l);
            continue;
        }
        if (tag == TG_TAG_HOOK || tag == TG_TAG_WATCH)
            continue; /* the hook and the watches run first in the next turn */
        int flags = 0;
        if (events[i].events & EPOLLIN)
            flags |= CURL_CSELECT_IN;
        if (events[i].events & EPOLLOUT)
            flags |= CURL_CSELECT_OUT;
        if (events[i].events & (EPOLLERR | EPOLLHUP))
            flags |= CURL_CSELECT_ERR;
        int running = 0;
        curl_multi_socket_action(l->multi, (curl_socket_t)tag, flags, &running);
    }
    run_due_timer(l);
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
    run_due_timer(l); /* a new transfer's timer is due at once: it connects now, not next turn */
    read_finished(l, &finish);
    wait_and_dispatch(l, max_wait_ms, finish != NULL);
    read_finished(l, &finish);
    expire_deadlines(l, &finish);
    finish_all(l, finish);
    return (int)l->heap_len;
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
    l->multi = curl_multi_init();
    if (l->multi == NULL)
        goto fail;
    curl_multi_setopt(l->multi, CURLMOPT_SOCKETFUNCTION, on_socket);
    curl_multi_setopt(l->multi, CURLMOPT_SOCKETDATA, l);
    curl_multi_setopt(l->multi, CURLMOPT_TIMERFUNCTION, on_timer);
    curl_multi_setopt(l->multi, CURLMOPT_TIMERDATA, l);
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
        finish_later(&finish, g);
        g = next;
    }
    while (l->heap_len > 0) {
        tg_group *top = l->heap[0];
        heap_remove(l, top);
        finish_later(&finish, top);
    }
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
    curl_multi_cleanup(l->multi);
    tgw_free(l->watches);
    close(l->epfd);
    close(l->wakefd);
    pthread_mutex_destroy(&l->lock);
    free(l->heap);
    free(l);
}
