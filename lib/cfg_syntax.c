/* cfg_syntax — the syntax of single config values (see cfg_internal.h). Pure functions. */
#include "cfg_internal.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int is_alnum(char ch)
{
    return (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9');
}

/* Every one of the n bytes of s is an ASCII letter, a digit or one of extra. */
static int chars_ok(const char *s, size_t n, const char *extra)
{
    for (size_t i = 0; i < n; i++) {
        /* strchr finds the NUL of extra: a NUL byte must not pass as one of extra. */
        if (s[i] == '\0' || (!is_alnum(s[i]) && strchr(extra, s[i]) == NULL))
            return 0;
    }
    return 1;
}

int cfg_name_ok(const char *s)
{
    size_t n = strlen(s);

    if (n < 1 || n > CFG_NAME_MAX)
        return 0;
    for (size_t i = 0; i < n; i++) {
        if (!((s[i] >= 'a' && s[i] <= 'z') || (s[i] >= '0' && s[i] <= '9') || s[i] == '_'))
            return 0;
    }
    return 1;
}

int cfg_nonempty_ok(const char *s)
{
    return s[0] != '\0';
}

/* A port of n decimal digits (1..5, no sign or blank) in min..65535. */
static int parse_port(const char *s, size_t n, long min, int *port)
{
    long v = 0;

    if (n < 1 || n > 5)
        return -1;
    for (size_t i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9')
            return -1;
        v = v * 10 + (s[i] - '0');
    }
    if (v < min || v > 65535)
        return -1;
    *port = (int)v;
    return 0;
}

/* Splits the n bytes "host[:port]" or "[v6]:port". host, hostlen: the host without brackets;
 * port, portlen: after the colon (NULL, 0 when there is none). -1 when the host is empty, too
 * long, holds a character no host name or address has, or an IPv6 address lacks its brackets. */
static int split_hostport(const char *s, size_t n, const char **host, size_t *hostlen,
                          const char **port, size_t *portlen)
{
    const char *rest;
    const char *close = n > 0 && s[0] == '[' ? memchr(s, ']', n) : NULL;

    if (n > 0 && s[0] == '[') {
        if (close == NULL)
            return -1;
        *host = s + 1;
        *hostlen = (size_t)(close - s) - 1;
        rest = close + 1;
        if (memchr(*host, ':', *hostlen) == NULL || !chars_ok(*host, *hostlen, ":.%"))
            return -1;
    } else {
        const char *colon = memchr(s, ':', n);
        *host = s;
        *hostlen = colon ? (size_t)(colon - s) : n;
        rest = s + *hostlen;
        if (!chars_ok(*host, *hostlen, "-._~%"))
            return -1;
    }
    if (*hostlen == 0 || *hostlen > CFG_HOST_MAX)
        return -1;
    *port = NULL;
    *portlen = 0;
    if (rest == s + n)
        return 0;
    if (rest[0] != ':')
        return -1;
    *port = rest + 1;
    *portlen = (size_t)(s + n - *port);
    return 0;
}

/* "host:port" with a port in 0..65535 (0: any free port); IPv6 as "[::1]:8080", brackets go. */
int cfg_parse_listen(const char *s, char host[CFG_HOST_MAX + 1], int *port)
{
    const char *h, *p;
    size_t hlen, plen;

    if (split_hostport(s, strlen(s), &h, &hlen, &p, &plen) != 0 || p == NULL)
        return -1;
    if (parse_port(p, plen, 0, port) != 0)
        return -1;
    memcpy(host, h, hlen);
    host[hlen] = '\0';
    return 0;
}

/* "http://" or "https://" (lower case, as written by the contract),
 * [userinfo@]host[:port 1..65535], then any path, query and fragment, kept as written; no blank or
 * control character anywhere (an HTTP client would refuse or mangle them). */
int cfg_url_ok(const char *u)
{
    const char *auth, *hostport, *h, *p;
    size_t authlen, hlen, plen;
    int port;

    if (strncmp(u, "http://", 7) == 0)
        auth = u + 7;
    else if (strncmp(u, "https://", 8) == 0)
        auth = u + 8;
    else
        return 0;
    for (const char *c = u; *c != '\0'; c++) {
        if ((unsigned char)*c <= 0x20 || *c == 0x7f)
            return 0;
    }
    authlen = strcspn(auth, "/?#");
    hostport = auth;
    for (size_t i = 0; i < authlen; i++) {
        if (auth[i] == '@')
            hostport = auth + i + 1;
    }
    if (split_hostport(hostport, (size_t)(auth + authlen - hostport), &h, &hlen, &p, &plen) != 0)
        return 0;
    return p == NULL || parse_port(p, plen, 1, &port) == 0;
}

/* Strict: the whole string is one decimal integer that fits a long; no blank, sign '+' or junk. */
int cfg_parse_long(const char *s, long *out)
{
    char *end = NULL;
    long v;

    if (!(s[0] == '-' || (s[0] >= '0' && s[0] <= '9')))
        return -1;
    errno = 0;
    v = strtol(s, &end, 10);
    if (errno != 0 || end == s || *end != '\0')
        return -1;
    *out = v;
    return 0;
}

void cfg_url_redact(const char *url, char *out, size_t cap)
{
    const char *auth = strstr(url, "://");
    auth = auth ? auth + 3 : url;
    size_t authlen = strcspn(auth, "/?#");
    const char *at = NULL;
    for (size_t i = 0; i < authlen; i++) {
        if (auth[i] == '@')
            at = auth + i; /* the last '@' of the authority ends the userinfo */
    }
    if (at == NULL)
        snprintf(out, cap, "%s", url);
    else
        snprintf(out, cap, "%.*s***%s", (int)(auth - url), url, at);
}
