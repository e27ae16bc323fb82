/* fu_rules — what each fake upstream answers to a POST body (shared/checkout-api.md, "Fake
 * upstreams"). Pure: no I/O, no clock, no MHD, so it can be unit-tested on its own.
 *
 * The body is `{"order_id": ..., "<field>": <value>}`; the field is the first key that is not
 * order_id, whatever its name (checkoutd's config chooses it).
 *   address:   value an object; country "ZZ" or postal_code missing/null -> 422 invalid_address
 *   inventory: value an array; an item whose sku starts with "OOS-" -> 409 out_of_stock
 *   payment:   value an object; token tok_declined -> 402, tok_error -> 500, tok_garbage -> 200
 * text, tok_slow -> 200 after the slow delay otherwise 200 with a small JSON object. Not JSON / not
 * an object / no field / a value of the wrong type -> 400 bad_request.
 * v1.2, by the request's X-Checkout-Attempt (attempt; 0 or absent counts as 1), so that retries
 * and hedges can be shown by hand without state per order:
 *   tok_flaky       attempt 1 -> 503 {"error":"unavailable"}, later attempts -> the usual 200
 *   tok_flakyN      (N 1..9) attempts 1..N -> 503, then 200
 *   tok_retry_after attempt 1 -> 503 with Retry-After: 1, then 200
 *   tok_hedge       attempt 1 -> 200 after the slow delay, later attempts -> 200 at once */
#ifndef FU_RULES_H
#define FU_RULES_H

#include <stdbool.h>
#include <stddef.h>

#include <jansson.h>

#include "fu_status.h"

typedef enum fu_rules_role {
    FU_RULES_ADDRESS = 0,
    FU_RULES_INVENTORY,
    FU_RULES_PAYMENT,
    FU_RULES_NROLES
} fu_rules_role;

typedef struct fu_rules_answer {
    unsigned int status; /* HTTP status */
    char *body;          /* malloc'd, owned; not NUL-terminated for the wire: use body_len */
    size_t body_len;
    const char *content_type; /* static string */
    bool slow;                /* tok_slow: add the slow delay before answering */
    unsigned retry_after_s;   /* > 0: send Retry-After with this many seconds */
    char *order_id;           /* malloc'd copy of the body's order_id string, or NULL */
} fu_rules_answer;

/* "address", "inventory" or "payment". */
const char *fu_rules_role_name(fu_rules_role role);

/* Decides the answer to a POST body of len bytes (need not be NUL-terminated). seq numbers the
 * authorization ids; attempt is the request's X-Checkout-Attempt (0: absent). On FU_OK *out owns
 * its strings (fu_rules_answer_free); on FU_ENOMEM *out is empty. O(body size) for parsing plus
 * O(items) for inventory. */
fu_status fu_rules_decide(fu_rules_role role, const char *body, size_t len, unsigned long seq,
                          unsigned long attempt, fu_rules_answer *out);

/* An answer with a fixed JSON error body, e.g. 413 {"error":"body_too_large",...}. */
fu_status fu_rules_error(unsigned int status, const char *error, const char *message,
                         fu_rules_answer *out);

/* An answer whose body is doc rendered as compact JSON. Consumes doc; doc NULL (a failed json_pack)
 * gives FU_ENOMEM. Replaces any body out already has. */
fu_status fu_rules_json(unsigned int status, json_t *doc, fu_rules_answer *out);

/* Frees the strings of a and empties it. Safe on an empty answer. */
void fu_rules_answer_free(fu_rules_answer *a);

#endif
