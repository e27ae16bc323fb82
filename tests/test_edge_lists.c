/* edge (service/edge.c) by itself: the three deadline lists, the sweep, the idle check over a real
 * TCP connection, and the per-address cap. Sockets are socketpairs (a shutdown shows as
 * end-of-file on the other end) or a loopback TCP pair where TCP_INFO matters. */
#include "../service/edge.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cmocka.h>

/* 1 when the peer end reads end-of-file now (the edge shut the socket), 0 when nothing to read. */
static int peer_sees_eof(int peer)
{
    char c;
    ssize_t r = recv(peer, &c, 1, MSG_DONTWAIT);
    if (r == 0)
        return 1;
    assert_true(r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK));
    return 0;
}

static void pair(int sv[2])
{
    assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
}

static struct sockaddr_in v4(const char *ip)
{
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(1234)};
    inet_pton(AF_INET, ip, &a.sin_addr);
    return a;
}

static void test_header_deadline_in_order(void **state)
{
    (void)state;
    edge e;
    edge_init(&e, 100, 30000, NULL);
    assert_int_equal(edge_wait_ms(&e, 0), -1);
    int sv[3][2];
    edge_conn *c[3];
    for (int i = 0; i < 3; i++) {
        pair(sv[i]);
        c[i] = edge_open(&e, sv[i][0], NULL, 0, 10 * i);
        assert_non_null(c[i]);
    }
    assert_int_equal(edge_wait_ms(&e, 50), 50);
    edge_sweep(&e, 99);
    assert_false(peer_sees_eof(sv[0][1]));
    assert_int_equal(edge_sweep(&e, 100), 10); /* the first is due; the next in 10 ms */
    assert_true(peer_sees_eof(sv[0][1]));
    assert_false(peer_sees_eof(sv[1][1]));
    edge_headers_done(&e, c[2]); /* its header came: no deadline any more */
    assert_int_equal(edge_sweep(&e, 500), -1);
    assert_true(peer_sees_eof(sv[1][1]));
    assert_false(peer_sees_eof(sv[2][1]));
    assert_int_equal(e.closed, 2);
    for (int i = 0; i < 3; i++) {
        edge_close(&e, c[i]);
        close(sv[i][0]);
        close(sv[i][1]);
    }
}

/* Silent after its answer: looked at every check_ms, closed once idle_ms passed. */
static void test_idle_close(void **state)
{
    (void)state;
    edge e;
    edge_init(&e, 1000, 200, NULL); /* check every 100 ms */
    int sv[2];
    pair(sv);
    edge_conn *c = edge_open(&e, sv[0], NULL, 0, 0);
    edge_headers_done(&e, c);
    edge_answered(&e, c, 1000);
    assert_int_equal(edge_wait_ms(&e, 1000), 100);
    assert_int_equal(edge_sweep(&e, 1100), 100); /* looked at: still idle, next check */
    assert_false(peer_sees_eof(sv[1]));
    edge_sweep(&e, 1200);
    assert_true(peer_sees_eof(sv[1]));
    edge_close(&e, c);
    close(sv[0]);
    close(sv[1]);
}

/* A kept-alive TCP connection that sends a byte after its answer moves to the header deadline. */
static void test_idle_then_trickle(void **state)
{
    (void)state;
    int ls = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = v4("127.0.0.1");
    a.sin_port = 0;
    assert_int_equal(bind(ls, (struct sockaddr *)&a, sizeof(a)), 0);
    assert_int_equal(listen(ls, 1), 0);
    socklen_t alen = sizeof(a);
    getsockname(ls, (struct sockaddr *)&a, &alen);
    int client = socket(AF_INET, SOCK_STREAM, 0);
    assert_int_equal(connect(client, (struct sockaddr *)&a, sizeof(a)), 0);
    int server = accept(ls, NULL, NULL);
    assert_true(server >= 0);

    edge e;
    edge_init(&e, 400, 5000, NULL); /* check every 200 ms */
    edge_conn *c = edge_open(&e, server, NULL, 0, edge_now_ms());
    edge_headers_done(&e, c);
    long long answered = edge_now_ms();
    edge_answered(&e, c, answered);
    /* the byte must come more than EDGE_HEARD_SLACK_MS (10) after the answer, as the kernel's
     * jiffies count it: 150 ms leaves room for a coarse HZ; a loaded machine only lengthens it */
    usleep(150 * 1000);
    assert_int_equal(send(client, "P", 1, 0), 1);
    char ch;
    assert_int_equal(recv(server, &ch, 1, 0), 1); /* what libmicrohttpd would do */
    usleep(200 * 1000);
    edge_sweep(&e, edge_now_ms());
    assert_int_equal(c->state, EDGE_HEADERS);
    assert_false(peer_sees_eof(client));
    edge_sweep(&e, edge_now_ms() + 400);
    assert_true(peer_sees_eof(client));
    edge_close(&e, c);
    close(server);
    close(client);
    close(ls);
}

static void test_linger(void **state)
{
    (void)state;
    edge e;
    edge_init(&e, 100, 1000, NULL);
    int sv[2];
    pair(sv);
    edge_conn *c = edge_open(&e, sv[0], NULL, 0, 0);
    edge_headers_done(&e, c);
    edge_linger(&e, c, 50);
    assert_int_equal(edge_wait_ms(&e, 50), EDGE_LINGER_MS);
    edge_sweep(&e, 50 + EDGE_LINGER_MS - 1);
    assert_false(peer_sees_eof(sv[1]));
    edge_sweep(&e, 50 + EDGE_LINGER_MS);
    assert_true(peer_sees_eof(sv[1]));
    edge_answered(&e, c, 2000); /* shut already: no idle watch */
    assert_int_equal(c->state, EDGE_NONE);
    edge_close(&e, c);
    close(sv[0]);
    close(sv[1]);
}

static void test_cap_per_address(void **state)
{
    (void)state;
    edge_ipcap *cap = edge_ipcap_new(2);
    assert_non_null(cap);
    edge e;
    edge_init(&e, 1000, 1000, cap);
    struct sockaddr_in one = v4("10.0.0.1"), other = v4("10.0.0.2");
    struct sockaddr_in6 mapped = {.sin6_family = AF_INET6};
    inet_pton(AF_INET6, "::ffff:10.0.0.1", &mapped.sin6_addr);
    int sv[4][2];
    edge_conn *c[4];
    for (int i = 0; i < 4; i++)
        pair(sv[i]);
    c[0] = edge_open(&e, sv[0][0], (struct sockaddr *)&one, sizeof(one), 0);
    c[1] = edge_open(&e, sv[1][0], (struct sockaddr *)&mapped, sizeof(mapped), 0);
    c[2] = edge_open(&e, sv[2][0], (struct sockaddr *)&one, sizeof(one), 0);
    c[3] = edge_open(&e, sv[3][0], (struct sockaddr *)&other, sizeof(other), 0);
    assert_false(edge_refused(c[0]));
    assert_false(edge_refused(c[1]));
    assert_true(edge_refused(c[2])); /* the third of 10.0.0.1 (the mapped one is the same) */
    assert_true(peer_sees_eof(sv[2][1]));
    assert_false(edge_refused(c[3]));
    assert_int_equal(edge_ipcap_count(cap, (struct sockaddr *)&one), 2);
    edge_close(&e, c[2]); /* a refused one releases nothing */
    assert_int_equal(edge_ipcap_count(cap, (struct sockaddr *)&one), 2);
    edge_close(&e, c[0]);
    assert_int_equal(edge_ipcap_count(cap, (struct sockaddr *)&one), 1);
    c[0] = edge_open(&e, sv[0][0], (struct sockaddr *)&one, sizeof(one), 0);
    assert_false(edge_refused(c[0]));
    edge_close(&e, c[0]);
    edge_close(&e, c[1]);
    edge_close(&e, c[3]);
    assert_int_equal(edge_ipcap_count(cap, (struct sockaddr *)&one), 0);
    assert_int_equal(edge_ipcap_count(cap, (struct sockaddr *)&other), 0);
    for (int i = 0; i < 4; i++) {
        close(sv[i][0]);
        close(sv[i][1]);
    }
    edge_ipcap_free(cap);
}

/* The whole-request deadline: from the opening, through the header and the body; a request with
 * an owner goes to the expire callback, one without is shut; a finished request has none. */
static int expired_calls;
static int on_expire(void *arg, edge_conn *c)
{
    (void)arg;
    (void)c;
    expired_calls++;
    return 0; /* shut it */
}

static void test_request_deadline(void **state)
{
    (void)state;
    edge e;
    edge_init(&e, 1000, 30000, NULL);
    edge_set_request(&e, 300, on_expire, NULL);
    int sv[3][2];
    edge_conn *c[3];
    for (int i = 0; i < 3; i++) {
        pair(sv[i]);
        c[i] = edge_open(&e, sv[i][0], NULL, 0, 10 * i);
        assert_non_null(c[i]);
    }
    int owner = 1;
    edge_headers_done(&e, c[0]); /* the body goes on: the request deadline stays */
    edge_request_owner(c[0], &owner);
    edge_headers_done(&e, c[2]);
    edge_request_owner(c[2], &owner);
    edge_request_done(&e, c[2]); /* its body came: no deadline */
    assert_int_equal(edge_wait_ms(&e, 0), 300);
    edge_sweep(&e, 299);
    assert_false(peer_sees_eof(sv[0][1]));
    assert_int_equal(expired_calls, 0);
    edge_sweep(&e, 300);
    assert_int_equal(expired_calls, 1); /* c[0]: header complete, the callback decides */
    assert_true(peer_sees_eof(sv[0][1]));
    assert_false(peer_sees_eof(sv[1][1]));
    edge_sweep(&e, 310); /* c[1]: no header yet (its header deadline is 1000): shut */
    assert_int_equal(expired_calls, 1);
    assert_true(peer_sees_eof(sv[1][1]));
    assert_int_equal(edge_sweep(&e, 5000), -1);
    assert_false(peer_sees_eof(sv[2][1]));
    for (int i = 0; i < 3; i++) {
        edge_close(&e, c[i]);
        close(sv[i][0]);
        close(sv[i][1]);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_header_deadline_in_order), cmocka_unit_test(test_idle_close),
        cmocka_unit_test(test_idle_then_trickle),        cmocka_unit_test(test_linger),
        cmocka_unit_test(test_cap_per_address),          cmocka_unit_test(test_request_deadline),
    };
    return cmocka_run_group_tests_name("edge_lists", tests, NULL, NULL);
}
