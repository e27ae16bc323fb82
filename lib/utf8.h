/* utf8 — where a byte string stops being valid UTF-8.
 *
 * Messages are cut to a bounded buffer (snprintf) and may end inside a multi-byte character, or
 * quote bytes that are not UTF-8 at all; jansson refuses to make a string of either. Cutting at
 * the longest valid prefix keeps every message a valid JSON string. O(len). */
#ifndef CHECKOUTD_UTF8_H
#define CHECKOUTD_UTF8_H

#include <stddef.h>

/* Length of the longest prefix of s[0..len) that is valid UTF-8 (RFC 3629: no overlongs,
 * surrogates or code points above U+10FFFF). */
size_t utf8_valid_prefix(const char *s, size_t len);

/* Cuts the NUL-terminated s at utf8_valid_prefix; returns the new length. */
size_t utf8_cut(char *s);

#endif
