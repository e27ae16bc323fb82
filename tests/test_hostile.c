/* Hostile clients against the real checkoutd (with the fake upstreams): trickled headers, huge
 * headers, oversized and malformed bodies, request smuggling shapes, clients that vanish mid-body
 * and mid-checkout, many idle connections, and bodies of garbage. Pass means: every one gets a
 * clear answer or a closed connection, nothing is answered twice, the service keeps answering
 * others, and nothing is left behind (in-flight back to 0; ASan checks leaks at exit). */
#include "support/http.h"
#include "support/proc.h"
#include "support/prom.h"

#include <arpa/inet.h>
#include <jansson.h>
#include <netinet/in.h>
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

static struct {
    proc upstreams, daemon;
    int up_port[3];
    int port;
    char config_path[64];
} w;

static const char order[] =
    "{\"address\": {\"postal_code\": \"1\", \"country\": \"US\"}, \"items\": [], "
    "\"payment\": {\"token\": \"tok_visa\"}}";

static int setup_world(void **state)
{
    (void)state;
    struct rlimit rl;
    getrlimit(RLIMIT_NOFILE, &rl);
    rl.rlim_cur = rl.rlim_max;
    setrlimit(RLIMIT_NOFILE, &rl);
    char *slow[] = {"--slow-ms", "3000", NULL};
    if (proc_start_upstreams(&w.upstreams, slow, "/dev/null", w.up_port) != 0)
        return -1;
    snprintf(w.config_path, sizeof(w.config_path), "/tmp/checkoutd-hostile-%d.json", (int)getpid());
    FILE *f = fopen(w.config_path, "w");
    if (f == NULL)
        return -1;
    fprintf(f,
            "{\"listen\": \"127.0.0.1:0\", \"deadline_ms\": 2000, \"max_body_bytes\": 4096, "
            "\"validations\": ["
            "{\"name\": \"address\", \"field\": \"address\", \"url\": \"http://127.0.0.1:%d/a\"},"
            "{\"name\": \"inventory\", \"field\": \"items\", \"url\": \"http://127.0.0.1:%d/i\"},"
            "{\"name\": \"payment\", \"field\": \"payment\", \"url\": \"http://127.0.0.1:%d/p\", "
            "\"timeout_ms\": 5000}]}\n",
            w.up_port[0], w.up_port[1], w.up_port[2]);
    fclose(f);
    char *quiet[] = {"--log-level", "warn", NULL};
    w.port = proc_start_checkoutd(&w.daemon, w.config_path, quiet, NULL, NULL);
    return w.port > 0 ? 0 : -1;
}

static int teardown_world(void **state)
{
    (void)state;
    int status = -1;
    proc_signal(&w.daemon, SIGTERM);
    proc_wait_exit(&w.daemon, 10000, &status);
    proc_stop(&w.daemon);
    proc_stop(&w.upstreams);
    unlink(w.config_path);
    if (status != 0) {
        fprintf(stderr, "checkoutd exit status %d, want 0 (ASan finds leaks at exit)\n", status);
        return -1;
    }
    return 0;
}

static int connect_daemon(void)
{
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)w.port)};
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

/* A normal checkout still answers 200, quickly. */
static void assert_service_answers(void)
{
    static const char *const json_only[] = {"Content-Type: application/json", NULL};
    char url[64];
    snprintf(url, sizeof(url), "http://127.0.0.1:%d/checkout", w.port);
    http_reply r;
    http_request("POST", url, json_only, order, strlen(order), 5000, &r);
    assert_int_equal(r.status, 200);
    assert_true(r.elapsed_ms < 2000);
    http_reply_free(&r);
}

static double inflight(void)
{
    char url[64];
    http_reply r;
    double v = -1;
    snprintf(url, sizeof(url), "http://127.0.0.1:%d/metrics", w.port);
    http_request("GET", url, NULL, NULL, 0, 5000, &r);
    prom_value(r.body, "checkoutd_inflight_checkouts", &v);
    http_reply_free(&r);
    return v;
}

/* Sends raw bytes, returns the reply (at most cap - 1 bytes) read until close or timeout. */
static int raw(const char *bytes, size_t n, char *reply, size_t cap, int timeout_ms)
{
    return http_raw(w.port, bytes, n, reply, cap, timeout_ms);
}

static int count_status_lines(const char *reply)
{
    int n = 0;
    for (const char *p = strstr(reply, "HTTP/1."); p != NULL; p = strstr(p + 1, "HTTP/1."))
        n++;
    return n;
}

/* ---- tests ------------------------------------------------------------------------------------
 */

/* 50 clients trickle their headers a byte at a time; others are served as usual meanwhile. */
static void test_trickled_headers_do_not_block_others(void **state)
{
    (void)state;
    enum { N = 50 };
    int fds[N];
    for (int i = 0; i < N; i++) {
        fds[i] = connect_daemon();
        assert_true(fds[i] >= 0);
    }
    static const char head[] = "POST /checkout HTTP/1.1\r\nHost: x\r\nContent-Type: applic";
    for (size_t b = 0; b < 10; b++) {
        for (int i = 0; i < N; i++)
            assert_int_equal(send(fds[i], head + b, 1, MSG_NOSIGNAL), 1);
        usleep(50 * 1000);
    }
    assert_service_answers();
    for (int i = 0; i < N; i++)
        close(fds[i]);
    assert_service_answers();
}

/* Sends GET /healthz with an X-Big header of n bytes and closes; the reply (NUL-terminated) is in
 * reply. Returns raw()'s count: <= 0 when the connection was closed without an answer. */
static int get_with_big_header(size_t n, char *reply, size_t cap)
{
    static const char tail[] = "\r\nConnection: close\r\n\r\n";
    char *req = malloc(n + 256);
    assert_non_null(req);
    int len = snprintf(req, 256, "GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: ");
    memset(req + len, 'a', n);
    memcpy(req + len + n, tail, sizeof(tail) - 1);
    int got = raw(req, (size_t)len + n + sizeof(tail) - 1, reply, cap, 5000);
    free(req);
    return got;
}

static void test_huge_header_refused(void **state)
{
    (void)state;
    char reply[4096];
    int got = get_with_big_header(1024 * 1024, reply, sizeof(reply));
    /* refused: an error status (431/413/400) or a closed connection — never a 200 */
    if (got > 0)
        assert_null(strstr(reply, " 200 "));
    assert_service_answers();
}

/* The client connection's memory pool (SRV_CONNECTION_MEMORY, 8 KiB) still takes a request with
 * 6 KiB of headers: a smaller pool saves memory per connection but must not refuse real requests
 * (bearer tokens, trace headers). */
static void test_large_headers_served(void **state)
{
    (void)state;
    char reply[4096];
    assert_true(get_with_big_header(6 * 1024, reply, sizeof(reply)) > 0);
    assert_non_null(strstr(reply, " 200 "));
}

static void test_malformed_bodies_get_400(void **state)
{
    (void)state;
    static const char *const json_only[] = {"Content-Type: application/json", NULL};
    char url[64];
    snprintf(url, sizeof(url), "http://127.0.0.1:%d/checkout", w.port);
    char deep[4000];
    memset(deep, '[', sizeof(deep));
    static const char nul_body[] = "{\"order_id\": \"a\0b\"}";
    static const char huge_number[] =
        "{\"order_id\": 1e999999999, \"address\": {}, \"items\": [], \"payment\": {}}";
    static const char big_int[] = "{\"order_id\": 123456789012345678901234567890}";
    struct {
        const char *body;
        size_t len;
    } cases[] = {
        {deep, sizeof(deep)},
        {nul_body, sizeof(nul_body) - 1},
        {"\x80\x81\xfe\xff", 4},
        {"{\"order_id\": \"\xc3\x28\"}", 17},
        {"\x01\x02\x03 garbage", 12},
        {huge_number, sizeof(huge_number) - 1},
        {big_int, sizeof(big_int) - 1},
        {"{\"a\": 1, \"a\": 2}", 16},
        {"", 0},
        {"null", 4},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        http_reply r;
        http_request("POST", url, json_only, cases[i].body, cases[i].len, 5000, &r);
        if (r.status != 400)
            fail_msg("case %zu: status %ld, want 400", i, r.status);
        const char *code =
            json_string_value(json_object_get(json_object_get(r.json, "error"), "code"));
        assert_non_null(code);
        assert_true(strcmp(code, "invalid_json") == 0 || strcmp(code, "invalid_request") == 0);
        http_reply_free(&r);
    }
    assert_service_answers();
}

/* Duplicate Content-Length, and Content-Length with Transfer-Encoding: an error or a close, and
 * never a second request parsed out of the first one's body. */
static void test_smuggling_shapes_refused(void **state)
{
    (void)state;
    static const char dup_cl[] = "POST /checkout HTTP/1.1\r\nHost: x\r\n"
                                 "Content-Type: application/json\r\n"
                                 "Content-Length: 2\r\nContent-Length: 40\r\n\r\n"
                                 "{}GET /nope HTTP/1.1\r\nHost: x\r\n\r\n";
    static const char cl_te[] =
        "POST /checkout HTTP/1.1\r\nHost: x\r\n"
        "Content-Type: application/json\r\n"
        "Content-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n"
        "0\r\n\r\nGET /nope HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
    char reply[8192];
    raw(dup_cl, sizeof(dup_cl) - 1, reply, sizeof(reply), 2000);
    assert_true(count_status_lines(reply) <= 1);
    assert_null(strstr(reply, " 404 ")); /* the smuggled GET /nope was never parsed */
    raw(cl_te, sizeof(cl_te) - 1, reply, sizeof(reply), 2000);
    assert_true(count_status_lines(reply) <= 1);
    assert_null(strstr(reply, " 404 "));
    assert_service_answers();
}

/* Clients that go away mid-body and mid-checkout leave nothing behind: in-flight returns to 0 by
 * the deadline (2 s) at the latest. */
static void test_vanishing_clients(void **state)
{
    (void)state;
    static const char partial[] = "POST /checkout HTTP/1.1\r\nHost: x\r\n"
                                  "Content-Type: application/json\r\nContent-Length: 500\r\n\r\n"
                                  "{\"order_id\": \"x\", \"addr";
    char slow_req[512];
    const char *slow_body = "{\"address\": {\"postal_code\": \"1\", \"country\": \"US\"}, "
                            "\"items\": [], \"payment\": {\"token\": \"tok_slow\"}}";
    int len = snprintf(slow_req, sizeof(slow_req),
                       "POST /checkout HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                       "Content-Length: %zu\r\n\r\n%s",
                       strlen(slow_body), slow_body);
    for (int i = 0; i < 20; i++) {
        int a = connect_daemon(), b = connect_daemon();
        assert_true(a >= 0 && b >= 0);
        assert_true(send(a, partial, sizeof(partial) - 1, MSG_NOSIGNAL) > 0);
        assert_true(send(b, slow_req, (size_t)len, MSG_NOSIGNAL) > 0);
        close(a);
        close(b);
    }
    usleep(200 * 1000);
    assert_true(inflight() >= 1); /* the slow checkouts are still running */
    double until = proc_now_ms() + 6000;
    while (inflight() != 0 && proc_now_ms() < until)
        usleep(50 * 1000);
    assert_true(inflight() == 0);
    assert_service_answers();
}

/* Thousands of idle connections: the service still answers a new client. */
static void test_many_idle_connections(void **state)
{
    (void)state;
    enum { N = 3000 };
    int *fds = malloc(N * sizeof(int));
    int opened = 0;
    for (int i = 0; i < N; i++) {
        fds[i] = connect_daemon();
        if (fds[i] >= 0)
            opened++;
    }
    assert_true(opened > N / 2);
    assert_service_answers();
    for (int i = 0; i < N; i++)
        if (fds[i] >= 0)
            close(fds[i]);
    free(fds);
    assert_service_answers();
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_trickled_headers_do_not_block_others),
        cmocka_unit_test(test_huge_header_refused),
        cmocka_unit_test(test_large_headers_served),
        cmocka_unit_test(test_malformed_bodies_get_400),
        cmocka_unit_test(test_smuggling_shapes_refused),
        cmocka_unit_test(test_vanishing_clients),
        cmocka_unit_test(test_many_idle_connections),
    };
    return cmocka_run_group_tests_name("hostile", tests, setup_world, teardown_world);
}
