/* Production upstreams against real processes: checkoutd and fake-upstreams in its https mode,
 * with certificates made here by the openssl CLI (a CA, a server certificate for 127.0.0.1 with
 * subjectAltName IP:127.0.0.1, a client certificate, and a CA nobody trusts).
 *
 *   tls.ca_file = the CA                       200 (verification on, against that CA only)
 *   no tls (system CAs)                        502, transport, "failed TLS certificate
 * verification" client certificate required, cert + key    200, the upstream saw a verified
 * certificate client certificate required, none          502, transport, "failed the TLS handshake"
 *   headers with ${VAR}                        arrive expanded at that validation's upstream only,
 *                                              never in the log, --check-config or /metrics
 *   tg, one loop: CA / no CA / CA              ok / transport / ok (no option or connection leaks
 *                                              from one call to the next)
 * Each test starts its own checkoutd; the two fake-upstreams run for the whole file. */
#include "tg.h"

#include "support/http.h"
#include "support/proc.h"

#include <curl/curl.h>
#include <jansson.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#define SECRET_TOKEN "s3cr3t-tok-7f3a9c"
#define SECRET_KEY   "k3y-val-55e1d0"

typedef struct world {
    char dir[64];
    char ca[128], ca_key[128], server[128], server_key[128], client[128], client_key[128];
    char other_ca[128];
    proc up;      /* https */
    proc up_mtls; /* https, client certificate required */
    int up_port[3], mtls_port[3];
    proc daemon;
    int port;
    char config[128], log[128];
} world;

static world w;

static char *const secret_env[] = {"T11A_TOKEN=" SECRET_TOKEN, "T11A_KEY=" SECRET_KEY, NULL};

/* ---- helpers ---- */

static int sh(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static int sh(const char *fmt, ...)
{
    char cmd[2048];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(cmd, sizeof cmd, fmt, ap);
    va_end(ap);
    return system(cmd) == 0 ? 0 : -1;
}

/* The certificates of the file, by the openssl CLI (scripts/deps.sh test installs it). */
static int make_certs(void)
{
    const char *d = w.dir;
    snprintf(w.ca, sizeof w.ca, "%s/ca.pem", d);
    snprintf(w.ca_key, sizeof w.ca_key, "%s/ca.key", d);
    snprintf(w.server, sizeof w.server, "%s/server.pem", d);
    snprintf(w.server_key, sizeof w.server_key, "%s/server.key", d);
    snprintf(w.client, sizeof w.client, "%s/client.pem", d);
    snprintf(w.client_key, sizeof w.client_key, "%s/client.key", d);
    snprintf(w.other_ca, sizeof w.other_ca, "%s/other-ca.pem", d);
    return sh("cd %s && exec >openssl.log 2>&1 && "
              "openssl req -x509 -newkey rsa:2048 -nodes -keyout ca.key -out ca.pem -days 2 "
              "-subj '/CN=checkoutd test CA' && "
              "openssl req -newkey rsa:2048 -nodes -keyout server.key -out server.csr "
              "-subj '/CN=127.0.0.1' && "
              "printf 'subjectAltName=IP:127.0.0.1\\n' > server.ext && "
              "openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial "
              "-out server.pem -days 2 -extfile server.ext && "
              "openssl req -newkey rsa:2048 -nodes -keyout client.key -out client.csr "
              "-subj '/CN=checkoutd client' && "
              "openssl x509 -req -in client.csr -CA ca.pem -CAkey ca.key -CAcreateserial "
              "-out client.pem -days 2 && "
              "openssl req -x509 -newkey rsa:2048 -nodes -keyout other-ca.key -out other-ca.pem "
              "-days 2 -subj '/CN=another CA'",
              d);
}

static int setup(void **state)
{
    (void)state;
    memset(&w, 0, sizeof w);
    snprintf(w.dir, sizeof w.dir, "/tmp/test_upstream_tls.XXXXXX");
    if (mkdtemp(w.dir) == NULL || make_certs() != 0) {
        fprintf(stderr, "cannot make certificates with openssl (see %s/openssl.log)\n", w.dir);
        return -1;
    }
    snprintf(w.config, sizeof w.config, "%s/checkoutd.json", w.dir);
    snprintf(w.log, sizeof w.log, "%s/checkoutd.log", w.dir);
    char *https[] = {"--tls-cert", w.server, "--tls-key", w.server_key, NULL};
    char *mtls[] = {"--tls-cert",      w.server, "--tls-key", w.server_key,
                    "--tls-client-ca", w.ca,     NULL};
    if (proc_start_upstreams(&w.up, https, "/dev/null", w.up_port) != 0 ||
        proc_start_upstreams(&w.up_mtls, mtls, "/dev/null", w.mtls_port) != 0)
        return -1;
    return 0;
}

static int teardown(void **state)
{
    int st1 = -1, st2 = -1;
    (void)state;
    proc_signal(&w.up, SIGTERM);
    proc_signal(&w.up_mtls, SIGTERM);
    proc_wait_exit(&w.up, 10000, &st1);
    proc_wait_exit(&w.up_mtls, 10000, &st2);
    proc_stop(&w.up);
    proc_stop(&w.up_mtls);
    sh("rm -rf %s", w.dir);
    if (st1 != 0 || st2 != 0) {
        fprintf(stderr, "fake-upstreams exit status %d and %d (want 0)\n", st1, st2);
        return -1;
    }
    return 0;
}

/* Writes a config whose validations are the text given, then starts checkoutd on it (env added to
 * the environment; --log-level debug, so that every line the daemon can write is looked at). */
static int start_daemon(const char *validations, char *const env[])
{
    FILE *f = fopen(w.config, "w");
    char *extra[] = {"--log-level", "debug", NULL};
    if (f == NULL)
        return -1;
    fprintf(f, "{\"listen\": \"127.0.0.1:0\", \"deadline_ms\": 8000, \"validations\": [%s]}\n",
            validations);
    fclose(f);
    unlink(w.log);
    w.port = proc_start_checkoutd(&w.daemon, w.config, extra, env, w.log);
    return w.port > 0 ? 0 : -1;
}

static void stop_daemon(void)
{
    int status = -1;
    proc_signal(&w.daemon, SIGTERM);
    proc_wait_exit(&w.daemon, 10000, &status);
    proc_stop(&w.daemon);
    assert_int_equal(status, 0);
}

static const char order[] =
    "{\"order_id\": \"ord-tls-1\", \"address\": {\"name\": \"Ada\", \"line1\": \"1 Main St\", "
    "\"city\": \"Springfield\", \"postal_code\": \"12345\", \"country\": \"US\"}, "
    "\"items\": [{\"sku\": \"SKU-1\", \"quantity\": 1}], \"payment\": {\"method\": \"card\", "
    "\"token\": \"tok_visa\", \"amount\": 100, \"currency\": \"USD\"}}";

static void checkout(http_reply *r)
{
    static const char *const hdrs[] = {"Content-Type: application/json", NULL};
    char url[64];
    snprintf(url, sizeof url, "http://127.0.0.1:%d/checkout", w.port);
    assert_int_equal(http_request("POST", url, hdrs, order, strlen(order), 20000, r), 0);
    assert_non_null(r->json);
}

static size_t collect(char *data, size_t size, size_t n, void *user)
{
    size_t len = size * n;
    char *buf = user;
    size_t used = strlen(buf);
    if (used + len >= 65536)
        len = 65536 - 1 - used;
    memcpy(buf + used, data, len);
    buf[used + len] = '\0';
    return size * n;
}

/* GET https://127.0.0.1:port/path trusting ca, with a client certificate when cert is given:
 * the body parsed (NULL on any failure). */
static json_t *https_get(int port, const char *path, const char *cert, const char *key)
{
    static char body[65536];
    char url[128];
    CURL *e = curl_easy_init();
    CURLcode rc;
    body[0] = '\0';
    snprintf(url, sizeof url, "https://127.0.0.1:%d%s", port, path);
    curl_easy_setopt(e, CURLOPT_URL, url);
    curl_easy_setopt(e, CURLOPT_CAINFO, w.ca);
    curl_easy_setopt(e, CURLOPT_PROXY, "");
    if (cert != NULL) {
        curl_easy_setopt(e, CURLOPT_SSLCERT, cert);
        curl_easy_setopt(e, CURLOPT_SSLKEY, key);
    }
    curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, collect);
    curl_easy_setopt(e, CURLOPT_WRITEDATA, body);
    curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, 10000L);
    rc = curl_easy_perform(e);
    curl_easy_cleanup(e);
    return rc == CURLE_OK ? json_loads(body, 0, NULL) : NULL;
}

static long upstream_requests(int port, int mtls)
{
    json_t *s = https_get(port, "/_fake/stats", mtls ? w.client : NULL, w.client_key);
    long n = s ? (long)json_integer_value(json_object_get(s, "requests")) : -1;
    json_decref(s);
    return n;
}

static char *read_file(const char *path)
{
    FILE *f = fopen(path, "rb");
    char *buf;
    size_t n;
    if (f == NULL)
        return strdup("");
    buf = calloc(1, 1 << 20);
    n = fread(buf, 1, (1 << 20) - 1, f);
    buf[n] = '\0';
    fclose(f);
    return buf;
}

static void assert_no_secret(const char *what, const char *text)
{
    if (strstr(text, SECRET_TOKEN) != NULL || strstr(text, SECRET_KEY) != NULL)
        fail_msg("%s shows a header value:\n%s", what, text);
}

static const json_t *first_error(const http_reply *r)
{
    const json_t *errors = json_object_get(json_object_get(r->json, "error_group"), "errors");
    assert_int_equal(json_array_size(errors), 1);
    return json_array_get(errors, 0);
}

/* ---- tests ---- */

/* With the CA the transfer verifies and succeeds; the configured headers arrive expanded at their
 * own validation's upstream (and not at another's); the standard headers are still there. */
static void test_ca_and_headers(void **state)
{
    char vals[2048];
    http_reply r;
    (void)state;
    snprintf(vals, sizeof vals,
             "{\"name\": \"address\", \"field\": \"address\", \"url\": "
             "\"https://127.0.0.1:%d/validate\", \"tls\": {\"ca_file\": \"%s\"}},"
             "{\"name\": \"payment\", \"field\": \"payment\", \"url\": "
             "\"https://127.0.0.1:%d/verify\", \"tls\": {\"ca_file\": \"%s\"}, \"headers\": "
             "{\"Authorization\": \"Bearer ${T11A_TOKEN}\", \"X-Api-Key\": \"${T11A_KEY}\", "
             "\"X-Static\": \"plain\", \"Accept\": \"application/json\", \"User-Agent\": "
             "\"checkoutd-test\", \"X-Empty\": \"\"}}",
             w.up_port[0], w.ca, w.up_port[2], w.ca);
    assert_int_equal(start_daemon(vals, secret_env), 0);
    checkout(&r);
    if (r.status != 200)
        fail_msg("want 200, got %ld: %s", r.status, r.body);
    assert_string_equal(json_string_value(json_object_get(r.json, "status")), "accepted");
    assert_true(json_is_true(json_object_get(
        json_object_get(json_object_get(r.json, "results"), "payment"), "authorized")));
    http_reply_free(&r);

    json_t *last = https_get(w.up_port[2], "/_fake/last", NULL, NULL);
    assert_non_null(last);
    const json_t *h = json_object_get(last, "headers");
    assert_string_equal(json_string_value(json_object_get(h, "authorization")),
                        "Bearer " SECRET_TOKEN);
    assert_string_equal(json_string_value(json_object_get(h, "x-api-key")), SECRET_KEY);
    assert_string_equal(json_string_value(json_object_get(h, "x-static")), "plain");
    /* names libcurl would otherwise add or drop itself: the configured value wins */
    assert_string_equal(json_string_value(json_object_get(h, "accept")), "application/json");
    assert_string_equal(json_string_value(json_object_get(h, "user-agent")), "checkoutd-test");
    assert_string_equal(json_string_value(json_object_get(h, "x-empty")), "");
    assert_string_equal(json_string_value(json_object_get(h, "content-type")), "application/json");
    assert_non_null(json_object_get(h, "x-request-id"));
    assert_true(json_is_false(json_object_get(json_object_get(last, "tls"), "client_cert")));
    json_decref(last);
    last = https_get(w.up_port[0], "/_fake/last", NULL, NULL);
    assert_non_null(last);
    assert_null(json_object_get(json_object_get(last, "headers"), "authorization"));
    assert_null(json_object_get(json_object_get(last, "headers"), "x-api-key"));
    json_decref(last);

    /* /metrics, then the whole log (start, checkout and stop lines at debug level) */
    char url[64];
    snprintf(url, sizeof url, "http://127.0.0.1:%d/metrics", w.port);
    assert_int_equal(http_request("GET", url, NULL, NULL, 0, 10000, &r), 0);
    assert_int_equal(r.status, 200);
    assert_non_null(strstr(r.body, "checkoutd_upstream_requests_total"));
    assert_no_secret("/metrics", r.body);
    http_reply_free(&r);
    stop_daemon();
    char *log = read_file(w.log);
    assert_non_null(strstr(log, "ord-tls-1")); /* the checkout was logged */
    assert_no_secret("checkoutd's log", log);
    free(log);
}

/* --check-config prints a summary, never a value; a config error names the key and the
 * variable, never the value. */
static void test_check_config_hides_values(void **state)
{
    char vals[1024], line[512];
    proc p;
    int status = -1;
    const char *bin = getenv("CHECKOUTD_BIN") ? getenv("CHECKOUTD_BIN") : "build/release/checkoutd";
    char err_path[160];
    (void)state;
    snprintf(err_path, sizeof err_path, "%s/check.err", w.dir);
    snprintf(vals, sizeof vals,
             "{\"listen\": \"127.0.0.1:0\", \"validations\": [{\"name\": \"payment\", \"field\": "
             "\"payment\", \"url\": \"https://127.0.0.1:%d/verify\", \"tls\": {\"ca_file\": "
             "\"%s\"}, \"headers\": {\"Authorization\": \"Bearer ${T11A_TOKEN}\", \"X-Api-Key\": "
             "\"${T11A_KEY}\"}}]}\n",
             w.up_port[2], w.ca);
    FILE *f = fopen(w.config, "w");
    assert_non_null(f);
    fputs(vals, f);
    fclose(f);
    char *argv[] = {(char *)bin, "--check-config", w.config, NULL};

    /* valid: exit 0, one line of summary on stdout, nothing secret anywhere */
    unlink(err_path);
    assert_int_equal(proc_spawn(&p, argv, secret_env, err_path), 0);
    assert_int_equal(proc_wait_line(&p, "", line, sizeof line, 10000), 0);
    assert_int_equal(proc_wait_exit(&p, 10000, &status), 0);
    proc_stop(&p);
    assert_int_equal(status, 0);
    assert_non_null(strstr(line, "ok"));
    assert_no_secret("--check-config output", line);
    char *err = read_file(err_path);
    assert_no_secret("--check-config stderr", err);
    free(err);

    /* T11A_KEY unset: refused, naming the key and the variable */
    char *only_token[] = {"T11A_TOKEN=" SECRET_TOKEN, NULL};
    unlink(err_path);
    assert_int_equal(proc_spawn(&p, argv, only_token, err_path), 0);
    assert_int_equal(proc_wait_exit(&p, 10000, &status), 0);
    proc_stop(&p);
    assert_int_equal(status, 2);
    err = read_file(err_path);
    assert_non_null(strstr(err, "validations[0].headers.X-Api-Key: environment variable "
                                "T11A_KEY is not set"));
    assert_no_secret("the config error", err);
    free(err);

    /* a value with CR/LF from the environment: refused without showing it */
    char *crlf[] = {"T11A_TOKEN=" SECRET_TOKEN "\r\nX-Evil: 1", "T11A_KEY=" SECRET_KEY, NULL};
    unlink(err_path);
    assert_int_equal(proc_spawn(&p, argv, crlf, err_path), 0);
    assert_int_equal(proc_wait_exit(&p, 10000, &status), 0);
    proc_stop(&p);
    assert_int_equal(status, 2);
    err = read_file(err_path);
    assert_non_null(strstr(err, "headers.Authorization: the value of environment variable "
                                "T11A_TOKEN is not printable ASCII"));
    assert_no_secret("the config error", err);
    assert_null(strstr(err, "X-Evil"));
    free(err);
}

/* Without a CA file the system CAs do not know the test's CA: a transport error that says the
 * certificate failed verification, and no request reached the upstream. */
static void test_no_ca_fails_verification(void **state)
{
    char vals[512];
    http_reply r;
    (void)state;
    long before = upstream_requests(w.up_port[2], 0);
    snprintf(vals, sizeof vals,
             "{\"name\": \"payment\", \"field\": \"payment\", \"url\": "
             "\"https://127.0.0.1:%d/verify\", \"timeout_ms\": 5000}",
             w.up_port[2]);
    assert_int_equal(start_daemon(vals, NULL), 0);
    checkout(&r);
    assert_int_equal(r.status, 502);
    const json_t *e = first_error(&r);
    assert_string_equal(json_string_value(json_object_get(e, "kind")), "transport");
    assert_true(json_is_null(json_object_get(e, "http_status")));
    const char *msg = json_string_value(json_object_get(e, "message"));
    if (msg == NULL || strstr(msg, "payment failed TLS certificate verification: ") == NULL)
        fail_msg("message: %s", msg ? msg : "(none)");
    http_reply_free(&r);
    stop_daemon();
    assert_int_equal(upstream_requests(w.up_port[2], 0), before);
}

/* A CA that did not sign the server's certificate fails the same way. */
static void test_wrong_ca_fails_verification(void **state)
{
    char vals[512];
    http_reply r;
    (void)state;
    snprintf(vals, sizeof vals,
             "{\"name\": \"payment\", \"field\": \"payment\", \"url\": "
             "\"https://127.0.0.1:%d/verify\", \"tls\": {\"ca_file\": \"%s\"}}",
             w.up_port[2], w.other_ca);
    assert_int_equal(start_daemon(vals, NULL), 0);
    checkout(&r);
    assert_int_equal(r.status, 502);
    const json_t *e = first_error(&r);
    assert_string_equal(json_string_value(json_object_get(e, "kind")), "transport");
    assert_non_null(strstr(json_string_value(json_object_get(e, "message")),
                           "failed TLS certificate verification"));
    http_reply_free(&r);
    stop_daemon();
}

/* An upstream that requires a client certificate: with cert_file/key_file it answers (and saw a
 * verified certificate); without, the handshake fails (transport, said so). */
static void test_client_certificate(void **state)
{
    char vals[1024];
    http_reply r;
    (void)state;
    snprintf(vals, sizeof vals,
             "{\"name\": \"payment\", \"field\": \"payment\", \"url\": "
             "\"https://127.0.0.1:%d/verify\", \"tls\": {\"ca_file\": \"%s\", \"cert_file\": "
             "\"%s\", \"key_file\": \"%s\"}}",
             w.mtls_port[2], w.ca, w.client, w.client_key);
    assert_int_equal(start_daemon(vals, NULL), 0);
    checkout(&r);
    if (r.status != 200)
        fail_msg("want 200, got %ld: %s", r.status, r.body);
    http_reply_free(&r);
    stop_daemon();
    json_t *last = https_get(w.mtls_port[2], "/_fake/last", w.client, w.client_key);
    assert_non_null(last);
    assert_true(json_is_true(json_object_get(json_object_get(last, "tls"), "client_cert")));
    json_decref(last);

    snprintf(vals, sizeof vals,
             "{\"name\": \"payment\", \"field\": \"payment\", \"url\": "
             "\"https://127.0.0.1:%d/verify\", \"tls\": {\"ca_file\": \"%s\"}}",
             w.mtls_port[2], w.ca);
    assert_int_equal(start_daemon(vals, NULL), 0);
    checkout(&r);
    assert_int_equal(r.status, 502);
    const json_t *e = first_error(&r);
    assert_string_equal(json_string_value(json_object_get(e, "kind")), "transport");
    const char *msg = json_string_value(json_object_get(e, "message"));
    if (msg == NULL || strstr(msg, "payment failed the TLS handshake: ") == NULL)
        fail_msg("message: %s", msg ? msg : "(none)");
    http_reply_free(&r);
    stop_daemon();
}

/* ---- tg: the options of one call never apply to the next on the same loop ---- */

static int tg_done_count;

static void on_done(tg_group *g, void *user)
{
    (void)g;
    (void)user;
    tg_done_count++;
}

/* One call to url on loop (driven by hand), with tls or none: its result copied out. */
static tg_result run_one(tg_loop *loop, const char *url, const tg_tls *tls)
{
    static const char *const hdrs[] = {"Content-Type: application/json", NULL};
    const char body_text[] = "{\"order_id\": \"o\", \"payment\": {\"token\": \"tok_visa\"}}";
    char *body = strdup(body_text);
    tg_group *g = tg_group_new(1, 10000, on_done, NULL);
    tg_result out;
    assert_non_null(g);
    assert_int_equal(tg_call_set(g, 0, url, body, strlen(body), hdrs, 10000), 0);
    if (tls != NULL)
        tg_call_tls(g, 0, tls);
    int before = tg_done_count;
    assert_int_equal(tg_submit(loop, g), 0);
    double until = proc_now_ms() + 15000;
    while (tg_done_count == before && proc_now_ms() < until)
        tg_loop_run_once(loop, 50);
    assert_int_equal(tg_done_count, before + 1);
    out = *tg_group_result(g, 0);
    out.body = NULL;
    out.raw = NULL;
    tg_group_free(g);
    return out;
}

static void test_tg_options_do_not_leak(void **state)
{
    char url[128];
    tg_loop_options o = {.max_body_bytes = 1 << 20, .max_connections = 0};
    tg_loop *loop = tg_loop_new(&o);
    const tg_tls with_ca = {w.ca, NULL, NULL};
    const tg_tls with_cert = {w.ca, w.client, w.client_key};
    tg_result r;
    (void)state;
    assert_non_null(loop);
    snprintf(url, sizeof url, "https://127.0.0.1:%d/verify", w.up_port[2]);
    for (int round = 0; round < 2; round++) {
        r = run_one(loop, url, &with_ca);
        assert_int_equal(r.state, TG_OK);
        /* the same URL right after: the idle handle and the cached connection of the call with
         * the CA must not serve a call without it */
        r = run_one(loop, url, NULL);
        assert_int_equal(r.state, TG_FAILED);
        assert_int_equal(r.kind, TG_TRANSPORT);
        assert_non_null(strstr(r.message, "failed TLS certificate verification"));
    }
    /* the client certificate of one call does not stay for the next */
    snprintf(url, sizeof url, "https://127.0.0.1:%d/verify", w.mtls_port[2]);
    r = run_one(loop, url, &with_cert);
    assert_int_equal(r.state, TG_OK);
    r = run_one(loop, url, &with_ca);
    assert_int_equal(r.state, TG_FAILED);
    assert_int_equal(r.kind, TG_TRANSPORT);
    assert_non_null(strstr(r.message, "failed the TLS handshake"));
    r = run_one(loop, url, &with_cert);
    assert_int_equal(r.state, TG_OK);
    tg_loop_free(loop);
}

/* How TLS failures are named. TLS 1.3 servers refuse a missing client certificate with an alert
 * read after the handshake: that receive error is a handshake failure too; a plain one is not. */
static void test_tg_tls13_alert_is_tls(void **state)
{
    tg_group *g = tg_group_new(2, 1000, on_done, NULL);
    (void)state;
    assert_non_null(g);
    tg_call_record(g, 0, CURLE_RECV_ERROR, 0, "", 0, 0,
                   "OpenSSL SSL_read: error:0A00045C:SSL routines::tlsv13 alert certificate "
                   "required, errno 0");
    tg_call_record(g, 1, CURLE_RECV_ERROR, 0, "", 0, 0, "Connection reset by peer");
    tg_group *g2 = tg_group_new(2, 1000, on_done, NULL);
    assert_non_null(g2);
    tg_call_record(g2, 0, CURLE_PEER_FAILED_VERIFICATION, 0, "", 0, 0,
                   "SSL: no alternative certificate subject name matches target host name");
    tg_call_record(g2, 1, CURLE_SSL_CERTPROBLEM, 0, "", 0, 0, "could not load PEM client cert");
    assert_int_equal(tg_group_result(g2, 0)->kind, TG_TRANSPORT);
    assert_string_equal(tg_group_result(g2, 0)->message,
                        "failed TLS certificate verification: SSL: no alternative certificate "
                        "subject name matches target host name");
    assert_int_equal(tg_group_result(g2, 1)->kind, TG_TRANSPORT);
    assert_string_equal(tg_group_result(g2, 1)->message,
                        "failed the TLS handshake: could not load PEM client cert");
    tg_group_free(g2);
    assert_int_equal(tg_group_result(g, 0)->kind, TG_TRANSPORT);
    assert_non_null(strstr(tg_group_result(g, 0)->message, "failed the TLS handshake: OpenSSL"));
    assert_string_equal(tg_group_result(g, 1)->message, "unreachable: Connection reset by peer");
    tg_group_free(g);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_ca_and_headers),
        cmocka_unit_test(test_check_config_hides_values),
        cmocka_unit_test(test_no_ca_fails_verification),
        cmocka_unit_test(test_wrong_ca_fails_verification),
        cmocka_unit_test(test_client_certificate),
        cmocka_unit_test(test_tg_options_do_not_leak),
        cmocka_unit_test(test_tg_tls13_alert_is_tls),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
