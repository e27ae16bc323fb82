/* v1.3 listeners against the real daemon ("Admin listener, inbound TLS, whole-request deadline"):
 *   admin_listen    /metrics, /status, /status.json there only (404 not_found on listen);
 *                   /healthz and /readyz on both; no /checkout on the admin port (404)
 *   tls             curl --cacert: a checkout answered over HTTPS; plain HTTP to that port gets
 *                   no HTTP answer (nothing of the service leaks); a malformed Content-Length, a
 *                   trickled body and a body over max_body_bytes are closed unanswered (no raw
 *                   bytes beside GnuTLS)
 *   tls + client_ca no client certificate: refused; one signed by another CA: refused; one signed
 *                   by client_ca_file: answered
 *   expired cert    refused at start, the message names the variable, the path and the date
 * Certificates are made here by the openssl CLI (as tests/test_upstream_tls.c does); checkouts go
 * through fake-upstreams (plain HTTP). Each test starts its own checkoutd. */
#include "support/http.h"
#include "support/proc.h"

#include <curl/curl.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

typedef struct world {
    char dir[64];
    char ca[128], server[128], server_key[128], client[128], client_key[128];
    char other[128], other_key[128], expired[128];
    proc up;
    int up_port[3];
    proc daemon;
    int port, admin_port;
    char config[128];
} world;

static world w;

static const char order[] =
    "{\"order_id\": \"ord-edge-1\", \"address\": {\"postal_code\": \"1\", \"country\": \"US\"}, "
    "\"items\": [], \"payment\": {\"token\": \"tok_visa\"}}";

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

static int make_certs(void)
{
    const char *d = w.dir;
    snprintf(w.ca, sizeof w.ca, "%s/ca.pem", d);
    snprintf(w.server, sizeof w.server, "%s/server.pem", d);
    snprintf(w.server_key, sizeof w.server_key, "%s/server.key", d);
    snprintf(w.client, sizeof w.client, "%s/client.pem", d);
    snprintf(w.client_key, sizeof w.client_key, "%s/client.key", d);
    snprintf(w.other, sizeof w.other, "%s/other.pem", d);
    snprintf(w.other_key, sizeof w.other_key, "%s/other.key", d);
    snprintf(w.expired, sizeof w.expired, "%s/expired.pem", d);
    return sh("cd %s && exec >openssl.log 2>&1 && "
              "openssl req -x509 -newkey rsa:2048 -nodes -keyout ca.key -out ca.pem -days 2 "
              "-subj '/CN=checkoutd test CA' && "
              "openssl req -newkey rsa:2048 -nodes -keyout server.key -out server.csr "
              "-subj '/CN=127.0.0.1' && "
              "printf 'subjectAltName=IP:127.0.0.1\\n' > server.ext && "
              "openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial "
              "-out server.pem -days 2 -extfile server.ext && "
              "openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial "
              "-out expired.pem -days -1 -extfile server.ext && "
              "openssl req -newkey rsa:2048 -nodes -keyout client.key -out client.csr "
              "-subj '/CN=checkoutd client' && "
              "openssl x509 -req -in client.csr -CA ca.pem -CAkey ca.key -CAcreateserial "
              "-out client.pem -days 2 && "
              "openssl req -x509 -newkey rsa:2048 -nodes -keyout other.key -out other.pem "
              "-days 2 -subj '/CN=another CA'",
              d);
}

static int setup(void **state)
{
    (void)state;
    memset(&w, 0, sizeof w);
    signal(SIGPIPE, SIG_IGN);
    snprintf(w.dir, sizeof w.dir, "/tmp/test_listeners.XXXXXX");
    if (mkdtemp(w.dir) == NULL || make_certs() != 0) {
        fprintf(stderr, "cannot make certificates with openssl (see %s/openssl.log)\n", w.dir);
        return -1;
    }
    snprintf(w.config, sizeof w.config, "%s/checkoutd.json", w.dir);
    return proc_start_upstreams(&w.up, NULL, "/dev/null", w.up_port);
}

static int teardown(void **state)
{
    (void)state;
    proc_stop(&w.up);
    sh("rm -rf %s", w.dir);
    return 0;
}

/* Starts checkoutd with the extra top-level keys (each followed by ", ") and env; with admin, reads
 * its "admin listening on" line too. */
static int start_daemon(const char *keys, char *const env[], int admin)
{
    FILE *f = fopen(w.config, "w");
    if (f == NULL)
        return -1;
    fprintf(
        f,
        "{\"listen\": \"127.0.0.1:0\", \"deadline_ms\": 4000, \"max_body_bytes\": 4096, %s"
        "\"validations\": ["
        "{\"name\": \"address\", \"field\": \"address\", \"url\": \"http://127.0.0.1:%d/a\"},"
        "{\"name\": \"inventory\", \"field\": \"items\", \"url\": \"http://127.0.0.1:%d/i\"},"
        "{\"name\": \"payment\", \"field\": \"payment\", \"url\": \"http://127.0.0.1:%d/p\"}]}\n",
        keys, w.up_port[0], w.up_port[1], w.up_port[2]);
    fclose(f);
    char *quiet[] = {"--log-level", "warn", NULL};
    w.port = proc_start_checkoutd(&w.daemon, w.config, quiet, env, NULL);
    w.admin_port = -1;
    if (w.port > 0 && admin) {
        char line[256];
        if (proc_wait_line(&w.daemon, "admin listening on", line, sizeof line, 10000) == 0)
            w.admin_port = proc_port_from_line(line);
    }
    return w.port > 0 && (!admin || w.admin_port > 0) ? 0 : -1;
}

static void stop_daemon(void)
{
    int status = -1;
    proc_signal(&w.daemon, SIGTERM);
    proc_wait_exit(&w.daemon, 10000, &status);
    proc_stop(&w.daemon);
    assert_int_equal(status, 0);
}

static long get_status(int port, const char *path, http_reply *r)
{
    char url[96];
    snprintf(url, sizeof url, "http://127.0.0.1:%d%s", port, path);
    http_request("GET", url, NULL, NULL, 0, 5000, r);
    return r->status;
}

static long checkout_status(int port)
{
    static const char *const json_only[] = {"Content-Type: application/json", NULL};
    char url[96];
    http_reply r;
    snprintf(url, sizeof url, "http://127.0.0.1:%d/checkout", port);
    http_request("POST", url, json_only, order, strlen(order), 10000, &r);
    long st = r.status;
    http_reply_free(&r);
    return st;
}

/* ---- admin_listen ---------------------------------------------------------------------------- */

static void test_admin_routes(void **state)
{
    (void)state;
    char *env[] = {"CHECKOUTD_ADMIN_LISTEN=127.0.0.1:0", NULL};
    assert_int_equal(start_daemon("", env, 1), 0);
    assert_int_not_equal(w.admin_port, w.port);
    assert_int_equal(checkout_status(w.port), 200);
    assert_int_equal(checkout_status(w.admin_port), 404); /* no /checkout on the admin port */
    static const char *const both[] = {"/healthz", "/readyz"};
    static const char *const admin_only[] = {"/metrics", "/status", "/status.json"};
    http_reply r;
    for (size_t i = 0; i < 2; i++) {
        assert_int_equal(get_status(w.port, both[i], &r), 200);
        http_reply_free(&r);
        assert_int_equal(get_status(w.admin_port, both[i], &r), 200);
        http_reply_free(&r);
    }
    for (size_t i = 0; i < 3; i++) {
        assert_int_equal(get_status(w.port, admin_only[i], &r), 404);
        assert_non_null(strstr(r.body, "\"not_found\""));
        assert_null(strstr(r.body, "checkoutd_checkouts_total"));
        http_reply_free(&r);
        assert_int_equal(get_status(w.admin_port, admin_only[i], &r), 200);
        http_reply_free(&r);
    }
    /* the admin's /metrics counts the checkout answered on listen */
    assert_int_equal(get_status(w.admin_port, "/metrics", &r), 200);
    assert_non_null(strstr(r.body, "checkoutd_checkouts_total{outcome=\"accepted\"} 1"));
    http_reply_free(&r);
    assert_int_equal(get_status(w.admin_port, "/nope", &r), 404);
    http_reply_free(&r);
    stop_daemon(); /* exit 0: the admin daemon stops with the others (ASan: nothing leaked) */
}

/* admin_listen equal to listen is refused at start, naming the key. */
static void test_admin_same_as_listen_refused(void **state)
{
    (void)state;
    char cmd[512];
    FILE *f = fopen(w.config, "w");
    assert_non_null(f);
    fprintf(f, "{\"listen\": \"127.0.0.1:8080\", \"admin_listen\": \"127.0.0.1:8080\"}\n");
    fclose(f);
    snprintf(cmd, sizeof cmd, "%s --check-config %s 2>&1 | grep -q 'admin_listen: must differ'",
             getenv("CHECKOUTD_BIN") ? getenv("CHECKOUTD_BIN") : "build/release/checkoutd",
             w.config);
    assert_int_equal(system(cmd), 0);
}

/* ---- tls ------------------------------------------------------------------------------------- */

/* The curl CLI against https://127.0.0.1:port/path: its exit code; *status the HTTP status (0
 * when none). cert: a client certificate and key, or NULL. */
static int curl_cli(const char *method, const char *path, const char *cert, const char *key,
                    long *status)
{
    char cmd[1024], out[64] = "";
    snprintf(cmd, sizeof cmd,
             "curl -s -o /dev/null -w '%%{http_code}' --max-time 10 --noproxy '*' --cacert %s "
             "%s%s%s%s -X %s -H 'Content-Type: application/json' %s%s%s "
             "https://127.0.0.1:%d%s; echo \" $?\"",
             w.ca, cert ? "--cert " : "", cert ? cert : "", cert ? " --key " : "", key ? key : "",
             method, strcmp(method, "POST") == 0 ? "--data-raw '" : "",
             strcmp(method, "POST") == 0 ? order : "", strcmp(method, "POST") == 0 ? "'" : "",
             w.port, path);
    FILE *p = popen(cmd, "r");
    assert_non_null(p);
    size_t n = fread(out, 1, sizeof out - 1, p);
    out[n] = '\0';
    pclose(p);
    int rc = -1;
    *status = 0;
    assert_int_equal(sscanf(out, "%ld %d", status, &rc), 2);
    return rc;
}

static void test_tls_checkout_and_plain_http(void **state)
{
    (void)state;
    char keys[512];
    snprintf(keys, sizeof keys, "\"tls\": {\"cert_file\": \"%s\", \"key_file\": \"%s\"}, ",
             w.server, w.server_key);
    assert_int_equal(start_daemon(keys, NULL, 0), 0);
    long st = 0;
    assert_int_equal(curl_cli("POST", "/checkout", NULL, NULL, &st), 0);
    assert_int_equal(st, 200);
    assert_int_equal(curl_cli("GET", "/healthz", NULL, NULL, &st), 0);
    assert_int_equal(st, 200);
    /* plain HTTP to the HTTPS port: no HTTP answer, nothing of the service, the connection closed
     */
    static const char *const plain[] = {
        "GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n",
        "POST /checkout HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        "Content-Length: 2\r\n\r\n{}"};
    for (size_t i = 0; i < 2; i++) {
        char reply[4096];
        int n = http_raw(w.port, plain[i], strlen(plain[i]), reply, sizeof reply, 5000);
        assert_true(n >= 0);
        if (strstr(reply, "HTTP/") != NULL || strstr(reply, "checkoutd") != NULL ||
            strstr(reply, "{") != NULL)
            fail_msg("plain HTTP to the TLS port got: %.200s", reply);
    }
    /* the malformed Content-Length (libmicrohttpd's own refusal): closed, never two answers */
    char hdr[] = "Content-Length: +5";
    CURL *e = curl_easy_init();
    struct curl_slist *h = curl_slist_append(NULL, hdr);
    h = curl_slist_append(h, "Content-Type: application/json");
    char url[96];
    snprintf(url, sizeof url, "https://127.0.0.1:%d/checkout", w.port);
    curl_easy_setopt(e, CURLOPT_URL, url);
    curl_easy_setopt(e, CURLOPT_CAINFO, w.ca);
    curl_easy_setopt(e, CURLOPT_PROXY, "");
    curl_easy_setopt(e, CURLOPT_HTTPHEADER, h);
    curl_easy_setopt(e, CURLOPT_POSTFIELDS, "{}   ");
    curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, 5000L);
    CURLcode rc = curl_easy_perform(e);
    long code = 0;
    curl_easy_getinfo(e, CURLINFO_RESPONSE_CODE, &code);
    curl_easy_cleanup(e);
    curl_slist_free_all(h);
    if (rc == CURLE_OK && code != 400)
        fail_msg("malformed Content-Length over TLS: curl %d, status %ld", (int)rc, code);
    assert_int_equal(curl_cli("GET", "/healthz", NULL, NULL, &st), 0); /* still serving */
    stop_daemon();
}

/* The read callback of a trickled upload: one byte per call, 500 ms apart. */
static size_t trickle(char *buf, size_t size, size_t n, void *user)
{
    int *left = user;
    (void)size;
    (void)n;
    if (*left <= 0)
        return 0;
    usleep(500 * 1000);
    buf[0] = ' ';
    (*left)--;
    return 1;
}

/* request_timeout_ms under TLS: a body trickled one byte every 500 ms is closed (unanswered: no
 * raw 408 beside GnuTLS) about 2 s after the request began. */
static void test_tls_trickled_body_closed(void **state)
{
    (void)state;
    char keys[512];
    snprintf(
        keys, sizeof keys,
        "\"request_timeout_ms\": 2000, \"tls\": {\"cert_file\": \"%s\", \"key_file\": \"%s\"}, ",
        w.server, w.server_key);
    assert_int_equal(start_daemon(keys, NULL, 0), 0);
    CURL *e = curl_easy_init();
    struct curl_slist *h = curl_slist_append(NULL, "Content-Type: application/json");
    char url[96];
    int left = 100;
    snprintf(url, sizeof url, "https://127.0.0.1:%d/checkout", w.port);
    curl_easy_setopt(e, CURLOPT_URL, url);
    curl_easy_setopt(e, CURLOPT_CAINFO, w.ca);
    curl_easy_setopt(e, CURLOPT_PROXY, "");
    curl_easy_setopt(e, CURLOPT_HTTPHEADER, h);
    curl_easy_setopt(e, CURLOPT_POST, 1L);
    curl_easy_setopt(e, CURLOPT_READFUNCTION, trickle);
    curl_easy_setopt(e, CURLOPT_READDATA, &left);
    curl_easy_setopt(e, CURLOPT_POSTFIELDSIZE, 100L);
    curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, 20000L);
    double t0 = proc_now_ms();
    CURLcode rc = curl_easy_perform(e);
    double took = proc_now_ms() - t0;
    long code = 0;
    curl_easy_getinfo(e, CURLINFO_RESPONSE_CODE, &code);
    curl_easy_cleanup(e);
    curl_slist_free_all(h);
    if (rc == CURLE_OK || code != 0 || took < 1500 || took > 4500)
        fail_msg("curl %d, status %ld after %.0f ms (want a close at about 2000 ms)", (int)rc, code,
                 took);
    long st = 0;
    assert_int_equal(curl_cli("POST", "/checkout", NULL, NULL, &st), 0);
    assert_int_equal(st, 200);
    stop_daemon();
}

/* The read callback of an endless chunked upload: 1000 bytes per call, forever. */
static size_t endless(char *buf, size_t size, size_t n, void *user)
{
    size_t want = size * n < 1000 ? size * n : 1000;
    (void)user;
    memset(buf, ' ', want);
    return want;
}

/* A body over max_body_bytes under TLS: the early 413 cannot be written beside GnuTLS, so the
 * connection is closed at once (never read to its end), and the daemon goes on serving. */
static void test_tls_body_too_large_closed(void **state)
{
    (void)state;
    char keys[512];
    snprintf(keys, sizeof keys, "\"tls\": {\"cert_file\": \"%s\", \"key_file\": \"%s\"}, ",
             w.server, w.server_key);
    assert_int_equal(start_daemon(keys, NULL, 0), 0);
    CURL *e = curl_easy_init();
    struct curl_slist *h = curl_slist_append(NULL, "Content-Type: application/json");
    h = curl_slist_append(h, "Transfer-Encoding: chunked");
    char url[96];
    snprintf(url, sizeof url, "https://127.0.0.1:%d/checkout", w.port);
    curl_easy_setopt(e, CURLOPT_URL, url);
    curl_easy_setopt(e, CURLOPT_CAINFO, w.ca);
    curl_easy_setopt(e, CURLOPT_PROXY, "");
    curl_easy_setopt(e, CURLOPT_HTTPHEADER, h);
    curl_easy_setopt(e, CURLOPT_POST, 1L);
    curl_easy_setopt(e, CURLOPT_READFUNCTION, endless);
    curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, 10000L);
    double t0 = proc_now_ms();
    CURLcode rc = curl_easy_perform(e);
    double took = proc_now_ms() - t0;
    curl_easy_cleanup(e);
    curl_slist_free_all(h);
    if (rc == CURLE_OK || rc == CURLE_OPERATION_TIMEDOUT || took > 8000)
        fail_msg("curl %d after %.0f ms (want the connection closed at once)", (int)rc, took);
    long st = 0;
    assert_int_equal(curl_cli("POST", "/checkout", NULL, NULL, &st), 0);
    assert_int_equal(st, 200);
    stop_daemon();
}

static void test_mtls(void **state)
{
    (void)state;
    char *env[7];
    char cert[200], key[200], ca[200];
    snprintf(cert, sizeof cert, "CHECKOUTD_TLS_CERT_FILE=%s", w.server);
    snprintf(key, sizeof key, "CHECKOUTD_TLS_KEY_FILE=%s", w.server_key);
    snprintf(ca, sizeof ca, "CHECKOUTD_TLS_CLIENT_CA_FILE=%s", w.ca);
    env[0] = cert;
    env[1] = key;
    env[2] = ca;
    env[3] = NULL;
    assert_int_equal(start_daemon("", env, 0), 0);
    long st = -1;
    assert_int_not_equal(curl_cli("POST", "/checkout", NULL, NULL, &st), 0); /* no certificate */
    assert_int_equal(st, 0);
    st = -1;
    assert_int_not_equal(curl_cli("POST", "/checkout", w.other, w.other_key, &st),
                         0); /* other CA */
    assert_int_equal(st, 0);
    assert_int_equal(curl_cli("POST", "/checkout", w.client, w.client_key, &st), 0);
    assert_int_equal(st, 200);
    stop_daemon();
}

/* An expired certificate is refused at start (a daemon that serves a certificate every client
 * refuses is not started); the message names the variable, the path and the date. */
static void test_expired_certificate_refused(void **state)
{
    (void)state;
    char cmd[1024];
    FILE *f = fopen(w.config, "w");
    assert_non_null(f);
    fprintf(f, "{\"listen\": \"127.0.0.1:0\"}\n");
    fclose(f);
    snprintf(cmd, sizeof cmd,
             "CHECKOUTD_TLS_CERT_FILE=%s CHECKOUTD_TLS_KEY_FILE=%s %s --config %s 2>&1 | "
             "grep -q 'CHECKOUTD_TLS_CERT_FILE: the certificate in \"%s\" expired on 20'",
             w.expired, w.server_key,
             getenv("CHECKOUTD_BIN") ? getenv("CHECKOUTD_BIN") : "build/release/checkoutd",
             w.config, w.expired);
    assert_int_equal(system(cmd), 0);
    /* and a missing key file names its key and path */
    snprintf(cmd, sizeof cmd,
             "CHECKOUTD_TLS_CERT_FILE=%s CHECKOUTD_TLS_KEY_FILE=%s/none.key %s --check-config %s "
             "2>&1 | grep -q 'CHECKOUTD_TLS_KEY_FILE: cannot read \"%s/none.key\"'",
             w.server, w.dir,
             getenv("CHECKOUTD_BIN") ? getenv("CHECKOUTD_BIN") : "build/release/checkoutd",
             w.config, w.dir);
    assert_int_equal(system(cmd), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_admin_routes),
        cmocka_unit_test(test_admin_same_as_listen_refused),
        cmocka_unit_test(test_tls_checkout_and_plain_http),
        cmocka_unit_test(test_tls_trickled_body_closed),
        cmocka_unit_test(test_tls_body_too_large_closed),
        cmocka_unit_test(test_mtls),
        cmocka_unit_test(test_expired_certificate_refused),
    };
    return cmocka_run_group_tests_name("listeners", tests, setup, teardown);
}
