/* cfg_edge — the v1.3 listener keys at the top level: admin_listen and tls (see cfg.h).
 *
 * admin_listen is "HOST:PORT" like listen (CHECKOUTD_ADMIN_LISTEN overrides it); it must not be
 * listen's own address and port. tls is {"cert_file", "key_file", "client_ca_file"}: cert_file and
 * key_file required, client_ca_file optional; each a readable regular file (checked like the
 * upstream tls files, cfg_file_readable), and cert_file must hold a PEM certificate that has not
 * expired (a daemon that would only serve a certificate every client refuses is refused at start,
 * with the date). CHECKOUTD_TLS_CERT_FILE, _KEY_FILE and _CLIENT_CA_FILE override each key, and may
 * supply the block when the text has none. Messages name the key (or the variable) and the path;
 * never the contents. Cost: a few lookups and one certificate parse, once at start. */
#include "cfg_internal.h"

#include <openssl/pem.h>
#include <openssl/x509.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

int cfg_edge_admin_load(const cfg_loader *ld, const json_t *value, cfg *out);
void cfg_edge_admin_free(cfg *out);
int cfg_edge_tls_load(const cfg_loader *ld, const json_t *value, cfg *out);
void cfg_edge_tls_free(cfg *out);

int cfg_edge_admin_load(const cfg_loader *ld, const json_t *value, cfg *out)
{
    char host[CFG_HOST_MAX + 1], shown[CFG_SHOW_MAX];
    cfg_where w;
    const char *env = cfg_env(ld, "CHECKOUTD_ADMIN_LISTEN");
    const char *s = NULL;
    if (env != NULL) {
        w.source = NULL;
        snprintf(w.key, sizeof w.key, "%s", "CHECKOUTD_ADMIN_LISTEN");
        s = env;
    } else {
        if (value == NULL)
            return 0;
        cfg_top_where(ld, "admin_listen", &w);
        if (!json_is_string(value)) {
            cfg_show_json(value, shown);
            return cfg_errf(ld, &w, "expected \"host:port\", got %s", shown);
        }
        s = json_string_value(value);
    }
    if (cfg_parse_listen(s, host, &out->admin_port) != 0) {
        cfg_show_string(s, shown);
        return cfg_errf(
            ld, &w,
            "expected \"host:port\" with a port in 0..65535 (IPv6 as \"[::1]:9090\"), got %s",
            shown);
    }
    if (out->admin_port != 0 && out->admin_port == out->listen_port &&
        strcmp(host, out->listen_host) == 0)
        return cfg_errf(ld, &w, "must differ from listen (%s:%d)", host, out->admin_port);
    out->admin_host = cfg_dup(ld, &w, host);
    return out->admin_host != NULL ? 0 : -1;
}

void cfg_edge_admin_free(cfg *out)
{
    free(out->admin_host);
    out->admin_host = NULL;
}

/* The certificate in path has not expired: 0, or -1 after a message. */
static int cert_current(const cfg_loader *ld, const cfg_where *w, const char *path)
{
    char shown[CFG_SHOW_MAX];
    int rc = -1;
    cfg_show_string(path, shown);
    FILE *f = fopen(path, "r");
    if (f == NULL)
        return cfg_errf(ld, w, "cannot read %s", shown);
    X509 *x = PEM_read_X509(f, NULL, NULL, NULL);
    fclose(f);
    if (x == NULL)
        return cfg_errf(ld, w, "%s holds no PEM certificate", shown);
    const ASN1_TIME *not_after = X509_get0_notAfter(x);
    if (X509_cmp_current_time(not_after) <= 0) {
        struct tm tm;
        char when[32] = "?";
        if (ASN1_TIME_to_tm(not_after, &tm) == 1)
            strftime(when, sizeof when, "%Y-%m-%dT%H:%M:%SZ", &tm);
        cfg_errf(ld, w, "the certificate in %s expired on %s", shown, when);
        goto done;
    }
    rc = 0;
done:
    X509_free(x);
    return rc;
}

static const struct {
    const char *key, *env;
    size_t offset;
} tls_keys[] = {
    {"cert_file", "CHECKOUTD_TLS_CERT_FILE", offsetof(cfg_listen_tls, cert_file)},
    {"key_file", "CHECKOUTD_TLS_KEY_FILE", offsetof(cfg_listen_tls, key_file)},
    {"client_ca_file", "CHECKOUTD_TLS_CLIENT_CA_FILE", offsetof(cfg_listen_tls, client_ca_file)},
};
#define TLS_NKEYS 3

int cfg_edge_tls_load(const cfg_loader *ld, const json_t *value, cfg *out)
{
    static const char *const names[] = {"cert_file", "key_file", "client_ca_file"};
    char shown[CFG_SHOW_MAX];
    cfg_where w;
    int any_env = 0;
    for (size_t k = 0; k < TLS_NKEYS; k++)
        any_env |= cfg_env(ld, tls_keys[k].env) != NULL;
    if (value == NULL && !any_env)
        return 0;
    cfg_top_where(ld, "tls", &w);
    if (value != NULL && !json_is_object(value)) {
        cfg_show_json(value, shown);
        return cfg_errf(
            ld, &w, "expected an object with cert_file, key_file, client_ca_file, got %s", shown);
    }
    if (value != NULL &&
        cfg_check_keys(ld, &w, value, names, TLS_NKEYS, "cert_file, key_file, client_ca_file") != 0)
        return -1;
    for (size_t k = 0; k < 2; k++) { /* cert_file and key_file: both, before either is read */
        if (cfg_env(ld, tls_keys[k].env) == NULL &&
            (value == NULL || json_object_get(value, tls_keys[k].key) == NULL)) {
            char dotted[CFG_KEY_MAX];
            snprintf(dotted, sizeof dotted, "tls.%s", tls_keys[k].key);
            cfg_top_where(ld, dotted, &w);
            return cfg_errf(ld, &w, "missing, expected a file path (%s sets it too)",
                            tls_keys[k].env);
        }
    }
    for (size_t k = 0; k < TLS_NKEYS; k++) {
        char **slot = (char **)(void *)((char *)&out->listen_tls + tls_keys[k].offset);
        const char *env = cfg_env(ld, tls_keys[k].env);
        const json_t *v = value != NULL ? json_object_get(value, tls_keys[k].key) : NULL;
        cfg_where kw;
        const char *path;
        int err = 0;
        if (env != NULL) {
            kw.source = NULL;
            snprintf(kw.key, sizeof kw.key, "%s", tls_keys[k].env);
            path = env;
            if (path[0] == '\0')
                return cfg_errf(ld, &kw, "expected a file path, got \"\"");
        } else {
            char dotted[CFG_KEY_MAX];
            snprintf(dotted, sizeof dotted, "tls.%s", tls_keys[k].key);
            cfg_top_where(ld, dotted, &kw);
            if (v == NULL)
                continue; /* client_ca_file, optional (the others were checked above) */
            path = cfg_get_string(ld, &kw, v, "a file path", cfg_nonempty_ok);
            if (path == NULL)
                return -1;
        }
        if (!cfg_file_readable(path, &err)) {
            cfg_show_string(path, shown);
            return cfg_errf(ld, &kw, "cannot read %s: %s", shown,
                            err ? strerror(err) : "not a regular file");
        }
        if (k == 0 && cert_current(ld, &kw, path) != 0)
            return -1;
        *slot = cfg_dup(ld, &kw, path);
        if (*slot == NULL)
            return -1;
    }
    return 0;
}

void cfg_edge_tls_free(cfg *out)
{
    free(out->listen_tls.cert_file);
    free(out->listen_tls.key_file);
    free(out->listen_tls.client_ca_file);
    memset(&out->listen_tls, 0, sizeof out->listen_tls);
}
