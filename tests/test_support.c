/* test_support — shows that the test support modules (stub, http, proc) do what their headers say.
 * Every test gets a fresh fixture; teardown stops its stub and process and frees its reply even
 * when an assertion failed half-way. Time bounds are generous: the machines are shared and noisy.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "support/http.h"
#include "support/proc.h"
#include "support/stub.h"

typedef struct fixture {
    stub *s;
    proc p;
    http_reply r;
    char url[256];
    char tmp[64]; /* a temporary file to unlink, or "" */
} fixture;

static double now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1000.0 + (double)ts.tv_nsec / 1e6;
}

static int setup(void **state)
{
    fixture *f = calloc(1, sizeof *f);

    if (f == NULL)
        return -1;
    f->s = stub_start();
    if (f->s == NULL) {
        free(f);
        return -1;
    }
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    fixture *f = *state;

    proc_stop(&f->p);
    stub_stop(f->s);
    http_reply_free(&f->r);
    if (f->tmp[0] != '\0')
        unlink(f->tmp);
    free(f);
    return 0;
}

/* f->url = http://127.0.0.1:PORT<target> of the fixture's stub. */
static const char *url(fixture *f, const char *target)
{
    snprintf(f->url, sizeof f->url, "http://127.0.0.1:%d%s", stub_port(f->s), target);
    return f->url;
}

static void test_stub_statuses(void **state)
{
    fixture *f = *state;
    static const long statuses[] = {200, 201, 400, 402, 409, 422, 500, 503};

    for (size_t i = 0; i < sizeof statuses / sizeof statuses[0]; i++) {
        char target[64];
        const char *method = i % 2 == 0 ? "GET" : "POST";
        const char *body = i % 2 == 0 ? NULL : "{\"a\":1}";

        snprintf(target, sizeof target, "/v/%ld?status=%ld", statuses[i], statuses[i]);
        assert_int_equal(
            http_request(method, url(f, target), NULL, body, body ? 7 : 0, 5000, &f->r), 0);
        assert_int_equal(f->r.status, statuses[i]);
        assert_non_null(f->r.json);
        assert_string_equal(http_reply_header(&f->r, "content-type"), "application/json");
        if (statuses[i] >= 300) {
            assert_string_equal(json_string_value(json_object_get(f->r.json, "error")),
                                "stub_error");
            assert_int_equal(json_integer_value(json_object_get(f->r.json, "status")), statuses[i]);
        } else {
            assert_true(json_is_true(json_object_get(f->r.json, "ok")));
            snprintf(target, sizeof target, "/v/%ld", statuses[i]);
            assert_string_equal(json_string_value(json_object_get(f->r.json, "path")), target);
        }
        http_reply_free(&f->r);
    }
}

static void test_stub_default_bodies(void **state)
{
    fixture *f = *state;

    assert_int_equal(http_request("GET", url(f, "/path/x"), NULL, NULL, 0, 5000, &f->r), 0);
    assert_int_equal(f->r.status, 200);
    assert_string_equal(f->r.body, "{\"ok\":true,\"path\":\"/path/x\"}");
    http_reply_free(&f->r);

    assert_int_equal(http_request("POST", url(f, "/y?status=409"), NULL, "{}", 2, 5000, &f->r), 0);
    assert_int_equal(f->r.status, 409);
    assert_string_equal(f->r.body, "{\"error\":\"stub_error\",\"status\":409}");
    http_reply_free(&f->r);
}

static void test_stub_body_kinds(void **state)
{
    fixture *f = *state;

    assert_int_equal(http_request("GET", url(f, "/g?body=garbage"), NULL, NULL, 0, 5000, &f->r), 0);
    assert_int_equal(f->r.status, 200);
    assert_string_equal(f->r.body, "not json at all");
    assert_null(f->r.json);
    http_reply_free(&f->r);

    assert_int_equal(http_request("GET", url(f, "/a?body=array"), NULL, NULL, 0, 5000, &f->r), 0);
    assert_true(json_is_array(f->r.json));
    assert_int_equal(json_array_size(f->r.json), 3);
    http_reply_free(&f->r);

    assert_int_equal(
        http_request("GET", url(f, "/e?body=empty&status=201"), NULL, NULL, 0, 5000, &f->r), 0);
    assert_int_equal(f->r.status, 201);
    assert_int_equal(f->r.body_len, 0);
    assert_string_equal(f->r.body, "");
    assert_null(f->r.json);
    http_reply_free(&f->r);

    assert_int_equal(
        http_request("GET", url(f, "/b?body=big&big_bytes=5000"), NULL, NULL, 0, 5000, &f->r), 0);
    assert_int_equal(f->r.body_len, 5000);
    assert_true(json_is_string(f->r.json));
    assert_int_equal(json_string_length(f->r.json), 4998);
    http_reply_free(&f->r);

    /* The default size is above the contract's default max_upstream_body_bytes (1 MiB). */
    assert_int_equal(http_request("GET", url(f, "/b?body=big"), NULL, NULL, 0, 10000, &f->r), 0);
    assert_int_equal(f->r.body_len, 2097152);
    assert_true(json_is_string(f->r.json));
    http_reply_free(&f->r);

    assert_int_equal(http_request("GET", url(f, "/x?status=abc"), NULL, NULL, 0, 5000, &f->r), 0);
    assert_int_equal(f->r.status, 400);
    assert_string_equal(json_string_value(json_object_get(f->r.json, "error")), "stub_bad_arg");
    http_reply_free(&f->r);

    assert_int_equal(stub_requests(f->s), 6);
    assert_int_equal(stub_answered(f->s), 6);
    assert_int_equal(stub_closed_early(f->s), 0);
}

static void test_stub_delay(void **state)
{
    fixture *f = *state;

    assert_int_equal(
        http_request("GET", url(f, "/d?delay_ms=300&status=502"), NULL, NULL, 0, 10000, &f->r), 0);
    assert_int_equal(f->r.status, 502);
    assert_true(f->r.elapsed_ms >= 290.0);
    assert_int_equal(stub_closed_early(f->s), 0);
    assert_int_equal(stub_answered(f->s), 1);
}

static void test_stub_closed_early(void **state)
{
    fixture *f = *state;
    double t0 = now_ms();

    /* The client gives up after 200 ms; the stub must notice the close long before its 3 s. */
    assert_int_equal(http_request("POST", url(f, "/slow?delay_ms=3000"), NULL, "{}", 2, 200, &f->r),
                     -1);
    assert_int_equal(f->r.status, 0);
    assert_int_equal(f->r.curl_code, 28); /* CURLE_OPERATION_TIMEDOUT */
    assert_true(f->r.elapsed_ms < 2000.0);
    assert_int_equal(stub_wait_closed_early(f->s, 1, 2000), 0);
    assert_true(now_ms() - t0 < 2500.0);
    assert_int_equal(stub_closed_early(f->s), 1);
    assert_int_equal(stub_answered(f->s), 0);
    assert_int_equal(stub_requests(f->s), 1);
}

static void test_stub_records_last_request(void **state)
{
    fixture *f = *state;
    const char *hdrs[] = {"X-Request-Id: req-42", "Idempotency-Key: idem-7",
                          "Content-Type: application/json", NULL};
    char v[64];
    char *body;

    assert_int_equal(stub_last_header(f->s, "X-Request-Id", v, sizeof v), -1);
    assert_null(stub_last_body(f->s));
    assert_int_equal(
        http_request("POST", url(f, "/r"), hdrs, "{\"order_id\":\"o1\"}", 17, 5000, &f->r), 0);
    assert_int_equal(stub_last_header(f->s, "x-request-id", v, sizeof v), 0);
    assert_string_equal(v, "req-42");
    assert_int_equal(stub_last_header(f->s, "Idempotency-Key", v, sizeof v), 0);
    assert_string_equal(v, "idem-7");
    assert_int_equal(stub_last_header(f->s, "traceparent", v, sizeof v), -1);
    /* Truncation keeps the buffer bounded and terminated. */
    assert_int_equal(stub_last_header(f->s, "X-Request-Id", v, 4), 0);
    assert_string_equal(v, "req");
    body = stub_last_body(f->s);
    assert_non_null(body);
    assert_string_equal(body, "{\"order_id\":\"o1\"}");
    free(body);
}

static void test_http_chunked_upload(void **state)
{
    fixture *f = *state;
    const char *hdrs[] = {"Content-Type: application/json; charset=utf-8", NULL};
    const char *json = "{\"order_id\":\"ord-chunked\",\"items\":[1,2,3]}";
    char v[64];
    char *body;

    assert_int_equal(http_request_chunked("POST", url(f, "/c?status=201"), hdrs, json, strlen(json),
                                          7, 5, 5000, &f->r),
                     0);
    assert_int_equal(f->r.status, 201);
    assert_int_equal(stub_last_header(f->s, "Transfer-Encoding", v, sizeof v), 0);
    assert_string_equal(v, "chunked");
    assert_int_equal(stub_last_header(f->s, "Content-Length", v, sizeof v), -1);
    body = stub_last_body(f->s);
    assert_non_null(body);
    assert_string_equal(body, json);
    free(body);
}

static void test_http_reply_headers(void **state)
{
    fixture *f = *state;

    assert_int_equal(http_request("GET", url(f, "/h"), NULL, NULL, 0, 5000, &f->r), 0);
    assert_non_null(f->r.headers);
    assert_memory_equal(f->r.headers, "HTTP/1.1 200", 12);
    assert_string_equal(http_reply_header(&f->r, "CONTENT-TYPE"), "application/json");
    assert_string_equal(http_reply_header(&f->r, "Content-Length"), "23");
    assert_null(http_reply_header(&f->r, "Retry-After"));
    http_reply_free(&f->r);
    http_reply_free(&f->r); /* idempotent */
}

static void test_http_raw(void **state)
{
    fixture *f = *state;
    static const char req[] =
        "GET /raw?status=201 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
    char reply[4096];
    int n;

    n = http_raw(stub_port(f->s), req, sizeof req - 1, reply, sizeof reply, 5000);
    assert_true(n > 0);
    assert_int_equal(strncmp(reply, "HTTP/1.1 201", 12), 0);
    assert_non_null(strstr(reply, "{\"ok\":true,\"path\":\"/raw\"}"));

    /* A malformed request line still gets an answer (MHD's 400) or at least a close: no hang. */
    n = http_raw(stub_port(f->s), "BLAH\r\n\r\n", 8, reply, sizeof reply, 5000);
    assert_true(n >= 0);

    /* A small cap truncates and terminates. */
    n = http_raw(stub_port(f->s), req, sizeof req - 1, reply, 9, 5000);
    assert_int_equal(n, 8);
    assert_string_equal(reply, "HTTP/1.1");
}

static void test_http_free_port_refused(void **state)
{
    fixture *f = *state;
    int port = http_free_port();
    char u[64], reply[16];

    assert_true(port > 0 && port < 65536);
    snprintf(u, sizeof u, "http://127.0.0.1:%d/", port);
    assert_int_equal(http_request("GET", u, NULL, NULL, 0, 5000, &f->r), -1);
    assert_int_equal(f->r.status, 0);
    assert_int_equal(f->r.curl_code, 7); /* CURLE_COULDNT_CONNECT */
    assert_true(f->r.error[0] != '\0');
    assert_int_equal(http_raw(port, "x", 1, reply, sizeof reply, 2000), -1);
}

typedef struct slow_call {
    char url[256];
    int rc;
    long status;
} slow_call;

static void *slow_client(void *arg)
{
    slow_call *c = arg;
    http_reply r;

    c->rc = http_request("GET", c->url, NULL, NULL, 0, 20000, &r);
    c->status = r.status;
    http_reply_free(&r);
    return NULL;
}

static void test_stub_stop_with_client_waiting(void **state)
{
    fixture *f = *state;
    slow_call c = {.rc = 99};
    pthread_t t;
    double t0;

    snprintf(c.url, sizeof c.url, "%s", url(f, "/wait?delay_ms=15000"));
    assert_int_equal(pthread_create(&t, NULL, slow_client, &c), 0);
    for (int i = 0; i < 1000 && stub_requests(f->s) == 0; i++)
        usleep(5000);
    assert_int_equal(stub_requests(f->s), 1);
    t0 = now_ms();
    stub_stop(f->s);
    f->s = NULL;
    assert_true(now_ms() - t0 < 3000.0);
    pthread_join(t, NULL);
    assert_int_equal(c.rc, -1);
    assert_int_equal(c.status, 0);
}

static void test_proc_listening_line_and_stop(void **state)
{
    fixture *f = *state;
    /* exec: sleep replaces the shell, so the PID we stop is the one that holds the pipe. */
    char *const argv[] = {"/bin/sh", "-c",
                          "echo starting; echo \"x listening on 127.0.0.1:4242\"; exec sleep 30",
                          NULL};
    char line[256];
    double t0;

    assert_int_equal(proc_spawn(&f->p, argv, NULL, NULL), 0);
    assert_true(f->p.pid > 0);
    assert_int_equal(proc_wait_line(&f->p, "listening on", line, sizeof line, 10000), 0);
    assert_string_equal(line, "x listening on 127.0.0.1:4242");
    assert_int_equal(proc_port_from_line(line), 4242);
    assert_int_equal(proc_thread_count(f->p.pid), 1);
    t0 = now_ms();
    proc_stop(&f->p);
    assert_true(now_ms() - t0 < 3000.0);
    assert_int_equal(f->p.exit_status, 128 + SIGTERM);
    assert_int_equal(f->p.reaped, 1);
    assert_int_equal(proc_signal(&f->p, SIGTERM), -1); /* never signal a reaped PID */
    proc_stop(&f->p);                                  /* idempotent */
}

static void test_proc_env_stderr_exit_code(void **state)
{
    fixture *f = *state;
    char *const argv[] = {"sh", "-c", "echo \"v=$SUPPORT_FOO/$HOME_SET\"; echo oops >&2; exit 3",
                          NULL};
    char *const env[] = {"SUPPORT_FOO=bar", "HOME_SET=yes", NULL};
    char line[128], err[64] = "";
    int status = -1, fd;
    FILE *fp;

    snprintf(f->tmp, sizeof f->tmp, "/tmp/test_support_stderr.XXXXXX");
    fd = mkstemp(f->tmp);
    assert_true(fd >= 0);
    close(fd);
    assert_int_equal(proc_spawn(&f->p, argv, env, f->tmp), 0);
    assert_int_equal(proc_wait_line(&f->p, "v=", line, sizeof line, 10000), 0);
    assert_string_equal(line, "v=bar/yes");
    assert_int_equal(proc_wait_exit(&f->p, 10000, &status), 0);
    assert_int_equal(status, 3);
    fp = fopen(f->tmp, "r");
    assert_non_null(fp);
    if (fgets(err, sizeof err, fp) == NULL)
        err[0] = '\0';
    fclose(fp);
    assert_string_equal(err, "oops\n");
}

static void test_proc_line_buffering_and_eof(void **state)
{
    fixture *f = *state;
    char *const argv[] = {"/bin/sh", "-c", "printf 'a1\\nb2\\nc3\\npartial'", NULL};
    char line[64];
    double t0;

    assert_int_equal(proc_spawn(&f->p, argv, NULL, NULL), 0);
    assert_int_equal(proc_wait_line(&f->p, "b", line, sizeof line, 10000), 0);
    assert_string_equal(line, "b2");
    assert_int_equal(proc_wait_line(&f->p, "", line, sizeof line, 10000), 0);
    assert_string_equal(line, "c3");
    /* EOF ends the wait at once, not at the timeout; an unterminated last line is not a line. */
    t0 = now_ms();
    assert_int_equal(proc_wait_line(&f->p, "zzz", line, sizeof line, 10000), -1);
    assert_true(now_ms() - t0 < 5000.0);
    assert_int_equal(proc_wait_exit(&f->p, 10000, NULL), 0);
    assert_int_equal(f->p.exit_status, 0);
}

static void test_proc_wait_line_timeout(void **state)
{
    fixture *f = *state;
    char *const argv[] = {"sleep", "30", NULL};
    char line[64];
    double t0 = now_ms();
    int status = 0;

    assert_int_equal(proc_spawn(&f->p, argv, NULL, NULL), 0);
    assert_int_equal(proc_wait_line(&f->p, "never", line, sizeof line, 150), -1);
    assert_true(now_ms() - t0 >= 140.0);
    assert_int_equal(proc_wait_exit(&f->p, 50, &status), -1); /* still running */
    assert_int_equal(proc_signal(&f->p, SIGKILL), 0);
    assert_int_equal(proc_wait_exit(&f->p, 10000, &status), 0);
    assert_int_equal(status, 128 + SIGKILL);
}

static void test_proc_spawn_failure(void **state)
{
    fixture *f = *state;
    char *const argv[] = {"/nonexistent/checkoutd-binary", NULL};
    int fds = proc_fd_count(getpid());
    int rc = proc_spawn(&f->p, argv, NULL, NULL);
    int err = errno; /* before any assertion can touch errno */

    assert_int_equal(rc, -1);
    assert_int_equal(err, ENOENT);
    assert_int_equal(f->p.pid, 0);
    assert_int_equal(proc_fd_count(getpid()), fds); /* no pipe left open */
    proc_stop(&f->p);                               /* no-op on a failed spawn */
}

static void test_proc_port_from_line(void **state)
{
    (void)state;
    assert_int_equal(proc_port_from_line("checkoutd listening on 127.0.0.1:8080"), 8080);
    assert_int_equal(proc_port_from_line("{\"msg\":\"x\"} listening on [::1]:9000 (v1)"), 9000);
    assert_int_equal(proc_port_from_line("listening on 127.0.0.1:65535\r"), 65535);
    assert_int_equal(proc_port_from_line("listening on 127.0.0.1:0"), -1);
    assert_int_equal(proc_port_from_line("listening on 127.0.0.1:99999"), -1);
    assert_int_equal(proc_port_from_line("listening on 127.0.0.1:80x"), -1);
    assert_int_equal(proc_port_from_line("listening on 127.0.0.1"), -1);
    assert_int_equal(proc_port_from_line("no port here"), -1);
    assert_int_equal(proc_port_from_line(NULL), -1);
}

static void test_proc_counts(void **state)
{
    fixture *f = *state;
    int threads = proc_thread_count(getpid());
    int fds = proc_fd_count(getpid());
    stub *extra;
    int fd;

    (void)f;
    assert_true(threads >= 2); /* us + the fixture stub's listening thread */
    assert_true(fds >= 3);
    extra = stub_start();
    assert_non_null(extra);
    assert_true(proc_thread_count(getpid()) >= threads + 1);
    stub_stop(extra);
    fd = dup(0);
    assert_true(fd >= 0);
    assert_int_equal(proc_fd_count(getpid()), fds + 1);
    close(fd);
    assert_int_equal(proc_fd_count(getpid()), fds);
    assert_int_equal(proc_thread_count(-5), -1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_stub_statuses, setup, teardown),
        cmocka_unit_test_setup_teardown(test_stub_default_bodies, setup, teardown),
        cmocka_unit_test_setup_teardown(test_stub_body_kinds, setup, teardown),
        cmocka_unit_test_setup_teardown(test_stub_delay, setup, teardown),
        cmocka_unit_test_setup_teardown(test_stub_closed_early, setup, teardown),
        cmocka_unit_test_setup_teardown(test_stub_records_last_request, setup, teardown),
        cmocka_unit_test_setup_teardown(test_http_chunked_upload, setup, teardown),
        cmocka_unit_test_setup_teardown(test_http_reply_headers, setup, teardown),
        cmocka_unit_test_setup_teardown(test_http_raw, setup, teardown),
        cmocka_unit_test_setup_teardown(test_http_free_port_refused, setup, teardown),
        cmocka_unit_test_setup_teardown(test_stub_stop_with_client_waiting, setup, teardown),
        cmocka_unit_test_setup_teardown(test_proc_listening_line_and_stop, setup, teardown),
        cmocka_unit_test_setup_teardown(test_proc_env_stderr_exit_code, setup, teardown),
        cmocka_unit_test_setup_teardown(test_proc_line_buffering_and_eof, setup, teardown),
        cmocka_unit_test_setup_teardown(test_proc_wait_line_timeout, setup, teardown),
        cmocka_unit_test_setup_teardown(test_proc_spawn_failure, setup, teardown),
        cmocka_unit_test(test_proc_port_from_line),
        cmocka_unit_test_setup_teardown(test_proc_counts, setup, teardown),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
