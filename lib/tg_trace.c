/* tg_trace — the attempts of a traced group (tg_group_trace, tg_call_attempts in tg.h): the one
 * place where a transfer's timings are kept. A traced group gets TG_MAX_ATTEMPTS entries per call
 * (one calloc at tg_group_trace); each transfer leaving the multi handle fills one with a few
 * curl_easy_getinfo reads. An untraced group costs one pointer test per transfer (in tg.c).
 * Loop thread only, but tg_group_trace (before submit) and tg_call_attempts (in done). */
#include "tg_internal.h"

#include <curl/curl.h>
#include <errno.h>
#include <stdlib.h>

static double info_ms(CURL *e, CURLINFO what)
{
    curl_off_t us = 0;
    return curl_easy_getinfo(e, what, &us) == CURLE_OK && us > 0 ? (double)us / 1000.0 : 0.0;
}

/* Called as x's transfer leaves the multi handle, with its outcome (NULL: cancelled or aborted).
 * A few getinfo reads; never called for an untraced group. */
void tgi_attempt_note(tg_xfer *x, const tg_result *outcome)
{
    tg_call *c = x->call;
    tg_group *g = c->group;
    if (g->attempts == NULL || c->nattempts >= TG_MAX_ATTEMPTS)
        return;
    size_t i = (size_t)(c - g->calls);
    tg_attempt *a = &g->attempts[i * TG_MAX_ATTEMPTS + c->nattempts++];
    long connects = 0;
    a->start_ms = tgi_ms_between(g->start_ns, x->start_ns);
    a->dns_ms = info_ms(x->easy, CURLINFO_NAMELOOKUP_TIME_T);
    a->connect_ms = info_ms(x->easy, CURLINFO_CONNECT_TIME_T);
    a->tls_ms = info_ms(x->easy, CURLINFO_APPCONNECT_TIME_T);
    a->first_byte_ms = info_ms(x->easy, CURLINFO_STARTTRANSFER_TIME_T);
    a->total_ms = info_ms(x->easy, CURLINFO_TOTAL_TIME_T);
    if (a->total_ms == 0)
        a->total_ms =
            tgi_ms_between(x->start_ns, tgi_now_ns()); /* cut off before libcurl timed it */
    curl_easy_getinfo(x->easy, CURLINFO_NUM_CONNECTS, &connects);
    /* no new connection, yet the request went out: it went on a cached one */
    a->reused = connects == 0 && info_ms(x->easy, CURLINFO_PRETRANSFER_TIME_T) > 0;
    a->http_status = outcome != NULL ? outcome->http_status : 0;
    a->state = outcome != NULL ? outcome->state : TG_CANCELLED;
    a->kind = outcome != NULL ? outcome->kind : TG_KIND_NONE;
}

int tg_group_trace(tg_group *g)
{
    if (g->attempts == NULL)
        g->attempts = calloc(g->ncalls * TG_MAX_ATTEMPTS, sizeof(tg_attempt));
    return g->attempts != NULL ? 0 : -ENOMEM;
}

size_t tg_call_attempts(const tg_group *g, size_t i, const tg_attempt **out)
{
    *out = NULL;
    if (g->attempts == NULL || i >= g->ncalls)
        return 0;
    *out = &g->attempts[i * TG_MAX_ATTEMPTS];
    return g->calls[i].nattempts;
}
