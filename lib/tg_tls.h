/* tg_tls — the TLS part of a tg call: the files a call's https:// transfer uses, and what a TLS
 * failure is called. Kept beside tg.c so that tg stays the mechanism (transfers, the group).
 *
 * tg_tls_apply runs on every transfer start, whichever idle easy handle the call got: handles come
 * back reset (curl_easy_reset in tg's tgi_xfer_detach) and the options are set again here, so one
 * validation's CA or client certificate never applies to another's transfer. libcurl keeps them
 * apart in its caches too: a connection, a TLS session or a cached CA store is reused only by a
 * transfer with the same TLS options. Cost with no files: two curl_easy_setopt calls. */
#ifndef CHECKOUTD_TG_TLS_H
#define CHECKOUTD_TG_TLS_H

#include <curl/curl.h>

typedef struct tg_tls tg_tls; /* tg.h */

/* Verification on (peer and host: libcurl's default, set again so that no path can lose it);
 * ca_file replaces the system CAs (CURLOPT_CAINFO, no CURLOPT_CAPATH); cert_file and key_file
 * give the client certificate. NULL members keep libcurl's defaults. */
void tg_tls_apply(CURL *e, const tg_tls *t);

/* The start of a call's message for a TLS failure: "failed TLS certificate verification" for a
 * refused server certificate, "failed the TLS handshake" for the others (the peer refused the
 * handshake, e.g. for a missing client certificate — under TLS 1.3 a receive or send error whose
 * libcurl message (curl_error, may be NULL) is a TLS alert; a bad local file or key; no common
 * cipher); NULL when it is not a TLS failure. */
const char *tg_tls_failure(CURLcode code, const char *curl_error);

#endif
