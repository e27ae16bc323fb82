/* Unit tests of lib/cfg: defaults, every refusal and its message, range boundaries, listen and URL
 * syntax, environment overrides (through a table, never the process environment), files.
 * Run from the repository root (the tests read config/checkoutd.json). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cfg.h"

#define ERR_MAX 512
#define DOC_MAX 8192
#define SRC     "test.json"

/* One validation that passes every check; tests change one thing at a time. */
#define GOOD_VAL "{\"name\": \"a\", \"field\": \"f\", \"url\": \"http://h/\"}"

typedef struct env_var {
    const char *name;
    const char *value;
} env_var;

/* The environment table_getenv serves, ended by a NULL name; NULL: an empty environment. */
static const env_var *env_table;

static const char *table_getenv(const char *name)
{
    for (const env_var *e = env_table; e != NULL && e->name != NULL; e++) {
        if (strcmp(e->name, name) == 0)
            return e->value;
    }
    return NULL;
}

static int load(cfg *c, const char *json, const env_var *env, char *err)
{
    env_table = env;
    return cfg_load_string(c, json, SRC, table_getenv, err, ERR_MAX);
}

static void assert_zeroed(const cfg *c)
{
    cfg zero;

    memset(&zero, 0, sizeof zero);
    assert_memory_equal(c, &zero, sizeof zero);
}

/* json (with env) is accepted: *c holds the result (cfg_free it). */
static void expect_ok(cfg *c, const char *json, const env_var *env)
{
    char err[ERR_MAX];

    if (load(c, json, env, err) != 0)
        fail_msg("refused: %s\n  config: %s", err, json);
    assert_string_equal(err, "");
}

/* json (with env) is refused with a one-line message holding every needle; *out is zeroed. */
static void expect_refused_v(const char *json, const env_var *env, const char *const *needles)
{
    cfg c;
    char err[ERR_MAX];

    memset(&c, 0xa5, sizeof c); /* garbage in: a failed load must zero it */
    if (load(&c, json, env, err) != -1) {
        cfg_free(&c);
        fail_msg("accepted: %s", json);
    }
    assert_zeroed(&c);
    assert_null(strchr(err, '\n'));
    assert_true(strlen(err) > 0);
    for (; *needles != NULL; needles++) {
        if (strstr(err, *needles) == NULL)
            fail_msg("message \"%s\" lacks \"%s\"\n  config: %s", err, *needles, json);
    }
    cfg_free(&c); /* safe on a failed load */
}

#define REFUSED(json, env, ...)                                                                    \
    expect_refused_v(json, env, (const char *const[]){__VA_ARGS__, NULL})

static void assert_cfg_equal(const cfg *a, const cfg *b)
{
    assert_string_equal(a->listen_host, b->listen_host);
    assert_int_equal(a->listen_port, b->listen_port);
    assert_int_equal(a->deadline_ms, b->deadline_ms);
    assert_int_equal(a->max_body_bytes, b->max_body_bytes);
    assert_int_equal(a->max_inflight, b->max_inflight);
    assert_int_equal(a->max_upstream_body_bytes, b->max_upstream_body_bytes);
    assert_int_equal(a->nvalidations, b->nvalidations);
    for (size_t i = 0; i < a->nvalidations; i++) {
        assert_string_equal(a->validations[i].name, b->validations[i].name);
        assert_string_equal(a->validations[i].field, b->validations[i].field);
        assert_string_equal(a->validations[i].url, b->validations[i].url);
        assert_int_equal(a->validations[i].timeout_ms, b->validations[i].timeout_ms);
    }
}

static void assert_validation(const cfg_validation *v, const char *name, const char *field,
                              const char *url, long timeout_ms)
{
    assert_string_equal(v->name, name);
    assert_string_equal(v->field, field);
    assert_string_equal(v->url, url);
    assert_int_equal(v->timeout_ms, timeout_ms);
}

/* {"validations": [body]} into buf. */
static const char *with_validations(char *buf, size_t n, const char *body)
{
    int len = snprintf(buf, n, "{\"validations\": [%s]}", body);

    assert_true(len > 0 && (size_t)len < n);
    return buf;
}

/* A config whose only validation has url (written into JSON as is: no quotes or backslashes). */
static const char *with_url(char *buf, size_t n, const char *url)
{
    int len = snprintf(
        buf, n, "{\"validations\": [{\"name\": \"a\", \"field\": \"f\", \"url\": \"%s\"}]}", url);

    assert_true(len > 0 && (size_t)len < n);
    return buf;
}

/* A temporary file holding len bytes of text; its path in path[64]. Remove it with unlink. */
static void write_temp(char path[64], const char *text, size_t len)
{
    int fd;

    snprintf(path, 64, "/tmp/test_cfg.XXXXXX");
    fd = mkstemp(path);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, text, len), (ssize_t)len);
    assert_int_equal(close(fd), 0);
}

/* ---- defaults ---- */

static void test_default_values(void **state)
{
    cfg c;
    char err[ERR_MAX];

    (void)state;
    assert_int_equal(cfg_load_file(&c, NULL, NULL, err, sizeof err), 0);
    assert_string_equal(c.listen_host, "127.0.0.1");
    assert_int_equal(c.listen_port, 8080);
    assert_int_equal(c.deadline_ms, 2000);
    assert_int_equal(c.max_body_bytes, 65536);
    assert_int_equal(c.max_inflight, 10000);
    assert_int_equal(c.max_upstream_body_bytes, 1048576);
    assert_int_equal(c.nvalidations, 3);
    assert_validation(&c.validations[0], "address", "address", "http://127.0.0.1:9101/validate",
                      1000);
    assert_validation(&c.validations[1], "inventory", "items", "http://127.0.0.1:9102/check", 1000);
    assert_validation(&c.validations[2], "payment", "payment", "http://127.0.0.1:9103/verify",
                      1500);
    cfg_free(&c);
    assert_zeroed(&c);
}

static void test_default_equals_file(void **state)
{
    cfg def, file, str;
    char err[ERR_MAX];

    (void)state;
    assert_int_equal(cfg_load_file(&def, NULL, NULL, err, sizeof err), 0);
    if (cfg_load_file(&file, "config/checkoutd.json", NULL, err, sizeof err) != 0)
        fail_msg("config/checkoutd.json: %s (run the tests from the repository root)", err);
    assert_int_equal(cfg_load_string(&str, cfg_default_json(), NULL, NULL, err, sizeof err), 0);
    assert_cfg_equal(&def, &file);
    assert_cfg_equal(&def, &str);
    cfg_free(&def);
    cfg_free(&file);
    cfg_free(&str);
}

static void test_empty_object_is_default(void **state)
{
    cfg c, def;
    char err[ERR_MAX];

    (void)state;
    expect_ok(&c, "{}", NULL);
    assert_int_equal(cfg_load_file(&def, NULL, NULL, err, sizeof err), 0);
    assert_cfg_equal(&c, &def);
    cfg_free(&c);
    cfg_free(&def);
}

static void test_missing_keys_take_defaults(void **state)
{
    cfg c;
    char doc[DOC_MAX];

    (void)state;
    expect_ok(&c, "{\"deadline_ms\": 5, \"listen\": \"0.0.0.0:1\"}", NULL);
    assert_int_equal(c.deadline_ms, 5);
    assert_string_equal(c.listen_host, "0.0.0.0");
    assert_int_equal(c.listen_port, 1);
    assert_int_equal(c.max_body_bytes, 65536);
    assert_int_equal(c.max_inflight, 10000);
    assert_int_equal(c.max_upstream_body_bytes, 1048576);
    assert_int_equal(c.nvalidations, 3);
    assert_string_equal(c.validations[2].name, "payment");
    cfg_free(&c);

    /* A validation without timeout_ms gets 1000; the list replaces the default three. */
    expect_ok(&c, with_validations(doc, sizeof doc, GOOD_VAL), NULL);
    assert_int_equal(c.nvalidations, 1);
    assert_validation(&c.validations[0], "a", "f", "http://h/", 1000);
    assert_int_equal(c.deadline_ms, 2000);
    assert_string_equal(c.listen_host, "127.0.0.1");
    cfg_free(&c);
}

/* ---- refusals and their messages ---- */

static void test_unknown_keys(void **state)
{
    char doc[DOC_MAX];

    (void)state;
    REFUSED("{\"foo\": 1}", NULL, "test.json: unknown key \"foo\"");
    REFUSED("{\"deadline\": 2000}", NULL, "unknown key \"deadline\"", "deadline_ms");
    REFUSED(with_validations(doc, sizeof doc,
                             "{\"name\": \"a\", \"field\": \"f\", \"url\": \"http://h/\", "
                             "\"retries\": 3}"),
            NULL, "test.json: validations[0]: unknown key \"retries\"");
}

static void test_wrong_types(void **state)
{
    static const struct {
        const char *json;
        const char *needle;
    } cases[] = {
        {"{\"deadline_ms\": \"2000\"}",
         "deadline_ms: expected an integer in 1..600000, got \"2000\""},
        {"{\"deadline_ms\": true}", "deadline_ms: expected an integer in 1..600000, got true"},
        {"{\"deadline_ms\": false}", "deadline_ms: expected an integer in 1..600000, got false"},
        {"{\"deadline_ms\": 2000.0}", "deadline_ms: expected an integer in 1..600000, got a real"},
        {"{\"deadline_ms\": 1e3}", "deadline_ms: expected an integer"},
        {"{\"deadline_ms\": null}", "deadline_ms: expected an integer in 1..600000, got null"},
        {"{\"deadline_ms\": {}}", "deadline_ms: expected an integer in 1..600000, got an object"},
        {"{\"max_inflight\": [1]}",
         "max_inflight: expected an integer in 1..1000000, got an array"},
        {"{\"listen\": 8080}", "listen: expected \"host:port\""},
        {"{\"listen\": null}", "listen: expected \"host:port\""},
        {"{\"validations\": {}}", "validations: expected an array of 1..32 validations"},
        {"{\"validations\": \"payment\"}", "validations: expected an array"},
        {"{\"validations\": null}", "validations: expected an array"},
        {"{\"validations\": [\"payment\"]}", "validations[0]: expected an object"},
        {"{\"validations\": [" GOOD_VAL ", 5]}", "validations[1]: expected an object"},
        {"{\"validations\": [{\"name\": 5, \"field\": \"f\", \"url\": \"http://h/\"}]}",
         "validations[0].name: expected a name"},
        {"{\"validations\": [{\"name\": \"a\", \"field\": true, \"url\": \"http://h/\"}]}",
         "validations[0].field: expected a non-empty string, got true"},
        {"{\"validations\": [{\"name\": \"a\", \"field\": \"f\", \"url\": [\"http://h/\"]}]}",
         "validations[0].url: expected an http:// or https:// URL, got an array"},
        {"{\"validations\": [{\"name\": \"a\", \"field\": \"f\", \"url\": \"http://h/\", "
         "\"timeout_ms\": \"1000\"}]}",
         "validations[0].timeout_ms: expected an integer in 1..600000, got \"1000\""},
        {"{\"validations\": [{\"name\": \"a\", \"field\": \"f\", \"url\": \"http://h/\", "
         "\"timeout_ms\": 1.5}]}",
         "validations[0].timeout_ms: expected an integer"},
        {"{\"validations\": [{\"name\": \"a\", \"field\": \"f\", \"url\": \"http://h/\", "
         "\"timeout_ms\": true}]}",
         "validations[0].timeout_ms: expected an integer"},
    };

    (void)state;
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
        REFUSED(cases[i].json, NULL, cases[i].needle);
}

static void test_missing_required_keys(void **state)
{
    char doc[DOC_MAX];

    (void)state;
    REFUSED(with_validations(doc, sizeof doc, "{\"field\": \"f\", \"url\": \"http://h/\"}"), NULL,
            "validations[0].name: missing");
    REFUSED(with_validations(doc, sizeof doc, "{\"name\": \"a\", \"url\": \"http://h/\"}"), NULL,
            "validations[0].field: missing, expected a non-empty string");
    REFUSED(with_validations(doc, sizeof doc, "{\"name\": \"a\", \"field\": \"f\"}"), NULL,
            "validations[0].url: missing, expected an http:// or https:// URL");
    REFUSED(with_validations(doc, sizeof doc, "{}"), NULL, "validations[0].name: missing");
}

/* Every number key: min and max are accepted, min-1 and max+1 refused with the key and range. */
typedef struct range_case {
    const char *key;
    long min, max;
} range_case;

static const range_case ranges[] = {
    {"deadline_ms", 1, 600000},   {"max_body_bytes", 1, 16777216},
    {"max_inflight", 1, 1000000}, {"max_upstream_body_bytes", 1024, 67108864},
    {"timeout_ms", 1, 600000},
};

/* A config setting key to v (timeout_ms: in the only validation). */
static const char *range_doc(char *buf, size_t n, const char *key, long v)
{
    if (strcmp(key, "timeout_ms") == 0)
        snprintf(buf, n,
                 "{\"validations\": [{\"name\": \"a\", \"field\": \"f\", \"url\": \"http://h/\", "
                 "\"timeout_ms\": %ld}]}",
                 v);
    else
        snprintf(buf, n, "{\"%s\": %ld}", key, v);
    return buf;
}

static long range_value(const cfg *c, const char *key)
{
    if (strcmp(key, "deadline_ms") == 0)
        return c->deadline_ms;
    if (strcmp(key, "max_body_bytes") == 0)
        return c->max_body_bytes;
    if (strcmp(key, "max_inflight") == 0)
        return c->max_inflight;
    if (strcmp(key, "max_upstream_body_bytes") == 0)
        return c->max_upstream_body_bytes;
    return c->validations[0].timeout_ms;
}

/* The variable that overrides r's key (timeout_ms: in the validation called name), upper case. */
static void range_var(const range_case *r, const char *name, char var[64])
{
    if (strcmp(r->key, "timeout_ms") == 0)
        snprintf(var, 64, "CHECKOUTD_%s_TIMEOUT_MS", name);
    else
        snprintf(var, 64, "CHECKOUTD_%s", r->key);
    for (char *p = var; *p != '\0'; p++)
        *p = (char)(*p >= 'a' && *p <= 'z' ? *p - 'a' + 'A' : *p);
}

static void test_range_boundaries(void **state)
{
    char doc[DOC_MAX], range[64];
    cfg c;

    (void)state;
    for (size_t i = 0; i < sizeof ranges / sizeof ranges[0]; i++) {
        const range_case *r = &ranges[i];
        const long ok[] = {r->min, r->max};
        const long bad[] = {r->min - 1, r->max + 1};

        snprintf(range, sizeof range, "expected an integer in %ld..%ld", r->min, r->max);
        for (size_t j = 0; j < 2; j++) {
            expect_ok(&c, range_doc(doc, sizeof doc, r->key, ok[j]), NULL);
            assert_int_equal(range_value(&c, r->key), ok[j]);
            cfg_free(&c);
            REFUSED(range_doc(doc, sizeof doc, r->key, bad[j]), NULL, r->key, range);
        }
    }
    REFUSED("{\"deadline_ms\": -1}", NULL, "deadline_ms", "got -1");
    REFUSED("{\"max_inflight\": 9223372036854775807}", NULL, "max_inflight");
}

static void test_names(void **state)
{
    static const char *const good[] = {"a", "0", "fraud_2", "_",
                                       "abcdefghijklmnopqrstuvwxyz012345"};
    static const char *const bad[] = {
        "", "Payment", "pay-ment", "pay ment", "caf\\u00e9", "abcdefghijklmnopqrstuvwxyz0123456"};
    char body[512], doc[DOC_MAX];
    cfg c;

    (void)state;
    for (size_t i = 0; i < sizeof good / sizeof good[0]; i++) {
        snprintf(body, sizeof body, "{\"name\": \"%s\", \"field\": \"f\", \"url\": \"http://h/\"}",
                 good[i]);
        expect_ok(&c, with_validations(doc, sizeof doc, body), NULL);
        assert_string_equal(c.validations[0].name, good[i]);
        cfg_free(&c);
    }
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        snprintf(body, sizeof body, "{\"name\": \"%s\", \"field\": \"f\", \"url\": \"http://h/\"}",
                 bad[i]);
        REFUSED(with_validations(doc, sizeof doc, body), NULL,
                "test.json: validations[0].name: expected a name of 1..32 characters from "
                "[a-z0-9_], got \"");
    }
}

static void test_duplicate_name(void **state)
{
    char doc[DOC_MAX];
    cfg c;

    (void)state;
    REFUSED(with_validations(doc, sizeof doc,
                             "{\"name\": \"payment\", \"field\": \"a\", \"url\": \"http://h/\"},"
                             "{\"name\": \"address\", \"field\": \"b\", \"url\": \"http://h/\"},"
                             "{\"name\": \"payment\", \"field\": \"c\", \"url\": \"http://h/\"}"),
            NULL, "test.json: validations[2].name: duplicate name \"payment\"");
    /* Two validations may look at the same field. */
    expect_ok(&c,
              with_validations(doc, sizeof doc,
                               "{\"name\": \"a\", \"field\": \"payment\", \"url\": \"http://h/\"},"
                               "{\"name\": \"b\", \"field\": \"payment\", \"url\": \"http://h/\"}"),
              NULL);
    assert_int_equal(c.nvalidations, 2);
    cfg_free(&c);
}

static void test_empty_field(void **state)
{
    char doc[DOC_MAX];

    (void)state;
    REFUSED(with_validations(doc, sizeof doc,
                             "{\"name\": \"a\", \"field\": \"\", \"url\": \"http://h/\"}"),
            NULL, "validations[0].field: expected a non-empty string, got \"\"");
}

static void test_urls_refused(void **state)
{
    static const char *const bad[] = {
        "ftp://x",          "http://",
        "https://",         "http:///path",
        "http://:80/",      "http://h:0/",
        "http://h:65536/",  "http://h:/",
        "http://h:8a/",     "http://h x/",
        "http://h/a b",     "HTTP://h/",
        "127.0.0.1:9101",   "",
        "http://[::1/",     "http://[]/",
        "http://ho^st/",    "http:/h/",
        "http://h:123456/", "http://[::1]x/",
        "http://::1/",      "//h/",
        "http://u@/",       "https//h/",
    };
    char doc[DOC_MAX], needle[256];

    (void)state;
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        snprintf(needle, sizeof needle,
                 "test.json: validations[0].url: expected an http:// or https:// URL, got \"%s\"",
                 bad[i]);
        REFUSED(with_url(doc, sizeof doc, bad[i]), NULL, needle);
    }
    /* A control character in the URL: refused, and escaped so that the message stays one line. */
    REFUSED("{\"validations\": [{\"name\": \"a\", \"field\": \"f\", \"url\": \"http://h/\\n\"}]}",
            NULL, "validations[0].url", "got \"http://h/\\n\"");
}

static void test_urls_accepted(void **state)
{
    static const char *const good[] = {
        "http://h",
        "https://h/",
        "http://127.0.0.1:9101/validate",
        "https://payments.example.com:8443/v1/verify",
        "http://h:1/",
        "http://h:65535/",
        "http://[::1]:9000/x",
        "http://[::1]/",
        "http://user:pw@h:80/x",
        "http://h?x=1",
        "http://h/v?x=1&y=%20z#frag",
        "http://my_host-1.internal/",
    };
    char doc[DOC_MAX];
    cfg c;

    (void)state;
    for (size_t i = 0; i < sizeof good / sizeof good[0]; i++) {
        expect_ok(&c, with_url(doc, sizeof doc, good[i]), NULL);
        assert_string_equal(c.validations[0].url, good[i]); /* kept as written */
        cfg_free(&c);
    }
}

static void test_query_string_kept(void **state)
{
    char doc[DOC_MAX];
    cfg c;

    (void)state;
    expect_ok(&c, with_url(doc, sizeof doc, "https://fraud.example/check?tenant=eu&mode=strict"),
              NULL);
    assert_string_equal(c.validations[0].url, "https://fraud.example/check?tenant=eu&mode=strict");
    cfg_free(&c);
}

/* {"validations": [n validations named v0..v(n-1)]} into buf. */
static const char *n_validations(char *buf, size_t n, size_t count)
{
    size_t used = (size_t)snprintf(buf, n, "{\"validations\": [");

    for (size_t i = 0; i < count; i++) {
        used += (size_t)snprintf(buf + used, n - used,
                                 "%s{\"name\": \"v%zu\", \"field\": \"f\", \"url\": \"http://h/\"}",
                                 i ? "," : "", i);
        assert_true(used < n);
    }
    used += (size_t)snprintf(buf + used, n - used, "]}");
    assert_true(used < n);
    return buf;
}

static void test_validation_count(void **state)
{
    char doc[DOC_MAX];
    cfg c;

    (void)state;
    REFUSED(n_validations(doc, sizeof doc, 0), NULL,
            "test.json: validations: expected 1..32 validations, got 0");
    REFUSED(n_validations(doc, sizeof doc, 33), NULL,
            "test.json: validations: expected 1..32 validations, got 33");
    expect_ok(&c, n_validations(doc, sizeof doc, 1), NULL);
    assert_int_equal(c.nvalidations, 1);
    cfg_free(&c);
    expect_ok(&c, n_validations(doc, sizeof doc, 32), NULL);
    assert_int_equal(c.nvalidations, 32);
    assert_string_equal(c.validations[31].name, "v31");
    cfg_free(&c);
}

static void test_listen_accepted(void **state)
{
    static const struct {
        const char *listen;
        const char *host;
        int port;
    } cases[] = {
        {"127.0.0.1:0", "127.0.0.1", 0},
        {"0.0.0.0:65535", "0.0.0.0", 65535},
        {"[::1]:8080", "::1", 8080},
        {"[::]:0", "::", 0},
        {"localhost:80", "localhost", 80},
        {"[fe80::1%eth0]:9000", "fe80::1%eth0", 9000},
        {"127.0.0.1:08080", "127.0.0.1", 8080},
    };
    char doc[256];
    cfg c;

    (void)state;
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        snprintf(doc, sizeof doc, "{\"listen\": \"%s\"}", cases[i].listen);
        expect_ok(&c, doc, NULL);
        assert_string_equal(c.listen_host, cases[i].host);
        assert_int_equal(c.listen_port, cases[i].port);
        cfg_free(&c);
    }
}

/* v1.3 edge keys: request_timeout_ms (default, range, variable), admin_listen (form, variable,
 * not listen's own), top-level tls (files checked, both of cert and key, unknown keys, variables
 * supply the block). */
static void test_v13_edge_keys(void **state)
{
    static const env_var big_timeout[] = {{"CHECKOUTD_REQUEST_TIMEOUT_MS", "600001"}, {NULL, NULL}};
    static const env_var any_admin[] = {{"CHECKOUTD_ADMIN_LISTEN", "0.0.0.0:0"}, {NULL, NULL}};
    static const env_var empty_admin[] = {{"CHECKOUTD_ADMIN_LISTEN", ""}, {NULL, NULL}};
    static const env_var key_only[] = {{"CHECKOUTD_TLS_KEY_FILE", "/no/such.key"}, {NULL, NULL}};
    static const env_var missing[] = {{"CHECKOUTD_TLS_CERT_FILE", "/no/such.pem"},
                                      {"CHECKOUTD_TLS_KEY_FILE", "/no/such.key"},
                                      {NULL, NULL}};
    char doc[512], cert[64], key[64];
    cfg c;

    (void)state;
    expect_ok(&c, "{}", NULL);
    assert_int_equal(c.request_timeout_ms, 30000);
    assert_null(c.admin_host);
    assert_null(c.listen_tls.cert_file);
    cfg_free(&c);
    expect_ok(&c, "{\"request_timeout_ms\": 100}", NULL);
    assert_int_equal(c.request_timeout_ms, 100);
    cfg_free(&c);
    REFUSED("{\"request_timeout_ms\": 99}", NULL, "request_timeout_ms", "100..600000");
    REFUSED("{}", big_timeout, "CHECKOUTD_REQUEST_TIMEOUT_MS", "100..600000");

    expect_ok(&c, "{\"admin_listen\": \"[::1]:9090\"}", NULL);
    assert_string_equal(c.admin_host, "::1");
    assert_int_equal(c.admin_port, 9090);
    cfg_free(&c);
    expect_ok(&c, "{}", any_admin);
    assert_string_equal(c.admin_host, "0.0.0.0");
    cfg_free(&c);
    REFUSED("{\"admin_listen\": 9090}", NULL, "admin_listen", "expected \"host:port\"");
    REFUSED("{\"admin_listen\": \"h:99999\"}", NULL, "admin_listen", "got \"h:99999\"");
    REFUSED("{\"listen\": \"127.0.0.1:8080\", \"admin_listen\": \"127.0.0.1:8080\"}", NULL,
            "admin_listen: must differ from listen");
    REFUSED("{}", empty_admin, "CHECKOUTD_ADMIN_LISTEN");

    /* a readable file that is no certificate, then a path that does not exist */
    write_temp(key, "not a key\n", 10);
    write_temp(cert, "not a certificate\n", 18);
    snprintf(doc, sizeof doc, "{\"tls\": {\"cert_file\": \"%s\", \"key_file\": \"%s\"}}", cert,
             key);
    REFUSED(doc, NULL, "tls.cert_file", cert, "holds no PEM certificate");
    snprintf(doc, sizeof doc, "{\"tls\": {\"cert_file\": \"%s\", \"key_file\": \"/no/such.key\"}}",
             cert);
    REFUSED(doc, NULL, "tls.");
    snprintf(doc, sizeof doc, "{\"tls\": {\"cert_file\": \"%s\"}}", cert);
    REFUSED(doc, NULL, "tls.key_file: missing", "CHECKOUTD_TLS_KEY_FILE");
    snprintf(doc, sizeof doc, "{\"tls\": {\"cert\": \"%s\"}}", cert);
    REFUSED(doc, NULL, "unknown key", "cert_file, key_file, client_ca_file");
    REFUSED("{\"tls\": true}", NULL, "tls: expected an object");
    REFUSED("{}", key_only, "tls.cert_file: missing");
    REFUSED("{}", missing, "CHECKOUTD_TLS_CERT_FILE: cannot read \"/no/such.pem\"");
    unlink(key);
    unlink(cert);
}

static void test_listen_refused(void **state)
{
    static const char *const bad[] = {
        "127.0.0.1", "127.0.0.1:", ":8080",   "::1:8080", "[::1]8080",    "[::1]",  "h:65536",
        "h:-1",      "h:+80",      "h:80 ",   " h:80",    "h:0x50",       "[]:80",  "[::1:80",
        "h:123456",  "",           "h:80:80", "h/x:80",   "[1.2.3.4]:80", "a b:80",
    };
    char doc[256], needle[256];

    (void)state;
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        snprintf(doc, sizeof doc, "{\"listen\": \"%s\"}", bad[i]);
        snprintf(needle, sizeof needle,
                 "test.json: listen: expected \"host:port\" with a port in 0..65535 (IPv6 as "
                 "\"[::1]:8080\"), got \"%s\"",
                 bad[i]);
        REFUSED(doc, NULL, needle);
    }
}

static void test_source_prefix(void **state)
{
    cfg c;
    char err[ERR_MAX];

    (void)state;
    assert_int_equal(
        cfg_load_string(&c, "{\"deadline_ms\": 0}", "config/x.json", NULL, err, sizeof err), -1);
    assert_string_equal(err, "config/x.json: deadline_ms: expected an integer in 1..600000, got 0");
    assert_int_equal(cfg_load_string(&c, "{\"deadline_ms\": 0}", NULL, NULL, err, sizeof err), -1);
    assert_string_equal(err, "deadline_ms: expected an integer in 1..600000, got 0");
    /* Whatever the source holds, the message stays one line. */
    assert_int_equal(cfg_load_string(&c, "{\"foo\": 1}", "a\nb.json", NULL, err, sizeof err), -1);
    assert_null(strchr(err, '\n'));
    assert_non_null(strstr(err, "unknown key \"foo\""));
}

static void test_duplicate_json_key(void **state)
{
    (void)state;
    REFUSED("{\"deadline_ms\": 1, \"deadline_ms\": 2}", NULL, "test.json: invalid JSON at line 1",
            "duplicate", "deadline_ms");
}

static void test_not_json(void **state)
{
    (void)state;
    REFUSED("{\n  \"deadline_ms\": 2000,\n  oops\n}", NULL,
            "test.json: invalid JSON at line 3, column ");
    REFUSED("", NULL, "test.json: invalid JSON at line 1, column 0");
    REFUSED("{\"listen\": \"127.0.0.1:8080\",}", NULL, "invalid JSON at line 1, column ");
    REFUSED("[]", NULL, "test.json: expected a JSON object at the top level, got an array");
    REFUSED("{\"s\": \"\\u0000\"}", NULL, "invalid JSON at line 1");
}

/* ---- environment ---- */

static void test_env_overrides_win(void **state)
{
    static const env_var env[] = {
        {"CHECKOUTD_LISTEN", "[::1]:0"},
        {"CHECKOUTD_DEADLINE_MS", "4000"},
        {"CHECKOUTD_MAX_BODY_BYTES", "1"},
        {"CHECKOUTD_MAX_INFLIGHT", "1000000"},
        {"CHECKOUTD_MAX_UPSTREAM_BODY_BYTES", "1024"},
        {"CHECKOUTD_PAYMENT_URL", "https://pay.example/verify?v=2"},
        {"CHECKOUTD_PAYMENT_TIMEOUT_MS", "250"},
        {"CHECKOUTD_PAYMENT_FIELD", "billing"},
        {"CHECKOUTD_ADDRESS_TIMEOUT_MS", "7"},
        {"CHECKOUTD_INVENTORY_URL", "http://inv:1/"},
        {NULL, NULL},
    };
    const char *file = "{\"listen\": \"0.0.0.0:9\", \"deadline_ms\": 3000, \"max_body_bytes\": 5, "
                       "\"max_inflight\": 6, \"max_upstream_body_bytes\": 2048, \"validations\": ["
                       "{\"name\": \"address\", \"field\": \"address\", \"url\": \"http://a/\"},"
                       "{\"name\": \"inventory\", \"field\": \"items\", \"url\": \"http://i/\"},"
                       "{\"name\": \"payment\", \"field\": \"payment\", \"url\": \"http://p/\", "
                       "\"timeout_ms\": 900}]}";
    cfg c;

    (void)state;
    expect_ok(&c, file, env);
    assert_string_equal(c.listen_host, "::1");
    assert_int_equal(c.listen_port, 0);
    assert_int_equal(c.deadline_ms, 4000);
    assert_int_equal(c.max_body_bytes, 1);
    assert_int_equal(c.max_inflight, 1000000);
    assert_int_equal(c.max_upstream_body_bytes, 1024);
    assert_validation(&c.validations[0], "address", "address", "http://a/", 7);
    assert_validation(&c.validations[1], "inventory", "items", "http://inv:1/", 1000);
    assert_validation(&c.validations[2], "payment", "billing", "https://pay.example/verify?v=2",
                      250);
    cfg_free(&c);

    /* Without overrides the file's values stand. */
    expect_ok(&c, file, NULL);
    assert_int_equal(c.deadline_ms, 3000);
    assert_validation(&c.validations[2], "payment", "payment", "http://p/", 900);
    cfg_free(&c);
}

static void test_env_overrides_defaults(void **state)
{
    static const env_var env[] = {
        {"CHECKOUTD_PAYMENT_URL", "http://127.0.0.1:19103/verify"},
        {"CHECKOUTD_DEADLINE_MS", "10"},
        {NULL, NULL},
    };
    cfg c;

    (void)state;
    /* The file leaves validations out: the variables apply to the default three. */
    expect_ok(&c, "{}", env);
    assert_int_equal(c.deadline_ms, 10);
    assert_int_equal(c.nvalidations, 3);
    assert_validation(&c.validations[2], "payment", "payment", "http://127.0.0.1:19103/verify",
                      1500);
    cfg_free(&c);
}

static void test_env_file_load(void **state)
{
    static const env_var env[] = {{"CHECKOUTD_MAX_INFLIGHT", "3"}, {NULL, NULL}};
    cfg c;
    char err[ERR_MAX];

    (void)state;
    env_table = env;
    assert_int_equal(cfg_load_file(&c, "config/checkoutd.json", table_getenv, err, sizeof err), 0);
    assert_int_equal(c.max_inflight, 3);
    assert_int_equal(c.deadline_ms, 2000);
    cfg_free(&c);
}

static void test_env_null_getenv(void **state)
{
    static const env_var env[] = {{"CHECKOUTD_DEADLINE_MS", "abc"}, {NULL, NULL}};
    cfg c;
    char err[ERR_MAX];

    (void)state;
    env_table = env; /* not consulted: no getenv function is given */
    assert_int_equal(cfg_load_string(&c, "{}", SRC, NULL, err, sizeof err), 0);
    assert_int_equal(c.deadline_ms, 2000);
    cfg_free(&c);
}

static void test_env_bad_numbers(void **state)
{
    /* Not a whole decimal integer, or one that overflows a long: refused and shown as given. */
    static const struct {
        const char *value;
        const char *shown;
    } bad[] = {
        {"abc", "\"abc\""},
        {"12abc", "\"12abc\""},
        {"", "\"\""},
        {" 12", "\" 12\""},
        {"12 ", "\"12 \""},
        {"+12", "\"+12\""},
        {"0x10", "\"0x10\""},
        {"1.5", "\"1.5\""},
        {"1e3", "\"1e3\""},
        {"1\n2", "\"1\\n2\""},
        {"99999999999999999999", "\"99999999999999999999\""},
        {"-99999999999999999999", "\"-99999999999999999999\""},
    };
    char needle[128];

    (void)state;
    for (size_t i = 0; i < sizeof ranges / sizeof ranges[0]; i++) {
        const range_case *r = &ranges[i];
        char var[64];

        range_var(r, "PAYMENT", var);
        for (size_t j = 0; j < sizeof bad / sizeof bad[0]; j++) {
            const env_var env[] = {{var, bad[j].value}, {NULL, NULL}};
            char err[ERR_MAX];
            cfg c;

            /* Named by the variable alone: the file is not where the value came from. */
            snprintf(needle, sizeof needle, "%s: expected an integer in %ld..%ld, got %s", var,
                     r->min, r->max, bad[j].shown);
            assert_int_equal(load(&c, "{}", env, err), -1);
            assert_zeroed(&c);
            assert_string_equal(err, needle);
        }
    }
}

static void test_env_range_boundaries(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof ranges / sizeof ranges[0]; i++) {
        const range_case *r = &ranges[i];
        const long values[] = {r->min, r->max, r->min - 1, r->max + 1};
        char var[64];

        range_var(r, "ADDRESS", var);
        for (size_t j = 0; j < 4; j++) {
            char val[32], err[ERR_MAX], needle[128];
            const env_var env[] = {{var, val}, {NULL, NULL}};
            cfg c;

            snprintf(val, sizeof val, "%ld", values[j]);
            if (j < 2) {
                expect_ok(&c, "{}", env);
                assert_int_equal(range_value(&c, r->key), values[j]);
                cfg_free(&c);
                continue;
            }
            snprintf(needle, sizeof needle, "%s: expected an integer in %ld..%ld, got %ld", var,
                     r->min, r->max, values[j]);
            assert_int_equal(load(&c, "{}", env, err), -1);
            assert_string_equal(err, needle);
        }
    }
}

static void test_env_bad_strings(void **state)
{
    static const env_var url[] = {{"CHECKOUTD_PAYMENT_URL", "ftp://x"}, {NULL, NULL}};
    static const env_var field[] = {{"CHECKOUTD_ADDRESS_FIELD", ""}, {NULL, NULL}};
    static const env_var listen[] = {{"CHECKOUTD_LISTEN", "::1:8080"}, {NULL, NULL}};
    static const env_var port[] = {{"CHECKOUTD_LISTEN", "127.0.0.1:65536"}, {NULL, NULL}};
    static const env_var utf8[] = {{"CHECKOUTD_PAYMENT_FIELD", "\xff"}, {NULL, NULL}};
    cfg c;
    char err[ERR_MAX];

    (void)state;
    assert_int_equal(load(&c, "{}", url, err), -1);
    assert_string_equal(err, "CHECKOUTD_PAYMENT_URL: expected an http:// or https:// URL, got "
                             "\"ftp://x\"");
    REFUSED("{}", field, "CHECKOUTD_ADDRESS_FIELD: expected a non-empty string, got \"\"");
    REFUSED("{}", listen, "CHECKOUTD_LISTEN: expected \"host:port\"", "got \"::1:8080\"");
    REFUSED("{}", port, "CHECKOUTD_LISTEN: expected \"host:port\"");
    REFUSED("{}", utf8, "CHECKOUTD_PAYMENT_FIELD: expected a UTF-8 string");
}

static void test_env_completes_validation(void **state)
{
    static const env_var env[] = {{"CHECKOUTD_FRAUD_2_URL", "http://fraud:9/score"}, {NULL, NULL}};
    char doc[DOC_MAX];
    cfg c;

    (void)state;
    /* The file gives no url; the variable supplies it (and is named when it is missing). */
    with_validations(doc, sizeof doc, "{\"name\": \"fraud_2\", \"field\": \"payment\"}");
    expect_ok(&c, doc, env);
    assert_validation(&c.validations[0], "fraud_2", "payment", "http://fraud:9/score", 1000);
    cfg_free(&c);
    REFUSED(doc, NULL, "test.json: validations[0].url: missing");
}

static void test_env_unknown_validation_ignored(void **state)
{
    static const env_var env[] = {
        {"CHECKOUTD_FRAUD_URL", "ftp://not-checked"}, /* no validation is called fraud */
        {"CHECKOUTD_payment_URL", "ftp://x"},         /* variables are upper case */
        {"CHECKOUTD_NAME", "x"},
        {NULL, NULL},
    };
    cfg c;

    (void)state;
    expect_ok(&c, "{}", env);
    assert_string_equal(c.validations[2].url, "http://127.0.0.1:9103/verify");
    cfg_free(&c);
}

static void test_env_validations(void **state)
{
    static const env_var env[] = {
        {"CHECKOUTD_VALIDATIONS",
         "[{\"name\": \"fraud\", \"field\": \"payment\", \"url\": \"https://f/s?x=1\"},"
         " {\"name\": \"address\", \"field\": \"address\", \"url\": \"http://a/\", "
         "\"timeout_ms\": 30}]"},
        {"CHECKOUTD_FRAUD_TIMEOUT_MS", "77"}, /* applies to the list from the environment */
        {"CHECKOUTD_PAYMENT_URL", "ftp://x"}, /* payment is no longer configured */
        {NULL, NULL},
    };
    cfg c;

    (void)state;
    expect_ok(&c, "{\"deadline_ms\": 900}", env);
    assert_int_equal(c.deadline_ms, 900);
    assert_int_equal(c.nvalidations, 2);
    assert_validation(&c.validations[0], "fraud", "payment", "https://f/s?x=1", 77);
    assert_validation(&c.validations[1], "address", "address", "http://a/", 30);
    cfg_free(&c);
}

static void test_env_validations_bad(void **state)
{
    static const env_var not_json[] = {{"CHECKOUTD_VALIDATIONS", "[{\"name\": }]"}, {NULL, NULL}};
    static const env_var object[] = {{"CHECKOUTD_VALIDATIONS", "{}"}, {NULL, NULL}};
    static const env_var empty[] = {{"CHECKOUTD_VALIDATIONS", "[]"}, {NULL, NULL}};
    static const env_var bad_url[] = {
        {"CHECKOUTD_VALIDATIONS", "[{\"name\": \"a\", \"field\": \"f\", \"url\": \"ftp://x\"}]"},
        {NULL, NULL}};
    static const env_var dup[] = {{"CHECKOUTD_VALIDATIONS", "[" GOOD_VAL "," GOOD_VAL "]"},
                                  {NULL, NULL}};
    static const env_var unknown[] = {
        {"CHECKOUTD_VALIDATIONS", "[{\"name\": \"a\", \"field\": \"f\", \"url\": \"http://h/\", "
                                  "\"x\": 1}]"},
        {NULL, NULL}};
    cfg c;
    char err[ERR_MAX];

    (void)state;
    REFUSED("{}", not_json, "CHECKOUTD_VALIDATIONS: invalid JSON at line 1, column ");
    REFUSED("{}", object, "CHECKOUTD_VALIDATIONS: expected an array of 1..32 validations");
    REFUSED("{}", empty, "CHECKOUTD_VALIDATIONS: expected 1..32 validations, got 0");
    REFUSED("{}", dup, "CHECKOUTD_VALIDATIONS[1].name: duplicate name \"a\"");
    REFUSED("{}", unknown, "CHECKOUTD_VALIDATIONS[0]: unknown key \"x\"");
    /* The file is not where the bad value is: no file prefix. */
    assert_int_equal(load(&c, "{}", bad_url, err), -1);
    assert_string_equal(err, "CHECKOUTD_VALIDATIONS[0].url: expected an http:// or https:// URL, "
                             "got \"ftp://x\"");
}

/* ---- files and the error buffer ---- */

static void test_missing_file(void **state)
{
    cfg c;
    char err[ERR_MAX];

    (void)state;
    memset(&c, 0xa5, sizeof c);
    assert_int_equal(cfg_load_file(&c, "config/does-not-exist.json", NULL, err, sizeof err), -1);
    assert_string_equal(err, "config/does-not-exist.json: cannot open: No such file or directory");
    assert_zeroed(&c);
    cfg_free(&c);
}

static void test_directory_file(void **state)
{
    cfg c;
    char err[ERR_MAX];

    (void)state;
    assert_int_equal(cfg_load_file(&c, "config", NULL, err, sizeof err), -1);
    assert_non_null(strstr(err, "config: cannot read"));
}

static void test_file_not_json(void **state)
{
    static const char text[] = "{\n  \"listen\": \"127.0.0.1:8080\"\n  \"deadline_ms\": 1\n}\n";
    char path[64], prefix[128], err[ERR_MAX];
    cfg c;

    (void)state;
    write_temp(path, text, sizeof text - 1);
    assert_int_equal(cfg_load_file(&c, path, NULL, err, sizeof err), -1);
    snprintf(prefix, sizeof prefix, "%s: invalid JSON at line 3, column ", path);
    assert_int_equal(unlink(path), 0);
    if (strncmp(err, prefix, strlen(prefix)) != 0)
        fail_msg("message \"%s\" does not start with \"%s\"", err, prefix);
    assert_zeroed(&c);
}

static void test_file_errors_name_file(void **state)
{
    static const char text[] = "{\"max_body_bytes\": 0}";
    char path[64], expected[256], err[ERR_MAX];
    cfg c;

    (void)state;
    write_temp(path, text, sizeof text - 1);
    assert_int_equal(cfg_load_file(&c, path, NULL, err, sizeof err), -1);
    assert_int_equal(unlink(path), 0);
    snprintf(expected, sizeof expected,
             "%s: max_body_bytes: expected an integer in 1..16777216, got 0", path);
    assert_string_equal(err, expected);
}

static void test_file_with_nul(void **state)
{
    static const char text[] = "{}\0{\"foo\": 1}";
    char path[64], err[ERR_MAX];
    cfg c;

    (void)state;
    write_temp(path, text, sizeof text - 1);
    assert_int_equal(cfg_load_file(&c, path, NULL, err, sizeof err), -1);
    assert_int_equal(unlink(path), 0);
    assert_non_null(strstr(err, "NUL"));
}

static void test_long_value_cut(void **state)
{
    char url[600], doc[DOC_MAX], err[ERR_MAX];
    cfg c;

    (void)state;
    memset(url, 'x', sizeof url - 1);
    url[sizeof url - 1] = '\0';
    memcpy(url, "ftp://", 6);
    assert_int_equal(load(&c, with_url(doc, sizeof doc, url), NULL, err), -1);
    assert_non_null(strstr(err, "validations[0].url: expected an http:// or https:// URL, got "
                                "\"ftp://xxx"));
    assert_non_null(strstr(err, "...\""));
    assert_true(strlen(err) < 200);
}

static void test_small_err_buffer(void **state)
{
    char err[16];
    cfg c;

    (void)state;
    memset(err, 'Z', sizeof err);
    /* errlen 8: the message is cut to 7 bytes and a NUL; the rest of the buffer is untouched. */
    assert_int_equal(cfg_load_string(&c, "{\"foo\": 1}", SRC, NULL, err, 8), -1);
    assert_string_equal(err, "test.js");
    assert_int_equal(err[8], 'Z');
    assert_int_equal(cfg_load_string(&c, "{\"foo\": 1}", SRC, NULL, NULL, 0), -1);
    assert_int_equal(cfg_load_string(&c, NULL, SRC, NULL, err, sizeof err), -1);
    assert_int_equal(cfg_load_string(NULL, "{}", SRC, NULL, err, sizeof err), -1);
    assert_zeroed(&c);
}

/* Userinfo never reaches a log line: the start line shows cfg_url_redact's form. */
static void test_url_redact(void **state)
{
    char out[64];

    (void)state;
    cfg_url_redact("http://user:pw@h:81/x?q=a@b", out, sizeof out);
    assert_string_equal(out, "http://***@h:81/x?q=a@b");
    cfg_url_redact("https://a@b@h/", out, sizeof out);
    assert_string_equal(out, "https://***@h/");
    cfg_url_redact("http://h/p@q", out, sizeof out);
    assert_string_equal(out, "http://h/p@q");
    cfg_url_redact("http://127.0.0.1:9103/verify", out, sizeof out);
    assert_string_equal(out, "http://127.0.0.1:9103/verify");
    cfg_url_redact("http://user:secret@h/", out, 12);
    assert_string_equal(out, "http://***@");
}

static void test_free_is_idempotent(void **state)
{
    cfg c;

    (void)state;
    expect_ok(&c, "{}", NULL);
    cfg_free(&c);
    assert_zeroed(&c);
    cfg_free(&c);
    cfg_free(NULL);
}

/* ---- v1.2 "Slow clients" keys and max_connections_per_ip (issue 10) ---- */

static void test_edge_keys(void **state)
{
    cfg c;

    (void)state;
    expect_ok(&c, "{}", NULL); /* absent from default_json: their defaults */
    assert_int_equal(c.header_timeout_ms, 10000);
    assert_int_equal(c.idle_timeout_ms, 30000);
    assert_int_equal(c.max_connections_per_ip, 0);
    cfg_free(&c);
    expect_ok(&c,
              "{\"header_timeout_ms\": 100, \"idle_timeout_ms\": 3600000, "
              "\"max_connections_per_ip\": 16384}",
              NULL);
    assert_int_equal(c.header_timeout_ms, 100);
    assert_int_equal(c.idle_timeout_ms, 3600000);
    assert_int_equal(c.max_connections_per_ip, 16384);
    cfg_free(&c);
    static const env_var env[] = {
        {"CHECKOUTD_HEADER_TIMEOUT_MS", "2500"},
        {"CHECKOUTD_IDLE_TIMEOUT_MS", "1000"},
        {"CHECKOUTD_MAX_CONNECTIONS_PER_IP", "7"},
        {NULL, NULL},
    };
    expect_ok(&c, "{\"header_timeout_ms\": 5000}", env);
    assert_int_equal(c.header_timeout_ms, 2500);
    assert_int_equal(c.idle_timeout_ms, 1000);
    assert_int_equal(c.max_connections_per_ip, 7);
    cfg_free(&c);
    REFUSED("{\"header_timeout_ms\": 99}", NULL, "header_timeout_ms", "100..600000");
    REFUSED("{\"idle_timeout_ms\": 999}", NULL, "idle_timeout_ms");
    REFUSED("{\"max_connections_per_ip\": -1}", NULL, "max_connections_per_ip");
    REFUSED("{\"header_timeout_ms\": \"10000\"}", NULL, "header_timeout_ms");
    static const env_var bad[] = {{"CHECKOUTD_IDLE_TIMEOUT_MS", "+5"}, {NULL, NULL}};
    REFUSED("{}", bad, "CHECKOUTD_IDLE_TIMEOUT_MS");
}

/* ---- idempotency (lib/cfg_idem.c) ---- */

#define IDEM_DOC(block) "{\"validations\": [" GOOD_VAL "], \"idempotency\": " block "}"

static void test_idempotency_defaults(void **state)
{
    cfg c;
    (void)state;
    expect_ok(&c, "{\"validations\": [" GOOD_VAL "]}", NULL);
    assert_int_equal(c.idempotency.store, CFG_IDEM_MEMORY);
    assert_null(c.idempotency.redis_url);
    assert_int_equal(c.idempotency.ttl_s, 86400);
    assert_int_equal(c.idempotency.max_keys, 100000);
    assert_int_equal(c.idempotency.timeout_ms, 200);
    cfg_free(&c);
    expect_ok(&c, IDEM_DOC("{}"), NULL);
    assert_int_equal(c.idempotency.store, CFG_IDEM_MEMORY);
    cfg_free(&c);
}

static void test_idempotency_keys(void **state)
{
    cfg c;
    (void)state;
    expect_ok(&c,
              IDEM_DOC("{\"store\": \"redis\", \"redis_url\": \"redis://10.0.0.7:6380/2\", "
                       "\"ttl_s\": 604800, \"max_keys\": 1, \"timeout_ms\": 10000}"),
              NULL);
    assert_int_equal(c.idempotency.store, CFG_IDEM_REDIS);
    assert_string_equal(c.idempotency.redis_url, "redis://10.0.0.7:6380/2");
    assert_string_equal(c.idempotency.redis_host, "10.0.0.7");
    assert_int_equal(c.idempotency.redis_port, 6380);
    assert_int_equal(c.idempotency.redis_db, 2);
    assert_int_equal(c.idempotency.ttl_s, 604800);
    assert_int_equal(c.idempotency.max_keys, 1);
    assert_int_equal(c.idempotency.timeout_ms, 10000);
    cfg_free(&c);
    expect_ok(&c, IDEM_DOC("{\"store\": \"redis\", \"redis_url\": \"redis://[::1]:6379\"}"), NULL);
    assert_string_equal(c.idempotency.redis_host, "::1");
    assert_int_equal(c.idempotency.redis_db, 0);
    cfg_free(&c);
    expect_ok(&c, IDEM_DOC("{\"store\": \"off\"}"), NULL);
    assert_int_equal(c.idempotency.store, CFG_IDEM_OFF);
    cfg_free(&c);
}

static void test_idempotency_refusals(void **state)
{
    (void)state;
    REFUSED(IDEM_DOC("[]"), NULL, SRC ": idempotency: expected an object");
    REFUSED(IDEM_DOC("{\"stor\": \"memory\"}"), NULL, "idempotency: unknown key \"stor\"",
            "store, redis_url");
    REFUSED(IDEM_DOC("{\"store\": \"disk\"}"), NULL, "idempotency.store: expected \"memory\"",
            "\"disk\"");
    REFUSED(IDEM_DOC("{\"store\": \"redis\"}"), NULL,
            "idempotency.redis_url: required when idempotency.store is \"redis\"");
    REFUSED(IDEM_DOC("{\"ttl_s\": 0}"), NULL,
            "idempotency.ttl_s: expected an integer in 1..604800");
    REFUSED(IDEM_DOC("{\"ttl_s\": 604801}"), NULL, "idempotency.ttl_s");
    REFUSED(IDEM_DOC("{\"max_keys\": 10000001}"), NULL, "idempotency.max_keys");
    REFUSED(IDEM_DOC("{\"timeout_ms\": \"200\"}"), NULL, "idempotency.timeout_ms");
    const char *urls[] = {"\"http://h:1\"",      "\"redis://h\"",     "\"redis://h:0\"",
                          "\"redis://h:70000\"", "\"redis://:1\"",    "\"redis://h:1/16\"",
                          "\"redis://h:1/x\"",   "\"redis://h h:1\"", "6379"};
    for (size_t i = 0; i < sizeof urls / sizeof urls[0]; i++) {
        char doc[DOC_MAX];
        snprintf(doc, sizeof doc, IDEM_DOC("{\"store\": \"redis\", \"redis_url\": %s}"), urls[i]);
        REFUSED(doc, NULL, "idempotency.redis_url: expected redis://HOST:PORT[/DB]");
    }
}

static void test_idempotency_environment(void **state)
{
    cfg c;
    (void)state;
    const env_var env[] = {{"CHECKOUTD_IDEMPOTENCY_STORE", "redis"},
                           {"CHECKOUTD_IDEMPOTENCY_REDIS_URL", "redis://redis:6379"},
                           {"CHECKOUTD_IDEMPOTENCY_TTL_S", "60"},
                           {"CHECKOUTD_IDEMPOTENCY_MAX_KEYS", "7"},
                           {"CHECKOUTD_IDEMPOTENCY_TIMEOUT_MS", "50"},
                           {NULL, NULL}};
    expect_ok(&c, IDEM_DOC("{\"store\": \"off\", \"ttl_s\": 5}"), env);
    assert_int_equal(c.idempotency.store, CFG_IDEM_REDIS);
    assert_string_equal(c.idempotency.redis_host, "redis");
    assert_int_equal(c.idempotency.ttl_s, 60);
    assert_int_equal(c.idempotency.max_keys, 7);
    assert_int_equal(c.idempotency.timeout_ms, 50);
    cfg_free(&c);
    const env_var bad_store[] = {{"CHECKOUTD_IDEMPOTENCY_STORE", "Memory"}, {NULL, NULL}};
    REFUSED(IDEM_DOC("{}"), bad_store, "CHECKOUTD_IDEMPOTENCY_STORE: expected \"memory\"");
    const env_var bad_ttl[] = {{"CHECKOUTD_IDEMPOTENCY_TTL_S", "1d"}, {NULL, NULL}};
    REFUSED(IDEM_DOC("{}"), bad_ttl,
            "CHECKOUTD_IDEMPOTENCY_TTL_S: expected an integer in 1..604800");
    const env_var no_url[] = {{"CHECKOUTD_IDEMPOTENCY_STORE", "redis"}, {NULL, NULL}};
    REFUSED(IDEM_DOC("{}"), no_url, "idempotency.redis_url: required");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_default_values),
        cmocka_unit_test(test_default_equals_file),
        cmocka_unit_test(test_empty_object_is_default),
        cmocka_unit_test(test_missing_keys_take_defaults),
        cmocka_unit_test(test_unknown_keys),
        cmocka_unit_test(test_wrong_types),
        cmocka_unit_test(test_missing_required_keys),
        cmocka_unit_test(test_range_boundaries),
        cmocka_unit_test(test_names),
        cmocka_unit_test(test_duplicate_name),
        cmocka_unit_test(test_empty_field),
        cmocka_unit_test(test_urls_refused),
        cmocka_unit_test(test_urls_accepted),
        cmocka_unit_test(test_query_string_kept),
        cmocka_unit_test(test_validation_count),
        cmocka_unit_test(test_listen_accepted),
        cmocka_unit_test(test_listen_refused),
        cmocka_unit_test(test_v13_edge_keys),
        cmocka_unit_test(test_source_prefix),
        cmocka_unit_test(test_duplicate_json_key),
        cmocka_unit_test(test_not_json),
        cmocka_unit_test(test_env_overrides_win),
        cmocka_unit_test(test_env_overrides_defaults),
        cmocka_unit_test(test_env_file_load),
        cmocka_unit_test(test_env_null_getenv),
        cmocka_unit_test(test_env_bad_numbers),
        cmocka_unit_test(test_env_range_boundaries),
        cmocka_unit_test(test_env_bad_strings),
        cmocka_unit_test(test_env_completes_validation),
        cmocka_unit_test(test_env_unknown_validation_ignored),
        cmocka_unit_test(test_env_validations),
        cmocka_unit_test(test_env_validations_bad),
        cmocka_unit_test(test_missing_file),
        cmocka_unit_test(test_directory_file),
        cmocka_unit_test(test_file_not_json),
        cmocka_unit_test(test_file_errors_name_file),
        cmocka_unit_test(test_file_with_nul),
        cmocka_unit_test(test_long_value_cut),
        cmocka_unit_test(test_small_err_buffer),
        cmocka_unit_test(test_url_redact),
        cmocka_unit_test(test_free_is_idempotent),
        cmocka_unit_test(test_edge_keys),
        cmocka_unit_test(test_idempotency_defaults),
        cmocka_unit_test(test_idempotency_keys),
        cmocka_unit_test(test_idempotency_refusals),
        cmocka_unit_test(test_idempotency_environment),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
