/* undo — one undo step of a checkout, or of a record recovered from the journal, started as a
 * lib/comp_run task with the contract's body and headers; and the observer that logs, counts and
 * journals every undo step's events (contract "Compensation", v1.3 "Durable compensation").
 *
 * The decision of which validations are undone stays in service/checkout.c (to_compensate) and,
 * for recovered records, in service/recover.c; this file is the shared mechanism. Costs: one
 * JSON dump of the order id and one body per undo step; nothing for a checkout that undoes
 * nothing. */
#ifndef CHECKOUTD_UNDO_H
#define CHECKOUTD_UNDO_H

#include "checkout.h"

#include <stddef.h>
#include <stdint.h>

typedef struct undo_job {
    size_t worker;     /* the loop it runs on */
    size_t validation; /* index in the config */
    const char *order_id, *request_id;
    const char *idem_key;    /* the client's Idempotency-Key as sent, or NULL */
    const char *traceparent; /* or NULL */
    const char *key_json;    /* the field's key and value, JSON texts as in the upstream body */
    size_t key_len;
    const char *value_json;
    size_t value_len;
    const char *result; /* the upstream's success body, or NULL ("result": null) */
    size_t result_len;
    int64_t journal_id; /* 0: not journaled */
} undo_job;

/* Starts it on the job's loop (or queues it before that loop starts: recovery). 0, or -1 after a
 * compensation_failed line ("not started"). */
int undo_start(co_service *s, const undo_job *job);

/* The observer of every undo task of s: log lines compensation_started / _done / _failed,
 * metrics, and (v1.3) each step's end journaled — not one cut short by the drain, which the next
 * start resumes. */
comp_observer undo_observer(co_service *s);

#endif
