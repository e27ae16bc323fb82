/* comp — the decisions of compensation (contract v1.2, "Compensation"): which validations of a
 * failed checkout are undone, what the undo request says, and when an undo is done. Pure functions:
 * no I/O, no clock; the mechanism that sends the undo requests lives in lib/comp_run.
 *
 * A validation may have taken effect when it succeeded, when it was cancelled after one of its
 * requests had left, or when it failed with an unknown outcome (timeout or transport after
 * sending, invalid_response; a timeout while still connecting sent nothing, as the reference
 * peer decides too). One the upstream refused (rejected) or failed (upstream_error), or that never
 * sent a request (cancelled before, circuit_open), has not. */
#ifndef CHECKOUTD_COMP_H
#define CHECKOUTD_COMP_H

#include "tg.h"

#include <stddef.h>

/* 1 when a validation that ended as r (sent: one of its requests left, or it cannot be known that
 * none did) must be compensated in a checkout that did not succeed; else 0. */
int comp_needed(const tg_result *r, int sent);

/* 1 when an undo request's answer ends the compensation: any 2xx, or 404, 409, 410 (nothing to
 * undo, or already undone). http_status 0: no HTTP answer came (transport, timeout). */
int comp_done_status(long http_status);

/* The undo body {"order_id":<id_json>,"validation":"<name>",<key_json>:<value_json>,
 * "result":<result_json or null>} from raw JSON texts of the given lengths (each already valid
 * JSON: the order id and the field as the client sent them, the upstream's success body as it
 * came). malloc'd and NUL-terminated, *len set; NULL when out of memory. O(total length), one
 * allocation. */
char *comp_body(const char *id_json, size_t id_len, const char *name, const char *key_json,
                size_t key_len, const char *value_json, size_t value_len, const char *result_json,
                size_t result_len, size_t *len);

/* The undo request's Idempotency-Key value "<key>:compensate:<name>" into out[cap]. client_key is
 * the client's Idempotency-Key header as it came (NULL: none); <key> is what idem_parse_key makes
 * of it (the store's key: "a\\b" and a\b are one), in every store mode, so one client key gives one
 * undo key. A header that is no key (store "off" forwards it uninspected: too long, a space, a bad
 * quoted form) counts as none: <key> is then request_id. -1 when it does not fit (out is then "");
 * cap >= 300 + request_id's length always fits. O(header length). */
int comp_idempotency_key(const char *client_key, const char *request_id, const char *name,
                         char *out, size_t cap);

#endif
