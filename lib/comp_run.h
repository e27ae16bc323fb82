/* comp_run — the mechanism of compensation (contract v1.2, "Compensation"): one undo step of one
 * validation, run as a small task of its own on a worker's tg loop after its checkout answered.
 *
 *   attempt  a tg group of one call: POST compensate.url with the undo body and headers, within
 *            compensate.timeout_ms, X-Checkout-Attempt 1, 2, ... across the attempts
 *   done     its answer is a 2xx, 404, 409 or 410 (lib/comp decides): the task ends "done"
 *   retry    anything else, while fewer than compensate.attempts were sent: a full-jitter backoff
 *            (lib/retry: uniform in [0, min(max_backoff_ms, backoff_ms * 2^(n-2))]) on the loop's
 *            timer heap (tg_alarm; no thread sleeps), then the next attempt
 *   give up  the last attempt failed, or the loop stopped (the drain's bound passed): "given up"
 * The task is owned by the loop it runs on from comp_run_start until its end event; nothing else
 * touches it. The observer hears every request and the end (for log lines and metrics), on the
 * loop thread (or on the thread that stops the loop). Before the loop starts, comp_run_start may
 * also be called from the thread that will start it (recovery at start). Costs: one task
 * allocation, and per attempt one group plus a copy of the body; nothing at all for a checkout that
 * compensates nothing. comp_run_pending and the two totals are process-wide, for the drain and the
 * stop line. */
#ifndef CHECKOUTD_COMP_RUN_H
#define CHECKOUTD_COMP_RUN_H

#include "cfg.h"
#include "tg.h"

#include <stddef.h>
#include <stdint.h>

typedef struct comp_task comp_task;

typedef struct comp_observer {
    void (*started)(void *arg, const comp_task *t);
    /* one undo request ended: kind TG_KIND_NONE when its answer ended the compensation */
    void (*request)(void *arg, const comp_task *t, tg_kind kind);
    void (*ended)(void *arg, const comp_task *t, int done);
    void *arg;
} comp_observer;

typedef struct comp_spec {
    tg_loop *loop;           /* the worker's loop; comp_run_start runs on its thread */
    size_t validation;       /* index, handed back to the observer */
    const char *name;        /* the validation's name (outlives the task: the config's) */
    const cfg_compensate *c; /* url, timeout_ms, attempts, backoff (the config's) */
    const char *order_id;    /* copied */
    const char *request_id;  /* copied */
    int has_result;          /* the upstream's success body is in the undo body (else null) */
    char *body;              /* the undo body (lib/comp's comp_body); the task takes it */
    size_t body_len;
    const char *const *headers;    /* NULL-terminated "Name: value" lines, copied */
    const tg_tls *tls;             /* the validation's TLS files, or NULL (copied; the strings
                                    * are the config's and must outlive the task) */
    const comp_observer *observer; /* must outlive the task */
    int64_t journal_id;            /* v1.3: the checkout's journal record, 0 when none */
} comp_spec;

/* Starts the first attempt. 0, or a negative errno (out of memory, loop stopping): then nothing
 * was started, no event comes, and the body was freed. */
int comp_run_start(const comp_spec *spec);

/* What the observer may read of a task, during its events. */
size_t comp_task_validation(const comp_task *t);
const char *comp_task_name(const comp_task *t);
const char *comp_task_order_id(const comp_task *t);
const char *comp_task_request_id(const comp_task *t);
int comp_task_has_result(const comp_task *t);
double comp_task_elapsed_ms(const comp_task *t); /* since comp_run_start */
unsigned comp_task_attempts(const comp_task *t); /* undo requests sent so far */
/* The last request's outcome: "ok", a failure kind, or "cancelled" (the loop stopped); and its
 * HTTP status, 0 when none came. */
const char *comp_task_last(const comp_task *t);
/* v1.3: the journal record given in the spec (0: none); 1 when the task ended because its loop
 * stopped (the drain's bound passed), not by its own attempts: the undo step is still owed. */
int64_t comp_task_journal_id(const comp_task *t);
int comp_task_stopped(const comp_task *t);
long comp_task_last_status(const comp_task *t);

/* Compensations started and not ended, in this process; and those that ended done / given up. */
long comp_run_pending(void);
long comp_run_done(void);
long comp_run_given_up(void);

#endif
