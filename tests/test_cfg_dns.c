/* Unit tests of the "dns" block (lib/cfg_dns.c): defaults, the servers' forms as c-ares takes them,
 * the environment, ranges and messages. */
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

static const char *env_servers, *env_refresh;

static const char *env(const char *name)
{
    if (strcmp(name, "CHECKOUTD_DNS_SERVERS") == 0)
        return env_servers;
    if (strcmp(name, "CHECKOUTD_DNS_REFRESH_MS") == 0)
        return env_refresh;
    return NULL;
}

static void expect_ok(cfg *c, const char *json)
{
    char err[ERR_MAX];
    if (cfg_load_string(c, json, "t.json", env, err, sizeof err) != 0)
        fail_msg("refused: %s\n  config: %s", err, json);
}

static void expect_refused(const char *json, const char *needle1, const char *needle2)
{
    cfg c;
    char err[ERR_MAX];
    if (cfg_load_string(&c, json, "t.json", env, err, sizeof err) == 0) {
        cfg_free(&c);
        fail_msg("accepted: %s", json);
    }
    assert_null(strchr(err, '\n'));
    if (strstr(err, needle1) == NULL || (needle2 && strstr(err, needle2) == NULL))
        fail_msg("message \"%s\" lacks \"%s\" / \"%s\"", err, needle1, needle2 ? needle2 : "");
}

static int reset(void **state)
{
    (void)state;
    env_servers = env_refresh = NULL;
    return 0;
}

static void test_defaults(void **state)
{
    (void)state;
    cfg c;
    expect_ok(&c, "{}");
    assert_null(c.dns.servers);
    assert_int_equal(c.dns.refresh_ms, 5000);
    assert_int_equal(c.dns.timeout_ms, 2000);
    cfg_free(&c);
}

static void test_servers_forms(void **state)
{
    (void)state;
    cfg c;
    expect_ok(&c, "{\"dns\": {\"servers\": [\"10.0.0.2\", \"127.0.0.1:5353\", \"[fd00::53]:54\", "
                  "\"::1\"], \"refresh_ms\": 100, \"timeout_ms\": 10}}");
    assert_string_equal(c.dns.servers, "10.0.0.2:53,127.0.0.1:5353,[fd00::53]:54,[::1]:53");
    assert_int_equal(c.dns.refresh_ms, 100);
    assert_int_equal(c.dns.timeout_ms, 10);
    cfg_free(&c);
}

static void test_environment(void **state)
{
    (void)state;
    cfg c;
    env_servers = "127.0.0.1:53,10.1.1.1";
    env_refresh = "250";
    expect_ok(&c, "{\"dns\": {\"servers\": [\"10.0.0.2\"], \"refresh_ms\": 9000}}");
    assert_string_equal(c.dns.servers, "127.0.0.1:53,10.1.1.1:53");
    assert_int_equal(c.dns.refresh_ms, 250);
    cfg_free(&c);
    env_servers = "10.0.0.1,nameserver";
    expect_refused("{}", "CHECKOUTD_DNS_SERVERS", "\"nameserver\"");
    env_servers = NULL;
    env_refresh = "99";
    expect_refused("{}", "CHECKOUTD_DNS_REFRESH_MS", "100..3600000");
}

static void test_refusals(void **state)
{
    (void)state;
    expect_refused("{\"dns\": 1}", "t.json: dns", "expected an object");
    expect_refused("{\"dns\": {\"ttl\": 1}}", "unknown key \"ttl\"", NULL);
    expect_refused("{\"dns\": {\"servers\": []}}", "dns.servers", "non-empty array");
    expect_refused("{\"dns\": {\"servers\": [\"dns.example\"]}}", "dns.servers[0]",
                   "expected an IP address or IP:PORT");
    expect_refused("{\"dns\": {\"servers\": [\"10.0.0.1:0\"]}}", "dns.servers[0]", NULL);
    expect_refused("{\"dns\": {\"servers\": [\"10.0.0.1:70000\"]}}", "dns.servers[0]", NULL);
    expect_refused("{\"dns\": {\"servers\": [53]}}", "dns.servers[0]", NULL);
    expect_refused("{\"dns\": {\"refresh_ms\": 3600001}}", "dns.refresh_ms", "100..3600000");
    expect_refused("{\"dns\": {\"timeout_ms\": 9}}", "dns.timeout_ms", "10..60000");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup(test_defaults, reset),
        cmocka_unit_test_setup(test_servers_forms, reset),
        cmocka_unit_test_setup(test_environment, reset),
        cmocka_unit_test_setup(test_refusals, reset),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
