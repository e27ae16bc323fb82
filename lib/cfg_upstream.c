/* cfg_upstream — the v1.2 "production upstream" keys of a validation: headers and tls (the rules
 * are in cfg.h; the table that registers them is lib/cfg_blocks.c).
 *
 * headers: each value is expanded once, at load, into the "Name: value" line libcurl sends, so a
 * checkout pays nothing for it but the header itself. Values are secrets: no message built here
 * shows any byte of one — before expansion it may hold a literal token, after it the variable's
 * value — only the header's name and a variable's name, which are config text.
 * tls: the paths are kept as given; each file is opened at load, so that a typo or a missing
 * permission stops the start instead of failing every checkout later. */
#include "cfg_internal.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

/* "${" + a variable name + "}": names longer than this are refused (no environment has them). */
#define VAR_NAME_MAX 128

/* The names checkoutd sets on every upstream request itself (compared ignoring case). */
static const char *const reserved[] = {
    "Host",
    "Content-Type",
    "Content-Length",
    "Transfer-Encoding",
    "Connection",
    "Expect",
    "X-Request-Id",
    "Idempotency-Key",
    "traceparent",
    "X-Checkout-Attempt",
    "X-Checkout-Timeout-Ms",
};

/* RFC 9110 token: 1*tchar. */
static int token_ok(const char *s)
{
    static const char extra[] = "!#$%&'*+-.^_`|~";

    if (s[0] == '\0')
        return 0;
    for (; *s != '\0'; s++) {
        char ch = *s;
        int alnum =
            (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9');
        if (!alnum && strchr(extra, ch) == NULL)
            return 0;
    }
    return 1;
}

static int printable(const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        if ((unsigned char)s[i] < 0x20 || (unsigned char)s[i] > 0x7e)
            return 0;
    }
    return 1;
}

/* A growing byte buffer, bounded by CFG_HEADERS_BYTES + the line's framing. */
typedef struct buf {
    char *p;
    size_t len, cap;
} buf;

static int buf_add(buf *b, const char *s, size_t n)
{
    if (b->len + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 64;
        while (cap < b->len + n + 1)
            cap *= 2;
        char *p = realloc(b->p, cap);
        if (p == NULL)
            return -1;
        b->p = p;
        b->cap = cap;
    }
    memcpy(b->p + b->len, s, n);
    b->len += n;
    b->p[b->len] = '\0';
    return 0;
}

/* Appends value to b with every ${NAME} replaced by its variable. *value_len gets the expanded
 * length. 0, or -1 after a message that shows no part of the value. */
static int expand(const cfg_loader *ld, const cfg_where *w, const char *value, buf *b,
                  size_t *value_len)
{
    const size_t start = b->len;
    const char *p = value;

    while (*p != '\0') {
        const char *ref = strstr(p, "${");
        char name[VAR_NAME_MAX + 1];
        const char *val;
        size_t n;

        if (ref == NULL) {
            if (buf_add(b, p, strlen(p)) != 0)
                return cfg_errf(ld, w, "out of memory");
            break;
        }
        if (buf_add(b, p, (size_t)(ref - p)) != 0)
            return cfg_errf(ld, w, "out of memory");
        ref += 2;
        n = strspn(ref, "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_");
        if (n == 0 || n > VAR_NAME_MAX || ref[n] != '}')
            return cfg_errf(ld, w,
                            "\"${\" must start a reference ${NAME} with NAME in [A-Z0-9_]+ (the "
                            "value is not shown: header values are secrets)");
        memcpy(name, ref, n);
        name[n] = '\0';
        val = cfg_env(ld, name);
        if (val == NULL)
            return cfg_errf(ld, w, "environment variable %s is not set", name);
        if (!printable(val, strlen(val)))
            return cfg_errf(ld, w,
                            "the value of environment variable %s is not printable ASCII (no "
                            "CR, LF or control character; the value is not shown)",
                            name);
        if (buf_add(b, val, strlen(val)) != 0)
            return cfg_errf(ld, w, "out of memory");
        p = ref + n + 1;
    }
    *value_len = b->len - start;
    return 0;
}

/* Header name of entry h of validation i, checked against the rules and the earlier names. */
static int check_name(const cfg_loader *ld, const cfg_where *w, const cfg_where *hw,
                      const char *name, const cfg_validation *out)
{
    char shown[CFG_SHOW_MAX];

    if (!token_ok(name)) {
        cfg_show_string(name, shown);
        return cfg_errf(ld, w,
                        "%s is not an HTTP header name (a token of letters, digits and "
                        "!#$%%&'*+-.^_`|~)",
                        shown);
    }
    for (size_t r = 0; r < sizeof reserved / sizeof reserved[0]; r++) {
        if (strcasecmp(name, reserved[r]) == 0)
            return cfg_errf(ld, hw, "%s is set by the service itself and cannot be configured",
                            reserved[r]);
    }
    for (size_t j = 0; j < out->nheaders; j++) {
        if (strcasecmp(name, out->headers[j].name) == 0) {
            cfg_show_string(out->headers[j].name, shown);
            return cfg_errf(ld, hw, "duplicate header name (same as %s, ignoring case)", shown);
        }
    }
    return 0;
}

/* One header: its line "Name: value" (expanded), added as out->headers[out->nheaders]. *bytes
 * counts names and values so far. */
static int load_header(const cfg_loader *ld, size_t i, const char *name, const json_t *value,
                       cfg_validation *out, size_t *bytes)
{
    char key[CFG_KEY_MAX];
    cfg_where w, hw;
    buf b = {NULL, 0, 0};
    cfg_header *h = &out->headers[out->nheaders];
    size_t value_len = 0;
    char shown[CFG_SHOW_MAX];

    cfg_val_where(ld, i, "headers", &w);
    snprintf(key, sizeof key, "headers.%s", name);
    cfg_val_where(ld, i, key, &hw);
    if (check_name(ld, &w, &hw, name, out) != 0)
        return -1;
    if (!json_is_string(value)) {
        /* Not a string, so not a secret: a number or an object may be shown. */
        cfg_show_json(value, shown);
        return cfg_errf(ld, &hw, "expected a string of printable ASCII, got %s", shown);
    }
    if (!printable(json_string_value(value), json_string_length(value)))
        return cfg_errf(ld, &hw,
                        "the value is not printable ASCII (no CR, LF or control character; the "
                        "value is not shown: header values are secrets)");
    if (buf_add(&b, name, strlen(name)) != 0 || buf_add(&b, ": ", 2) != 0) {
        cfg_errf(ld, &hw, "out of memory");
        goto fail;
    }
    if (expand(ld, &hw, json_string_value(value), &b, &value_len) != 0)
        goto fail;
    /* libcurl drops a header written "Name:" (no value); "Name;" sends it empty. */
    if (value_len == 0) {
        b.p[b.len - 2] = ';';
        b.p[b.len - 1] = '\0';
    }
    *bytes += strlen(name) + value_len;
    if (*bytes > CFG_HEADERS_BYTES) {
        cfg_errf(ld, &w, "more than %d bytes of header names and values (after ${...} expansion)",
                 CFG_HEADERS_BYTES);
        goto fail;
    }
    h->name = cfg_dup(ld, &hw, name);
    if (h->name == NULL)
        goto fail;
    h->line = b.p;
    out->nheaders++;
    return 0;
fail:
    /* The buffer may hold an expanded secret: clear it before it goes back to the heap. */
    if (b.p != NULL)
        explicit_bzero(b.p, b.cap);
    free(b.p);
    return -1;
}

int cfg_headers_load(const cfg_loader *ld, size_t i, const json_t *entry, const json_t *value,
                     cfg_validation *out)
{
    const char *name;
    json_t *v;
    size_t n, bytes = 0;
    char shown[CFG_SHOW_MAX];
    cfg_where w;

    (void)entry;
    if (value == NULL)
        return 0;
    cfg_val_where(ld, i, "headers", &w);
    if (!json_is_object(value)) {
        cfg_show_json(value, shown);
        return cfg_errf(ld, &w, "expected an object of header names to values, got %s", shown);
    }
    n = json_object_size(value);
    if (n > CFG_MAX_HEADERS)
        return cfg_errf(ld, &w, "expected at most %d headers, got %zu", CFG_MAX_HEADERS, n);
    if (n == 0)
        return 0;
    out->headers = calloc(n, sizeof *out->headers);
    if (out->headers == NULL)
        return cfg_errf(ld, &w, "out of memory");
    json_object_foreach((json_t *)value, name, v)
    {
        if (load_header(ld, i, name, v, out, &bytes) != 0)
            return -1; /* headers_free releases what was loaded */
    }
    return 0;
}

void cfg_headers_free(cfg_validation *out)
{
    for (size_t h = 0; h < out->nheaders && out->headers != NULL; h++) {
        free(out->headers[h].name);
        if (out->headers[h].line != NULL)
            explicit_bzero(out->headers[h].line, strlen(out->headers[h].line));
        free(out->headers[h].line);
    }
    free(out->headers);
    out->headers = NULL;
    out->nheaders = 0;
}

/* ---- tls ---- */

/* Opens path: a missing file or a missing permission fails now. Only a regular file (or a link to
 * one) passes: a FIFO or a device could block the start, a directory holds no PEM. O_NONBLOCK
 * keeps open itself from waiting on a FIFO. *err: an errno, or 0 for "not a regular file". */
int cfg_file_readable(const char *path, int *err)
{
    struct stat st;
    int fd = open(path, O_RDONLY | O_NONBLOCK | O_CLOEXEC);

    if (fd < 0) {
        *err = errno;
        return 0;
    }
    *err = fstat(fd, &st) != 0 ? errno : 0;
    close(fd);
    return *err == 0 && S_ISREG(st.st_mode);
}

static int tls_file(const cfg_loader *ld, size_t i, const json_t *tls, const char *key, char **out)
{
    char label[CFG_KEY_MAX], shown[CFG_SHOW_MAX];
    const json_t *v = json_object_get(tls, key);
    const char *path;
    cfg_where w;
    int err = 0;

    if (v == NULL)
        return 0;
    snprintf(label, sizeof label, "tls.%s", key);
    cfg_val_where(ld, i, label, &w);
    path = cfg_get_string(ld, &w, v, "a file path", cfg_nonempty_ok);
    if (path == NULL)
        return -1;
    if (!cfg_file_readable(path, &err)) {
        cfg_show_string(path, shown);
        return cfg_errf(ld, &w, "cannot read %s: %s", shown,
                        err ? strerror(err) : "not a regular file");
    }
    *out = cfg_dup(ld, &w, path);
    return *out ? 0 : -1;
}

int cfg_tls_load(const cfg_loader *ld, size_t i, const json_t *entry, const json_t *value,
                 cfg_validation *out)
{
    static const char *const keys[] = {"ca_file", "cert_file", "key_file"};
    char shown[CFG_SHOW_MAX];
    cfg_where w;

    (void)entry;
    if (value == NULL)
        return 0;
    cfg_val_where(ld, i, "tls", &w);
    if (strncmp(out->url, "https://", 8) != 0)
        return cfg_errf(ld, &w, "refused on an http:// URL (tls is for https:// URLs)");
    if (!json_is_object(value)) {
        cfg_show_json(value, shown);
        return cfg_errf(ld, &w, "expected an object with ca_file, cert_file, key_file, got %s",
                        shown);
    }
    if (cfg_check_keys(ld, &w, value, keys, 3, "ca_file, cert_file, key_file") != 0)
        return -1;
    if ((json_object_get(value, "cert_file") == NULL) !=
        (json_object_get(value, "key_file") == NULL))
        return cfg_errf(ld, &w, "cert_file and key_file go together (both or neither)");
    if (tls_file(ld, i, value, "ca_file", &out->tls.ca_file) != 0 ||
        tls_file(ld, i, value, "cert_file", &out->tls.cert_file) != 0 ||
        tls_file(ld, i, value, "key_file", &out->tls.key_file) != 0)
        return -1;
    return 0;
}

void cfg_tls_free(cfg_validation *out)
{
    free(out->tls.ca_file);
    free(out->tls.cert_file);
    free(out->tls.key_file);
    memset(&out->tls, 0, sizeof out->tls);
}
