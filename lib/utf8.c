/* utf8 — see utf8.h. */
#include "utf8.h"

#include <string.h>

/* Bytes of the sequence that starts at s[0..len), or 0 when it is not valid. */
static size_t sequence_length(const unsigned char *s, size_t len)
{
    unsigned char c = s[0];
    size_t n;
    unsigned lo = 0x80, hi = 0xBF; /* allowed range of the second byte */
    if (c < 0x80)
        return 1;
    if (c >= 0xC2 && c <= 0xDF) {
        n = 2;
    } else if (c >= 0xE0 && c <= 0xEF) {
        n = 3;
        if (c == 0xE0)
            lo = 0xA0; /* no overlongs */
        else if (c == 0xED)
            hi = 0x9F; /* no surrogates */
    } else if (c >= 0xF0 && c <= 0xF4) {
        n = 4;
        if (c == 0xF0)
            lo = 0x90;
        else if (c == 0xF4)
            hi = 0x8F; /* nothing above U+10FFFF */
    } else {
        return 0;
    }
    if (len < n || s[1] < lo || s[1] > hi)
        return 0;
    for (size_t i = 2; i < n; i++)
        if (s[i] < 0x80 || s[i] > 0xBF)
            return 0;
    return n;
}

size_t utf8_valid_prefix(const char *s, size_t len)
{
    const unsigned char *u = (const unsigned char *)s;
    size_t i = 0;
    while (i < len) {
        size_t n = sequence_length(u + i, len - i);
        if (n == 0)
            break;
        i += n;
    }
    return i;
}

size_t utf8_cut(char *s)
{
    size_t n = utf8_valid_prefix(s, strlen(s));
    s[n] = '\0';
    return n;
}
