/* Unit tests of lib/cfg_policy: the v1.2 resilience keys of a validation (idempotent, retry,
 * breaker, hedge) — defaults, ranges at both ends, every refusal and the key its message names. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <string.h>

#include "cfg.h"

#define ERR_MAX 512
#define DOC_MAX 4096

/* A config whose one validation (timeout_ms 1000) has the extra members `extra`. */
static int load_extra(cfg *c, const char *extra, char *err)
{
    char doc[DOC_MAX];
    snprintf(doc, sizeof doc,
             "{\"validations\": [{\"name\": \"pay\", \"field\": \"f\", \"url\": \"http://h/\", "
             "\"timeout_ms\": 1000%s%s}]}",
             extra[0] ? ", " : "", extra);
    return cfg_load_string(c, doc, "t.json", NULL, err, ERR_MAX);
}

static const cfg_validation *ok(cfg *c, const char *extra)
{
    char err[ERR_MAX] = "";
    if (load_extra(c, extra, err) != 0)
        fail_msg("refused: %s\n  extra: %s", err, extra);
    return &c->validations[0];
}

static void refused(const char *extra, const char *needle)
{
    cfg c;
    char err[ERR_MAX] = "";
    if (load_extra(&c, extra, err) == 0) {
        cfg_free(&c);
        fail_msg("accepted: %s", extra);
    }
    if (strstr(err, needle) == NULL)
        fail_msg("message \"%s\" lacks \"%s\"", err, needle);
    assert_null(strchr(err, '\n'));
}

static void test_defaults(void **state)
{
    (void)state;
    cfg c;
    const cfg_validation *v = ok(&c, "");
    assert_int_equal(v->idempotent, 0);
    assert_int_equal(v->retry.attempts, 1);
    assert_int_equal(v->retry.per_try_ms, 1000);
    assert_int_equal(v->retry.backoff_ms, 25);
    assert_int_equal(v->retry.max_backoff_ms, 250);
    assert_int_equal(v->retry.on, RETRY_ON_TRANSPORT | RETRY_ON_UPSTREAM_ERROR);
    assert_int_equal(v->breaker_failures, 0);
    assert_int_equal(v->hedge_after_ms, 0);
    cfg_free(&c);
    /* the shipped default config has no policy either */
    assert_int_equal(cfg_load_string(&c, cfg_default_json(), NULL, NULL, NULL, 0), 0);
    for (size_t i = 0; i < c.nvalidations; i++) {
        assert_int_equal(c.validations[i].retry.attempts, 1);
        assert_int_equal(c.validations[i].retry.per_try_ms, c.validations[i].timeout_ms);
        assert_int_equal(c.validations[i].breaker_failures, 0);
        assert_int_equal(c.validations[i].hedge_after_ms, 0);
    }
    cfg_free(&c);
}

static void test_retry_defaults_follow_attempts(void **state)
{
    (void)state;
    cfg c;
    const cfg_validation *v = ok(&c, "\"retry\": {\"attempts\": 3}");
    assert_int_equal(v->retry.attempts, 3);
    assert_int_equal(v->retry.per_try_ms, 333); /* timeout_ms / attempts */
    cfg_free(&c);
    v = ok(&c, "\"retry\": {\"backoff_ms\": 400}");
    assert_int_equal(v->retry.max_backoff_ms, 400); /* the larger of 250 and backoff_ms */
    cfg_free(&c);
    v = ok(&c, "\"retry\": {\"attempts\": 5, \"per_try_timeout_ms\": 1000, \"backoff_ms\": 0, "
               "\"max_backoff_ms\": 0, \"on\": [\"timeout\", \"invalid_response\"]}");
    assert_int_equal(v->retry.per_try_ms, 1000);
    assert_int_equal(v->retry.backoff_ms, 0);
    assert_int_equal(v->retry.max_backoff_ms, 0);
    assert_int_equal(v->retry.on, RETRY_ON_TIMEOUT | RETRY_ON_INVALID_RESPONSE);
    cfg_free(&c);
    v = ok(&c, "\"retry\": {\"on\": []}");
    assert_int_equal(v->retry.on, 0);
    cfg_free(&c);
    v = ok(&c, "\"retry\": {\"backoff_ms\": 10000, \"max_backoff_ms\": 60000}");
    assert_int_equal(v->retry.max_backoff_ms, 60000);
    cfg_free(&c);
}

static void test_retry_refusals(void **state)
{
    (void)state;
    refused("\"retry\": 3", "validations[0].retry: expected an object");
    refused("\"retry\": {\"tries\": 2}", "validations[0].retry: unknown key \"tries\"");
    refused("\"retry\": {\"attempts\": 0}",
            "validations[0].retry.attempts: expected an integer in 1..5");
    refused("\"retry\": {\"attempts\": 6}", "retry.attempts: expected an integer in 1..5");
    refused("\"retry\": {\"attempts\": 2.0}", "retry.attempts");
    refused("\"retry\": {\"per_try_timeout_ms\": 0}",
            "retry.per_try_timeout_ms: expected an integer in 1..1000");
    refused("\"retry\": {\"per_try_timeout_ms\": 1001}", "retry.per_try_timeout_ms");
    refused("\"retry\": {\"backoff_ms\": -1}", "retry.backoff_ms: expected an integer in 0..10000");
    refused("\"retry\": {\"backoff_ms\": 10001}", "retry.backoff_ms");
    refused("\"retry\": {\"backoff_ms\": 300, \"max_backoff_ms\": 299}",
            "retry.max_backoff_ms: expected an integer in 300..60000");
    refused("\"retry\": {\"max_backoff_ms\": 60001}", "retry.max_backoff_ms");
    refused("\"retry\": {\"on\": [\"rejected\"]}", "retry.on: \"rejected\" is never retried");
    refused("\"retry\": {\"on\": [\"transport\", \"bogus\"]}", "retry.on: unknown kind \"bogus\"");
    refused("\"retry\": {\"on\": \"transport\"}", "retry.on: expected a list of error kinds");
    refused("\"retry\": {\"on\": [1]}", "retry.on: unknown kind 1");
}

static void test_breaker(void **state)
{
    (void)state;
    cfg c;
    const cfg_validation *v = ok(&c, "\"breaker\": {\"consecutive_failures\": 5}");
    assert_int_equal(v->breaker_failures, 5);
    assert_int_equal(v->breaker_open_ms, 5000);
    cfg_free(&c);
    v = ok(&c, "\"breaker\": {\"consecutive_failures\": 1000, \"open_ms\": 100}");
    assert_int_equal(v->breaker_failures, 1000);
    assert_int_equal(v->breaker_open_ms, 100);
    cfg_free(&c);
    v = ok(&c, "\"breaker\": {\"consecutive_failures\": 1, \"open_ms\": 600000}");
    assert_int_equal(v->breaker_open_ms, 600000);
    cfg_free(&c);
    refused("\"breaker\": {}", "validations[0].breaker.consecutive_failures: missing");
    refused("\"breaker\": {\"consecutive_failures\": 0}",
            "breaker.consecutive_failures: expected an integer in 1..1000");
    refused("\"breaker\": {\"consecutive_failures\": 1001}", "breaker.consecutive_failures");
    refused("\"breaker\": {\"consecutive_failures\": 1, \"open_ms\": 99}",
            "breaker.open_ms: expected an integer in 100..600000");
    refused("\"breaker\": {\"consecutive_failures\": 1, \"open_ms\": 600001}", "breaker.open_ms");
    refused("\"breaker\": {\"consecutive_failures\": 1, \"half_open\": 1}",
            "breaker: unknown key \"half_open\"");
    refused("\"breaker\": true", "validations[0].breaker: expected an object");
}

static void test_hedge_and_idempotent(void **state)
{
    (void)state;
    cfg c;
    const cfg_validation *v = ok(&c, "\"idempotent\": true, \"hedge\": {\"after_ms\": 150}");
    assert_int_equal(v->idempotent, 1);
    assert_int_equal(v->hedge_after_ms, 150);
    cfg_free(&c);
    /* key order in the text does not matter */
    v = ok(&c, "\"hedge\": {\"after_ms\": 600000}, \"idempotent\": true");
    assert_int_equal(v->hedge_after_ms, 600000);
    cfg_free(&c);
    v = ok(&c, "\"idempotent\": false");
    assert_int_equal(v->idempotent, 0);
    cfg_free(&c);
    refused("\"hedge\": {\"after_ms\": 150}", "validations[0].hedge: needs \"idempotent\": true");
    refused("\"idempotent\": false, \"hedge\": {\"after_ms\": 150}", "hedge: needs \"idempotent\"");
    refused("\"idempotent\": true, \"hedge\": {}", "hedge.after_ms: missing");
    refused("\"idempotent\": true, \"hedge\": {\"after_ms\": 0}",
            "hedge.after_ms: expected an integer in 1..600000");
    refused("\"idempotent\": true, \"hedge\": {\"after_ms\": 600001}", "hedge.after_ms");
    refused("\"idempotent\": true, \"hedge\": {\"after_ms\": 1, \"x\": 1}",
            "hedge: unknown key \"x\"");
    refused("\"idempotent\": 1", "validations[0].idempotent: expected true or false, got 1");
    refused("\"idempotent\": \"yes\"", "validations[0].idempotent: expected true or false");
}

static void test_unknown_key_lists_new_keys(void **state)
{
    (void)state;
    refused("\"retries\": {}", "retry, breaker, hedge");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_defaults),
        cmocka_unit_test(test_retry_defaults_follow_attempts),
        cmocka_unit_test(test_retry_refusals),
        cmocka_unit_test(test_breaker),
        cmocka_unit_test(test_hedge_and_idempotent),
        cmocka_unit_test(test_unknown_key_lists_new_keys),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
