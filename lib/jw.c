/* jw — JSON written into a bounded buffer. See jw.h for the contract. */
#include "jw.h"

#include <math.h>
#include <string.h>

/* Below 1e15 tenths, "%.15g" of tenths / 10 is exactly "<tenths / 10>.<tenths % 10>". */
#define JW_TENTHS_MAX 1e15

void jw_raw(jw *w, const char *s, size_t n)
{
    if (w->fail || n > w->cap - w->len) {
        w->fail = 1;
        return;
    }
    memcpy(w->p + w->len, s, n);
    w->len += n;
}

void jw_char(jw *w, char c)
{
    jw_raw(w, &c, 1);
}

static void jw_uint(jw *w, unsigned long long v)
{
    char d[24];
    size_t k = sizeof d;
    do {
        d[--k] = (char)('0' + v % 10);
        v /= 10;
    } while (v > 0);
    jw_raw(w, d + k, sizeof d - k);
}

void jw_int(jw *w, long long v)
{
    if (v < 0) {
        jw_char(w, '-');
        jw_uint(w, 0ULL - (unsigned long long)v);
        return;
    }
    jw_uint(w, (unsigned long long)v);
}

void jw_tenths(jw *w, double ms)
{
    if (!isfinite(ms)) {
        JW_LIT(w, "null");
        return;
    }
    double tenths = round(ms * 10.0);
    if (signbit(tenths) || !(tenths < JW_TENTHS_MAX)) {
        w->fail = 1;
        return;
    }
    unsigned long long t = (unsigned long long)tenths;
    jw_uint(w, t / 10);
    jw_char(w, '.');
    jw_char(w, (char)('0' + t % 10));
}

size_t jw_utf8_seq(const unsigned char *s, size_t n)
{
    unsigned char c = s[0], lo = 0x80, hi = 0xBF;
    size_t len;
    if (c < 0x80)
        return 1;
    if (c >= 0xC2 && c <= 0xDF)
        len = 2;
    else if (c >= 0xE0 && c <= 0xEF)
        len = 3;
    else if (c >= 0xF0 && c <= 0xF4)
        len = 4;
    else
        return 0;
    if (c == 0xE0)
        lo = 0xA0;
    else if (c == 0xED)
        hi = 0x9F;
    else if (c == 0xF0)
        lo = 0x90;
    else if (c == 0xF4)
        hi = 0x8F;
    if (n < len || s[1] < lo || s[1] > hi)
        return 0;
    for (size_t k = 2; k < len; k++) {
        if (s[k] < 0x80 || s[k] > 0xBF)
            return 0;
    }
    return len;
}

/* Bytes at s (n left) that JSON shows as they are: printable ASCII but '"' and '\\'. */
static size_t plain_run(const unsigned char *s, size_t n)
{
    size_t i = 0;
    while (i < n && s[i] >= 0x20 && s[i] < 0x80 && s[i] != '"' && s[i] != '\\')
        i++;
    return i;
}

/* The escape of the ASCII byte c that plain_run stopped at. */
static void jw_escape(jw *w, unsigned char c)
{
    static const char hex[] = "0123456789ABCDEF";
    const char u[6] = {'\\', 'u', '0', '0', hex[c >> 4], hex[c & 0xF]};
    switch (c) {
    case '"':
        JW_LIT(w, "\\\"");
        break;
    case '\\':
        JW_LIT(w, "\\\\");
        break;
    case '\b':
        JW_LIT(w, "\\b");
        break;
    case '\f':
        JW_LIT(w, "\\f");
        break;
    case '\n':
        JW_LIT(w, "\\n");
        break;
    case '\r':
        JW_LIT(w, "\\r");
        break;
    case '\t':
        JW_LIT(w, "\\t");
        break;
    default:
        jw_raw(w, u, sizeof u);
    }
}

void jw_string(jw *w, const char *s, size_t n)
{
    const unsigned char *u = (const unsigned char *)s;
    size_t i = 0;
    jw_char(w, '"');
    while (i < n && !w->fail) {
        size_t run = plain_run(u + i, n - i);
        jw_raw(w, s + i, run);
        i += run;
        if (i == n)
            break;
        if (u[i] < 0x80) {
            jw_escape(w, u[i]);
            i++;
            continue;
        }
        size_t len = jw_utf8_seq(u + i, n - i);
        if (len == 0) {
            JW_LIT(w, JW_REPLACEMENT);
            i++;
            continue;
        }
        jw_raw(w, s + i, len);
        i += len;
    }
    jw_char(w, '"');
}
