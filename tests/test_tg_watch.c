/* tg_watch: fd watches and timers on a loop driven by hand (tg_loop_run_once). */
#include "tg.h"
#include "tg_watch.h"

#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
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

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_watch_read_write_stop),
        cmocka_unit_test(test_timers_fire_in_order_and_stop),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
