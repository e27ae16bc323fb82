/* frame (service/frame.c) by itself: the framing rules over header fields laid out as
 * libmicrohttpd 0.9.75 leaves them in its read buffer (each line's ':' and line end replaced by
 * NULs, one line after the other), and a folded field copied elsewhere. */
#include "../service/frame.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

/* Parses raw header lines (after the request line "POST / HTTP/1.1\r\n") the way libmicrohttpd
 * does, into buf, and feeds them to a scan; a line that starts with a blank is folded into the
 * previous field, whose joined copy goes to a separate buffer (as libmicrohttpd's pool does).
 * Returns the verdict. */
static const char *scan_raw(const char *lines)
{
    static char buf[4096], joined[4096];
    size_t jn = 0;
    snprintf(buf, sizeof(buf), "POST / HTTP/1.1\r\n%s", lines);
    char *version = strstr(buf, "HTTP/1.1");
    char *p = version + 8;
    struct field {
        char *name, *value;
        size_t nlen, vlen;
    } fields[32];
    size_t nf = 0;
    /* the request line's end */
    *p++ = '\0';
    if (*p == '\n')
        *p++ = '\0';
    while (*p != '\0' && *p != '\r' && *p != '\n') {
        char *end = strpbrk(p, "\r\n");
        assert_non_null(end);
        char *next = end + (end[0] == '\r' && end[1] == '\n' ? 2 : 1);
        memset(end, 0, (size_t)(next - end));
        if ((p[0] == ' ' || p[0] == '\t') && nf > 0) {
            /* obs-fold: libmicrohttpd copies "name:value" + the continuation elsewhere */
            struct field *f = &fields[nf - 1];
            char *copy = joined + jn;
            size_t n = (size_t)snprintf(copy, sizeof(joined) - jn, "%.*s", (int)f->nlen, f->name);
            copy[n] = '\0';
            char *val = copy + n + 1;
            while (*p == ' ' || *p == '\t')
                p++;
            int vl =
                snprintf(val, sizeof(joined) - jn - n - 1, "%.*s%s", (int)f->vlen, f->value, p);
            f->name = copy;
            f->value = val;
            f->vlen = (size_t)vl;
            jn += n + 1 + (size_t)vl + 1;
        } else {
            char *colon = strchr(p, ':');
            assert_non_null(colon);
            *colon = '\0';
            char *v = colon + 1;
            while (*v == ' ' || *v == '\t')
                v++;
            fields[nf].name = p;
            fields[nf].nlen = (size_t)(colon - p);
            fields[nf].value = v;
            fields[nf].vlen = strlen(v);
            nf++;
        }
        p = next;
    }
    frame_scan f;
    frame_begin(&f, version);
    for (size_t i = 0; i < nf; i++)
        frame_field(&f, fields[i].name, fields[i].nlen, fields[i].value, fields[i].vlen);
    return frame_verdict(&f);
}

static void test_well_framed(void **state)
{
    (void)state;
    assert_null(scan_raw("Host: x\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n"));
    assert_null(scan_raw("Host: x\r\nTransfer-Encoding: chunked\r\n\r\n"));
    assert_null(scan_raw("Host: x\r\nTransfer-Encoding:  CHUNKED \r\n\r\n"));
    assert_null(scan_raw("Host: x\nX-Bare-LF: 1\nContent-Length: 0\n\n"));
    assert_null(scan_raw("Host:\r\nX-Empty:\r\nX-A: b\r\n\r\n"));
    assert_null(scan_raw("Host: x\r\nX-Tok!#$%&'*+-.^_`|~09az: 1\r\n\r\n"));
}

static void test_names_must_be_tokens(void **state)
{
    (void)state;
    assert_non_null(scan_raw("Host: x\r\nTransfer-Encoding : chunked\r\n\r\n"));
    assert_non_null(scan_raw("Host: x\r\nTransfer-Encoding\t: chunked\r\n\r\n"));
    assert_non_null(scan_raw("Host: x\r\nX(A): 1\r\n\r\n"));
    assert_non_null(scan_raw("Host: x\r\n: 1\r\n\r\n"));
    assert_non_null(strstr(scan_raw("Bad Name: 1\r\n\r\n"), "token"));
}

static void test_obs_fold(void **state)
{
    (void)state;
    assert_non_null(strstr(scan_raw("Host: x\r\nX-A: a\r\n b\r\nX-B: c\r\n\r\n"), "obs-fold"));
    assert_non_null(scan_raw("Host: x\r\nContent-Length: 1\r\n 0\r\n\r\n")); /* the last field */
    assert_non_null(scan_raw("Host: x\r\n\tchunked\r\nX: 1\r\n\r\n"));       /* the first one */
}

static void test_transfer_encoding_and_length(void **state)
{
    (void)state;
    assert_non_null(scan_raw("Transfer-Encoding: chunked\r\nTransfer-Encoding: identity\r\n\r\n"));
    assert_non_null(scan_raw("Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n"));
    assert_non_null(scan_raw("Transfer-Encoding: gzip, chunked\r\n\r\n"));
    assert_non_null(scan_raw("Transfer-Encoding: identity\r\n\r\n"));
    assert_non_null(scan_raw("Transfer-Encoding:\r\n\r\n"));
    assert_non_null(scan_raw("Content-Length: 2\r\nContent-Length: 2\r\n\r\n"));
    assert_non_null(scan_raw("Content-Length: 2\r\ntransfer-encoding: chunked\r\n\r\n"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_well_framed),
        cmocka_unit_test(test_names_must_be_tokens),
        cmocka_unit_test(test_obs_fold),
        cmocka_unit_test(test_transfer_encoding_and_length),
    };
    return cmocka_run_group_tests_name("frame", tests, NULL, NULL);
}
