/* Unit tests of the top-level "$schema" key (lib/cfg_schema.c): accepted and ignored when it is a
 * non-empty string (the shipped configs carry it, for editors), refused otherwise and anywhere but
 * the top level. Run from the repository root (reads the configs under config/). */
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

/* "$schema" changes nothing: the config with it equals the one without. */
static void test_schema_is_ignored(void **state)
{
    cfg with, without;
    char err[ERR_MAX];
    (void)state;
    if (cfg_load_string(&with,
                        "{\"$schema\": \"../docs/config.schema.json\", \"deadline_ms\": 1234}",
                        "t.json", NULL, err, sizeof err) != 0)
        fail_msg("refused: %s", err);
    assert_int_equal(
        cfg_load_string(&without, "{\"deadline_ms\": 1234}", "t.json", NULL, err, sizeof err), 0);
    assert_int_equal(with.deadline_ms, 1234);
    assert_int_equal(with.nvalidations, without.nvalidations);
    assert_string_equal(with.listen_host, without.listen_host);
    assert_int_equal(with.listen_port, without.listen_port);
    assert_int_equal(with.max_body_bytes, without.max_body_bytes);
    cfg_free(&with);
    cfg_free(&without);
}

/* The shipped configs carry "$schema" and load. */
static void test_shipped_configs_load(void **state)
{
    static const char *const files[] = {"config/checkoutd.json", "config/compensate.json"};
    (void)state;
    for (size_t i = 0; i < sizeof files / sizeof files[0]; i++) {
        cfg c;
        char err[ERR_MAX];
        if (cfg_load_file(&c, files[i], NULL, err, sizeof err) != 0)
            fail_msg("%s: %s (run the tests from the repository root)", files[i], err);
        cfg_free(&c);
    }
}

static void test_schema_refusals(void **state)
{
    (void)state;
    expect_refused("{\"$schema\": 1}", "t.json: $schema: expected", "got 1");
    expect_refused("{\"$schema\": \"\"}", "t.json: $schema: expected", "non-empty");
    expect_refused("{\"$schema\": null}", "t.json: $schema: expected", "got null");
    /* only at the top level */
    expect_refused("{\"validations\": [{\"name\": \"a\", \"field\": \"f\", \"url\": \"http://h/\", "
                   "\"$schema\": \"x\"}]}",
                   "validations[0]: unknown key \"$schema\"", NULL);
    expect_refused("{\"idempotency\": {\"$schema\": \"x\"}}", "idempotency: unknown key", NULL);
    /* still a typo check: the list of keys names it */
    expect_refused("{\"$schemas\": \"x\"}", "unknown key \"$schemas\"", "$schema");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_schema_is_ignored),
        cmocka_unit_test(test_shipped_configs_load),
        cmocka_unit_test(test_schema_refusals),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
