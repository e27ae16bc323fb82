/* tg_watch: fd watches and timers on a loop driven by hand (tg_loop_run_once). */
#include "tg.h"
#include "tg_watch.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

typedef struct seen {
    int reads, writes;
    int order[8];
    int n;
    tg_loop *loop;
    tg_timer *victim; /* stopped by the first timer that fires */
} seen;

static double now_ms(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec * 1e3 + (double)t.tv_nsec / 1e6;
}

static void on_io(tg_watch *w, unsigned events, void *arg)
{
    seen *s = arg;
    char buf[16];
    if (events & TG_WATCH_READ) {
        s->reads++;
        if (read(w->fd, buf, sizeof buf) <= 0)
            tg_watch_stop(s->loop, w);
    }
    if (events & TG_WATCH_WRITE)
        s->writes++;
}

static void *write_later(void *arg)
{
    usleep(50 * 1000);
    ssize_t n = write(*(int *)arg, "x", 1);
    (void)n;
    return NULL;
}

static void test_watch_read_write_stop(void **state)
{
    (void)state;
    tg_loop *l = tg_loop_new(NULL);
    int fds[2];
    seen s = {.loop = l};
    tg_watch rw, ww;
    assert_non_null(l);
    assert_int_equal(pipe(fds), 0);
    assert_int_equal(tg_watch_start(l, &rw, fds[0], TG_WATCH_READ, on_io, &s), 0);
    tg_loop_run_once(l, 0);
    tg_loop_run_once(l, 0);
    assert_int_equal(s.reads, 0); /* nothing to read */
    pthread_t writer;
    assert_int_equal(pthread_create(&writer, NULL, write_later, &fds[1]), 0);
    double t0 = now_ms();
    tg_loop_run_once(l, 3000); /* the wait ends when the watched fd becomes readable */
    tg_loop_run_once(l, 0);
    assert_true(now_ms() - t0 < 1500);
    assert_int_equal(s.reads, 1);
    pthread_join(writer, NULL);
    assert_int_equal(tg_watch_start(l, &ww, fds[1], 0, on_io, &s), 0);
    tg_loop_run_once(l, 0);
    tg_loop_run_once(l, 0);
    assert_int_equal(s.writes, 0); /* registered, nothing wanted */
    assert_int_equal(tg_watch_set(l, &ww, TG_WATCH_WRITE), 0);
    tg_loop_run_once(l, 0);
    tg_loop_run_once(l, 0);
    assert_true(s.writes >= 1);
    tg_watch_stop(l, &ww);
    int writes = s.writes;
    tg_loop_run_once(l, 0);
    tg_loop_run_once(l, 0);
    assert_int_equal(s.writes, writes);
    tg_watch_stop(l, &ww); /* twice is fine */
    tg_watch_stop(l, &rw);
    close(fds[0]);
    close(fds[1]);
    tg_loop_free(l);
}

typedef struct tagged {
    tg_timer t;
    int tag;
    seen *s;
} tagged;

static void on_tagged(tg_timer *t, void *arg)
{
    tagged *x = arg;
    (void)t;
    x->s->order[x->s->n++] = x->tag;
    if (x->s->victim != NULL) {
        tg_timer_stop(x->s->loop, x->s->victim);
        x->s->victim = NULL;
    }
}

static void test_timers_fire_in_order_and_stop(void **state)
{
    (void)state;
    tg_loop *l = tg_loop_new(NULL);
    seen s = {.loop = l};
    tagged t[4];
    long ms[4] = {60, 20, 40, 80};
    for (int i = 0; i < 4; i++) {
        t[i].tag = i;
        t[i].s = &s;
        tg_timer_init(&t[i].t);
        assert_int_equal(tg_timer_start(l, &t[i].t, ms[i], on_tagged, &t[i]), 0);
        assert_true(tg_timer_running(&t[i].t));
    }
    s.victim = &t[0].t; /* the first to fire (20 ms) stops the 60 ms one */
    tg_timer_stop(l, &t[3].t);
    assert_false(tg_timer_running(&t[3].t));
    double t0 = now_ms();
    while (s.n < 2 && now_ms() - t0 < 2000)
        tg_loop_run_once(l, 1000);
    assert_int_equal(s.n, 2);
    assert_int_equal(s.order[0], 1);
    assert_int_equal(s.order[1], 2);
    assert_true(now_ms() - t0 >= 39);
    for (int i = 0; i < 10; i++)
        tg_loop_run_once(l, 20);
    assert_int_equal(s.n, 2); /* 0 was stopped by 1, 3 by the test */
    /* a restarted timer fires once, at its new time */
    assert_int_equal(tg_timer_start(l, &t[3].t, 10, on_tagged, &t[3]), 0);
    assert_int_equal(tg_timer_start(l, &t[3].t, 30, on_tagged, &t[3]), 0);
    t0 = now_ms();
    while (s.n < 3 && now_ms() - t0 < 2000)
        tg_loop_run_once(l, 1000);
    assert_int_equal(s.order[2], 3);
    assert_true(now_ms() - t0 >= 25);
    tg_loop_free(l);
}

/* ---- the timers are nodes of the loop's one heap: callbacks that restart and stop, ties,
 * stops of stopped timers, a timer pending at the loop's stop, and group deadlines beside them */

typedef struct ticker {
    tg_timer t, other;
    tg_loop *loop;
    int ticks, other_fired;
} ticker;

static void on_other(tg_timer *t, void *arg)
{
    ticker *k = arg;
    (void)t;
    k->other_fired++;
}

/* Restarts itself twice (the node is off the heap while its callback runs), then stops the other
 * timer and starts it again, which must then fire once. */
static void on_tick(tg_timer *t, void *arg)
{
    ticker *k = arg;
    assert_false(tg_timer_running(t));
    if (++k->ticks < 3) {
        assert_int_equal(tg_timer_start(k->loop, t, 5, on_tick, k), 0);
        assert_true(tg_timer_running(t));
        return;
    }
    tg_timer_stop(k->loop, &k->other);
    assert_false(tg_timer_running(&k->other));
    assert_int_equal(tg_timer_start(k->loop, &k->other, 0, on_other, k), 0);
}

static void test_timer_callback_restarts_and_stops(void **state)
{
    (void)state;
    tg_loop *l = tg_loop_new(NULL);
    ticker k = {.loop = l};
    tg_timer_init(&k.t);
    tg_timer_init(&k.other);
    /* stopping a timer that never ran, twice, is a no-op */
    tg_timer_stop(l, &k.other);
    tg_timer_stop(l, &k.other);
    assert_false(tg_timer_running(&k.other));
    assert_int_equal(tg_timer_start(l, &k.other, 5000, on_other, &k), 0);
    assert_int_equal(tg_timer_start(l, &k.t, 5, on_tick, &k), 0);
    double t0 = now_ms();
    while (k.other_fired == 0 && now_ms() - t0 < 3000)
        tg_loop_run_once(l, 1000);
    assert_int_equal(k.ticks, 3);
    assert_int_equal(k.other_fired, 1);
    assert_true(now_ms() - t0 < 2500); /* the restart, not the 5 s start, fired it */
    for (int i = 0; i < 5; i++)
        tg_loop_run_once(l, 10);
    assert_int_equal(k.ticks, 3);
    assert_int_equal(k.other_fired, 1);
    assert_false(tg_timer_running(&k.t));
    assert_false(tg_timer_running(&k.other));
    tg_loop_free(l);
}

static void test_timers_due_together_all_fire(void **state)
{
    (void)state;
    tg_loop *l = tg_loop_new(NULL);
    seen s = {.loop = l};
    tagged t[5];
    for (int i = 0; i < 5; i++) {
        t[i].tag = i;
        t[i].s = &s;
        tg_timer_init(&t[i].t);
    }
    /* the same due time for three of them (started within one clock read of each other is not
     * guaranteed, so 0 ms: all due at once), one stopped, one later */
    for (int i = 0; i < 4; i++)
        assert_int_equal(tg_timer_start(l, &t[i].t, 0, on_tagged, &t[i]), 0);
    assert_int_equal(tg_timer_start(l, &t[4].t, 30, on_tagged, &t[4]), 0);
    tg_timer_stop(l, &t[2].t);
    tg_loop_run_once(l, 0);
    assert_int_equal(s.n, 3); /* every due timer of a turn fires in that turn */
    int mask = 0;
    for (int i = 0; i < 3; i++)
        mask |= 1 << s.order[i];
    assert_int_equal(mask, 0xb); /* 0, 1 and 3 */
    double t0 = now_ms();
    while (s.n < 4 && now_ms() - t0 < 2000)
        tg_loop_run_once(l, 1000);
    assert_int_equal(s.order[3], 4);
    tg_loop_free(l);
}

static void never(tg_timer *t, void *arg)
{
    (void)t;
    int *fired = arg;
    (*fired)++;
}

static void on_alarm_at_stop(void *arg, int stopped)
{
    int *got = arg;
    *got = stopped ? 2 : 1;
}

/* A timer still running when the loop stops is dropped unfired; the loop frees with it pending
 * (ASan's leak check covers "no leak"), and stopping it afterwards is a no-op. A tg_alarm beside
 * it in the same heap is told that the loop stopped (and freed). */
static void test_timer_pending_at_stop(void **state)
{
    (void)state;
    tg_loop *l = tg_loop_new(NULL);
    tg_timer a, b;
    int fired = 0;
    tg_timer_init(&a);
    tg_timer_init(&b);
    assert_int_equal(tg_timer_start(l, &a, 10000, never, &fired), 0);
    assert_int_equal(tg_timer_start(l, &b, 20000, never, &fired), 0);
    int alarm = 0;
    assert_int_equal(tg_alarm(l, 15000, on_alarm_at_stop, &alarm), 0);
    assert_int_equal(tg_loop_start(l), 0);
    tg_loop_stop(l);
    assert_int_equal(fired, 0);
    assert_int_equal(alarm, 2);
    assert_false(tg_timer_running(&a));
    assert_false(tg_timer_running(&b));
    tg_timer_stop(l, &a);
    tg_loop_free(l);
    /* and a loop freed without a stop first, a timer pending */
    l = tg_loop_new(NULL);
    assert_int_equal(tg_timer_start(l, &a, 10000, never, &fired), 0);
    tg_loop_free(l);
    assert_int_equal(fired, 0);
    assert_false(tg_timer_running(&a));
}

typedef struct mixed {
    seen s;
    tagged t[2];
    int group_done_at; /* index in s.order when the group's done ran */
} mixed;

static void on_group_done(tg_group *g, void *user)
{
    mixed *m = user;
    (void)g;
    m->group_done_at = m->s.n;
    m->s.order[m->s.n++] = 100;
}

/* Public timers and a group's deadline in one heap: 30 ms timer, 150 ms deadline, 400 ms timer
 * fire in that order. The upstream accepts (the kernel's backlog) and never answers. */
static void test_timers_and_group_deadline_share_the_heap(void **state)
{
    (void)state;
    int lfd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t alen = sizeof a;
    assert_true(lfd >= 0);
    assert_int_equal(bind(lfd, (struct sockaddr *)&a, sizeof a), 0);
    assert_int_equal(listen(lfd, 8), 0);
    assert_int_equal(getsockname(lfd, (struct sockaddr *)&a, &alen), 0);
    char url[64];
    snprintf(url, sizeof url, "http://127.0.0.1:%u/hang", (unsigned)ntohs(a.sin_port));

    tg_loop *l = tg_loop_new(NULL);
    mixed m = {.s = {.loop = l}, .group_done_at = -1};
    long ms[2] = {30, 400};
    for (int i = 0; i < 2; i++) {
        m.t[i].tag = i;
        m.t[i].s = &m.s;
        tg_timer_init(&m.t[i].t);
        assert_int_equal(tg_timer_start(l, &m.t[i].t, ms[i], on_tagged, &m.t[i]), 0);
    }
    tg_group *g = tg_group_new(1, 150, on_group_done, &m);
    assert_non_null(g);
    assert_int_equal(tg_call_set(g, 0, url, NULL, 0, NULL, 5000), 0);
    assert_int_equal(tg_submit(l, g), 0);
    double t0 = now_ms();
    while (m.s.n < 3 && now_ms() - t0 < 4000)
        tg_loop_run_once(l, 1000);
    assert_int_equal(m.s.n, 3);
    assert_int_equal(m.s.order[0], 0);
    assert_int_equal(m.s.order[1], 100);
    assert_int_equal(m.s.order[2], 1);
    assert_int_equal(m.group_done_at, 1);
    assert_int_equal(tg_group_result(g, 0)->kind, TG_TIMEOUT);
    tg_group_free(g);
    tg_loop_free(l);
    close(lfd);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_watch_read_write_stop),
        cmocka_unit_test(test_timers_fire_in_order_and_stop),
        cmocka_unit_test(test_timer_callback_restarts_and_stops),
        cmocka_unit_test(test_timers_due_together_all_fire),
        cmocka_unit_test(test_timer_pending_at_stop),
        cmocka_unit_test(test_timers_and_group_deadline_share_the_heap),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
