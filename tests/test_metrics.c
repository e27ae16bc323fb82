/* test_metrics — the metrics registry records exactly what it is told, from many threads at once,
 * and renders it as valid Prometheus text; the prom checker (tests/support/prom.c) accepts the
 * format and refuses each kind of mistake.
 *
 * Every assertion parses the rendered text (prom_value) rather than peeking at the registry, so
 * the tests hold for what a scraper sees. Asserts run on the main thread only: worker threads
 * report through their results, because cmocka's asserts longjmp. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <math.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "../service/metrics.h"
#include "support/prom.h"

static const char *const names[] = {"address", "inventory", "payment"};
#define NNAMES 3

/* The bucket bounds the contract promises, as rendered. */
static const char *const les[] = {"0.001", "0.0025", "0.005", "0.01", "0.025", "0.05", "0.1",
                                  "0.25",  "0.5",    "1",     "2.5",  "5",     "10",   "+Inf"};
#define NLES 14

static const char *const kinds[] = {"ok",        "rejected", "upstream_error", "invalid_response",
                                    "transport", "timeout"};
#define NKINDS 6

typedef struct fixture {
    mx *m;
    char *text; /* the last render, freed by teardown */
} fixture;

static int setup(void **state)
{
    fixture *f = calloc(1, sizeof(*f));
    if (f == NULL)
        return -1;
    f->m = mx_new(names, NNAMES);
    if (f->m == NULL) {
        free(f);
        return -1;
    }
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    fixture *f = *state;
    mx_free(f->m);
    free(f->text);
    free(f);
    return 0;
}

/* Renders m into f->text and asserts that the text is valid and that len is its length. */
static const char *render(fixture *f)
{
    char err[256];
    size_t len = 0;
    free(f->text);
    f->text = mx_render(f->m, &len);
    assert_non_null(f->text);
    assert_int_equal(len, strlen(f->text));
    if (prom_check(f->text, err, sizeof(err)) != 0)
        fail_msg("invalid exposition: %s\n%s", err, f->text);
    return f->text;
}

/* The value of series in text; fails the test when it is absent. */
static double value(const char *text, const char *series)
{
    double v = -1;
    if (prom_value(text, series, &v) != 0)
        fail_msg("series %s not found in\n%s", series, text);
    return v;
}

static double outcome_value(const char *text, const char *outcome)
{
    char series[128];
    snprintf(series, sizeof(series), "checkoutd_checkouts_total{outcome=\"%s\"}", outcome);
    return value(text, series);
}

static double upstream_value(const char *text, const char *validation, const char *kind)
{
    char series[160];
    snprintf(series, sizeof(series),
             "checkoutd_upstream_requests_total{validation=\"%s\",outcome=\"%s\"}", validation,
             kind);
    return value(text, series);
}

/* A histogram sample: part is "_bucket", "_sum" or "_count"; validation NULL for the checkout
 * histogram; le only for buckets. */
static double hist_value(const char *text, const char *validation, const char *part, const char *le)
{
    char series[200], labels[120] = "";
    const char *name =
        validation ? "checkoutd_upstream_duration_seconds" : "checkoutd_checkout_duration_seconds";
    if (validation && le)
        snprintf(labels, sizeof(labels), "{validation=\"%s\",le=\"%s\"}", validation, le);
    else if (validation)
        snprintf(labels, sizeof(labels), "{validation=\"%s\"}", validation);
    else if (le)
        snprintf(labels, sizeof(labels), "{le=\"%s\"}", le);
    snprintf(series, sizeof(series), "%s%s%s", name, part, labels);
    return value(text, series);
}

/* Asserts the histogram's buckets: non-cumulative counts per[i] for les[i], +Inf == _count, and
 * _sum within 1 us per observation of sum. */
static void assert_histogram(const char *text, const char *validation,
                             const unsigned long per[NLES], double sum)
{
    unsigned long cumulative = 0;
    double previous = 0;
    for (size_t i = 0; i < NLES; i++) {
        double b = hist_value(text, validation, "_bucket", les[i]);
        cumulative += per[i];
        if (b != (double)cumulative)
            fail_msg("%s le=%s: %g, expected %lu", validation ? validation : "checkout", les[i], b,
                     cumulative);
        assert_true(b >= previous);
        previous = b;
    }
    assert_true(hist_value(text, validation, "_count", NULL) ==
                hist_value(text, validation, "_bucket", "+Inf"));
    assert_true(hist_value(text, validation, "_count", NULL) == (double)cumulative);
    assert_true(fabs(hist_value(text, validation, "_sum", NULL) - sum) <=
                1e-6 * (double)(cumulative + 1));
}

/* ---- outcomes -------------------------------------------------------------------------------- */

static void test_outcome_codes(void **state)
{
    static const char *const codes[MX_OUTCOMES] = {"accepted",
                                                   "rejected",
                                                   "failed",
                                                   "invalid_json",
                                                   "invalid_request",
                                                   "body_too_large",
                                                   "unsupported_media_type",
                                                   "method_not_allowed",
                                                   "not_found",
                                                   "overloaded",
                                                   "shutting_down",
                                                   "idempotency_in_progress",
                                                   "idempotency_key_reused",
                                                   "idempotency_unavailable",
                                                   "request_timeout",
                                                   "journal_unavailable",
                                                   "internal"};
    (void)state;
    for (int i = 0; i < MX_OUTCOMES; i++) {
        assert_int_equal(mx_outcome_from_code(codes[i]), i);
        assert_string_equal(mx_outcome_name((mx_outcome)i), codes[i]);
    }
    assert_int_equal(mx_outcome_from_code("invalid_json"), MX_INVALID_JSON);
    assert_int_equal(mx_outcome_from_code("no_such_code"), MX_INTERNAL);
    assert_int_equal(mx_outcome_from_code(""), MX_INTERNAL);
    assert_int_equal(mx_outcome_from_code(NULL), MX_INTERNAL);
    assert_string_equal(mx_outcome_name(MX_OUTCOMES), "internal");
}

/* ---- a fresh registry ------------------------------------------------------------------------ */

static void test_fresh_registry_has_every_series_at_zero(void **state)
{
    static const char *const types[] = {"# TYPE checkoutd_checkouts_total counter\n",
                                        "# TYPE checkoutd_checkout_duration_seconds histogram\n",
                                        "# TYPE checkoutd_upstream_requests_total counter\n",
                                        "# TYPE checkoutd_upstream_duration_seconds histogram\n",
                                        "# TYPE checkoutd_validations_cancelled_total counter\n",
                                        "# TYPE checkoutd_inflight_checkouts gauge\n",
                                        "# TYPE checkoutd_open_connections gauge\n"};
    static const unsigned long zero[NLES];
    char series[128];
    const char *text = render(*state);

    for (size_t i = 0; i < sizeof(types) / sizeof(types[0]); i++)
        assert_non_null(strstr(text, types[i]));
    for (int o = 0; o < MX_OUTCOMES; o++)
        assert_true(outcome_value(text, mx_outcome_name((mx_outcome)o)) == 0);
    assert_histogram(text, NULL, zero, 0);
    for (size_t v = 0; v < NNAMES; v++) {
        for (size_t k = 0; k < NKINDS; k++)
            assert_true(upstream_value(text, names[v], kinds[k]) == 0);
        assert_histogram(text, names[v], zero, 0);
        snprintf(series, sizeof(series), "checkoutd_validations_cancelled_total{validation=\"%s\"}",
                 names[v]);
        assert_true(value(text, series) == 0);
    }
    assert_true(value(text, "checkoutd_inflight_checkouts") == 0);
    assert_true(value(text, "checkoutd_open_connections") == 0);
    assert_true(value(text, "checkoutd_idempotency_total{result=\"replayed\"}") == 0);
}

/* ---- counters and gauges --------------------------------------------------------------------- */

static void test_counters_and_gauges_move(void **state)
{
    fixture *f = *state;
    for (int i = 0; i < 3; i++)
        mx_checkout(f->m, MX_ACCEPTED, 0.01);
    mx_checkout(f->m, MX_REJECTED, 0.02);
    mx_checkout(f->m, mx_outcome_from_code("invalid_json"), 0);
    mx_checkout(f->m, mx_outcome_from_code("invalid_json"), 0);
    mx_checkout(f->m, MX_OVERLOADED, 0);
    mx_upstream(f->m, 0, TG_KIND_NONE, 0.01);
    mx_upstream(f->m, 0, TG_KIND_NONE, 0.01);
    mx_upstream(f->m, 1, TG_REJECTED, 0.01);
    mx_upstream(f->m, 2, TG_TIMEOUT, 1.5);
    mx_cancelled(f->m, 2);
    mx_cancelled(f->m, 2);
    mx_cancelled(f->m, 0);
    mx_inflight(f->m, 1);
    mx_inflight(f->m, 1);
    mx_inflight(f->m, -1);
    mx_connections(f->m, 5);

    const char *text = render(f);
    assert_true(outcome_value(text, "accepted") == 3);
    assert_true(outcome_value(text, "rejected") == 1);
    assert_true(outcome_value(text, "failed") == 0);
    assert_true(outcome_value(text, "invalid_json") == 2);
    assert_true(outcome_value(text, "overloaded") == 1);
    assert_true(outcome_value(text, "not_found") == 0);
    assert_true(upstream_value(text, "address", "ok") == 2);
    assert_true(upstream_value(text, "address", "rejected") == 0);
    assert_true(upstream_value(text, "inventory", "rejected") == 1);
    assert_true(upstream_value(text, "payment", "timeout") == 1);
    assert_true(upstream_value(text, "payment", "ok") == 0);
    assert_true(value(text, "checkoutd_validations_cancelled_total{validation=\"payment\"}") == 2);
    assert_true(value(text, "checkoutd_validations_cancelled_total{validation=\"address\"}") == 1);
    assert_true(value(text, "checkoutd_validations_cancelled_total{validation=\"inventory\"}") ==
                0);
    assert_true(value(text, "checkoutd_inflight_checkouts") == 1);
    assert_true(value(text, "checkoutd_open_connections") == 5);
    /* 4 checkouts ran a group; the 3 client errors did not enter the histogram */
    assert_true(hist_value(text, NULL, "_count", NULL) == 4);
    assert_true(fabs(hist_value(text, NULL, "_sum", NULL) - 0.05) < 1e-9);
}

static void test_out_of_range_is_ignored_or_internal(void **state)
{
    fixture *f = *state;
    mx_upstream(f->m, NNAMES, TG_KIND_NONE, 0.1);
    mx_upstream(f->m, 0, (tg_kind)99, 0.1);
    mx_cancelled(f->m, NNAMES);
    mx_checkout(f->m, (mx_outcome)99, 0.1);
    mx_checkout(f->m, MX_OUTCOMES, 0.1);

    const char *text = render(f);
    for (size_t v = 0; v < NNAMES; v++)
        assert_true(hist_value(text, names[v], "_count", NULL) == 0);
    assert_true(outcome_value(text, "internal") == 2);
    assert_true(hist_value(text, NULL, "_count", NULL) == 0);
    assert_null(strstr(text, "validation=\"\""));
}

/* ---- histograms ------------------------------------------------------------------------------ */

static void test_checkout_histogram_buckets(void **state)
{
    fixture *f = *state;
    /* seconds and the bucket (index into les) each must land in */
    static const struct {
        double seconds;
        size_t bucket;
    } obs[] = {{0.0005, 0}, {0.001, 0},      {0.0011, 1},    {0.0025, 1}, {0.003, 2},
               {0.1, 6},    {0.25, 7},       {0.2500001, 8}, {1, 9},      {7, 12},
               {10, 12},    {10.000001, 13}, {12, 13},       {3600, 13}};
    unsigned long per[NLES] = {0};
    double sum = 0;
    for (size_t i = 0; i < sizeof(obs) / sizeof(obs[0]); i++) {
        mx_checkout(f->m, i % 3 == 0 ? MX_FAILED : MX_ACCEPTED, obs[i].seconds);
        per[obs[i].bucket]++;
        sum += obs[i].seconds;
    }
    mx_checkout(f->m, MX_INVALID_REQUEST, 5); /* no task group: not observed */
    assert_histogram(render(f), NULL, per, sum);
}

/* le means <=: a duration exactly on a bound is in that bound's bucket, also when computed from
 * milliseconds the way the service does (elapsed_ms / 1000). */
static void test_value_on_a_bound_is_in_that_bucket(void **state)
{
    static const double ms[NLES - 1] = {1,   2.5, 5,    10,   25,   50,   100,
                                        250, 500, 1000, 2500, 5000, 10000};
    fixture *f = *state;
    for (size_t i = 0; i < NLES - 1; i++) {
        mx_free(f->m);
        f->m = mx_new(names, NNAMES);
        assert_non_null(f->m);
        mx_checkout(f->m, MX_ACCEPTED, strtod(les[i], NULL));
        mx_upstream(f->m, 1, TG_KIND_NONE, ms[i] / 1000.0);
        const char *text = render(f);
        assert_true(hist_value(text, NULL, "_bucket", les[i]) == 1);
        assert_true(hist_value(text, "inventory", "_bucket", les[i]) == 1);
        if (i > 0) {
            assert_true(hist_value(text, NULL, "_bucket", les[i - 1]) == 0);
            assert_true(hist_value(text, "inventory", "_bucket", les[i - 1]) == 0);
        }
    }
}

static void test_upstream_histogram_per_validation(void **state)
{
    fixture *f = *state;
    static const unsigned long zero[NLES];
    unsigned long per[NLES] = {0};
    mx_upstream(f->m, 1, TG_KIND_NONE, 0.004);
    mx_upstream(f->m, 1, TG_REJECTED, 0.2);
    mx_upstream(f->m, 1, TG_TIMEOUT, 30);
    per[2] = 1;  /* 0.004 <= 0.005 */
    per[7] = 1;  /* 0.2 <= 0.25 */
    per[13] = 1; /* 30 > 10 */

    const char *text = render(f);
    assert_histogram(text, "inventory", per, 30.204);
    assert_histogram(text, "address", zero, 0);
    assert_histogram(text, "payment", zero, 0);
    assert_histogram(text, NULL, zero, 0);
}

static void test_negative_and_nan_durations_count_as_zero(void **state)
{
    fixture *f = *state;
    unsigned long per[NLES] = {0};
    mx_checkout(f->m, MX_ACCEPTED, -3);
    mx_checkout(f->m, MX_ACCEPTED, NAN);
    mx_checkout(f->m, MX_ACCEPTED, 0);
    per[0] = 3;
    assert_histogram(render(f), NULL, per, 0);
}

/* ---- concurrency ----------------------------------------------------------------------------- */

#define THREADS    4
#define ITERATIONS 100000

typedef struct shared {
    mx *m;
    atomic_int workers_done;
    atomic_int renders;       /* renders checked while the workers ran */
    atomic_int failed;        /* the renderer stopped on a failure (error says which) */
    char error[512];          /* the renderer's first failure, or "" (read after the join) */
    atomic_int render_missed; /* a worker gave up waiting for renders */
} shared;

static void *worker(void *arg)
{
    shared *s = arg;
    for (int i = 0; i < ITERATIONS; i++) {
        if (i == ITERATIONS / 2) {
            /* halfway: wait until two more renders ended, so that at least one whole render ran
             * while this worker was recording (else the renderer may never run concurrently, or
             * at all: the workers can finish before its thread is scheduled) */
            int seen = atomic_load(&s->renders);
            time_t give_up = time(NULL) + 60; /* a renderer that never renders fails, not hangs */
            while (atomic_load(&s->renders) < seen + 2 && !atomic_load(&s->failed) &&
                   time(NULL) < give_up)
                sched_yield();
            if (atomic_load(&s->renders) < seen + 2)
                atomic_store(&s->render_missed, 1);
        }
        mx_checkout(s->m, MX_ACCEPTED, 0.003);
        mx_checkout(s->m, i % 2 ? MX_OVERLOADED : MX_NOT_FOUND, 0);
        mx_upstream(s->m, (size_t)(i % 3), (tg_kind)(i % NKINDS), 0.02);
        mx_cancelled(s->m, 2);
        mx_inflight(s->m, 1);
        mx_connections(s->m, 2);
        mx_connections(s->m, -1);
    }
    atomic_fetch_add(&s->workers_done, 1);
    return NULL;
}

/* Renders and checks while the workers record: every render must be valid on its own (buckets
 * cumulative, +Inf == _count) even though it races with the adds. */
static void *renderer(void *arg)
{
    shared *s = arg;
    while (atomic_load(&s->workers_done) < THREADS) {
        char *text = mx_render(s->m, NULL);
        if (text == NULL) {
            snprintf(s->error, sizeof(s->error), "mx_render returned NULL");
            atomic_store(&s->failed, 1);
            break;
        }
        int bad = prom_check(text, s->error, sizeof(s->error));
        free(text);
        if (bad != 0) {
            atomic_store(&s->failed, 1);
            break;
        }
        atomic_fetch_add(&s->renders, 1);
    }
    return NULL;
}

static void test_concurrent_recording_loses_nothing(void **state)
{
    fixture *f = *state;
    shared s = {.m = f->m};
    pthread_t workers[THREADS], render_thread;
    atomic_init(&s.workers_done, 0);
    atomic_init(&s.renders, 0);
    atomic_init(&s.failed, 0);
    assert_int_equal(pthread_create(&render_thread, NULL, renderer, &s), 0);
    for (int t = 0; t < THREADS; t++)
        assert_int_equal(pthread_create(&workers[t], NULL, worker, &s), 0);
    for (int t = 0; t < THREADS; t++)
        pthread_join(workers[t], NULL);
    pthread_join(render_thread, NULL);
    if (atomic_load(&s.failed))
        fail_msg("a render during recording was invalid: %s", s.error);
    int renders = atomic_load(&s.renders);
    print_message("%d concurrent renders checked\n", renders);
    assert_true(renders >= 2); /* the renderer ran, during the recording (see worker) */
    assert_false(atomic_load(&s.render_missed));

    const char *text = render(f);
    double n = (double)THREADS * ITERATIONS;
    assert_true(outcome_value(text, "accepted") == n);
    assert_true(outcome_value(text, "overloaded") == n / 2);
    assert_true(outcome_value(text, "not_found") == n / 2);
    assert_true(hist_value(text, NULL, "_count", NULL) == n);
    assert_true(hist_value(text, NULL, "_bucket", "0.005") == n);
    assert_true(hist_value(text, NULL, "_bucket", "0.0025") == 0);
    assert_true(fabs(hist_value(text, NULL, "_sum", NULL) - 1200.0) < 1e-6);
    for (size_t v = 0; v < NNAMES; v++) {
        double total = 0;
        for (size_t k = 0; k < NKINDS; k++) {
            double expected = 0; /* iterations i with i % 3 == v and i % 6 == k, per thread */
            for (int i = 0; i < ITERATIONS; i++)
                expected += (size_t)(i % 3) == v && (size_t)(i % NKINDS) == k;
            assert_true(upstream_value(text, names[v], kinds[k]) == expected * THREADS);
            total += expected * THREADS;
        }
        assert_true(hist_value(text, names[v], "_count", NULL) == total);
        assert_true(fabs(hist_value(text, names[v], "_sum", NULL) - total * 0.02) < 1e-6);
    }
    assert_true(value(text, "checkoutd_validations_cancelled_total{validation=\"payment\"}") == n);
    assert_true(value(text, "checkoutd_inflight_checkouts") == n);
    assert_true(value(text, "checkoutd_open_connections") == n);
}

/* ---- names ----------------------------------------------------------------------------------- */

static void test_label_values_are_escaped(void **state)
{
    static const char *const odd[] = {"a\"b", "back\\slash", "new\nline"};
    fixture *f = *state;
    mx_free(f->m);
    f->m = mx_new(odd, 3);
    assert_non_null(f->m);
    mx_cancelled(f->m, 0);
    mx_upstream(f->m, 1, TG_TRANSPORT, 0.5);
    mx_upstream(f->m, 2, TG_KIND_NONE, 0.5);

    const char *text = render(f);
    assert_true(value(text, "checkoutd_validations_cancelled_total{validation=\"a\\\"b\"}") == 1);
    assert_true(upstream_value(text, "back\\\\slash", "transport") == 1);
    assert_true(upstream_value(text, "new\\nline", "ok") == 1);
    assert_true(hist_value(text, "new\\nline", "_bucket", "0.5") == 1);
}

static void test_names_are_copied_and_none_is_fine(void **state)
{
    fixture *f = *state;
    char name[] = "fraud";
    const char *const list[] = {name};
    mx_free(f->m);
    f->m = mx_new(list, 1);
    assert_non_null(f->m);
    name[0] = 'X';
    assert_non_null(strstr(render(f), "validation=\"fraud\""));

    mx_free(f->m);
    f->m = mx_new(NULL, 0);
    assert_non_null(f->m);
    mx_upstream(f->m, 0, TG_KIND_NONE, 0.1);
    const char *text = render(f);
    assert_null(strstr(text, "validation="));
    assert_non_null(strstr(text, "# TYPE checkoutd_upstream_requests_total counter\n"));

    const char *const with_null[] = {"a", NULL};
    assert_null(mx_new(with_null, 2));
    mx_free(NULL);
}

/* ---- the checker itself ---------------------------------------------------------------------- */

static const char good[] = "# HELP a_total Help with \\\\ and \\n escapes.\n"
                           "# TYPE a_total counter\n"
                           "a_total{x=\"q\\\"uote \\\\ and \\n\",y=\"2\"} 3\n"
                           "a_total{x=\"b\"} 1e3\n"
                           "# TYPE g gauge\n"
                           "g -2.5\n"
                           "g{k=\"v\"} NaN\n"
                           "g{k=\"w\"} +Inf\n"
                           "g{k=\"z\"} -Inf\n"
                           "g{k=\"y\"} .5E-3\n"
                           "# HELP h A histogram.\n"
                           "# TYPE h histogram\n"
                           "h_bucket{le=\"0.5\"} 1\n"
                           "h_bucket{le=\"+Inf\"} 2\n"
                           "h_sum 0.7\n"
                           "h_count 2\n"
                           "h_bucket{s=\"a\",le=\"1\"} 0\n"
                           "h_bucket{s=\"a\",le=\"+Inf\"} 0\n"
                           "h_sum{s=\"a\"} 0\n"
                           "h_count{s=\"a\"} 0\n"
                           "# TYPE ns:rule_total counter\n"
                           "ns:rule_total 0\n";

#define H "# TYPE h histogram\n"
#define G "# TYPE g gauge\n"

static void test_prom_check_accepts_the_format(void **state)
{
    char err[256];
    (void)state;
    if (prom_check(good, err, sizeof(err)) != 0)
        fail_msg("%s", err);
    assert_int_equal(prom_check("", err, sizeof(err)), 0);
    assert_int_equal(prom_check("# TYPE empty_total counter\n", err, sizeof(err)), 0);
    assert_int_equal(prom_check(G "g 1.\ng{a=\"\"} -0\n", err, sizeof(err)), 0);
}

static void test_prom_check_refuses_mistakes(void **state)
{
    static const struct {
        const char *text;
        const char *why; /* a piece of the expected message */
    } bad[] = {
        {"a_total 1\n", "no # TYPE"},
        {"# TYPE a_total counter\na_total 1", "newline"},
        {"# TYPE a counter\na 1\n", "_total"},
        {"# TYPE a_total counter\n# TYPE a_total counter\n", "second TYPE"},
        {"# TYPE g summary\n", "not counter, gauge or histogram"},
        {"# TYPE 1g gauge\n", "expected"},
        {"# TYPE g  gauge\n", "not counter, gauge or histogram"},
        {G "1g 1\n", "expected a metric name"},
        {G "g-x 1\n", "expected one space"},
        {G "g{1k=\"v\"} 1\n", "label name"},
        {G "g{__k=\"v\"} 1\n", "reserved"},
        {G "g{k=\"a\\tb\"} 1\n", "bad escape"},
        {G "g{k=\"ab} 1\n", "no closing quote"},
        {G "g{k='a'} 1\n", "expected =\""},
        {G "g{k=\"a\",k=\"b\"} 1\n", "twice"},
        {G "g{k=\"a\",} 1\n", "expected ,"},
        {G "g{k=\"a\" } 1\n", "expected ,"},
        {G "g{} 1\n", "label name"},
        {G "g abc\n", "not a number"},
        {G "g 0x10\n", "not a number"},
        {G "g inf\n", "not a number"},
        {G "g 1 1700000000\n", "not a number"},
        {G "g  1\n", "not a number"},
        {G "g 1\r\n", "not a number"},
        {G "g\n", "expected one space"},
        {G "\ng 1\n", "blank line"},
        {"# just a comment\n", "comment"},
        {"# HELP g a\\tb\n", "escapes"},
        {"# HELP g\n", "expected"},
        {"# HELP g x\n# HELP g y\n", "second HELP"},
        {"# TYPE a gauge\n# TYPE b gauge\na 1\n", "split"},
        {"# TYPE a_total counter\na_total -1\n", "negative"},
        {H "h 1\n", "_bucket, _sum or _count"},
        {H "h_bucket 1\n", "without le"},
        {H "h_bucket{le=\"x\"} 1\n", "not a number"},
        {H "h_bucket{le=\"1\"} 2\nh_bucket{le=\"+Inf\"} 1\n", "not cumulative"},
        {H "h_bucket{le=\"2\"} 1\nh_bucket{le=\"1\"} 1\n", "does not increase"},
        {H "h_bucket{le=\"+Inf\"} 2\nh_sum 1\nh_count 3\n", "differs"},
        {H "h_bucket{le=\"1\"} 1\nh_sum 1\nh_count 1\n", "before its buckets"},
        {H "h_bucket{le=\"+Inf\"} 1\nh_sum 1\n", "lacks"},
        {H "h_bucket{le=\"+Inf\"} 1\nh_sum 1\n" G, "lacks"},
        {H "h_bucket{le=\"+Inf\"} 1\nh_sum 1\nh_count 1\nh_count 1\n", "second _count"},
        {H "h_bucket{le=\"+Inf\"} 1\nh_sum{le=\"1\"} 1\n", "with an le label"},
        {H "h_bucket{le=\"+Inf\"} 1\nh_sum 1\nh_count 1\nh_bucket{le=\"+Inf\"} 1\n", "after"},
        {H "h_bucket{le=\"+Inf\"} -1\n", "negative"},
    };
    char err[256];
    (void)state;
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        if (prom_check(bad[i].text, err, sizeof(err)) == 0)
            fail_msg("accepted:\n%s", bad[i].text);
        if (strstr(err, bad[i].why) == NULL)
            fail_msg("refused with \"%s\", expected \"%s\", for:\n%s", err, bad[i].why,
                     bad[i].text);
        assert_non_null(strstr(err, "line "));
    }
    assert_int_equal(prom_check("a 1\n", NULL, 0), -1); /* no room for a message is fine */
}

static void test_prom_value_matches_whole_series(void **state)
{
    double v = 0;
    (void)state;
    assert_int_equal(prom_value(good, "a_total{x=\"b\"}", &v), 0);
    assert_true(v == 1000);
    assert_int_equal(prom_value(good, "g", &v), 0);
    assert_true(v == -2.5);
    assert_int_equal(prom_value(good, "g{k=\"w\"}", &v), 0);
    assert_true(isinf(v) && v > 0);
    assert_int_equal(prom_value(good, "g{k=\"v\"}", &v), 0);
    assert_true(isnan(v));
    assert_int_equal(prom_value(good, "h_sum", &v), 0);
    assert_true(v == 0.7);
    assert_int_equal(prom_value(good, "h_count{s=\"a\"}", &v), 0);
    assert_true(v == 0);
    assert_int_equal(prom_value(good, "a", &v), -1); /* a prefix of a_total is not a_total */
    assert_int_equal(prom_value(good, "g{k=\"zz\"}", &v), -1);
    assert_int_equal(prom_value(good, "h", &v), -1); /* # HELP h / # TYPE h are not samples */
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_outcome_codes),
        cmocka_unit_test_setup_teardown(test_fresh_registry_has_every_series_at_zero, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_counters_and_gauges_move, setup, teardown),
        cmocka_unit_test_setup_teardown(test_out_of_range_is_ignored_or_internal, setup, teardown),
        cmocka_unit_test_setup_teardown(test_checkout_histogram_buckets, setup, teardown),
        cmocka_unit_test_setup_teardown(test_value_on_a_bound_is_in_that_bucket, setup, teardown),
        cmocka_unit_test_setup_teardown(test_upstream_histogram_per_validation, setup, teardown),
        cmocka_unit_test_setup_teardown(test_negative_and_nan_durations_count_as_zero, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_concurrent_recording_loses_nothing, setup, teardown),
        cmocka_unit_test_setup_teardown(test_label_values_are_escaped, setup, teardown),
        cmocka_unit_test_setup_teardown(test_names_are_copied_and_none_is_fine, setup, teardown),
        cmocka_unit_test(test_prom_check_accepts_the_format),
        cmocka_unit_test(test_prom_check_refuses_mistakes),
        cmocka_unit_test(test_prom_value_matches_whole_series),
    };
    return cmocka_run_group_tests_name("metrics", tests, NULL, NULL);
}
