/* fault — a raw-TCP test upstream that misbehaves on purpose; the contract is in fault.h. */
#include "fault.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define FAULT_MAX_CONNS      1024
#define FAULT_HEAD_MAX       16384 /* request head bytes kept; a longer head ends the connection */
#define FAULT_PATH_MAX       128
#define FAULT_CHUNK          65536
#define FAULT_ACCEPT_STEP_MS 50 /* the acceptor re-checks stopping this often */
#define FAULT_RESET_PAUSE_MS 50 /* lets the client read the partial head before the RST */
#define FAULT_BIND_RETRY_MS  2000

enum conn_state { CONN_FREE = 0, CONN_RUNNING, CONN_FINISHED };

typedef struct fault_conn {
    fault *srv;
    int fd; /* -1 once closed; changed only under srv->mu, so fault_stop never hits a reused fd */
    enum conn_state state;
    pthread_t thread;
} fault_conn;

struct fault {
    int listen_fd;
    int port;
    pthread_t acceptor;
    int acceptor_started;
    atomic_int stopping;
    atomic_int mode;
    atomic_uint accepted, requests, closed_early;
    pthread_mutex_t mu; /* guards conns[].fd and conns[].state */
    fault_conn conns[FAULT_MAX_CONNS];
};

/* Bytes received on a connection but not yet consumed: the head being read, or what follows it. */
typedef struct fault_reader {
    char buf[FAULT_HEAD_MAX];
    size_t len;
} fault_reader;

static const char *const mode_names[FAULT_MODE_COUNT] = {
    "ok",
    "reject",
    "reset_mid_answer",
    "truncated_body",
    "huge_body",
    "wrong_length_short",
    "wrong_length_long",
    "never_answers",
    "garbage_status",
    "garbage_bytes",
    "slow_trickle",
    "close_on_reuse",
};

static long long now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void sleep_ms(long ms)
{
    struct timespec ts = {.tv_sec = ms / 1000, .tv_nsec = (ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

const char *fault_mode_name(fault_mode mode)
{
    if ((int)mode < 0 || mode >= FAULT_MODE_COUNT)
        return NULL;
    return mode_names[mode];
}

static fault_mode mode_for_path(fault *f, const char *path)
{
    for (int m = 0; m < FAULT_MODE_COUNT; m++) {
        if (path[0] == '/' && strcmp(path + 1, mode_names[m]) == 0)
            return (fault_mode)m;
    }
    return (fault_mode)atomic_load(&f->mode);
}

/* The client hung up on a connection the server was holding or writing: a cancel that reached the
 * socket. fault_stop's own shutdown looks the same from here, so it is not counted. */
static void note_client_close(fault_conn *c)
{
    if (!atomic_load(&c->srv->stopping))
        atomic_fetch_add(&c->srv->closed_early, 1);
}

/* Writes all n bytes. 0, or -1 when the peer is gone (EPIPE, ECONNRESET) or fault_stop shut the
 * socket down, which wakes a blocked send. */
static int send_all(fault_conn *c, const void *data, size_t n)
{
    const char *p = data;
    while (n > 0) {
        ssize_t w = send(c->fd, p, n, MSG_NOSIGNAL);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            goto fail;
        p += w;
        n -= (size_t)w;
    }
    return 0;
fail:
    return -1;
}

static int send_str(fault_conn *c, const char *s)
{
    return send_all(c, s, strlen(s));
}

/* Reads more bytes into rd. >0 bytes read, 0 when the peer closed (or fault_stop shut the socket
 * down), -1 on error or a full buffer. */
static ssize_t read_more(fault_conn *c, fault_reader *rd)
{
    ssize_t n;
    if (rd->len == sizeof(rd->buf))
        goto fail;
    do {
        n = recv(c->fd, rd->buf + rd->len, sizeof(rd->buf) - rd->len, 0);
    } while (n < 0 && errno == EINTR);
    if (n < 0)
        goto fail;
    rd->len += (size_t)n;
    return n;
fail:
    return -1;
}

static void consume(fault_reader *rd, size_t n)
{
    memmove(rd->buf, rd->buf + n, rd->len - n);
    rd->len -= n;
}

/* The Content-Length of a head (NUL-terminated), 0 when absent or unreadable. */
static unsigned long long head_content_length(const char *head)
{
    static const char name[] = "\r\ncontent-length:";
    for (const char *p = head; *p != '\0'; p++) {
        if (strncasecmp(p, name, sizeof(name) - 1) == 0)
            return strtoull(p + sizeof(name) - 1, NULL, 10);
    }
    return 0;
}

/* The request target's path (no query) into path; characters that could break the JSON answer
 * that echoes it become '_'. */
static void head_path(const char *head, char *path, size_t cap)
{
    const char *p = strchr(head, ' ');
    size_t n = 0;
    if (p != NULL)
        p++;
    while (p != NULL && *p != '\0' && *p != ' ' && *p != '?' && *p != '\r' && n + 1 < cap) {
        char ch = *p++;
        int plain = (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') ||
                    (ch >= '0' && ch <= '9') || ch == '/' || ch == '_' || ch == '-' || ch == '.';
        path[n++] = plain ? ch : '_';
    }
    path[n] = '\0';
}

/* Reads one request head and its body (the body is dropped). 0 with path set, -1 when the
 * connection ended first or the head was too long. */
static int read_request(fault_conn *c, fault_reader *rd, char *path, size_t cap)
{
    char *end = NULL;
    size_t head_len;
    unsigned long long body_left;

    for (;;) {
        end = memmem(rd->buf, rd->len, "\r\n\r\n", 4);
        if (end != NULL)
            break;
        if (read_more(c, rd) <= 0)
            goto fail;
    }
    head_len = (size_t)(end - rd->buf) + 4;
    end[2] = '\0'; /* the head as a string ending in "\r\n" (the final CRLF is not needed) */
    head_path(rd->buf, path, cap);
    body_left = head_content_length(rd->buf);
    consume(rd, head_len);
    while (body_left > 0) {
        size_t take;
        if (rd->len == 0 && read_more(c, rd) <= 0)
            goto fail;
        take = rd->len < body_left ? rd->len : (size_t)body_left;
        consume(rd, take);
        body_left -= take;
    }
    atomic_fetch_add(&c->srv->requests, 1);
    return 0;
fail:
    return -1;
}

/* Holds the connection without a byte until the client closes it (counted) or fault_stop. */
static void hold_until_close(fault_conn *c)
{
    char scratch[4096];
    for (;;) {
        ssize_t n = recv(c->fd, scratch, sizeof(scratch), 0);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            break;
    }
    note_client_close(c);
}

/* Waits ms while watching for a hang-up. 0 after ms, -1 when the client closed (counted) or
 * fault_stop began. */
static int pause_watching(fault_conn *c, long ms)
{
    long long deadline = now_ms() + ms;
    for (;;) {
        long long left = deadline - now_ms();
        /* Only hang-ups: POLLIN (a request sent early) must not end the pause. */
        struct pollfd pfd = {.fd = c->fd, .events = POLLRDHUP};
        int rc;
        if (atomic_load(&c->srv->stopping))
            goto fail;
        if (left <= 0)
            return 0;
        rc = poll(&pfd, 1, (int)left);
        if (rc > 0 && (pfd.revents & (POLLRDHUP | POLLHUP | POLLERR | POLLNVAL)) != 0) {
            note_client_close(c);
            goto fail;
        }
    }
fail:
    return -1;
}

/* A 200 or 409 JSON answer on a kept-alive connection. 0, or -1 when the write failed. */
static int answer_json(fault_conn *c, int status, const char *body)
{
    char head[256];
    int n = snprintf(head, sizeof(head),
                     "HTTP/1.1 %d %s\r\nContent-Type: application/json\r\nContent-Length: %zu\r\n"
                     "\r\n",
                     status, status == 200 ? "OK" : "Conflict", strlen(body));
    if (n < 0 || (size_t)n >= sizeof(head))
        goto fail;
    if (send_all(c, head, (size_t)n) != 0 || send_str(c, body) != 0)
        goto fail;
    return 0;
fail:
    return -1;
}

/* Sends head, then the rest of one valid JSON string of FAULT_HUGE_BYTES bytes ('"' + 'a'... +
 * '"', the opening quote ends head) in FAULT_CHUNK writes of chunk. 0, or -1 when the client went
 * away first. */
static int stream_huge(fault_conn *c, const char *head, size_t head_len, const char *chunk)
{
    long sent = 1;
    if (send_all(c, head, head_len) != 0)
        goto fail;
    while (sent < FAULT_HUGE_BYTES - 1) {
        long left = FAULT_HUGE_BYTES - 1 - sent;
        size_t step = left < FAULT_CHUNK ? (size_t)left : FAULT_CHUNK;
        if (send_all(c, chunk, step) != 0)
            goto fail;
        sent += (long)step;
    }
    if (send_str(c, "\"") != 0)
        goto fail;
    return 0;
fail:
    return -1;
}

/* The huge answer from one 64 KiB buffer, so that the server's memory stays flat whatever the
 * client does: an RSS that grows is then the client's doing. */
static void answer_huge(fault_conn *c)
{
    char head[160];
    char *chunk = malloc(FAULT_CHUNK);
    int n = snprintf(head, sizeof(head),
                     "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %ld\r\n"
                     "\r\n\"",
                     FAULT_HUGE_BYTES);
    if (chunk == NULL || n < 0 || (size_t)n >= sizeof(head))
        goto fail;
    memset(chunk, 'a', FAULT_CHUNK);
    if (stream_huge(c, head, (size_t)n, chunk) != 0)
        note_client_close(c);
fail:
    free(chunk);
}

/* 64 bytes that are not HTTP: xorshift32 from a fixed seed, so every run sends the same. */
static void answer_garbage_bytes(fault_conn *c)
{
    unsigned char bytes[64];
    uint32_t x = 0x9e3779b9u;
    for (size_t i = 0; i < sizeof(bytes); i++) {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        bytes[i] = (unsigned char)(x & 0xffu);
    }
    if (bytes[0] == 'H')
        bytes[0] = 'x';
    send_all(c, bytes, sizeof(bytes));
}

/* The 200 head at once, then {"ok":true} one byte per FAULT_TRICKLE_MS. 0 when all was sent. */
static int answer_trickle(fault_conn *c)
{
    static const char body[] = "{\"ok\":true}";
    char head[160];
    int n = snprintf(head, sizeof(head),
                     "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %zu\r\n"
                     "\r\n",
                     sizeof(body) - 1);
    if (n < 0 || (size_t)n >= sizeof(head) || send_all(c, head, (size_t)n) != 0)
        goto fail;
    for (size_t i = 0; i + 1 < sizeof(body); i++) {
        if (pause_watching(c, FAULT_TRICKLE_MS) != 0 || send_all(c, body + i, 1) != 0)
            goto fail;
    }
    return 0;
fail:
    return -1;
}

/* Closes the connection, with an RST instead of a FIN when reset is set. */
static void conn_close(fault_conn *c, int reset)
{
    pthread_mutex_lock(&c->srv->mu);
    if (c->fd >= 0) {
        if (reset) {
            struct linger lg = {.l_onoff = 1, .l_linger = 0};
            setsockopt(c->fd, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
        }
        close(c->fd);
        c->fd = -1;
    }
    pthread_mutex_unlock(&c->srv->mu);
}

/* Answers one request as mode says; nth is 1 for the first request on the connection. 1 when the
 * connection stays open for the next request, 0 when it is to be closed (already closed for
 * reset_mid_answer). */
static int answer(fault_conn *c, fault_mode mode, const char *path, unsigned nth)
{
    char body[FAULT_PATH_MAX + 64];
    if (mode == FAULT_CLOSE_ON_REUSE && nth > 1)
        return 0; /* read, never answered: a kept-alive connection the server dropped */
    switch (mode) {
    case FAULT_OK:
    case FAULT_CLOSE_ON_REUSE:
        snprintf(body, sizeof(body), "{\"ok\":true,\"path\":\"%s\"}", path);
        return answer_json(c, 200, body) == 0;
    case FAULT_REJECT:
        return answer_json(c, 409, "{\"error\":\"out_of_stock\",\"sku\":\"SKU-9\"}") == 0;
    case FAULT_RESET_MID_ANSWER:
        if (send_str(c, "HTTP/1.1 200 OK\r\nContent-Type: applica") == 0)
            sleep_ms(FAULT_RESET_PAUSE_MS);
        conn_close(c, 1);
        return 0;
    case FAULT_TRUNCATED_BODY:
        send_str(c, "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 100\r\n"
                    "\r\n{\"ok\":true");
        return 0;
    case FAULT_HUGE_BODY:
        answer_huge(c);
        return 0;
    case FAULT_WRONG_LENGTH_SHORT:
        send_str(c, "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\n"
                    "\r\n{\"ok\":true}");
        return 0;
    case FAULT_WRONG_LENGTH_LONG:
        if (send_str(c, "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: "
                        "50\r\n\r\n{\"ok\":true}\n") == 0)
            hold_until_close(c);
        return 0;
    case FAULT_NEVER_ANSWERS:
        hold_until_close(c);
        return 0;
    case FAULT_GARBAGE_STATUS:
        send_str(c, "HTTP/1.1 abc\r\n\r\n");
        return 0;
    case FAULT_GARBAGE_BYTES:
        answer_garbage_bytes(c);
        return 0;
    case FAULT_SLOW_TRICKLE:
        return answer_trickle(c) == 0;
    case FAULT_MODE_COUNT:
        break;
    }
    return 0;
}

static void *conn_main(void *arg)
{
    fault_conn *c = arg;
    fault_reader *rd = malloc(sizeof(*rd));
    char path[FAULT_PATH_MAX];
    unsigned nth = 0;

    if (rd == NULL)
        goto fail;
    rd->len = 0;
    for (;;) {
        if (read_request(c, rd, path, sizeof(path)) != 0)
            break;
        nth++;
        if (!answer(c, mode_for_path(c->srv, path), path, nth))
            break;
    }
fail:
    free(rd);
    conn_close(c, 0);
    pthread_mutex_lock(&c->srv->mu);
    c->state = CONN_FINISHED;
    pthread_mutex_unlock(&c->srv->mu);
    return NULL;
}

/* Joins finished connection threads so that slots are reused. Caller holds f->mu; a finished
 * thread no longer needs it, so joining under it cannot deadlock. */
static void reap_finished(fault *f)
{
    for (int i = 0; i < FAULT_MAX_CONNS; i++) {
        if (f->conns[i].state == CONN_FINISHED) {
            pthread_join(f->conns[i].thread, NULL);
            f->conns[i].state = CONN_FREE;
        }
    }
}

/* Gives fd a slot and a thread; closes it when there is neither (the client sees the close). */
static void conn_spawn(fault *f, int fd)
{
    fault_conn *c = NULL;

    pthread_mutex_lock(&f->mu);
    reap_finished(f);
    for (int i = 0; i < FAULT_MAX_CONNS && c == NULL; i++) {
        if (f->conns[i].state == CONN_FREE)
            c = &f->conns[i];
    }
    if (c == NULL)
        goto fail;
    c->srv = f;
    c->fd = fd;
    c->state = CONN_RUNNING;
    if (pthread_create(&c->thread, NULL, conn_main, c) != 0) {
        c->state = CONN_FREE;
        c->fd = -1;
        goto fail;
    }
    pthread_mutex_unlock(&f->mu);
    return;
fail:
    pthread_mutex_unlock(&f->mu);
    close(fd);
}

static void *accept_main(void *arg)
{
    fault *f = arg;
    while (!atomic_load(&f->stopping)) {
        struct pollfd pfd = {.fd = f->listen_fd, .events = POLLIN};
        int fd;
        if (poll(&pfd, 1, FAULT_ACCEPT_STEP_MS) <= 0)
            continue;
        fd = accept4(f->listen_fd, NULL, NULL, SOCK_CLOEXEC);
        if (fd < 0)
            continue;
        atomic_fetch_add(&f->accepted, 1);
        if (atomic_load(&f->stopping)) {
            close(fd);
            break;
        }
        conn_spawn(f, fd);
    }
    return NULL;
}

/* A listening socket on 127.0.0.1:port, retrying EADDRINUSE for FAULT_BIND_RETRY_MS (a port just
 * released can be held for a moment). The fd, or -1. */
static int listen_on(int port)
{
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    long long until = now_ms() + FAULT_BIND_RETRY_MS;
    int one = 1;
    int fd = -1;

    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    for (;;) {
        fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (fd < 0)
            goto fail;
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
        if (bind(fd, (struct sockaddr *)&sa, sizeof(sa)) == 0 && listen(fd, 256) == 0)
            return fd;
        if (errno != EADDRINUSE || now_ms() >= until)
            goto fail;
        close(fd);
        fd = -1;
        sleep_ms(20);
    }
fail:
    if (fd >= 0)
        close(fd);
    return -1;
}

fault *fault_start(int port)
{
    struct sockaddr_in sa;
    socklen_t salen = sizeof(sa);
    fault *f = calloc(1, sizeof(*f));
    int mutex_ok = 0;

    if (f == NULL || port < 0 || port > 65535)
        goto fail;
    f->listen_fd = -1;
    if (pthread_mutex_init(&f->mu, NULL) != 0)
        goto fail;
    mutex_ok = 1;
    for (int i = 0; i < FAULT_MAX_CONNS; i++)
        f->conns[i].fd = -1;
    f->listen_fd = listen_on(port);
    if (f->listen_fd < 0)
        goto fail;
    if (getsockname(f->listen_fd, (struct sockaddr *)&sa, &salen) != 0)
        goto fail;
    f->port = ntohs(sa.sin_port);
    if (pthread_create(&f->acceptor, NULL, accept_main, f) != 0)
        goto fail;
    f->acceptor_started = 1;
    return f;
fail:
    if (f != NULL && f->listen_fd >= 0)
        close(f->listen_fd);
    if (mutex_ok)
        pthread_mutex_destroy(&f->mu);
    free(f);
    return NULL;
}

void fault_stop(fault *f)
{
    unsigned char joinable[FAULT_MAX_CONNS];

    if (f == NULL)
        return;
    atomic_store(&f->stopping, 1);
    /* The acceptor first, so that the set of connections is final before they are shut down. */
    shutdown(f->listen_fd, SHUT_RDWR);
    if (f->acceptor_started)
        pthread_join(f->acceptor, NULL);
    close(f->listen_fd);
    /* shutdown wakes every thread blocked in recv, send or poll on its socket; the fds stay
     * open (closed by their threads under mu), so no fd number is reused under our feet. */
    pthread_mutex_lock(&f->mu);
    for (int i = 0; i < FAULT_MAX_CONNS; i++) {
        /* Read under mu: a slot's state only goes RUNNING -> FINISHED from now on (the acceptor,
         * the only one that frees or fills slots, is gone), so this snapshot is what to join. */
        joinable[i] = f->conns[i].state != CONN_FREE;
        if (f->conns[i].state == CONN_RUNNING && f->conns[i].fd >= 0)
            shutdown(f->conns[i].fd, SHUT_RDWR);
    }
    pthread_mutex_unlock(&f->mu);
    for (int i = 0; i < FAULT_MAX_CONNS; i++) {
        if (joinable[i])
            pthread_join(f->conns[i].thread, NULL);
    }
    pthread_mutex_destroy(&f->mu);
    free(f);
}

int fault_port(const fault *f)
{
    return f->port;
}

void fault_set_mode(fault *f, fault_mode mode)
{
    atomic_store(&f->mode, (int)mode);
}

unsigned fault_accepted(fault *f)
{
    return atomic_load(&f->accepted);
}

unsigned fault_requests(fault *f)
{
    return atomic_load(&f->requests);
}

unsigned fault_closed_early(fault *f)
{
    return atomic_load(&f->closed_early);
}

static int wait_counter(atomic_uint *counter, unsigned n, int timeout_ms)
{
    long long deadline = now_ms() + timeout_ms;
    for (;;) {
        if (atomic_load(counter) >= n)
            return 0;
        if (now_ms() >= deadline)
            return -1;
        sleep_ms(5);
    }
}

int fault_wait_requests(fault *f, unsigned n, int timeout_ms)
{
    return wait_counter(&f->requests, n, timeout_ms);
}

int fault_wait_closed_early(fault *f, unsigned n, int timeout_ms)
{
    return wait_counter(&f->closed_early, n, timeout_ms);
}
