/* Unit tests of lib/cfg_upstream.c: every rule of the v1.2 "headers" and "tls" keys of a
 * validation, and that no message ever shows a header value (literal or expanded). The
 * environment is a table, never the process environment. */
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

#define ERR_MAX 512
#define DOC_MAX 40000
#define SRC     "t.json"

typedef struct env_var {
    const char *name;
    const char *value;
} env_var;

static const env_var *env_table;

static const char *table_getenv(const char *name)
{
    for (const env_var *e = env_table; e != NULL && e->name != NULL; e++) {
        if (strcmp(e->name, name) == 0)
            return e->value;
    }
    return NULL;
}

/* {"validations": [{"name": "pay", ..., "url": url, <extra>}]} */
static const char *doc(char *buf, size_t n, const char *url, const char *extra)
{
    int len = snprintf(buf, n,
                       "{\"validations\": [{\"name\": \"pay\", \"field\": \"payment\", \"url\": "
                       "\"%s\", %s}]}",
                       url, extra);
    assert_true(len > 0 && (size_t)len < n);
    return buf;
}

static void ok(cfg *c, const char *url, const char *extra, const env_var *env)
{
    static char buf[DOC_MAX];
    char err[ERR_MAX];

    env_table = env;
    if (cfg_load_string(c, doc(buf, sizeof buf, url, extra), SRC, table_getenv, err, ERR_MAX) != 0)
        fail_msg("refused: %s\n  extra: %.200s", err, extra);
}

/* Refused with a message that holds every needle and none of the secrets (NULL-ended lists). */
static void refused_v(const char *url, const char *extra, const env_var *env,
                      const char *const *needles, const char *const *secrets)
{
    static char buf[DOC_MAX];
    char err[ERR_MAX];
    cfg c;

    env_table = env;
    if (cfg_load_string(&c, doc(buf, sizeof buf, url, extra), SRC, table_getenv, err, ERR_MAX) ==
        0) {
        cfg_free(&c);
        fail_msg("accepted: %.300s", extra);
    }
    assert_null(strchr(err, '\n'));
    for (; *needles != NULL; needles++) {
        if (strstr(err, *needles) == NULL)
            fail_msg("message \"%s\" lacks \"%s\"", err, *needles);
    }
    for (; secrets != NULL && *secrets != NULL; secrets++) {
        if (strstr(err, *secrets) != NULL)
            fail_msg("message \"%s\" shows the secret \"%s\"", err, *secrets);
    }
}

#define REFUSED(url, extra, env, ...)                                                              \
    refused_v(url, extra, env, (const char *const[]){__VA_ARGS__, NULL}, NULL)
#define REFUSED_HIDING(url, extra, env, secrets, ...)                                              \
    refused_v(url, extra, env, (const char *const[]){__VA_ARGS__, NULL}, secrets)

#define HTTP  "http://127.0.0.1:1/v"
#define HTTPS "https://127.0.0.1:1/v"

/* ---- headers ---- */

static void test_headers_absent(void **state)
{
    cfg c;

    (void)state;
    ok(&c, HTTP, "\"timeout_ms\": 5", NULL);
    assert_int_equal(c.validations[0].nheaders, 0);
    assert_null(c.validations[0].headers);
    assert_null(c.validations[0].tls.ca_file);
    cfg_free(&c);
    ok(&c, HTTP, "\"headers\": {}", NULL);
    assert_int_equal(c.validations[0].nheaders, 0);
    cfg_free(&c);
}

static void test_headers_lines(void **state)
{
    static const env_var env[] = {
        {"PAY_TOKEN", "s3cr3t"}, {"A1", "x"}, {"EMPTY", ""}, {NULL, NULL}};
    cfg c;

    (void)state;
    ok(&c, HTTP,
       "\"headers\": {\"Authorization\": \"Bearer ${PAY_TOKEN}\", \"X-Api-Key\": \"plain\", "
       "\"X-Two\": \"${A1}-${A1}${EMPTY}!\", \"X-Empty\": \"\", \"X-Also-Empty\": \"${EMPTY}\", "
       "\"x!#$%&'*+-.^_`|~9\": \"a b\"}",
       env);
    const cfg_validation *v = &c.validations[0];
    assert_int_equal(v->nheaders, 6);
    assert_string_equal(v->headers[0].name, "Authorization");
    assert_string_equal(v->headers[0].line, "Authorization: Bearer s3cr3t");
    assert_string_equal(v->headers[1].line, "X-Api-Key: plain");
    assert_string_equal(v->headers[2].line, "X-Two: x-x!");
    assert_string_equal(v->headers[3].line, "X-Empty;"); /* libcurl's form of an empty header */
    assert_string_equal(v->headers[4].line, "X-Also-Empty;");
    assert_string_equal(v->headers[5].name, "x!#$%&'*+-.^_`|~9");
    assert_string_equal(v->headers[5].line, "x!#$%&'*+-.^_`|~9: a b");
    cfg_free(&c);
    assert_null(c.validations[0].headers);
}

static void test_headers_not_object(void **state)
{
    (void)state;
    REFUSED(HTTP, "\"headers\": [\"a\"]", NULL,
            "t.json: validations[0].headers: expected an object", "an array");
    REFUSED(HTTP, "\"headers\": \"Authorization: x\"", NULL,
            "validations[0].headers: expected an object");
    REFUSED(HTTP, "\"headers\": {\"X-A\": 5}", NULL,
            "validations[0].headers.X-A: expected a string of printable ASCII, got 5");
    REFUSED(HTTP, "\"headers\": {\"X-A\": null}", NULL,
            "validations[0].headers.X-A: expected a string");
    REFUSED(HTTP, "\"headers\": {\"X-A\": {\"v\": 1}}", NULL, "headers.X-A: expected a string");
}

static void test_headers_names(void **state)
{
    (void)state;
    REFUSED(HTTP, "\"headers\": {\"Bad Name\": \"v\"}", NULL,
            "validations[0].headers: \"Bad Name\" is not an HTTP header name");
    REFUSED(HTTP, "\"headers\": {\"\": \"v\"}", NULL, "\"\" is not an HTTP header name");
    REFUSED(HTTP, "\"headers\": {\"X:Y\": \"v\"}", NULL, "is not an HTTP header name");
    REFUSED(HTTP, "\"headers\": {\"X\\nY\": \"v\"}", NULL, "\"X\\nY\" is not an HTTP header name");
    REFUSED(HTTP, "\"headers\": {\"X-\\u00e9\": \"v\"}", NULL, "is not an HTTP header name");
    REFUSED(HTTP, "\"headers\": {\"X-A\": \"1\", \"x-a\": \"2\"}", NULL,
            "validations[0].headers.x-a: duplicate header name (same as \"X-A\", ignoring case)");
}

static void test_headers_reserved(void **state)
{
    static const char *const names[] = {"Host",
                                        "content-type",
                                        "CONTENT-LENGTH",
                                        "Transfer-Encoding",
                                        "connection",
                                        "Expect",
                                        "x-request-id",
                                        "Idempotency-Key",
                                        "TraceParent",
                                        "X-Checkout-Attempt",
                                        "x-checkout-timeout-ms"};
    char extra[200], needle[120];

    (void)state;
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        snprintf(extra, sizeof extra, "\"headers\": {\"%s\": \"v\"}", names[i]);
        snprintf(needle, sizeof needle, "validations[0].headers.%s: ", names[i]);
        REFUSED(HTTP, extra, NULL, needle, "is set by the service itself and cannot be configured");
    }
}

static void test_headers_values(void **state)
{
    static const env_var env[] = {{"CRLF", "a\r\nEvil: 1"}, {"TAB", "a\tb"}, {NULL, NULL}};
    static const char *const hide[] = {"Evil", "a\\tb", "tok123", NULL};

    (void)state;
    REFUSED_HIDING(HTTP, "\"headers\": {\"X-A\": \"tok123\\r\\nEvil: 1\"}", NULL, hide,
                   "validations[0].headers.X-A: the value is not printable ASCII", "not shown");
    REFUSED_HIDING(HTTP, "\"headers\": {\"X-A\": \"tok123\\u00e9\"}", NULL, hide,
                   "headers.X-A: the value is not printable ASCII");
    REFUSED_HIDING(HTTP, "\"headers\": {\"X-A\": \"tok123\\u007f\"}", NULL, hide,
                   "the value is not printable ASCII");
    REFUSED_HIDING(HTTP, "\"headers\": {\"X-A\": \"tok123${CRLF}\"}", env, hide,
                   "validations[0].headers.X-A: the value of environment variable CRLF is not "
                   "printable ASCII");
    REFUSED_HIDING(HTTP, "\"headers\": {\"X-A\": \"${TAB}\"}", env, hide,
                   "environment variable TAB is not printable ASCII");
}

static void test_headers_expansion_errors(void **state)
{
    static const env_var env[] = {{"SET", "tok123"}, {NULL, NULL}};
    static const char *const hide[] = {"tok123", "abc", NULL};

    (void)state;
    REFUSED_HIDING(HTTP, "\"headers\": {\"Authorization\": \"Bearer ${PAYMENT_API_TOKEN}\"}", env,
                   hide,
                   "t.json: validations[0].headers.Authorization: environment variable "
                   "PAYMENT_API_TOKEN is not set");
    /* the first unset variable is named, after a set one */
    REFUSED_HIDING(HTTP, "\"headers\": {\"X-A\": \"${SET}:${NOPE}\"}", env, hide,
                   "headers.X-A: environment variable NOPE is not set");
    /* malformed references: never a silent literal, and no part of the value shown */
    static const char *const bad[] = {"abc${",     "abc${}",   "abc${lower}",
                                      "abc${A-B}", "abc${SET", "abc${ SET}"};
    char extra[200];
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        snprintf(extra, sizeof extra, "\"headers\": {\"X-A\": \"%s\"}", bad[i]);
        REFUSED_HIDING(HTTP, extra, env, hide,
                       "validations[0].headers.X-A: \"${\" must start a reference", "not shown");
    }
    /* a name too long for any environment */
    char longref[400];
    memset(longref, 'A', sizeof longref);
    memcpy(longref, "${", 2);
    longref[2 + 129] = '}';
    longref[2 + 130] = '\0';
    {
        char big[600];
        snprintf(big, sizeof big, "\"headers\": {\"X-A\": \"%s\"}", longref);
        REFUSED(HTTP, big, env, "must start a reference");
    }
    /* "$" alone and "{...}" alone are plain text */
    cfg c;
    ok(&c, HTTP, "\"headers\": {\"X-A\": \"$5 {x} $SET $ {\"}", env);
    assert_string_equal(c.validations[0].headers[0].line, "X-A: $5 {x} $SET $ {");
    cfg_free(&c);
    /* an expanded value is not expanded again */
    static const env_var env2[] = {{"OUTER", "${INNER}"}, {NULL, NULL}};
    ok(&c, HTTP, "\"headers\": {\"X-A\": \"${OUTER}\"}", env2);
    assert_string_equal(c.validations[0].headers[0].line, "X-A: ${INNER}");
    cfg_free(&c);
}

static void test_headers_count_limit(void **state)
{
    char extra[4000];
    size_t used;
    cfg c;

    (void)state;
    for (int n = 32; n <= 33; n++) {
        used = (size_t)snprintf(extra, sizeof extra, "\"headers\": {");
        for (int i = 0; i < n; i++)
            used += (size_t)snprintf(extra + used, sizeof extra - used, "%s\"X-H%d\": \"v\"",
                                     i ? ", " : "", i);
        snprintf(extra + used, sizeof extra - used, "}");
        if (n == 32) {
            ok(&c, HTTP, extra, NULL);
            assert_int_equal(c.validations[0].nheaders, 32);
            assert_string_equal(c.validations[0].headers[31].line, "X-H31: v");
            cfg_free(&c);
        } else {
            REFUSED(HTTP, extra, NULL,
                    "validations[0].headers: expected at most 32 headers, got 33");
        }
    }
}

/* Names plus values: 8192 bytes pass, 8193 do not, also when the bytes come from a variable. */
static void test_headers_byte_limit(void **state)
{
    static char extra[DOC_MAX], val[9000];
    static env_var env[] = {{"BIG", NULL}, {NULL, NULL}};
    cfg c;

    (void)state;
    /* "X-A" (3) + "X-B" (3) + values */
    memset(val, 'v', sizeof val);
    val[8192 - 6 - 10] = '\0';
    snprintf(extra, sizeof extra, "\"headers\": {\"X-A\": \"%s\", \"X-B\": \"0123456789\"}", val);
    ok(&c, HTTP, extra, NULL);
    assert_int_equal(c.validations[0].nheaders, 2);
    cfg_free(&c);
    snprintf(extra, sizeof extra, "\"headers\": {\"X-A\": \"%s\", \"X-B\": \"0123456789x\"}", val);
    REFUSED(HTTP, extra, NULL,
            "validations[0].headers: more than 8192 bytes of header names and values");
    env[0].value = val; /* 8176 bytes from the variable */
    ok(&c, HTTP, "\"headers\": {\"X-A\": \"${BIG}\", \"X-B\": \"0123456789\"}", env);
    cfg_free(&c);
    REFUSED(HTTP, "\"headers\": {\"X-A\": \"${BIG}\", \"X-B\": \"0123456789x\"}", env,
            "more than 8192 bytes", "after ${...} expansion");
}

/* CHECKOUTD_VALIDATIONS carries headers too; its messages name the variable. */
static void test_headers_from_env_list(void **state)
{
    static const env_var env[] = {
        {"CHECKOUTD_VALIDATIONS",
         "[{\"name\": \"p\", \"field\": \"f\", \"url\": \"http://h/\", \"headers\": {\"X-K\": "
         "\"${KEY}\"}}]"},
        {"KEY", "k1"},
        {NULL, NULL}};
    static const env_var env_unset[] = {
        {"CHECKOUTD_VALIDATIONS",
         "[{\"name\": \"p\", \"field\": \"f\", \"url\": \"http://h/\", \"headers\": {\"X-K\": "
         "\"${KEY}\"}}]"},
        {NULL, NULL}};
    cfg c;

    (void)state;
    ok(&c, HTTP, "\"timeout_ms\": 5", env);
    assert_string_equal(c.validations[0].headers[0].line, "X-K: k1");
    cfg_free(&c);
    REFUSED(HTTP, "\"timeout_ms\": 5", env_unset,
            "CHECKOUTD_VALIDATIONS[0].headers.X-K: environment variable KEY is not set");
}

/* ---- tls ---- */

static char dir[64];
static char ca[128], cert[128], key[128], unreadable[128], missing[128];

static void write_file(const char *path, const char *text)
{
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs(text, f);
    fclose(f);
}

static int tls_setup(void **state)
{
    (void)state;
    snprintf(dir, sizeof dir, "/tmp/test_cfg_upstream.XXXXXX");
    if (mkdtemp(dir) == NULL)
        return -1;
    snprintf(ca, sizeof ca, "%s/ca.pem", dir);
    snprintf(cert, sizeof cert, "%s/client.pem", dir);
    snprintf(key, sizeof key, "%s/client.key", dir);
    snprintf(unreadable, sizeof unreadable, "%s/secret.pem", dir);
    snprintf(missing, sizeof missing, "%s/missing.pem", dir);
    write_file(ca, "-----BEGIN CERTIFICATE-----\n");
    write_file(cert, "-----BEGIN CERTIFICATE-----\n");
    write_file(key, "-----BEGIN PRIVATE KEY-----\n");
    write_file(unreadable, "x");
    chmod(unreadable, 0);
    return 0;
}

static int tls_teardown(void **state)
{
    (void)state;
    unlink(ca);
    unlink(cert);
    unlink(key);
    unlink(unreadable);
    rmdir(dir);
    return 0;
}

static void test_tls_files(void **state)
{
    char extra[600];
    cfg c;

    (void)state;
    snprintf(extra, sizeof extra,
             "\"tls\": {\"ca_file\": \"%s\", \"cert_file\": \"%s\", \"key_file\": \"%s\"}", ca,
             cert, key);
    ok(&c, HTTPS, extra, NULL);
    assert_string_equal(c.validations[0].tls.ca_file, ca);
    assert_string_equal(c.validations[0].tls.cert_file, cert);
    assert_string_equal(c.validations[0].tls.key_file, key);
    cfg_free(&c);
    assert_null(c.validations[0].tls.ca_file);

    snprintf(extra, sizeof extra, "\"tls\": {\"ca_file\": \"%s\"}", ca);
    ok(&c, HTTPS, extra, NULL);
    assert_string_equal(c.validations[0].tls.ca_file, ca);
    assert_null(c.validations[0].tls.cert_file);
    cfg_free(&c);

    snprintf(extra, sizeof extra, "\"tls\": {\"cert_file\": \"%s\", \"key_file\": \"%s\"}", cert,
             key);
    ok(&c, HTTPS, extra, NULL);
    assert_null(c.validations[0].tls.ca_file);
    assert_string_equal(c.validations[0].tls.key_file, key);
    cfg_free(&c);

    ok(&c, HTTPS, "\"tls\": {}", NULL); /* the system CAs, as without tls */
    assert_null(c.validations[0].tls.ca_file);
    cfg_free(&c);
}

static void test_tls_refusals(void **state)
{
    char extra[600], needle[300];

    (void)state;
    snprintf(extra, sizeof extra, "\"tls\": {\"ca_file\": \"%s\"}", ca);
    REFUSED(HTTP, extra, NULL,
            "t.json: validations[0].tls: refused on an http:// URL (tls is for https:// URLs)");
    REFUSED(HTTPS, "\"tls\": true", NULL, "validations[0].tls: expected an object", "true");
    REFUSED(HTTPS, "\"tls\": {\"ca\": \"x\"}", NULL, "validations[0].tls: unknown key \"ca\"",
            "ca_file, cert_file, key_file");
    snprintf(extra, sizeof extra, "\"tls\": {\"cert_file\": \"%s\"}", cert);
    REFUSED(HTTPS, extra, NULL, "validations[0].tls: cert_file and key_file go together");
    snprintf(extra, sizeof extra, "\"tls\": {\"key_file\": \"%s\"}", key);
    REFUSED(HTTPS, extra, NULL, "cert_file and key_file go together (both or neither)");
    REFUSED(HTTPS, "\"tls\": {\"ca_file\": \"\"}", NULL,
            "validations[0].tls.ca_file: expected a file path, got \"\"");
    REFUSED(HTTPS, "\"tls\": {\"ca_file\": 7}", NULL,
            "validations[0].tls.ca_file: expected a file path");

    snprintf(extra, sizeof extra, "\"tls\": {\"ca_file\": \"%s\"}", missing);
    snprintf(needle, sizeof needle, "validations[0].tls.ca_file: cannot read \"%s\": No such file",
             missing);
    REFUSED(HTTPS, extra, NULL, needle);
    snprintf(extra, sizeof extra, "\"tls\": {\"ca_file\": \"%s\"}", dir);
    REFUSED(HTTPS, extra, NULL, "tls.ca_file: cannot read", "not a regular file");
    /* a device (or a FIFO) would block a reader: refused without reading */
    REFUSED(HTTPS, "\"tls\": {\"ca_file\": \"/dev/stdin\"}", NULL, "tls.ca_file: cannot read");
    REFUSED(HTTPS, "\"tls\": {\"ca_file\": \"/dev/null\"}", NULL,
            "tls.ca_file: cannot read \"/dev/null\": not a regular file");
    snprintf(extra, sizeof extra, "\"tls\": {\"cert_file\": \"%s\", \"key_file\": \"%s\"}", cert,
             missing);
    REFUSED(HTTPS, extra, NULL, "validations[0].tls.key_file: cannot read", "missing.pem");
    if (geteuid() != 0) { /* root reads every file */
        snprintf(extra, sizeof extra, "\"tls\": {\"cert_file\": \"%s\", \"key_file\": \"%s\"}",
                 cert, unreadable);
        REFUSED(HTTPS, extra, NULL, "validations[0].tls.key_file: cannot read",
                "Permission denied");
    }
}

/* The url may come from CHECKOUTD_<NAME>_URL: tls is checked against the url in force. */
static void test_tls_url_from_env(void **state)
{
    static const env_var env[] = {{"CHECKOUTD_PAY_URL", "http://127.0.0.1:2/v"}, {NULL, NULL}};
    char extra[300];

    (void)state;
    snprintf(extra, sizeof extra, "\"tls\": {\"ca_file\": \"%s\"}", ca);
    REFUSED(HTTPS, extra, env, "validations[0].tls: refused on an http:// URL");
}

static void test_unknown_key_lists_blocks(void **state)
{
    (void)state;
    REFUSED(HTTP, "\"header\": {}", NULL, "unknown key \"header\"", "headers", "tls");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_headers_absent),
        cmocka_unit_test(test_headers_lines),
        cmocka_unit_test(test_headers_not_object),
        cmocka_unit_test(test_headers_names),
        cmocka_unit_test(test_headers_reserved),
        cmocka_unit_test(test_headers_values),
        cmocka_unit_test(test_headers_expansion_errors),
        cmocka_unit_test(test_headers_count_limit),
        cmocka_unit_test(test_headers_byte_limit),
        cmocka_unit_test(test_headers_from_env_list),
        cmocka_unit_test(test_tls_files),
        cmocka_unit_test(test_tls_refusals),
        cmocka_unit_test(test_tls_url_from_env),
        cmocka_unit_test(test_unknown_key_lists_blocks),
    };
    return cmocka_run_group_tests(tests, tls_setup, tls_teardown);
}
