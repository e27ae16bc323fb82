/* http — test HTTP client on libcurl; the contract is in http.h. */
#include "http.h"

#include <curl/curl.h>
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stdlib.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

/* Bounds what a broken server can make a test allocate. */
#define HTTP_MAX_BODY    ((size_t)256 * 1024 * 1024)
#define HTTP_MAX_HEADERS ((size_t)1024 * 1024)

typedef struct buf {
    char *data;
    size_t len, cap, max;
} buf;

typedef struct upload {
    const char *data;
    size_t len, off, chunk;
    int delay_ms;
} upload;

static pthread_once_t http_once = PTHREAD_ONCE_INIT;
static int http_init_rc = -1;

static void http_global_init(void)
{
    http_init_rc = curl_global_init(CURL_GLOBAL_DEFAULT) == CURLE_OK ? 0 : -1;
}

static int http_init(void)
{
    pthread_once(&http_once, http_global_init);
    return http_init_rc;
}

static double mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1000.0 + (double)ts.tv_nsec / 1e6;
}

static void sleep_ms(int ms)
{
    struct timespec ts = {.tv_sec = ms / 1000, .tv_nsec = (long)(ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
    }
}

/* Appends n bytes and keeps the buffer NUL-terminated. 0 / -1 (over max or out of memory). */
static int buf_add(buf *b, const void *p, size_t n)
{
    size_t want = b->len + n + 1;
    char *grown;

    if (n > b->max || b->len > b->max - n)
        goto fail;
    if (want > b->cap) {
        size_t cap = b->cap > 0 ? b->cap : 256;
        while (cap < want)
            cap *= 2;
        grown = realloc(b->data, cap);
        if (grown == NULL)
            goto fail;
        b->data = grown;
        b->cap = cap;
    }
    memcpy(b->data + b->len, p, n);
    b->len += n;
    b->data[b->len] = '\0';
    return 0;
fail:
    return -1;
}

static size_t on_body(char *p, size_t size, size_t nmemb, void *ud)
{
    size_t n = size * nmemb;
    /* Returning less than n makes curl abort with CURLE_WRITE_ERROR. */
    return buf_add(ud, p, n) == 0 ? n : 0;
}

static size_t on_header(char *p, size_t size, size_t nmemb, void *ud)
{
    buf *b = ud;
    size_t n = size * nmemb;

    /* A new status line starts a new answer (after "100 Continue"): keep only the final one. */
    if (n >= 5 && memcmp(p, "HTTP/", 5) == 0)
        b->len = 0;
    return buf_add(b, p, n) == 0 ? n : 0;
}

static size_t on_read(char *dst, size_t size, size_t nmemb, void *ud)
{
    upload *u = ud;
    size_t n = size * nmemb;

    if (u->off > 0 && u->off < u->len && u->delay_ms > 0)
        sleep_ms(u->delay_ms);
    if (n > u->chunk)
        n = u->chunk;
    if (n > u->len - u->off)
        n = u->len - u->off;
    memcpy(dst, u->data + u->off, n);
    u->off += n;
    return n;
}

/* Splits a copy of the header block into name/value pairs for http_reply_header. */
static int parse_headers(http_reply *r)
{
    size_t lines = 0, i = 0;
    char *line, *save = NULL;

    if (r->headers == NULL)
        return 0;
    for (const char *c = r->headers; *c != '\0'; c++)
        lines += *c == '\n';
    r->hdr_store = strdup(r->headers);
    r->hdr_name = calloc(lines + 1, sizeof *r->hdr_name);
    r->hdr_value = calloc(lines + 1, sizeof *r->hdr_value);
    if (r->hdr_store == NULL || r->hdr_name == NULL || r->hdr_value == NULL)
        goto fail;
    for (line = strtok_r(r->hdr_store, "\r\n", &save); line != NULL && i <= lines;
         line = strtok_r(NULL, "\r\n", &save)) {
        char *colon = strchr(line, ':'), *v, *end;

        if (colon == NULL)
            continue; /* the status line */
        *colon = '\0';
        v = colon + 1;
        while (*v == ' ' || *v == '\t')
            v++;
        end = v + strlen(v);
        while (end > v && (end[-1] == ' ' || end[-1] == '\t'))
            *--end = '\0';
        r->hdr_name[i] = line;
        r->hdr_value[i] = v;
        i++;
    }
    r->hdr_count = i;
    return 0;
fail:
    return -1;
}

static int request(const char *method, const char *url, const char *const headers[],
                   const char *body, size_t body_len, upload *up, long timeout_ms, http_reply *r)
{
    CURL *c = NULL;
    struct curl_slist *hl = NULL;
    buf b = {.max = HTTP_MAX_BODY}, h = {.max = HTTP_MAX_HEADERS};
    char errbuf[CURL_ERROR_SIZE] = "";
    double t0 = mono_ms();
    CURLcode rc = CURLE_FAILED_INIT;
    int ok = 1;

    memset(r, 0, sizeof *r);
    if (http_init() != 0)
        goto fail;
    c = curl_easy_init();
    if (c == NULL)
        goto fail;
    for (size_t i = 0; headers != NULL && headers[i] != NULL; i++) {
        struct curl_slist *more = curl_slist_append(hl, headers[i]);
        if (more == NULL)
            goto fail;
        hl = more;
    }
    if (up != NULL) {
        struct curl_slist *more = curl_slist_append(hl, "Transfer-Encoding: chunked");
        if (more == NULL)
            goto fail;
        hl = more;
    }
    /* Always at least an empty body, so that r->body is never NULL after a transfer. */
    if (buf_add(&b, "", 0) != 0)
        goto fail;

    ok &= curl_easy_setopt(c, CURLOPT_URL, url) == CURLE_OK;
    ok &= curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L) == CURLE_OK; /* threads: no SIGALRM */
    ok &= curl_easy_setopt(c, CURLOPT_PROXY, "") == CURLE_OK;    /* ignore http_proxy & co */
    ok &= curl_easy_setopt(c, CURLOPT_FOLLOWLOCATION, 0L) == CURLE_OK;
    ok &= curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, timeout_ms) == CURLE_OK;
    ok &= curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT_MS, timeout_ms) == CURLE_OK;
    ok &= curl_easy_setopt(c, CURLOPT_ERRORBUFFER, errbuf) == CURLE_OK;
    ok &= curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_body) == CURLE_OK;
    ok &= curl_easy_setopt(c, CURLOPT_WRITEDATA, &b) == CURLE_OK;
    ok &= curl_easy_setopt(c, CURLOPT_HEADERFUNCTION, on_header) == CURLE_OK;
    ok &= curl_easy_setopt(c, CURLOPT_HEADERDATA, &h) == CURLE_OK;
    ok &= curl_easy_setopt(c, CURLOPT_HTTPHEADER, hl) == CURLE_OK;
    if (up != NULL) {
        ok &= curl_easy_setopt(c, CURLOPT_POST, 1L) == CURLE_OK;
        ok &= curl_easy_setopt(c, CURLOPT_READFUNCTION, on_read) == CURLE_OK;
        ok &= curl_easy_setopt(c, CURLOPT_READDATA, up) == CURLE_OK;
        if (strcmp(method, "POST") != 0)
            ok &= curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, method) == CURLE_OK;
    } else if (body != NULL) {
        ok &= curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)body_len) == CURLE_OK;
        ok &= curl_easy_setopt(c, CURLOPT_POSTFIELDS, body) == CURLE_OK;
        if (strcmp(method, "POST") != 0)
            ok &= curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, method) == CURLE_OK;
    } else if (strcmp(method, "HEAD") == 0) {
        ok &= curl_easy_setopt(c, CURLOPT_NOBODY, 1L) == CURLE_OK;
    } else if (strcmp(method, "GET") != 0) {
        ok &= curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, method) == CURLE_OK;
    }
    if (!ok)
        goto fail;

    rc = curl_easy_perform(c);
    r->elapsed_ms = mono_ms() - t0;
    r->curl_code = (int)rc;
    if (rc != CURLE_OK)
        snprintf(r->error, sizeof r->error, "%s",
                 errbuf[0] != '\0' ? errbuf : curl_easy_strerror(rc));
    curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &r->status);
    r->body = b.data;
    r->body_len = b.len;
    b.data = NULL;
    r->headers = h.data;
    h.data = NULL;
    r->json = json_loadb(r->body, r->body_len, JSON_DECODE_ANY | JSON_REJECT_DUPLICATES, NULL);
    if (parse_headers(r) != 0)
        goto fail;
    curl_slist_free_all(hl);
    curl_easy_cleanup(c);
    return rc == CURLE_OK && r->status > 0 ? 0 : -1;
fail:
    if (r->curl_code == 0)
        r->curl_code = (int)rc;
    if (r->error[0] == '\0')
        snprintf(r->error, sizeof r->error, "http: request setup failed");
    free(b.data);
    free(h.data);
    curl_slist_free_all(hl);
    if (c != NULL)
        curl_easy_cleanup(c);
    return -1;
}

int http_request(const char *method, const char *url, const char *const headers[], const char *body,
                 size_t body_len, long timeout_ms, http_reply *r)
{
    return request(method, url, headers, body, body_len, NULL, timeout_ms, r);
}

int http_request_chunked(const char *method, const char *url, const char *const headers[],
                         const char *body, size_t body_len, size_t chunk_bytes, int chunk_delay_ms,
                         long timeout_ms, http_reply *r)
{
    upload up = {.data = body != NULL ? body : "",
                 .len = body != NULL ? body_len : 0,
                 .chunk = chunk_bytes > 0 ? chunk_bytes : 1,
                 .delay_ms = chunk_delay_ms};

    return request(method, url, headers, NULL, 0, &up, timeout_ms, r);
}

const char *http_reply_header(const http_reply *r, const char *name)
{
    for (size_t i = 0; i < r->hdr_count; i++) {
        if (strcasecmp(r->hdr_name[i], name) == 0)
            return r->hdr_value[i];
    }
    return NULL;
}

void http_reply_free(http_reply *r)
{
    free(r->body);
    free(r->headers);
    if (r->json != NULL)
        json_decref(r->json);
    free(r->hdr_store);
    free(r->hdr_name);
    free(r->hdr_value);
    memset(r, 0, sizeof *r);
}

static int ms_left(double deadline)
{
    double left = deadline - mono_ms();
    return left > 0 ? (int)left + 1 : 0;
}

/* Waits for events on fd until the deadline. 1 ready, 0 timed out, -1 error. */
static int wait_fd(int fd, short events, double deadline)
{
    for (;;) {
        struct pollfd pfd = {.fd = fd, .events = events};
        int left = ms_left(deadline), rc;

        if (left <= 0)
            return 0;
        rc = poll(&pfd, 1, left);
        if (rc < 0 && errno == EINTR)
            continue;
        if (rc < 0)
            return -1;
        if (rc > 0)
            return 1;
    }
}

int http_raw(int port, const void *bytes, size_t n, char *reply, size_t replycap, int timeout_ms)
{
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    double deadline = mono_ms() + timeout_ms;
    const char *out = bytes;
    size_t sent = 0, got = 0;
    int fd = -1, soerr = 0;
    socklen_t slen = sizeof soerr;

    if (replycap > 0)
        reply[0] = '\0';
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    /* Non-blocking, so that connect, write and read all obey the one deadline. */
    fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0)
        goto fail;
    if (connect(fd, (struct sockaddr *)&sa, sizeof sa) != 0) {
        if (errno != EINPROGRESS)
            goto fail;
        if (wait_fd(fd, POLLOUT, deadline) != 1)
            goto fail;
        if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &soerr, &slen) != 0 || soerr != 0)
            goto fail;
    }
    while (sent < n) {
        ssize_t w = send(fd, out + sent, n - sent, MSG_NOSIGNAL);
        if (w < 0 && errno == EINTR)
            continue;
        if (w < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            if (wait_fd(fd, POLLOUT, deadline) != 1)
                goto fail;
            continue;
        }
        if (w < 0)
            goto fail;
        sent += (size_t)w;
    }
    while (got + 1 < replycap) {
        ssize_t rd = recv(fd, reply + got, replycap - 1 - got, 0);
        if (rd < 0 && errno == EINTR)
            continue;
        if (rd < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            if (wait_fd(fd, POLLIN, deadline) != 1)
                break;
            continue;
        }
        if (rd <= 0)
            break; /* closed, or reset: what came so far is the answer */
        got += (size_t)rd;
    }
    if (replycap > 0)
        reply[got] = '\0';
    close(fd);
    return (int)got;
fail:
    if (fd >= 0)
        close(fd);
    return -1;
}

int http_free_port(void)
{
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = 0};
    socklen_t len = sizeof sa;
    int fd = -1, port;

    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        goto fail;
    if (bind(fd, (struct sockaddr *)&sa, sizeof sa) != 0)
        goto fail;
    if (getsockname(fd, (struct sockaddr *)&sa, &len) != 0)
        goto fail;
    port = ntohs(sa.sin_port);
    close(fd);
    return port;
fail:
    if (fd >= 0)
        close(fd);
    return -1;
}
