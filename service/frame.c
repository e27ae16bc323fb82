/* frame — request framing checks (RFC 9112 §5, §6). See frame.h.
 *
 * What libmicrohttpd 0.9.75 refuses itself, before any handler runs, with its own HTML 400 and a
 * closed connection: a Content-Length that is not all digits ("+5", "0x5", "5, 5": its broken
 * double answer is replaced by our JSON one, see server.c answer_malformed_length), a header line
 * without a colon, a request line it cannot parse. MHD_OPTION_STRICT_FOR_CLIENT adds little: at 1
 * it requires Host and refuses spaces in the URI (which would refuse clients that work today); its
 * check of whitespace before a colon runs only at -1 (sic, connection.c). What it lets through,
 * refused here from the headers it hands over, as 400 invalid_request followed by a close:
 *   - a field name that is not a token (whitespace before the colon, "Transfer-Encoding :"): the
 *     name then keeps the blank, so a proxy that trims it frames by another header than we do;
 *   - Transfer-Encoding other than exactly one field "chunked" (libmicrohttpd looks at the first
 *     field only and, when that is not "chunked", reads the body until the connection closes);
 *   - two Content-Length fields, or Content-Length with Transfer-Encoding;
 *   - obs-fold (a line starting with a blank continues the previous one): libmicrohttpd joins it
 *     to the previous value without a blank, so "Content-Length: 1" + " 0" reads as 10. The join
 *     is seen from the layout libmicrohttpd leaves: unfolded fields are NUL-terminated in place in
 *     its read buffer, one after the other (the value's end, one or two NULs for the line end, the
 *     next name), while a folded field is copied elsewhere in its pool, which breaks that chain.
 * One pass over the headers per request, O(headers), no allocation. */
#include "frame.h"

#include <stdint.h>
#include <string.h>
#include <strings.h>

/* tchar of RFC 9110 §5.6.2: 1 for the bytes a field name may hold (one load a byte). */
static const unsigned char tchar[256] = {
    ['!'] = 1, ['#'] = 1, ['$'] = 1, ['%'] = 1, ['&'] = 1, ['\''] = 1, ['*'] = 1, ['+'] = 1,
    ['-'] = 1, ['.'] = 1, ['^'] = 1, ['_'] = 1, ['`'] = 1, ['|'] = 1,  ['~'] = 1, ['0'] = 1,
    ['1'] = 1, ['2'] = 1, ['3'] = 1, ['4'] = 1, ['5'] = 1, ['6'] = 1,  ['7'] = 1, ['8'] = 1,
    ['9'] = 1, ['A'] = 1, ['B'] = 1, ['C'] = 1, ['D'] = 1, ['E'] = 1,  ['F'] = 1, ['G'] = 1,
    ['H'] = 1, ['I'] = 1, ['J'] = 1, ['K'] = 1, ['L'] = 1, ['M'] = 1,  ['N'] = 1, ['O'] = 1,
    ['P'] = 1, ['Q'] = 1, ['R'] = 1, ['S'] = 1, ['T'] = 1, ['U'] = 1,  ['V'] = 1, ['W'] = 1,
    ['X'] = 1, ['Y'] = 1, ['Z'] = 1, ['a'] = 1, ['b'] = 1, ['c'] = 1,  ['d'] = 1, ['e'] = 1,
    ['f'] = 1, ['g'] = 1, ['h'] = 1, ['i'] = 1, ['j'] = 1, ['k'] = 1,  ['l'] = 1, ['m'] = 1,
    ['n'] = 1, ['o'] = 1, ['p'] = 1, ['q'] = 1, ['r'] = 1, ['s'] = 1,  ['t'] = 1, ['u'] = 1,
    ['v'] = 1, ['w'] = 1, ['x'] = 1, ['y'] = 1, ['z'] = 1,
};

/* "chunked" with optional blanks around it, any case. */
static int is_chunked(const char *v, size_t n)
{
    while (n > 0 && (*v == ' ' || *v == '\t')) {
        v++;
        n--;
    }
    while (n > 0 && (v[n - 1] == ' ' || v[n - 1] == '\t'))
        n--;
    return n == 7 && strncasecmp(v, "chunked", 7) == 0;
}

/* The previous field's line end is one or two NUL bytes (CRLF or a bare LF) right before name. */
static int follows_line_end(const frame_scan *f, const char *name)
{
    uintptr_t at = (uintptr_t)name;
    if (f->expect == 0)
        return 1;
    if (at == f->expect + 1)
        return *(name - 1) == '\0';
    if (at == f->expect + 2)
        return *(name - 1) == '\0' && *(name - 2) == '\0';
    return 0;
}

void frame_begin(frame_scan *f, const char *version)
{
    memset(f, 0, sizeof(*f));
    if (version != NULL)
        f->expect = (uintptr_t)version + strlen(version);
}

void frame_field(frame_scan *f, const char *key, size_t key_size, const char *value,
                 size_t value_size)
{
    unsigned all = key_size > 0;
    for (size_t i = 0; i < key_size; i++)
        all &= tchar[(unsigned char)key[i]];
    f->bad_name |= !all;
    if (!follows_line_end(f, key))
        f->folded = 1;
    f->expect = value != NULL ? (uintptr_t)value + value_size : 0;
    if (key_size == 14 && strncasecmp(key, "Content-Length", 14) == 0)
        f->lengths++;
    if (key_size == 17 && strncasecmp(key, "Transfer-Encoding", 17) == 0) {
        f->encodings++;
        f->chunked += value != NULL && is_chunked(value, value_size);
    }
}

const char *frame_verdict(const frame_scan *fs)
{
    const frame_scan f = *fs;
    if (f.bad_name)
        return "a header name is not a token (whitespace before the colon?)";
    if (f.folded)
        return "a header is folded over two lines (obs-fold)";
    if (f.lengths > 1)
        return "more than one Content-Length header";
    if (f.encodings > 0 && f.lengths > 0)
        return "Content-Length together with Transfer-Encoding";
    if (f.encodings > 1)
        return "more than one Transfer-Encoding header";
    if (f.encodings == 1 && f.chunked != 1)
        return "Transfer-Encoding must be chunked";
    return NULL;
}
