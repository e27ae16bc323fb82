/* comp_run — one compensation as a task of its own on a tg loop. See comp_run.h. */
#include "comp_run.h"

#include "comp.h"
#include "retry.h"

#include <errno.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define COMP_MAX_HEADERS (CFG_MAX_HEADERS + 8) /* the checkout's few, the validation's own */

struct comp_task {
    tg_loop *loop;
    size_t validation;
    const char *name;
    const cfg_compensate *c;
    const comp_observer *obs;
    char *body;
    size_t body_len;
    char *hdr_text; /* every header line, NUL-separated; hdr points into it */
    const char *hdr[COMP_MAX_HEADERS + 1];
    int has_tls;
    tg_tls tls;
    unsigned attempts;
    const char *last;
    long last_status;
    uint64_t rnd;
    int has_result;
    int stopped;
    int64_t journal_id;
    struct timespec started;
    char order_id[520];
    char request_id[160];
};

static atomic_long pending, total_done, total_given_up;

long comp_run_pending(void)
{
    return atomic_load(&pending);
}

long comp_run_done(void)
{
    return atomic_load(&total_done);
}

long comp_run_given_up(void)
{
    return atomic_load(&total_given_up);
}

size_t comp_task_validation(const comp_task *t)
{
    return t->validation;
}

const char *comp_task_name(const comp_task *t)
{
    return t->name;
}

const char *comp_task_order_id(const comp_task *t)
{
    return t->order_id;
}

const char *comp_task_request_id(const comp_task *t)
{
    return t->request_id;
}

int comp_task_has_result(const comp_task *t)
{
    return t->has_result;
}

double comp_task_elapsed_ms(const comp_task *t)
{
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    return (double)(now.tv_sec - t->started.tv_sec) * 1e3 +
           (double)(now.tv_nsec - t->started.tv_nsec) / 1e6;
}

unsigned comp_task_attempts(const comp_task *t)
{
    return t->attempts;
}

const char *comp_task_last(const comp_task *t)
{
    return t->last;
}

int64_t comp_task_journal_id(const comp_task *t)
{
    return t->journal_id;
}

int comp_task_stopped(const comp_task *t)
{
    return t->stopped;
}

long comp_task_last_status(const comp_task *t)
{
    return t->last_status;
}

static void task_free(comp_task *t)
{
    free(t->body);
    free(t->hdr_text);
    free(t);
}

static void end(comp_task *t, int done)
{
    atomic_fetch_add(done ? &total_done : &total_given_up, 1);
    if (t->obs->ended != NULL)
        t->obs->ended(t->obs->arg, t, done);
    atomic_fetch_sub(&pending, 1);
    task_free(t);
}

static void on_answer(tg_group *g, void *user);

/* Sends the next attempt. 0, or a negative errno (nothing sent). */
static int attempt(comp_task *t)
{
    char *copy = malloc(t->body_len + 1);
    tg_group *g = tg_group_new(1, t->c->timeout_ms, on_answer, t);
    if (copy == NULL || g == NULL)
        goto fail;
    memcpy(copy, t->body, t->body_len + 1);
    if (tg_call_set(g, 0, t->c->url, copy, t->body_len, t->hdr, t->c->timeout_ms) != 0)
        goto fail;
    copy = NULL; /* the group's now */
    if (t->has_tls)
        tg_call_tls(g, 0, &t->tls);
    tg_call_attempts_before(g, 0, t->attempts);
    if (tg_submit(t->loop, g) != 0)
        goto fail;
    return 0;
fail:
    free(copy);
    tg_group_free(g);
    return -ENOMEM;
}

static uint64_t next_random(comp_task *t)
{
    return retry_xorshift(&t->rnd);
}

static void on_backoff(void *arg, int stopped)
{
    comp_task *t = arg;
    t->stopped = stopped;
    if (stopped || attempt(t) != 0)
        end(t, 0); /* the drain's bound passed (or no memory): given up */
}

/* Runs on the loop thread when the undo request ended (or the loop stopped: cancelled). */
static void on_answer(tg_group *g, void *user)
{
    comp_task *t = user;
    const tg_result *r = tg_group_result(g, 0);
    int done = 0;
    t->attempts = r->attempts; /* tg counts on from tg_call_attempts_before */
    t->last_status = r->http_status;
    if (r->state ==
        TG_CANCELLED) { /* the loop stopped (a group of one is cancelled by nothing else) */
        t->last = "cancelled";
        t->stopped = 1;
        tg_group_free(g);
        end(t, 0);
        return;
    }
    /* any 2xx (with or without a JSON body), 404, 409, 410 */
    done = r->state == TG_OK || ((r->kind == TG_REJECTED || r->kind == TG_INVALID_RESPONSE) &&
                                 comp_done_status(r->http_status));
    t->last = done ? "ok" : tg_kind_name(r->kind);
    if (t->obs->request != NULL)
        t->obs->request(t->obs->arg, t, done ? TG_KIND_NONE : r->kind);
    tg_group_free(g);
    if (done) {
        end(t, 1);
        return;
    }
    if ((long)t->attempts >= t->c->attempts) {
        end(t, 0);
        return;
    }
    retry_policy p = {.attempts = t->c->attempts,
                      .per_try_ms = t->c->timeout_ms,
                      .backoff_ms = t->c->backoff_ms,
                      .max_backoff_ms = t->c->max_backoff_ms,
                      .on = 0};
    long delay = retry_delay_ms(&p, (long)t->attempts + 1, next_random(t), -1);
    if (tg_alarm(t->loop, delay, on_backoff, t) != 0)
        end(t, 0);
}

/* Copies the header lines into one block. 0 or -ENOMEM / -E2BIG. */
static int copy_headers(comp_task *t, const char *const *headers)
{
    size_t n = 0, total = 0;
    for (; headers != NULL && headers[n] != NULL; n++)
        total += strlen(headers[n]) + 1;
    if (n > COMP_MAX_HEADERS)
        return -E2BIG;
    t->hdr_text = malloc(total + 1);
    if (t->hdr_text == NULL)
        return -ENOMEM;
    char *p = t->hdr_text;
    for (size_t i = 0; i < n; i++) {
        size_t len = strlen(headers[i]) + 1;
        memcpy(p, headers[i], len);
        t->hdr[i] = p;
        p += len;
    }
    t->hdr[n] = NULL;
    return 0;
}

int comp_run_start(const comp_spec *s)
{
    struct timespec ts;
    comp_task *t = calloc(1, sizeof *t);
    int rc = -ENOMEM;
    if (t == NULL)
        goto fail;
    t->loop = s->loop;
    t->validation = s->validation;
    t->name = s->name;
    t->c = s->c;
    t->obs = s->observer;
    t->body = s->body;
    t->body_len = s->body_len;
    t->last = "none";
    if (s->tls != NULL) {
        t->has_tls = 1;
        t->tls = *s->tls;
    }
    snprintf(t->order_id, sizeof t->order_id, "%s", s->order_id);
    snprintf(t->request_id, sizeof t->request_id, "%s", s->request_id ? s->request_id : "");
    t->has_result = s->has_result;
    t->journal_id = s->journal_id;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    t->started = ts;
    t->rnd = ((uint64_t)ts.tv_nsec ^ ((uint64_t)(uintptr_t)t << 16)) | 1u; /* spread, not secrecy */
    rc = copy_headers(t, s->headers);
    if (rc != 0)
        goto fail;
    atomic_fetch_add(&pending, 1); /* before the group can end, on whatever thread */
    rc = attempt(t);
    if (rc != 0) {
        atomic_fetch_sub(&pending, 1);
        goto fail;
    }
    if (t->obs->started != NULL)
        t->obs->started(t->obs->arg, t);
    return 0;
fail:
    if (t != NULL)
        task_free(t);
    else
        free(s->body);
    return rc;
}
