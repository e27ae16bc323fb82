/* listen_tls — listen's TLS files and mTLS. See listen_tls.h. */
#include "listen_tls.h"

#include <errno.h>
#include <gnutls/gnutls.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define LT_FILE_MAX (1 << 20)

/* The whole file, NUL-terminated (free it), or NULL after a message. */
static char *read_pem(const char *key, const char *path, char *err, size_t errlen)
{
    FILE *f = fopen(path, "rb");
    char *buf = NULL;
    if (f == NULL) {
        snprintf(err, errlen, "tls.%s: cannot read \"%s\": %s", key, path, strerror(errno));
        return NULL;
    }
    buf = malloc(LT_FILE_MAX + 1);
    size_t n = buf != NULL ? fread(buf, 1, LT_FILE_MAX + 1, f) : 0;
    fclose(f);
    if (buf == NULL || n == 0 || n > LT_FILE_MAX) {
        snprintf(err, errlen, "tls.%s: \"%s\" is %s", key, path,
                 buf == NULL ? "too large for memory"
                 : n == 0    ? "empty"
                             : "larger than 1 MiB");
        free(buf);
        return NULL;
    }
    buf[n] = '\0';
    return buf;
}

int lt_load(const cfg *c, lt_files *out, char *err, size_t errlen)
{
    memset(out, 0, sizeof(*out));
    const cfg_listen_tls *t = &c->listen_tls;
    if ((out->cert = read_pem("cert_file", t->cert_file, err, errlen)) == NULL ||
        (out->key = read_pem("key_file", t->key_file, err, errlen)) == NULL)
        goto fail;
    if (t->client_ca_file != NULL &&
        (out->client_ca = read_pem("client_ca_file", t->client_ca_file, err, errlen)) == NULL)
        goto fail;
    return 0;
fail:
    lt_free(out);
    return -1;
}

void lt_free(lt_files *f)
{
    if (f->key != NULL)
        explicit_bzero(f->key, strlen(f->key));
    free(f->cert);
    free(f->key);
    free(f->client_ca);
    memset(f, 0, sizeof(*f));
}

void lt_require_client_cert(void *session)
{
    gnutls_session_t s = session;
    gnutls_certificate_server_set_request(s, GNUTLS_CERT_REQUIRE);
    gnutls_session_set_verify_cert(s, NULL, 0);
}
