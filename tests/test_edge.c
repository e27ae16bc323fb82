/* The edge of checkoutd against the real daemon (with the fake upstreams), v1.2 "Slow clients":
 * the header deadline (slowloris, also on a kept-alive connection), the idle close, the 413 as
 * soon as a body passes max_body_bytes (chunked, endless, by Content-Length, by one byte), the
 * framing rules of RFC 9112 (each refused and its connection closed, a request hidden behind it
 * never reaching an upstream; pipelining still served), an answer for a client that half-closed,
 * and max_connections_per_ip. After every test the daemon's descriptors and its
 * checkoutd_open_connections gauge are back to their baseline. */
#include "support/http.h"
#include "support/proc.h"
#include "support/prom.h"

#include <arpa/inet.h>
#include <errno.h>
#include <dirent.h>
#include <fcntl.h>
#include <jansson.h>
#include <netinet/in.h>
#include <poll.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#define HEADER_TIMEOUT_MS 2000
#define IDLE_TIMEOUT_MS   1500
#define MAX_BODY          4096

typedef struct world {
    proc daemon;
    int port;
    char config_path[80];
    int base_fds, base_client_fds;
    double base_open;
} world;

static struct {
    proc upstreams;
    int up_port[3];
    world main;
} w;

static const char order[] =
    "{\"address\": {\"postal_code\": \"1\", \"country\": \"US\"}, \"items\": [], "
    "\"payment\": {\"token\": \"tok_visa\"}}";

/* ---- helpers ----------------------------------------------------------------------------------
 */

static int connect_port(int port)
{
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0)
        return -1;
    if (connect(fd, (struct sockaddr *)&a, sizeof(a)) != 0) {
        close(fd);
        return -1;
    }
    return fd;
}

/* A checkout request with Content-Length, as bytes; extra: more header lines ("" for none). */
static int checkout_request(char *buf, size_t cap, const char *extra)
{
    return snprintf(buf, cap,
                    "POST /checkout HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                    "%sContent-Length: %zu\r\n\r\n%s",
                    extra, strlen(order), order);
}

static double metric(int port, const char *series)
{
    char url[64];
    http_reply r;
    double v = -1;
    snprintf(url, sizeof(url), "http://127.0.0.1:%d/metrics", port);
    if (http_request("GET", url, NULL, NULL, 0, 5000, &r) == 0)
        prom_value(r.body, series, &v);
    http_reply_free(&r);
    return v;
}

/* Requests the fake upstreams received so far (all three roles). */
static long upstream_requests(void)
{
    long total = 0;
    for (int i = 0; i < 3; i++) {
        char url[64];
        http_reply r;
        snprintf(url, sizeof(url), "http://127.0.0.1:%d/_fake/stats", w.up_port[i]);
        if (http_request("GET", url, NULL, NULL, 0, 5000, &r) == 0 && r.json != NULL)
            total += (long)json_integer_value(json_object_get(r.json, "requests"));
        http_reply_free(&r);
    }
    return total;
}

/* A normal checkout on a fresh connection answers 200 at once. */
static void assert_service_answers(int port)
{
    static const char *const json_only[] = {"Content-Type: application/json", NULL};
    char url[64];
    snprintf(url, sizeof(url), "http://127.0.0.1:%d/checkout", port);
    http_reply r;
    http_request("POST", url, json_only, order, strlen(order), 5000, &r);
    assert_int_equal(r.status, 200);
    assert_true(r.elapsed_ms < 1500);
    http_reply_free(&r);
}

/* Reads until the peer closes (EOF or reset) or timeout_ms passes. Returns 1 closed, 0 not;
 * *got (may be NULL) gets the bytes read, NUL-terminated, cut to cap - 1. */
static int read_until_close(int fd, char *buf, size_t cap, size_t *got, int timeout_ms)
{
    size_t n = 0;
    double until = proc_now_ms() + timeout_ms;
    int closed = 0;
    char sink[4096];
    while (!closed) {
        int left = (int)(until - proc_now_ms());
        if (left <= 0)
            break;
        struct pollfd p = {.fd = fd, .events = POLLIN};
        if (poll(&p, 1, left) <= 0)
            continue;
        char *dst = buf != NULL && n + 1 < cap ? buf + n : sink;
        size_t room = buf != NULL && n + 1 < cap ? cap - 1 - n : sizeof(sink);
        ssize_t r = recv(fd, dst, room, 0);
        if (r <= 0) {
            closed = r == 0 || errno == ECONNRESET || errno == EPIPE;
            if (!closed && errno != EINTR && errno != EAGAIN)
                closed = 1;
        } else if (dst != sink) {
            n += (size_t)r;
        }
    }
    if (buf != NULL)
        buf[n < cap ? n : cap - 1] = '\0';
    if (got != NULL)
        *got = n;
    return closed;
}

/* Reads one complete answer (header block + Content-Length bytes) from a kept-alive connection.
 * Returns its status, or -1. */
static int read_answer(int fd, int timeout_ms)
{
    char buf[8192];
    size_t n = 0;
    double until = proc_now_ms() + timeout_ms;
    while (n + 1 < sizeof(buf) && proc_now_ms() < until) {
        struct pollfd p = {.fd = fd, .events = POLLIN};
        if (poll(&p, 1, 100) <= 0)
            continue;
        ssize_t r = recv(fd, buf + n, sizeof(buf) - 1 - n, 0);
        if (r <= 0)
            return -1;
        n += (size_t)r;
        buf[n] = '\0';
        char *end = strstr(buf, "\r\n\r\n");
        const char *cl = strcasestr(buf, "\r\nContent-Length:");
        if (end != NULL && cl != NULL && (size_t)(end + 4 - buf) + strtoul(cl + 17, NULL, 10) <= n)
            return atoi(buf + 9);
    }
    return -1;
}

static int status_of(const char *reply)
{
    return strncmp(reply, "HTTP/1.1 ", 9) == 0 ? atoi(reply + 9) : 0;
}

static int count_status_lines(const char *reply)
{
    int n = 0;
    for (const char *p = strstr(reply, "HTTP/1."); p != NULL; p = strstr(p + 1, "HTTP/1."))
        n++;
    return n;
}

/* Descriptors of pid that are TCP sockets on local port port (its listening sockets and the client
 * connections it holds), found through /proc/net/tcp{,6}; the upstream connections libcurl keeps
 * (their number depends on which worker served what) are not counted. -1 on error. */
static int client_fds(pid_t pid, int port)
{
    static unsigned long inodes[20000];
    size_t n = 0;
    static const char *const tables[] = {"/proc/net/tcp", "/proc/net/tcp6"};
    for (size_t t = 0; t < 2; t++) {
        FILE *f = fopen(tables[t], "r");
        if (f == NULL)
            continue;
        char line[512];
        while (fgets(line, sizeof(line), f) != NULL) {
            char local[64];
            unsigned long inode = 0;
            unsigned lport = 0;
            /* sl local rem st tx:rx tr:when retrnsmt uid timeout inode */
            if (sscanf(line, " %*s %63s %*s %*s %*s %*s %*s %*s %*s %lu", local, &inode) != 2)
                continue;
            char *colon = strrchr(local, ':');
            if (colon == NULL || sscanf(colon + 1, "%x", &lport) != 1)
                continue;
            if ((int)lport == port && n < sizeof(inodes) / sizeof(inodes[0]))
                inodes[n++] = inode;
        }
        fclose(f);
    }
    char dir[64];
    snprintf(dir, sizeof(dir), "/proc/%d/fd", (int)pid);
    DIR *d = opendir(dir);
    if (d == NULL)
        return -1;
    int count = 0;
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        char path[400], target[64];
        snprintf(path, sizeof(path), "%s/%s", dir, e->d_name);
        ssize_t len = readlink(path, target, sizeof(target) - 1);
        if (len <= 0)
            continue;
        target[len] = '\0';
        unsigned long inode = 0;
        if (sscanf(target, "socket:[%lu]", &inode) != 1)
            continue;
        for (size_t i = 0; i < n; i++)
            if (inodes[i] == inode) {
                count++;
                break;
            }
    }
    closedir(d);
    return count;
}

/* ---- worlds -----------------------------------------------------------------------------------
 */

static int start_world(world *wd, const char *name, const char *extra_keys, char *const env[])
{
    snprintf(wd->config_path, sizeof(wd->config_path), "/tmp/checkoutd-edge-%s-%d.json", name,
             (int)getpid());
    FILE *f = fopen(wd->config_path, "w");
    if (f == NULL)
        return -1;
    fprintf(
        f,
        "{\"listen\": \"127.0.0.1:0\", \"deadline_ms\": 2000, \"max_body_bytes\": %d, %s"
        "\"validations\": ["
        "{\"name\": \"address\", \"field\": \"address\", \"url\": \"http://127.0.0.1:%d/a\"},"
        "{\"name\": \"inventory\", \"field\": \"items\", \"url\": \"http://127.0.0.1:%d/i\"},"
        "{\"name\": \"payment\", \"field\": \"payment\", \"url\": \"http://127.0.0.1:%d/p\"}]}\n",
        MAX_BODY, extra_keys, w.up_port[0], w.up_port[1], w.up_port[2]);
    fclose(f);
    char *quiet[] = {"--log-level", "warn", NULL};
    wd->port = proc_start_checkoutd(&wd->daemon, wd->config_path, quiet, env, NULL);
    if (wd->port <= 0)
        return -1;
    /* warm up: the upstream connections libcurl keeps are part of the baseline */
    for (int i = 0; i < 3; i++)
        assert_service_answers(wd->port);
    usleep(200 * 1000);
    wd->base_open = metric(wd->port, "checkoutd_open_connections");
    usleep(100 * 1000); /* the scrape's own connection closes */
    wd->base_fds = proc_fd_count(wd->daemon.pid);
    wd->base_client_fds = client_fds(wd->daemon.pid, wd->port);
    /* a real baseline: -1 (a metric or /proc missing) would equal -1 later and prove nothing; the
     * scrape that reads the gauge is an open connection itself */
    if (wd->base_client_fds < 1 || wd->base_open < 1 || wd->base_fds < 1) {
        fprintf(stderr, "baseline not measured: client fds %d, open connections %.0f, fds %d\n",
                wd->base_client_fds, wd->base_open, wd->base_fds);
        return -1;
    }
    return 0;
}

static int stop_world(world *wd)
{
    int status = -1;
    proc_signal(&wd->daemon, SIGTERM);
    proc_wait_exit(&wd->daemon, 10000, &status);
    proc_stop(&wd->daemon);
    unlink(wd->config_path);
    if (status != 0) {
        fprintf(stderr, "checkoutd exit status %d, want 0 (ASan finds leaks at exit)\n", status);
        return -1;
    }
    return 0;
}

static int setup_all(void **state)
{
    (void)state;
    struct rlimit rl;
    getrlimit(RLIMIT_NOFILE, &rl);
    rl.rlim_cur = rl.rlim_max;
    setrlimit(RLIMIT_NOFILE, &rl);
    signal(SIGPIPE, SIG_IGN);
    if (proc_start_upstreams(&w.upstreams, NULL, "/dev/null", w.up_port) != 0)
        return -1;
    char keys[128];
    snprintf(keys, sizeof(keys), "\"header_timeout_ms\": %d, \"idle_timeout_ms\": %d, ",
             HEADER_TIMEOUT_MS, IDLE_TIMEOUT_MS);
    return start_world(&w.main, "main", keys, NULL);
}

static int teardown_all(void **state)
{
    (void)state;
    int rc = stop_world(&w.main);
    proc_stop(&w.upstreams);
    return rc;
}

/* After each test: the daemon's client-connection descriptors and its open-connections gauge
 * return to the baseline (our own /metrics scrape is one open connection, as it was when the
 * baseline was taken), and its descriptors overall grew by no more than the upstream connections
 * libcurl may keep (3 validations on each of at most 8 workers). */
static void assert_baseline(world *wd)
{
    double until = proc_now_ms() + 5000;
    int fds = -1, clients = -1;
    double open = -1;
    do {
        fds = proc_fd_count(wd->daemon.pid);
        clients = client_fds(wd->daemon.pid, wd->port);
        open = metric(wd->port, "checkoutd_open_connections");
        if (fds > 0 && clients > 0 && open > 0 && clients == wd->base_client_fds &&
            open == wd->base_open && fds <= wd->base_fds + 24)
            return;
        usleep(50 * 1000);
    } while (proc_now_ms() < until);
    fail_msg("client fds %d (baseline %d), fds %d (baseline %d), open connections %.0f "
             "(baseline %.0f)",
             clients, wd->base_client_fds, fds, wd->base_fds, open, wd->base_open);
}

static int check_baseline(void **state)
{
    (void)state;
    assert_baseline(&w.main);
    return 0;
}

/* ---- slow clients -----------------------------------------------------------------------------
 */

/* 50 connections trickle one header byte every 300 ms: all are closed by the server about
 * header_timeout_ms after they opened (not before), while a checkout on a fresh connection is
 * answered at once. */
static void test_trickled_headers_closed(void **state)
{
    (void)state;
    enum { N = 50 };
    static const char head[] = "POST /checkout HTTP/1.1\r\nHost: x\r\nX-Slow: aaaaaaaaaaaaaaaaaaaa"
                               "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
    int fds[N];
    double closed_at[N];
    double t0 = proc_now_ms();
    for (int i = 0; i < N; i++) {
        fds[i] = connect_port(w.main.port);
        assert_true(fds[i] >= 0);
        closed_at[i] = -1;
    }
    usleep(100 * 1000);
    assert_true(client_fds(w.main.daemon.pid, w.main.port) >= w.main.base_client_fds + N);
    int open = N, answered_meanwhile = 0;
    for (size_t b = 0; open > 0 && proc_now_ms() - t0 < 8000; b++) {
        for (int i = 0; i < N; i++) {
            if (closed_at[i] >= 0)
                continue;
            char c;
            ssize_t r = recv(fds[i], &c, 1, MSG_DONTWAIT);
            if (r == 0 || (r < 0 && errno != EAGAIN && errno != EWOULDBLOCK) ||
                send(fds[i], head + (b % (sizeof(head) - 1)), 1, MSG_NOSIGNAL) < 0) {
                closed_at[i] = proc_now_ms() - t0;
                open--;
            }
        }
        if (b == 3) { /* about a second in: the others are still served */
            assert_service_answers(w.main.port);
            answered_meanwhile = 1;
        }
        usleep(300 * 1000);
    }
    assert_true(answered_meanwhile);
    for (int i = 0; i < N; i++) {
        if (closed_at[i] < 0)
            fail_msg("connection %d still open after 8 s", i);
        if (closed_at[i] < HEADER_TIMEOUT_MS - 300 || closed_at[i] > HEADER_TIMEOUT_MS + 2500)
            fail_msg("connection %d closed after %.0f ms, want about %d", i, closed_at[i],
                     HEADER_TIMEOUT_MS);
        close(fds[i]);
    }
}

/* A kept-alive connection that answered a checkout and then trickles its next request is closed
 * the same way: within header_timeout_ms (+ one idle check) of its first byte. */
static void test_keepalive_trickle_closed(void **state)
{
    (void)state;
    char req[1024];
    int len = checkout_request(req, sizeof(req), "");
    int fd = connect_port(w.main.port);
    assert_true(fd >= 0);
    assert_int_equal(send(fd, req, (size_t)len, MSG_NOSIGNAL), len);
    assert_int_equal(read_answer(fd, 3000), 200);
    double t0 = proc_now_ms(), closed = -1;
    for (int i = 0; i < len && proc_now_ms() - t0 < 8000; i++) {
        char c;
        ssize_t r = recv(fd, &c, 1, MSG_DONTWAIT);
        if (r == 0 || (r < 0 && errno != EAGAIN && errno != EWOULDBLOCK) ||
            send(fd, req + i, 1, MSG_NOSIGNAL) < 0) {
            closed = proc_now_ms() - t0;
            break;
        }
        usleep(300 * 1000);
    }
    close(fd);
    if (closed < HEADER_TIMEOUT_MS - 300 || closed > HEADER_TIMEOUT_MS + IDLE_TIMEOUT_MS + 1500)
        fail_msg("closed after %.0f ms of trickling, want about %d", closed, HEADER_TIMEOUT_MS);
}

/* A kept-alive connection that stays silent after its answer is closed after idle_timeout_ms. */
static void test_idle_keepalive_closed(void **state)
{
    (void)state;
    char req[1024];
    int len = checkout_request(req, sizeof(req), "");
    int fd = connect_port(w.main.port);
    assert_true(fd >= 0);
    assert_int_equal(send(fd, req, (size_t)len, MSG_NOSIGNAL), len);
    assert_int_equal(read_answer(fd, 3000), 200);
    double t0 = proc_now_ms();
    assert_true(read_until_close(fd, NULL, 0, NULL, 6000));
    double after = proc_now_ms() - t0;
    close(fd);
    if (after < IDLE_TIMEOUT_MS - 200 || after > IDLE_TIMEOUT_MS + 2000)
        fail_msg("idle connection closed after %.0f ms, want about %d", after, IDLE_TIMEOUT_MS);
}

/* ---- bodies over max_body_bytes ----------------------------------------------------------------
 */

/* The 413 with body_too_large, then the server's end of the connection (EOF or reset). */
static void assert_413_and_close(int fd, int timeout_ms)
{
    char reply[4096];
    size_t got = 0;
    assert_true(read_until_close(fd, reply, sizeof(reply), &got, timeout_ms));
    assert_int_equal(status_of(reply), 413);
    assert_int_equal(count_status_lines(reply), 1);
    assert_non_null(strstr(reply, "\"body_too_large\""));
}

/* A chunked body that never ends: the 413 comes as soon as the count passes the limit (well before
 * 8 MiB were sent), then the server closes the connection although the client still sends. */
static void test_endless_chunked_body(void **state)
{
    (void)state;
    long before = upstream_requests();
    static const char head[] =
        "POST /checkout HTTP/1.1\r\nHost: x\r\n"
        "Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n";
    char chunk[1024 + 16];
    memset(chunk, 'x', sizeof(chunk));
    memcpy(chunk, "400\r\n", 5);
    memcpy(chunk + 5 + 1024, "\r\n", 2);
    size_t chunk_len = 5 + 1024 + 2;
    int fd = connect_port(w.main.port);
    assert_true(fd >= 0);
    fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
    assert_int_equal(send(fd, head, sizeof(head) - 1, MSG_NOSIGNAL), (ssize_t)(sizeof(head) - 1));
    char reply[4096];
    size_t got = 0, sent = 0, sent_at_answer = 0;
    int closed = 0;
    double t0 = proc_now_ms();
    while (!closed && proc_now_ms() - t0 < 5000) {
        ssize_t s = send(fd, chunk, chunk_len, MSG_NOSIGNAL);
        if (s > 0)
            sent += (size_t)s;
        else if (s < 0 && errno != EAGAIN && errno != EWOULDBLOCK)
            closed = 1;
        ssize_t r = recv(fd, reply + got, sizeof(reply) - 1 - got, 0);
        if (r > 0) {
            if (got == 0)
                sent_at_answer = sent;
            got += (size_t)r;
        } else if (r == 0 || (errno != EAGAIN && errno != EWOULDBLOCK)) {
            closed = 1;
        } else {
            usleep(200);
        }
    }
    reply[got] = '\0';
    close(fd);
    assert_true(closed);
    assert_int_equal(status_of(reply), 413);
    assert_non_null(strstr(reply, "\"body_too_large\""));
    assert_true(sent_at_answer < (2u << 20)); /* the old behaviour read 8 MiB first */
    assert_int_equal(upstream_requests(), before);
}

/* Content-Length over the limit: 413 at once, from the declared length, and the connection
 * closed; a chunked body of max_body_bytes + 1: 413 and closed too. Neither calls an upstream. */
static void test_oversized_bodies(void **state)
{
    (void)state;
    long before = upstream_requests();
    char req[MAX_BODY + 512];
    int fd = connect_port(w.main.port);
    assert_true(fd >= 0);
    int len = snprintf(req, sizeof(req),
                       "POST /checkout HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                       "Content-Length: %d\r\n\r\n{\"order_id\": ",
                       MAX_BODY * 4);
    assert_int_equal(send(fd, req, (size_t)len, MSG_NOSIGNAL), len);
    assert_413_and_close(fd, 3000);
    close(fd);

    /* chunked, one byte over: a first chunk of MAX_BODY bytes, then one of 1 */
    len = snprintf(req, sizeof(req),
                   "POST /checkout HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                   "Transfer-Encoding: chunked\r\n\r\n%x\r\n",
                   MAX_BODY);
    memset(req + len, ' ', MAX_BODY);
    len += MAX_BODY;
    len += snprintf(req + len, sizeof(req) - (size_t)len, "\r\n1\r\n \r\n0\r\n\r\n");
    fd = connect_port(w.main.port);
    assert_true(fd >= 0);
    assert_int_equal(send(fd, req, (size_t)len, MSG_NOSIGNAL), len);
    assert_413_and_close(fd, 3000);
    close(fd);

    /* exactly the limit is not too large (a 400: spaces are not a JSON object) */
    len = snprintf(req, sizeof(req),
                   "POST /checkout HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                   "Connection: close\r\nContent-Length: %d\r\n\r\n",
                   MAX_BODY);
    memset(req + len, ' ', MAX_BODY);
    len += MAX_BODY;
    fd = connect_port(w.main.port);
    assert_true(fd >= 0);
    assert_int_equal(send(fd, req, (size_t)len, MSG_NOSIGNAL), len);
    char reply[4096];
    assert_true(read_until_close(fd, reply, sizeof(reply), NULL, 3000));
    assert_int_equal(status_of(reply), 400);
    close(fd);
    assert_int_equal(upstream_requests(), before);
    assert_service_answers(w.main.port);
}

/* ---- framing ----------------------------------------------------------------------------------
 */

/* Each request carries a checkout hidden where a lenient parser would find a second request. The
 * answer is a 400 (or nothing), only one answer, the connection closes right after, and no
 * upstream sees the hidden checkout. */
static void test_framing_rules(void **state)
{
    (void)state;
    char hidden[1024];
    int hidden_len = checkout_request(hidden, sizeof(hidden), "");
    static const struct {
        const char *name, *headers, *body_prefix;
        int body_len_extra; /* Content-Length: strlen(prefix) + hidden + this (-1: none) */
    } cases[] = {
        {"space before colon", "Transfer-Encoding : chunked\r\n", "0\r\n\r\n", 0},
        {"tab before colon", "Transfer-Encoding\t: chunked\r\n", "0\r\n\r\n", 0},
        {"chunked then identity", "Transfer-Encoding: chunked\r\nTransfer-Encoding: identity\r\n",
         "0\r\n\r\n", -1},
        {"chunked twice", "Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n",
         "0\r\n\r\n", -1},
        {"gzip, chunked", "Transfer-Encoding: gzip, chunked\r\n", "0\r\n\r\n", -1},
        {"identity", "Transfer-Encoding: identity\r\n", "", -1},
        {"content-length +2", "Content-Length: +2\r\n", "{}", -1},
        {"content-length 0x2", "Content-Length: 0x2\r\n", "{}", -1},
        {"content-length 2, 2", "Content-Length: 2, 2\r\n", "{}", -1},
        {"content-length  5", "Content-Length:  5 x\r\n", "{}", -1},
        {"two content-lengths", "Content-Length: 2\r\nContent-Length: 2\r\n", "{}", -1},
        {"content-length and chunked", "Transfer-Encoding: chunked\r\n", "0\r\n\r\n", 0},
        {"obs-fold", "X-Folded: a\r\n b\r\n", "", 0},
        {"obs-fold in content-length", "Content-Length: 2\r\n 0\r\n", "{}", -1},
        {"obs-fold first header", "X-First: a\r\n\tb\r\n", "", 0},
    };
    long before = upstream_requests();
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        char req[4096], cl[64] = "";
        if (cases[i].body_len_extra >= 0)
            snprintf(cl, sizeof(cl), "Content-Length: %zu\r\n",
                     strlen(cases[i].body_prefix) + (size_t)hidden_len +
                         (size_t)cases[i].body_len_extra);
        int len =
            snprintf(req, sizeof(req),
                     "POST /checkout HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                     "%s%s\r\n%s%s",
                     cases[i].headers, cl, cases[i].body_prefix, hidden);
        int fd = connect_port(w.main.port);
        assert_true(fd >= 0);
        assert_int_equal(send(fd, req, (size_t)len, MSG_NOSIGNAL), len);
        char reply[8192];
        int closed = read_until_close(fd, reply, sizeof(reply), NULL, 3000);
        close(fd);
        int st = status_of(reply);
        if (!closed || (st != 400 && st != 0) || count_status_lines(reply) > 1 ||
            strstr(reply, "HTTP/1.1 200") != NULL)
            fail_msg("%s: closed %d, answer: %.300s", cases[i].name, closed, reply);
        /* every 400 is the contract's JSON invalid_request, also the malformed Content-Lengths
         * that libmicrohttpd refuses itself (server.c, answer_malformed_length) */
        if (st == 400 && (strstr(reply, "application/json") == NULL ||
                          strstr(reply, "\"invalid_request\"") == NULL))
            fail_msg("%s: %.300s", cases[i].name, reply);
        if (strstr(cases[i].name, "content-length ") == cases[i].name && st != 400)
            fail_msg("%s: not answered 400: %.300s", cases[i].name, reply);
    }
    assert_int_equal(upstream_requests(), before);

    /* strict is not broken: two well-framed pipelined requests are both answered */
    char two[2048];
    int a = checkout_request(two, sizeof(two), "");
    int b = checkout_request(two + a, sizeof(two) - (size_t)a, "Connection: close\r\n");
    int fd = connect_port(w.main.port);
    assert_true(fd >= 0);
    assert_int_equal(send(fd, two, (size_t)(a + b), MSG_NOSIGNAL), a + b);
    char reply[8192];
    assert_true(read_until_close(fd, reply, sizeof(reply), NULL, 5000));
    close(fd);
    assert_int_equal(count_status_lines(reply), 2);
    assert_non_null(strstr(strstr(reply, "HTTP/1.1 200") + 1, "HTTP/1.1 200"));
    assert_int_equal(upstream_requests(), before + 6);
}

/* A Content-Length libmicrohttpd cannot read as a 64-bit number: one JSON 413, then the close. */
static void test_content_length_too_large(void **state)
{
    (void)state;
    static const char req[] =
        "POST /checkout HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        "Content-Length: 99999999999999999999999\r\n\r\n{}";
    int fd = connect_port(w.main.port);
    assert_true(fd >= 0);
    assert_int_equal(send(fd, req, sizeof(req) - 1, MSG_NOSIGNAL), (ssize_t)(sizeof(req) - 1));
    char reply[8192];
    int closed = read_until_close(fd, reply, sizeof(reply), NULL, 3000);
    close(fd);
    if (!closed || status_of(reply) != 413 || count_status_lines(reply) != 1 ||
        strstr(reply, "\"body_too_large\"") == NULL)
        fail_msg("closed %d, answer: %.300s", closed, reply);
}

/* ---- half-closed clients ----------------------------------------------------------------------
 */

/* A client that sends a complete request and half-closes (shutdown(SHUT_WR)) gets its answer,
 * while 100 other connections are open. */
static void test_half_closed_client_answered(void **state)
{
    (void)state;
    enum { OTHERS = 100 };
    int others[OTHERS];
    for (int i = 0; i < OTHERS; i++) {
        others[i] = connect_port(w.main.port);
        assert_true(others[i] >= 0);
    }
    char req[1024];
    int len = checkout_request(req, sizeof(req), "");
    for (int round = 0; round < 10; round++) {
        int fd = connect_port(w.main.port);
        assert_true(fd >= 0);
        assert_int_equal(send(fd, req, (size_t)len, MSG_NOSIGNAL), len);
        shutdown(fd, SHUT_WR);
        char reply[4096];
        assert_true(read_until_close(fd, reply, sizeof(reply), NULL, 5000));
        close(fd);
        if (status_of(reply) != 200)
            fail_msg("round %d: %.200s", round, reply);
    }
    for (int i = 0; i < OTHERS; i++)
        close(others[i]);
}

/* ---- max_connections_per_ip (its own daemon, set from the environment) -------------------------
 */

static void test_connections_per_ip_capped(void **state)
{
    (void)state;
    enum { CAP = 5 };
    world capped = {0};
    char *env[] = {"CHECKOUTD_MAX_CONNECTIONS_PER_IP=5", NULL};
    assert_int_equal(start_world(&capped, "cap", "", env), 0);
    int fds[CAP];
    for (int i = 0; i < CAP - 1; i++) { /* the baseline scrape's connection may still count */
        fds[i] = connect_port(capped.port);
        assert_true(fds[i] >= 0);
    }
    usleep(200 * 1000);
    /* the 5th and 6th: at most one of them may stay, the other is closed without an answer */
    int extra[2], closed = 0;
    for (int i = 0; i < 2; i++)
        extra[i] = connect_port(capped.port);
    for (int i = 0; i < 2; i++) {
        assert_true(extra[i] >= 0);
        closed += read_until_close(extra[i], NULL, 0, NULL, 1000);
        close(extra[i]);
    }
    assert_true(closed >= 1);
    for (int i = 0; i < CAP - 1; i++)
        close(fds[i]);
    assert_baseline(&capped);
    assert_service_answers(capped.port);
    assert_int_equal(stop_world(&capped), 0);
}

/* ---- the whole-request deadline (v1.3 request_timeout_ms) -----------------------------------
 */

/* A body trickled one byte every 500 ms with request_timeout_ms 2000: answered 408
 * request_timeout and closed about 2 s after the request's first byte, not later than 4 s, while
 * checkouts on other connections are answered meanwhile. A header trickled the same way (its
 * header_timeout_ms is the default 10 s) is closed unanswered by the same deadline. Then the
 * descriptors and the open-connections gauge are back to their baseline. */
static void test_trickled_body_request_timeout(void **state)
{
    (void)state;
    world slow = {0};
    char *env[] = {"CHECKOUTD_REQUEST_TIMEOUT_MS=2000", NULL};
    assert_int_equal(start_world(&slow, "slowpost", "\"idle_timeout_ms\": 30000, ", env), 0);
    /* a real baseline: the warm-up scrape's own connection at least, and listening sockets */
    assert_true(slow.base_open >= 1);
    assert_true(slow.base_client_fds >= 1);
    static const char head[] = "POST /checkout HTTP/1.1\r\nHost: x\r\n"
                               "Content-Type: application/json\r\nContent-Length: 200\r\n\r\n";
    static const char line[] = "POST /checkout HTTP/1.1\r\nHost: x\r\nX-Slow: a";
    int body = connect_port(slow.port), header = connect_port(slow.port);
    assert_true(body >= 0 && header >= 0);
    double t0 = proc_now_ms();
    assert_int_equal(send(body, head, sizeof(head) - 1, MSG_NOSIGNAL), (ssize_t)sizeof(head) - 1);
    assert_int_equal(send(header, line, sizeof(line) - 1, MSG_NOSIGNAL), (ssize_t)sizeof(line) - 1);
    char reply[4096];
    size_t got = 0;
    double body_closed = -1, header_closed = -1;
    int answered = 0;
    while ((body_closed < 0 || header_closed < 0) && proc_now_ms() - t0 < 6000) {
        if (body_closed < 0) {
            send(body, "{", 1, MSG_NOSIGNAL);
            struct pollfd p = {.fd = body, .events = POLLIN};
            if (poll(&p, 1, 0) > 0) { /* the answer: read it to the end of the connection */
                assert_true(read_until_close(body, reply, sizeof(reply), &got, 3000));
                body_closed = proc_now_ms() - t0;
            }
        }
        if (header_closed < 0) {
            send(header, "a", 1, MSG_NOSIGNAL);
            struct pollfd p = {.fd = header, .events = POLLIN};
            if (poll(&p, 1, 0) > 0) {
                char none[256];
                size_t n = 0;
                assert_true(read_until_close(header, none, sizeof(none), &n, 3000));
                assert_int_equal(n, 0); /* no answer before the header is complete */
                header_closed = proc_now_ms() - t0;
            }
        }
        assert_service_answers(slow.port); /* normal checkouts go on meanwhile */
        answered++;
        usleep(500 * 1000);
    }
    close(body);
    close(header);
    if (body_closed < 1500 || body_closed > 4000 || header_closed < 1500 || header_closed > 4000)
        fail_msg("body closed after %.0f ms, header after %.0f ms (want about 2000)", body_closed,
                 header_closed);
    assert_int_equal(status_of(reply), 408);
    assert_non_null(strstr(reply, "\"request_timeout\""));
    assert_int_equal(count_status_lines(reply), 1);
    assert_true(answered >= 3);
    assert_true(metric(slow.port, "checkoutd_checkouts_total{outcome=\"request_timeout\"}") >= 1);
    assert_baseline(&slow);
    assert_int_equal(stop_world(&slow), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(test_trickled_headers_closed, check_baseline),
        cmocka_unit_test_teardown(test_keepalive_trickle_closed, check_baseline),
        cmocka_unit_test_teardown(test_idle_keepalive_closed, check_baseline),
        cmocka_unit_test_teardown(test_endless_chunked_body, check_baseline),
        cmocka_unit_test_teardown(test_oversized_bodies, check_baseline),
        cmocka_unit_test_teardown(test_framing_rules, check_baseline),
        cmocka_unit_test_teardown(test_content_length_too_large, check_baseline),
        cmocka_unit_test_teardown(test_half_closed_client_answered, check_baseline),
        cmocka_unit_test_teardown(test_connections_per_ip_capped, check_baseline),
        cmocka_unit_test_teardown(test_trickled_body_request_timeout, check_baseline),
    };
    return cmocka_run_group_tests_name("edge", tests, setup_all, teardown_all);
}
