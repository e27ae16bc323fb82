/* tg_attempt — the attempts of a call that has a policy (tg_call_policy): the mechanism of the
 * contract's "Resilience" rules, on the loop thread. The decisions are lib/retry's and
 * lib/breaker's; this file only sequences them:
 *
 *   start    admit (breaker; REJECT -> circuit_open, or the last failure is final), open the
 *            per-try window min(now + per_try_ms, first start + timeout_ms), send xfer, arm
 *            the hedge timer when after_ms falls inside the window
 *   hedge    the timer fired and xfer still runs: send *hedge, same body and headers
 *   done     a success or a rejection decides the attempt (the other request is aborted); a
 *            failure waits for the other request when it runs; when both are done the attempt
 *            failed: record it with the breaker, then retry after the backoff if the policy
 *            retries this kind and a whole window still fits, else the failure is final
 *   abort    cancelled or timed out: both requests aborted, the timer stopped, the breaker's
 *            admission given back (a probe that never ran does not hold the breaker)
 * The call's result keeps the last failed attempt's answer while a retry waits (its state stays
 * TG_PENDING until the call ends, so a cancel finds it). Costs per attempt: O(1) plus a timer. */
#include "tg_internal.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define NS_PER_MS 1000000u

static uint64_t ms_of(uint64_t ns)
{
    return ns / NS_PER_MS;
}

static long ms_until(uint64_t now, uint64_t end)
{
    return end > now ? (long)((end - now + NS_PER_MS - 1) / NS_PER_MS) : 1;
}

static double ms_between(uint64_t from, uint64_t to)
{
    return to > from ? (double)(to - from) / 1e6 : 0.0;
}

static uint64_t next_random(tg_loop *l)
{
    return retry_xorshift(&l->rnd);
}

static unsigned kind_bit(tg_kind k)
{
    switch (k) {
    case TG_TRANSPORT:
        return RETRY_ON_TRANSPORT;
    case TG_UPSTREAM_ERROR:
        return RETRY_ON_UPSTREAM_ERROR;
    case TG_TIMEOUT:
        return RETRY_ON_TIMEOUT;
    case TG_INVALID_RESPONSE:
        return RETRY_ON_INVALID_RESPONSE;
    default:
        return 0;
    }
}

static int running(const tg_xfer *x)
{
    return x != NULL && x->easy != NULL;
}

static void give_back(tg_call *c, breaker_outcome o, uint64_t now)
{
    if (c->verdict == TG_NO_VERDICT)
        return;
    breaker_record(c->policy->breaker, (breaker_verdict)c->verdict, o, ms_of(now));
    c->verdict = TG_NO_VERDICT;
}

static void note_earlier(tg_call *c, tg_kind kind)
{
    if (c->result.nearlier < TG_MAX_REQUESTS)
        c->result.earlier[c->result.nearlier++] = (unsigned char)kind;
}

static void circuit_open(tg_call *c, long half_open_in_ms)
{
    tgi_result_clear(&c->result);
    c->result.state = TG_FAILED;
    c->result.kind = TG_CIRCUIT_OPEN;
    if (half_open_in_ms > 0)
        snprintf(c->result.message, sizeof c->result.message,
                 "circuit breaker is open; it half-opens in %ld ms", half_open_in_ms);
    else
        snprintf(c->result.message, sizeof c->result.message,
                 "circuit breaker is half-open and its probe is running");
}

int tga_admit_group(tg_loop *l, tg_group *g, tg_group **finish)
{
    (void)l;
    uint64_t now = ms_of(tgi_now_ns());
    int refused = 0;
    for (size_t i = 0; i < g->ncalls; i++) {
        tg_call *c = &g->calls[i];
        if (c->policy == NULL || c->policy->breaker == NULL)
            continue;
        long left = 0;
        breaker_verdict v = breaker_admit(c->policy->breaker, now, &left);
        if (v != BREAKER_REJECT) {
            c->verdict = (int)v;
            continue;
        }
        circuit_open(c, left);
        tgi_call_final(c, finish);
        refused = 1;
    }
    if (refused)
        for (size_t i = 0; i < g->ncalls; i++)
            if (g->calls[i].verdict != TG_NO_VERDICT)
                give_back(&g->calls[i], BREAKER_CANCELLED, tgi_now_ns());
    return refused;
}

static void on_hedge(tg_loop *l, tgi_timer *t, tg_group **finish)
{
    (void)finish;
    tg_call *c = t->arg;
    uint64_t now = tgi_now_ns();
    if (c->xfer.easy == NULL || running(c->hedge) || now >= c->try_end_ns)
        return;
    if (c->hedge == NULL && (c->hedge = calloc(1, sizeof *c->hedge)) == NULL)
        return; /* out of memory: no hedge, the attempt still runs */
    if (tgi_xfer_start(l, c, c->hedge, ms_until(now, c->try_end_ns)) == 0)
        c->hedged = 1;
}

void tga_start(tg_loop *l, tg_call *c, tg_group **finish)
{
    const tg_policy *p = c->policy;
    uint64_t now = tgi_now_ns();
    if (p->breaker != NULL && c->verdict == TG_NO_VERDICT) {
        long left = 0;
        breaker_verdict v = breaker_admit(p->breaker, ms_of(now), &left);
        if (v == BREAKER_REJECT) {
            if (c->tries == 0) {
                circuit_open(c, left);
            } else {
                /* no retry while open: the last failure stands, now as the final request (it was
                 * noted as an earlier one when the retry was planned) */
                c->result.state = TG_FAILED;
                if (c->result.nearlier > 0)
                    c->result.nearlier--;
            }
            c->result.elapsed_ms = ms_between(c->start_ns, now);
            tgi_call_final(c, finish);
            return;
        }
        c->verdict = (int)v;
    }
    if (c->tries > 0)
        c->result.retries++;
    c->tries++;
    tgi_result_clear(&c->result);
    uint64_t call_end = c->start_ns + (uint64_t)c->timeout_ms * NS_PER_MS;
    uint64_t end = now + (uint64_t)p->retry.per_try_ms * NS_PER_MS;
    c->try_end_ns = end < call_end ? end : call_end;
    c->hedged = 0;
    int rc = tgi_xfer_start(l, c, &c->xfer, ms_until(now, c->try_end_ns));
    if (rc != 0) {
        give_back(c, BREAKER_CANCELLED, now);
        if (rc == -EHOSTUNREACH) { /* never resolved: nothing sent, no retry */
            tgi_result_unresolved(l, c);
        } else {
            c->result.state = TG_FAILED;
            c->result.kind = TG_TRANSPORT;
            snprintf(c->result.message, sizeof c->result.message, "not started: out of memory");
        }
        tgi_call_final(c, finish);
        return;
    }
    if (p->hedge_after_ms > 0) {
        uint64_t due = now + (uint64_t)p->hedge_after_ms * NS_PER_MS;
        if (due < c->try_end_ns) /* out of memory: no hedge, the attempt still runs */
            (void)tgi_timer_start(l, &c->timer, due, on_hedge, c, c->group);
    }
}

static void on_retry(tg_loop *l, tgi_timer *t, tg_group **finish)
{
    tga_start(l, t->arg, finish);
}

/* A 503's Retry-After in ms, -1 when there is none (read before the handle is reset). */
static long retry_after_of(const tg_xfer *x, int curl_code, long status)
{
    struct curl_header *h = NULL;
    if (curl_code != CURLE_OK || status != 503)
        return -1;
    if (curl_easy_header(x->easy, "Retry-After", 0, CURLH_HEADER, -1, &h) != CURLHE_OK)
        return -1;
    return retry_after_ms(h->value);
}

/* Moves the answer part of r into the call's result (the counters stay). */
static void take_answer(tg_call *c, tg_result *r)
{
    tg_result *out = &c->result;
    json_decref(out->body);
    out->state = r->state;
    out->kind = r->kind;
    out->http_status = r->http_status;
    out->body = r->body;
    out->raw = r->raw;
    out->raw_len = r->raw_len;
    memcpy(out->message, r->message, sizeof out->message);
}

void tga_xfer_done(tg_loop *l, tg_xfer *x, int curl_code, long status, tg_group **finish)
{
    tg_call *c = x->call;
    const tg_policy *p = c->policy;
    tg_xfer *other = x == &c->xfer ? c->hedge : &c->xfer;
    uint64_t now = tgi_now_ns();
    long retry_after = retry_after_of(x, curl_code, status);
    tg_result r = {0};
    tgi_classify(&r, x, curl_code, status,
                 x->curl_error[0] ? x->curl_error : curl_easy_strerror((CURLcode)curl_code));
    tgi_xfer_detach(l, x, &r);
    int decided = r.state == TG_OK || r.kind == TG_REJECTED;
    if (!decided && running(other)) {
        /* one of a hedged pair failed: the attempt goes on while the other runs */
        note_earlier(c, r.kind);
        json_decref(r.body);
        return;
    }
    if (running(other))
        tgi_xfer_detach(l, other, NULL); /* the loser: aborted at once, its connection closed */
    tgi_timer_stop(l, &c->timer);        /* a hedge not yet sent is not needed any more */
    if (c->hedged && decided) {
        if (x == c->hedge)
            c->result.hedges_won++;
        else
            c->result.hedges_lost++;
    }
    give_back(c, decided ? BREAKER_SUCCESS : BREAKER_FAILURE, now);
    take_answer(c, &r);
    c->result.elapsed_ms = ms_between(c->start_ns, now);
    if (!decided && retry_may_retry(&p->retry, kind_bit(r.kind), c->tries)) {
        long delay = retry_delay_ms(&p->retry, c->tries + 1, next_random(l), retry_after);
        uint64_t call_end = c->start_ns + (uint64_t)c->timeout_ms * NS_PER_MS;
        if (retry_fits(&p->retry, now, delay, call_end, c->group->deadline_ns) &&
            tgi_timer_start(l, &c->timer, now + (uint64_t)delay * NS_PER_MS, on_retry, c,
                            c->group) == 0) {
            note_earlier(c, r.kind);
            c->result.state = TG_PENDING; /* not a failure of the group: it waits to retry */
            return;
        }
    }
    tgi_call_final(c, finish);
}

void tga_abort(tg_loop *l, tg_call *c, const tg_result *outcome)
{
    tgi_xfer_detach(l, &c->xfer, outcome);
    if (c->hedge != NULL)
        tgi_xfer_detach(l, c->hedge, outcome);
    tgi_timer_stop(l, &c->timer);
    give_back(c, BREAKER_CANCELLED, tgi_now_ns());
}
