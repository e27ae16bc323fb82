/* jspan — the raw text of an object's top-level members, found by one pass over a JSON text
 * that jansson has already accepted (so it never has to judge validity, only skip).
 *
 * Why: each upstream gets "that field of the request, unchanged". Forwarding the member's bytes
 * as the client sent them is both exact (1.50 stays 1.50, "\u00e9" stays escaped) and cheaper than
 * re-serialising each value with jansson (O(body) once, no allocation).
 * Cost: O(len); at most JSPAN_MAX members are recorded, the rest are skipped. */
#ifndef CHECKOUTD_JSPAN_H
#define CHECKOUTD_JSPAN_H

#include <stddef.h>

#define JSPAN_MAX 64

typedef struct jspan_member {
    const char *key; /* the key token, quotes included: "\"address\"" */
    size_t key_len;
    const char *value; /* the value's text, without surrounding blanks */
    size_t value_len;
} jspan_member;

/* Finds the top-level members of the object in text[0..len). Returns how many were recorded
 * (<= max), or -1 when text is not an object (or not the valid JSON it must be). */
int jspan_members(const char *text, size_t len, jspan_member *out, size_t max);

/* The member whose key token is exactly "\"" name "\"" (no escapes), or NULL; also NULL for a
 * name JSON would escape ('"', '\\', control characters): the caller then falls back. O(n). */
const jspan_member *jspan_find(const jspan_member *m, size_t n, const char *name);

#endif
