/* Unit tests of the "compensate" block (lib/cfg_comp.c): defaults, ranges, refusals and messages.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cfg.h"

#define ERR_MAX 512
#define DOC_MAX 2048

/* A config of one validation (field f, url url) with the given compensate value (raw JSON). */
static const char *doc(char *buf, const char *field, const char *url, const char *comp)
{
    int n = snprintf(buf, DOC_MAX,
                     "{\"validations\": [{\"name\": \"pay\", \"field\": \"%s\", \"url\": \"%s\", "
                     "\"compensate\": %s}]}",
                     field, url, comp);
    assert_true(n > 0 && n < DOC_MAX);
    return buf;
}

static void expect_ok(cfg *c, const char *json)
{
    char err[ERR_MAX];
    if (cfg_load_string(c, json, "t.json", NULL, err, sizeof err) != 0)
        fail_msg("refused: %s\n  config: %s", err, json);
}

static void expect_refused(const char *json, const char *needle1, const char *needle2)
{
    cfg c;
    char err[ERR_MAX];
    if (cfg_load_string(&c, json, "t.json", NULL, err, sizeof err) == 0) {
        cfg_free(&c);
        fail_msg("accepted: %s", json);
    }
    assert_null(strchr(err, '\n'));
    if (strstr(err, needle1) == NULL || (needle2 && strstr(err, needle2) == NULL))
        fail_msg("message \"%s\" lacks \"%s\" / \"%s\"", err, needle1, needle2 ? needle2 : "");
}

static void test_absent_means_none(void **state)
{
    cfg c;
    (void)state;
    expect_ok(&c, "{}");
    for (size_t i = 0; i < c.nvalidations; i++)
        assert_null(c.validations[i].compensate.url);
    cfg_free(&c);
}

static void test_defaults(void **state)
{
    char buf[DOC_MAX];
    cfg c;
    (void)state;
    expect_ok(&c, doc(buf, "payment", "http://h/verify", "{\"url\": \"http://h/void\"}"));
    const cfg_compensate *k = &c.validations[0].compensate;
    assert_string_equal(k->url, "http://h/void");
    assert_int_equal(k->timeout_ms, 1000);
    assert_int_equal(k->attempts, 5);
    assert_int_equal(k->backoff_ms, 200);
    assert_int_equal(k->max_backoff_ms, 5000);
    cfg_free(&c);
    /* max_backoff_ms defaults to the larger of 5000 and backoff_ms */
    expect_ok(&c, doc(buf, "payment", "http://h/verify",
                      "{\"url\": \"http://h/void\", \"backoff_ms\": 9000}"));
    assert_int_equal(c.validations[0].compensate.max_backoff_ms, 9000);
    cfg_free(&c);
}

static void test_all_keys(void **state)
{
    char buf[DOC_MAX];
    cfg c;
    (void)state;
    expect_ok(&c, doc(buf, "payment", "https://h/verify",
                      "{\"url\": \"https://h/void?x=1\", \"timeout_ms\": 600000, \"attempts\": 20, "
                      "\"backoff_ms\": 1, \"max_backoff_ms\": 1}"));
    const cfg_compensate *k = &c.validations[0].compensate;
    assert_string_equal(k->url, "https://h/void?x=1");
    assert_int_equal(k->timeout_ms, 600000);
    assert_int_equal(k->attempts, 20);
    assert_int_equal(k->backoff_ms, 1);
    assert_int_equal(k->max_backoff_ms, 1);
    cfg_free(&c);
}

static void test_ranges(void **state)
{
    char buf[DOC_MAX];
    (void)state;
    static const struct {
        const char *comp, *key, *range;
    } cases[] = {
        {"{\"url\": \"http://h/\", \"timeout_ms\": 0}", "compensate.timeout_ms", "1..600000"},
        {"{\"url\": \"http://h/\", \"timeout_ms\": 600001}", "compensate.timeout_ms", "1..600000"},
        {"{\"url\": \"http://h/\", \"attempts\": 0}", "compensate.attempts", "1..20"},
        {"{\"url\": \"http://h/\", \"attempts\": 21}", "compensate.attempts", "1..20"},
        {"{\"url\": \"http://h/\", \"backoff_ms\": 0}", "compensate.backoff_ms", "1..60000"},
        {"{\"url\": \"http://h/\", \"backoff_ms\": 60001}", "compensate.backoff_ms", "1..60000"},
        {"{\"url\": \"http://h/\", \"backoff_ms\": 300, \"max_backoff_ms\": 299}",
         "compensate.max_backoff_ms", "300..600000"},
        {"{\"url\": \"http://h/\", \"max_backoff_ms\": 600001}", "compensate.max_backoff_ms",
         "200..600000"},
        {"{\"url\": \"http://h/\", \"attempts\": \"5\"}", "compensate.attempts", "1..20"},
        {"{\"url\": \"http://h/\", \"attempts\": 2.0}", "compensate.attempts", "1..20"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
        expect_refused(doc(buf, "payment", "http://h/v", cases[i].comp), cases[i].key,
                       cases[i].range);
}

static void test_refusals(void **state)
{
    char buf[DOC_MAX];
    (void)state;
    expect_refused(doc(buf, "payment", "http://h/v", "{}"), "validations[0].compensate.url",
                   "missing");
    expect_refused(doc(buf, "payment", "http://h/v", "{\"url\": \"ftp://h/\"}"), "compensate.url",
                   "http://");
    expect_refused(doc(buf, "payment", "http://h/v", "{\"url\": \"https://h/void\"}"),
                   "compensate.url", "same scheme");
    expect_refused(doc(buf, "payment", "https://h/v", "{\"url\": \"http://h/void\"}"),
                   "compensate.url", "same scheme");
    expect_refused(doc(buf, "payment", "http://h/v", "{\"url\": \"http://h/\", \"tries\": 1}"),
                   "validations[0].compensate", "unknown key \"tries\"");
    expect_refused(doc(buf, "payment", "http://h/v", "true"), "validations[0].compensate",
                   "expected an object");
    expect_refused(doc(buf, "payment", "http://h/v", "\"http://h/\""), "validations[0].compensate",
                   "expected an object");
    for (const char *const *f = (const char *const[]){"order_id", "validation", "result", NULL};
         *f != NULL; f++)
        expect_refused(doc(buf, *f, "http://h/v", "{\"url\": \"http://h/void\"}"),
                       "validations[0].compensate", "not allowed");
}

/* The unknown-key message of a validation lists the v1.2 keys too. */
static void test_unknown_key_lists_compensate(void **state)
{
    (void)state;
    expect_refused("{\"validations\": [{\"name\": \"a\", \"field\": \"f\", \"url\": \"http://h/\", "
                   "\"undo\": {}}]}",
                   "unknown key \"undo\"", "compensate");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_absent_means_none),
        cmocka_unit_test(test_defaults),
        cmocka_unit_test(test_all_keys),
        cmocka_unit_test(test_ranges),
        cmocka_unit_test(test_refusals),
        cmocka_unit_test(test_unknown_key_lists_compensate),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
