/* recover — the journal's records taken up at start. See recover.h. */
#include "recover.h"

#include "eg.h"
#include "jlog.h"
#include "tg_mailbox.h"
#include "undo.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

char *recover_interrupted_body(const char *order_id, const char *const names[], size_t n,
                               uint64_t compensating, size_t *len)
{
    json_t *errors = json_array(), *comp = json_array();
    for (size_t i = 0; errors != NULL && comp != NULL && i < n; i++) {
        json_array_append_new(errors,
                              json_pack("{s:s, s:s, s:n, s:s, s:n, s:o, s:i}", "validation",
                                        names[i], "kind", "interrupted", "http_status", "message",
                                        "the service stopped before this validation finished",
                                        "upstream", "elapsed_ms", eg_ms(0), "attempts", 0));
        if (i < 64 && (compensating >> i & 1u))
            json_array_append_new(comp, json_string(names[i]));
    }
    char msg[96];
    snprintf(msg, sizeof msg, "checkout failed: %zu of %zu validations failed", n, n);
    json_t *root =
        json_pack("{s:s, s:s, s:{s:s, s:o}, s:[], s:[], s:o, s:o}", "order_id", order_id, "status",
                  "failed", "error_group", "message", msg, "errors", errors, "completed",
                  "cancelled", "compensating", comp, "elapsed_ms", eg_ms(0));
    char *text = root ? json_dumps(root, JSON_COMPACT) : NULL;
    json_decref(root);
    *len = text ? strlen(text) : 0;
    return text;
}

typedef struct rc_ctx {
    co_service *s;
    long ttl_s;
    long taken;
    size_t next_worker;
} rc_ctx;

/* A stored answer handed to the Redis store on worker 0's loop (its calls run there). */
typedef struct rc_store {
    tg_mail mail;
    co_service *s;
    idem_claim claim;
    int status;
    size_t len;
    char body[];
} rc_store;

static void store_on_loop(tg_mail *m, int stopped)
{
    rc_store *r = (rc_store *)m;
    if (!stopped)
        idem_finish(r->s->idem, &r->claim, r->status, r->body, r->len);
    free(r);
}

static void mem_claimed(idem_claim *c, void *arg)
{
    *(int *)arg = c->result == IDEM_NEW;
}

/* Puts answer under the record's key: memory, a claim and its finish now; Redis, a finish by the
 * old claim's token (a no-op when the key holds something else by now). */
static void store_answer(co_service *s, const jr_pending *p, int status, const char *body,
                         size_t len)
{
    idem_claim c;
    const char *why = NULL;
    memset(&c, 0, sizeof c);
    if (s->idem == NULL || p->idem_key == NULL || idem_parse_key(p->idem_key, c.key, &why) != 0)
        return;
    if (p->idem_fp == NULL || strlen(p->idem_fp) != 2 * IDEM_FP_LEN)
        return;
    for (size_t i = 0; i < IDEM_FP_LEN; i++) {
        unsigned v = 0;
        if (sscanf(p->idem_fp + 2 * i, "%2x", &v) != 1)
            return;
        c.fp[i] = (unsigned char)v;
    }
    if (strcmp(s->idem->ops->name, "memory") == 0) {
        int fresh = 0;
        idem_claim_key(s->idem, &c, mem_claimed, &fresh); /* answers before it returns */
        free(c.body);
        if (fresh)
            idem_finish(s->idem, &c, status, body, len);
        return;
    }
    if (p->idem_token == NULL)
        return;
    rc_store *r = malloc(sizeof *r + len);
    if (r == NULL)
        return;
    r->mail.fn = store_on_loop;
    r->s = s;
    r->claim = c;
    snprintf(r->claim.token, sizeof r->claim.token, "%s", p->idem_token);
    r->claim.worker = 0;
    r->status = status;
    r->len = len;
    memcpy(r->body, body, len);
    jr_post(s->journal, 0, &r->mail);
}

static int validation_index(const co_service *s, const char *name)
{
    for (size_t i = 0; i < s->cfg->nvalidations; i++)
        if (strcmp(s->names[i], name) == 0)
            return (int)i;
    return -1;
}

static const jr_field *field_of(const jr_pending *p, const char *name)
{
    for (size_t i = 0; i < p->nfields; i++)
        if (strcmp(p->fields[i].name, name) == 0)
            return &p->fields[i];
    return NULL;
}

static void take_up(void *arg, const jr_pending *p)
{
    rc_ctx *x = arg;
    co_service *s = x->s;
    jr_step steps[CFG_MAX_VALIDATIONS];
    size_t n = 0;
    uint64_t bits = 0;
    if (p->state == JR_ACCEPTED || p->state == JR_FINISHED) {
        if (p->answer != NULL && (long)(time(NULL) - p->created) < x->ttl_s)
            store_answer(s, p, p->answer_status, p->answer, p->answer_len);
        return;
    }
    if (p->state == JR_BEGUN) { /* died mid-checkout: every validation with compensate */
        for (size_t i = 0; i < p->nfields && n < CFG_MAX_VALIDATIONS; i++)
            steps[n++] = (jr_step){p->fields[i].name, NULL, 0};
    } else {
        for (size_t i = 0; i < p->nsteps && n < CFG_MAX_VALIDATIONS; i++)
            steps[n++] = p->steps[i];
    }
    for (size_t i = 0; i < n; i++) {
        int v = validation_index(s, steps[i].name);
        if (v >= 0)
            bits |= (uint64_t)1 << v;
    }
    if (p->state == JR_BEGUN) {
        size_t len = 0;
        char *body =
            p->idem_key != NULL && s->idem != NULL
                ? recover_interrupted_body(p->order_id, s->names, s->cfg->nvalidations, bits, &len)
                : NULL;
        jr_plan(s->journal, p->id, steps, n, 502, body, len);
        if (body != NULL)
            store_answer(s, p, 502, body, len);
        free(body);
    } else if (p->answer != NULL) {
        store_answer(s, p, p->answer_status, p->answer, p->answer_len);
    }
    json_t *names = json_array();
    for (size_t i = 0; i < n; i++) {
        int v = validation_index(s, steps[i].name);
        const jr_field *f = field_of(p, steps[i].name);
        json_array_append_new(names, json_string(steps[i].name));
        if (v < 0 || f == NULL || s->cfg->validations[v].compensate.url == NULL) {
            /* the config changed since: its undo cannot be sent; the step is given up */
            jlog_event(JLOG_ERROR, "compensation_failed",
                       json_pack("{s:s, s:s, s:s, s:i, s:s}", "request_id", p->request_id,
                                 "order_id", p->order_id, "validation", steps[i].name, "attempts",
                                 0, "last_outcome", "not in the config any more"));
            jr_undo_end(s->journal, p->id, steps[i].name, 0);
            continue;
        }
        mx_comp_recovered(s->metrics, (size_t)v);
        undo_job job = {.worker = x->next_worker++ % s->nloops,
                        .validation = (size_t)v,
                        .order_id = p->order_id,
                        .request_id = p->request_id,
                        .idem_key = p->idem_key,
                        .key_json = f->key,
                        .key_len = f->key_len,
                        .value_json = f->value,
                        .value_len = f->value_len,
                        .result = steps[i].result,
                        .result_len = steps[i].result_len,
                        .journal_id = p->id};
        undo_start(s, &job);
    }
    jlog_event(JLOG_WARN, "compensation_recovered",
               json_pack("{s:s, s:s, s:o}", "request_id", p->request_id, "order_id", p->order_id,
                         "validations", names));
    x->taken++;
}

long recover_journal(co_service *s, long ttl_s, char *err, size_t errlen)
{
    rc_ctx x = {.s = s, .ttl_s = ttl_s};
    if (s->journal == NULL || s->nloops == 0)
        return 0;
    if (jr_recover(s->journal, take_up, &x, err, errlen) != 0)
        return -1;
    return x.taken;
}
