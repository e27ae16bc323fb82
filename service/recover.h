/* recover — the journal's unfinished records taken up at start (contract v1.3, "Durable
 * compensation", Recovery), before any worker loop runs, so before the listener accepts a request.
 *
 *   a plan      its undo steps not yet ended run again, with their full attempts
 *   no plan     (the process died mid-checkout, nothing says accepted) every validation with
 *               compensate is undone with "result": null; the plan is journaled first
 *   keyed       a record without a kept answer gets the 502 "interrupted" answer (every
 *               validation kind interrupted, compensating the steps): it is journaled with the
 *               plan and put in the idempotency store (memory: now; Redis: in place of the
 *               claim, by the claim's token, on worker 0's loop at its first turn); a kept answer
 *               (200, 422, a compensating 502/504) is put back the same way
 * Undo requests carry the Idempotency-Key they had before (lib/comp's rule). Each recovered record
 * logs compensation_recovered and counts checkoutd_compensations_recovered_total{validation}.
 * Cost: one read of the journal at start. */
#ifndef CHECKOUTD_RECOVER_H
#define CHECKOUTD_RECOVER_H

#include "checkout.h"

#include <stddef.h>

/* After co_service_init with s->journal and s->idem set, before the loops start. The number of
 * records taken up, or -1 with a reason in err (the journal could not be read). */
long recover_journal(co_service *s, long ttl_s, char *err, size_t errlen);

/* The 502 answer of a keyed checkout the process did not finish: every validation of names[n]
 * with kind "interrupted", compensating the validations whose bit is set. malloc'd, NULL when
 * out of memory. */
char *recover_interrupted_body(const char *order_id, const char *const names[], size_t n,
                               uint64_t compensating, size_t *len);

#endif
