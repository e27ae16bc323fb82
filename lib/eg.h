/* eg — the error group: turns a finished task group into the checkout's answer of the contract.
 *
 * Every call of the group lands in exactly one place: "results" (200 only) / "completed", the
 * error group's "errors" (in the order the failures were observed), or "cancelled". The status is
 * 200 when nothing failed, else 422 when any error is "rejected", else 504 when any is "timeout",
 * else 502. Cost: O(calls) plus one json_dumps; the 200 answer, the common one, is written
 * directly (lib/jw) at ~1/20 of that. Builds on the calling (loop) thread. */
#ifndef CHECKOUTD_EG_H
#define CHECKOUTD_EG_H

#include "tg.h"

#include <stdint.h>

typedef struct eg_answer {
    int http_status;    /* 200, 422, 502 or 504 */
    const char *status; /* "accepted", "rejected" or "failed" (static) */
    char *body;         /* malloc'd JSON text, NUL-terminated; the caller frees it */
    size_t body_len;
} eg_answer;

/* names[i] names call i. elapsed_ms is the whole checkout's. 0, or -1 when out of memory. */
int eg_build(const tg_group *g, const char *const names[], const char *order_id, double elapsed_ms,
             eg_answer *out);

/* The same with v1.2's "compensating": bit i of compensating set names call i in the error
 * group's "compensating" list (config order); eg_build is this with 0 ("compensating": []). A
 * 200 never has the member. */
int eg_build_comp(const tg_group *g, const char *const names[], const char *order_id,
                  double elapsed_ms, uint64_t compensating, eg_answer *out);

/* The same answer built only with jansson: what eg_build falls back to, and the reference that
 * tests compare its direct 200 answer with, byte for byte. */
int eg_build_tree(const tg_group *g, const char *const names[], const char *order_id,
                  double elapsed_ms, eg_answer *out);

/* A short human sentence for failure r of validation name, written into buf:
 * {"message": "..."} is used as it is; {"error": "out_of_stock", "sku": "SKU-9"} gives
 * "out of stock: SKU-9"; otherwise "<name> <what tg observed>". */
void eg_message(const char *name, const tg_result *r, char *buf, size_t cap);

/* Milliseconds rounded to 0.1, as every elapsed_ms of the answers. */
json_t *eg_ms(double ms);

#endif
