/* tg_tls — TLS options of a transfer and the names of TLS failures (see tg_tls.h). */
#include "tg_tls.h"

#include "tg.h"

#include <stddef.h>
#include <string.h>

void tg_tls_apply(CURL *e, const tg_tls *t)
{
    curl_easy_setopt(e, CURLOPT_SSL_VERIFYPEER, 1L);
    curl_easy_setopt(e, CURLOPT_SSL_VERIFYHOST, 2L);
    if (t->ca_file != NULL) {
        curl_easy_setopt(e, CURLOPT_CAINFO, t->ca_file);
        curl_easy_setopt(e, CURLOPT_CAPATH, NULL); /* the file replaces the system CAs */
    }
    if (t->cert_file != NULL) {
        curl_easy_setopt(e, CURLOPT_SSLCERT, t->cert_file);
        curl_easy_setopt(e, CURLOPT_SSLKEY, t->key_file);
    }
}

const char *tg_tls_failure(CURLcode code, const char *curl_error)
{
    switch (code) {
    case CURLE_RECV_ERROR:
    case CURLE_SEND_ERROR:
        /* TLS 1.3: a server that refuses the client's certificate says so with an alert that
         * the client reads after its side of the handshake, on its first read or write. */
        if (curl_error != NULL && strstr(curl_error, "SSL") != NULL &&
            strstr(curl_error, "alert") != NULL)
            return "failed the TLS handshake";
        return NULL;
    case CURLE_PEER_FAILED_VERIFICATION:
        return "failed TLS certificate verification";
    case CURLE_SSL_CONNECT_ERROR:
    case CURLE_SSL_CERTPROBLEM:
    case CURLE_SSL_CIPHER:
    case CURLE_SSL_CACERT_BADFILE:
    case CURLE_SSL_CRL_BADFILE:
    case CURLE_SSL_ISSUER_ERROR:
    case CURLE_SSL_PINNEDPUBKEYNOTMATCH:
    case CURLE_SSL_INVALIDCERTSTATUS:
    case CURLE_SSL_CLIENTCERT:
    case CURLE_SSL_ENGINE_NOTFOUND:
    case CURLE_SSL_ENGINE_SETFAILED:
    case CURLE_SSL_ENGINE_INITFAILED:
        return "failed the TLS handshake";
    default:
        return NULL;
    }
}
