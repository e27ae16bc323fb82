/* Unit tests of the "journal" block (lib/cfg_journal.c): on only with compensate, store and path,
 * their variables, the path's check at load, and every refusal naming its key. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cfg.h"

static const char *env_store, *env_path;

static const char *fake_env(const char *name)
{
    if (strcmp(name, "CHECKOUTD_JOURNAL_STORE") == 0)
        return env_store;
    if (strcmp(name, "CHECKOUTD_JOURNAL_PATH") == 0)
        return env_path;
    return NULL;
}

/* One validation, with compensate when comp; journal: the block's text or "" for none. */
static const char *doc(char *buf, size_t cap, int comp, const char *journal)
{
    snprintf(buf, cap,
             "{\"validations\": [{\"name\": \"payment\", \"field\": \"payment\", \"url\": "
             "\"http://127.0.0.1:1/v\"%s}]%s%s}",
             comp ? ", \"compensate\": {\"url\": \"http://127.0.0.1:1/void\"}" : "",
             journal[0] ? ", \"journal\": " : "", journal);
    return buf;
}

static int load(cfg *c, const char *json, char *err, size_t cap)
{
    return cfg_load_string(c, json, "t.json", fake_env, err, cap);
}

static void test_defaults(void **state)
{
    char buf[512], err[512];
    cfg c;
    (void)state;
    env_store = env_path = NULL;
    env_path = "/tmp/checkoutd-test-cfg-journal/j.db"; /* the default dir may not be writable */
    assert_int_equal(load(&c, doc(buf, sizeof buf, 1, ""), err, sizeof err), 0);
    assert_int_equal(c.journal.on, 1); /* compensate: journaled by default */
    assert_int_equal(c.journal.off_given, 0);
    assert_string_equal(c.journal.path, "/tmp/checkoutd-test-cfg-journal/j.db");
    cfg_free(&c);
    assert_int_equal(load(&c, doc(buf, sizeof buf, 0, "{\"store\": \"file\"}"), err, sizeof err),
                     0);
    assert_int_equal(c.journal.on, 0); /* nothing to journal without compensate */
    cfg_free(&c);
    env_path = NULL;
    assert_int_equal(load(&c, doc(buf, sizeof buf, 0, ""), err, sizeof err), 0);
    assert_string_equal(c.journal.path, "/var/lib/checkoutd/journal.db");
    cfg_free(&c);
}

static void test_off_and_variables(void **state)
{
    char buf[512], err[512];
    cfg c;
    (void)state;
    env_store = env_path = NULL;
    assert_int_equal(load(&c, doc(buf, sizeof buf, 1, "{\"store\": \"off\"}"), err, sizeof err), 0);
    assert_int_equal(c.journal.on, 0);
    assert_int_equal(c.journal.off_given, 1); /* the start warns */
    cfg_free(&c);
    env_store = "off"; /* the variable beats the file */
    assert_int_equal(load(&c,
                          doc(buf, sizeof buf, 1, "{\"store\": \"file\", \"path\": \"/tmp/x.db\"}"),
                          err, sizeof err),
                     0);
    assert_int_equal(c.journal.on, 0);
    cfg_free(&c);
    env_store = NULL;
    env_path = "/tmp/checkoutd-test-cfg-journal-env.db";
    assert_int_equal(
        load(&c, doc(buf, sizeof buf, 1, "{\"path\": \"/tmp/y.db\"}"), err, sizeof err), 0);
    assert_string_equal(c.journal.path, "/tmp/checkoutd-test-cfg-journal-env.db");
    cfg_free(&c);
    env_path = NULL;
}

static void refused(const char *json, const char *needle1, const char *needle2)
{
    char err[512];
    cfg c;
    if (load(&c, json, err, sizeof err) == 0) {
        cfg_free(&c);
        fail_msg("accepted: %s", json);
    }
    if (strstr(err, needle1) == NULL || strstr(err, needle2) == NULL)
        fail_msg("expected '%s' and '%s' in: %s", needle1, needle2, err);
}

static void test_refusals(void **state)
{
    char buf[512];
    (void)state;
    env_store = env_path = NULL;
    refused(doc(buf, sizeof buf, 1, "[]"), "journal", "expected an object");
    refused(doc(buf, sizeof buf, 1, "{\"stor\": \"file\"}"), "journal", "unknown key");
    refused(doc(buf, sizeof buf, 1, "{\"store\": \"disk\"}"), "journal.store",
            "\"file\" or \"off\"");
    refused(doc(buf, sizeof buf, 1, "{\"store\": 1}"), "journal.store", "expected");
    refused(doc(buf, sizeof buf, 1, "{\"path\": \"\"}"), "journal.path", "expected");
    refused(doc(buf, sizeof buf, 1, "{\"path\": \"/tmp/dir/\"}"), "journal.path",
            "not a directory");
    /* not writable: the nearest existing thing on the way is a file, not a directory */
    refused(doc(buf, sizeof buf, 1, "{\"path\": \"/dev/null/x/journal.db\"}"), "journal.path",
            "cannot write");
    env_store = "maybe";
    refused(doc(buf, sizeof buf, 1, ""), "CHECKOUTD_JOURNAL_STORE", "\"maybe\"");
    env_store = NULL;
    env_path = "/dev/null/j.db";
    refused(doc(buf, sizeof buf, 1, ""), "CHECKOUTD_JOURNAL_PATH", "cannot write");
    env_path = NULL;
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_defaults),
        cmocka_unit_test(test_off_and_variables),
        cmocka_unit_test(test_refusals),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
