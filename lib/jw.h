/* jw — JSON text written straight into a bounded buffer, for the two texts of every checkout (its
 * answer and its log line) where building a jansson tree and dumping it cost ~20x more.
 *
 * Each function writes exactly the bytes that json_dumpb(JSON_COMPACT | JSON_REAL_PRECISION(15))
 * writes for the same value, so a caller can keep jansson as its fallback and its test reference.
 * What jw does not write that way sets fail instead: the text no longer fits, or a number outside
 * what jw_tenths handles. After fail the buffer's contents are meaningless; the caller falls back.
 * No allocation; O(bytes written). */
#ifndef CHECKOUTD_JW_H
#define CHECKOUTD_JW_H

#include <stddef.h>

#define JW_REPLACEMENT "\xEF\xBF\xBD" /* U+FFFD, for each byte that starts no UTF-8 sequence */

typedef struct jw {
    char *p;
    size_t len, cap;
    int fail;
} jw;

void jw_raw(jw *w, const char *s, size_t n); /* bytes as they are */
void jw_char(jw *w, char c);
#define JW_LIT(w, lit) jw_raw((w), (lit), sizeof(lit) - 1)

void jw_int(jw *w, long long v); /* as json_integer */

/* ms rounded to 0.1 as json_real(round(ms * 10) / 10): "4.0", "12.3"; "null" for NaN or infinity
 * (as a jansson caller that gives null then). Negative values and 1e14 or more set fail. */
void jw_tenths(jw *w, double ms);

/* s[0..n) as a JSON string, quotes included: jansson's escapes ("\"", "\\", \b \f \n \r \t,
 * other control bytes as \u00XX; '/' and non-ASCII as they are), and each byte that starts no
 * valid UTF-8 sequence replaced by U+FFFD (jansson would refuse such a string). */
void jw_string(jw *w, const char *s, size_t n);

/* The length of the valid UTF-8 sequence at s (n > 0 bytes left), 0 when none starts there:
 * RFC 3629, no overlongs, surrogates or code points above U+10FFFF. */
size_t jw_utf8_seq(const unsigned char *s, size_t n);

#endif
