/* tally — what each answer leaves behind, off the checkout's path (checkout.c calls it, the server
 * writes the line): the metrics (relaxed atomic adds), this worker's ring of the live view's
 * windows (plain stores, see win.h) and the checkout's JSON log line. The log line is written from
 * what the answer carries (tally_outcomes copies it out of the group, which is freed first), so
 * that its cost stays off the task-group loop thread. Also the idempotency stores' log lines. */
#ifndef CHECKOUTD_TALLY_H
#define CHECKOUTD_TALLY_H

#include "checkout.h"

#include <stddef.h>

/* Counts a finished checkout (answer a, group g, elapsed_ms since it was accepted) and each of
 * its calls, on loop worker's thread. O(validations). */
void tally_checkout(co_service *s, size_t worker, const tg_group *g, const co_answer *a,
                    double elapsed_ms);

/* Copies what the log line needs of each call out of the group into a. */
void tally_outcomes(const tg_group *g, co_answer *a);

/* The checkout's JSON log line, from what the answer carries. Called by the server on its own
 * thread, once per answer, so that the cost of the line stays off the task-group loop thread. */
void tally_log(const co_service *s, const co_answer *a);

/* The idem_log_fn of the stores: a warn line {"event": event, "detail": detail} (info for
 * idempotency_store_up). */
void tally_idem_log(const char *event, const char *detail);

#endif
