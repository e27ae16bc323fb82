/* listen_tls — the v1.3 top-level "tls" of listen: the PEM files read into memory for
 * libmicrohttpd's GnuTLS (MHD_OPTION_HTTPS_MEM_KEY / _CERT / _TRUST), and the per-connection
 * setting that turns libmicrohttpd's "request a client certificate" into "require one, signed by
 * client_ca_file" (mTLS).
 *
 * libmicrohttpd 0.9.75 with a trust list only asks for a client certificate
 * (GNUTLS_CERT_REQUEST) and leaves its verification to the application after the handshake; a
 * client without one, or with one signed by another CA, would get through. lt_require_client_cert
 * sets GNUTLS_CERT_REQUIRE and GnuTLS's own verification against the trust list
 * (gnutls_session_set_verify_cert) on the session libmicrohttpd created, before the first byte of
 * its handshake is read: the handshake then fails and no request is read. Cost: two calls per
 * connection when client_ca_file is set, none otherwise; nothing per request. */
#ifndef CHECKOUTD_LISTEN_TLS_H
#define CHECKOUTD_LISTEN_TLS_H

#include "cfg.h"

#include <stddef.h>

typedef struct lt_files {
    char *cert, *key, *client_ca; /* NUL-terminated PEM text; client_ca NULL when not configured */
} lt_files;

/* Reads c->listen_tls's files (at most 1 MiB each). 0, or -1 with a line naming the key and path
 * in err. */
int lt_load(const cfg *c, lt_files *out, char *err, size_t errlen);
/* Frees (the key's bytes are cleared first). Safe on a zeroed lt_files. */
void lt_free(lt_files *f);
/* session: the gnutls_session_t of a new connection (MHD_CONNECTION_INFO_GNUTLS_SESSION). */
void lt_require_client_cert(void *session);

#endif
