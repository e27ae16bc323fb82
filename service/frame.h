/* frame — the request-framing rules (RFC 9112 §5, §6) that libmicrohttpd 0.9.75 does not enforce
 * itself, checked from the header fields it hands to the access handler: every field name a
 * token, no obs-fold, Transfer-Encoding exactly one "chunked", at most one Content-Length and never
 * with Transfer-Encoding. The caller feeds every field in order (frame_field, O(name length) each,
 * no allocation) and answers a refused request 400 invalid_request, closing its connection so that
 * nothing after it is parsed. No libmicrohttpd call here: the fields come from the caller.
 *
 * obs-fold is seen from where the strings lie (see frame.c): the fields must be the ones
 * libmicrohttpd 0.9.75 parsed in place in its read buffer, in the order it received them, and
 * version its request line's version string. */
#ifndef CHECKOUTD_FRAME_H
#define CHECKOUTD_FRAME_H

#include <stddef.h>
#include <stdint.h>

typedef struct frame_scan {
    uintptr_t expect; /* where the next name must start: after the last value's line end */
    int lengths, encodings, chunked, bad_name, folded;
} frame_scan;

/* Starts a request's scan. version: the request line's last word (NULL: the first field's fold is
 * not checked). */
void frame_begin(frame_scan *f, const char *version);
/* One header field, in the order received. value may be NULL (an empty value). */
void frame_field(frame_scan *f, const char *key, size_t key_size, const char *value,
                 size_t value_size);
/* NULL, or why the request's framing is refused (a static sentence). */
const char *frame_verdict(const frame_scan *f);

#endif
