/* fuzz_config — the config surface: JSON text plus CHECKOUTD_* environment values ->
 * cfg_load_string -> cfg_free.
 *
 * Input: NUL-separated segments. The first is the JSON text; each next one (at most
 * FCFG_MAX_ENV) is one variable: its first byte picks a name from fcfg_names ('A' the first, 'B'
 * the next, ...), the rest is the value; the byte after the last name reads the segment as
 * "NAME=VALUE" instead, so that names outside the table are tried too. Segments split on NUL
 * because neither a C string nor a variable can hold one.
 *
 * Invariants (abort on violation): a refusal leaves *out all zero and writes one line, non-empty,
 * without control characters, that a shorter buffer cuts but never overruns; an acceptance holds
 * every value in its contract range, names valid and unique, URLs http(s) without blanks, and a
 * numeric variable that was accepted is the value in force. The fake getenv is only ever asked for
 * CHECKOUTD_* names of bounded length. */
#include "cfg.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define FCFG_MAX_ENV 8

#define FCFG_CHECK(cond, ...)                                                                      \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            fprintf(stderr, "fuzz_config: invariant failed: %s: ", #cond);                         \
            fprintf(stderr, __VA_ARGS__);                                                          \
            fputc('\n', stderr);                                                                   \
            abort();                                                                               \
        }                                                                                          \
    } while (0)

static const char *const fcfg_names[] = {
    "CHECKOUTD_LISTEN",
    "CHECKOUTD_DEADLINE_MS",
    "CHECKOUTD_MAX_BODY_BYTES",
    "CHECKOUTD_MAX_INFLIGHT",
    "CHECKOUTD_MAX_UPSTREAM_BODY_BYTES",
    "CHECKOUTD_VALIDATIONS",
    "CHECKOUTD_ADDRESS_URL",
    "CHECKOUTD_ADDRESS_TIMEOUT_MS",
    "CHECKOUTD_ADDRESS_FIELD",
    "CHECKOUTD_INVENTORY_URL",
    "CHECKOUTD_INVENTORY_TIMEOUT_MS",
    "CHECKOUTD_INVENTORY_FIELD",
    "CHECKOUTD_PAYMENT_URL",
    "CHECKOUTD_PAYMENT_TIMEOUT_MS",
    "CHECKOUTD_PAYMENT_FIELD",
    "CHECKOUTD_FRAUD_URL",
    "CHECKOUTD_FRAUD_TIMEOUT_MS",
    "CHECKOUTD_FRAUD_FIELD",
    "PAYMENT_API_TOKEN", /* v1.2: a header's ${PAYMENT_API_TOKEN} */
};
#define FCFG_NNAMES (sizeof(fcfg_names) / sizeof(fcfg_names[0]))

/* The environment of the current input; getenv has no user pointer, so it lives here. */
static struct {
    char *name[FCFG_MAX_ENV];
    const char *value[FCFG_MAX_ENV];
    size_t n;
} fcfg_env;

/* v1.2 headers and tls: at most 32 lines "Name: value" (or "Name;"), printable ASCII, 8 KiB of
 * names and values; tls files only on an https:// url, a key with every certificate. */
static void fcfg_check_upstream(const cfg_validation *v)
{
    size_t bytes = 0;
    FCFG_CHECK(v->nheaders <= CFG_MAX_HEADERS, "%zu headers", v->nheaders);
    for (size_t h = 0; h < v->nheaders; h++) {
        const char *line = v->headers[h].line;
        size_t n = strlen(v->headers[h].name);
        FCFG_CHECK(n > 0 && strncmp(line, v->headers[h].name, n) == 0 &&
                       (strcmp(line + n, ";") == 0 || strncmp(line + n, ": ", 2) == 0),
                   "header line of %s", v->headers[h].name);
        for (const char *p = line; *p != '\0'; p++)
            FCFG_CHECK(*p >= 0x20 && *p < 0x7f, "control or non-ASCII byte in a header line");
        bytes += n + (line[n] == ';' ? 0 : strlen(line + n + 2));
    }
    FCFG_CHECK(bytes <= CFG_HEADERS_BYTES, "%zu bytes of headers", bytes);
    if (v->tls.ca_file != NULL || v->tls.cert_file != NULL)
        FCFG_CHECK(strncmp(v->url, "https://", 8) == 0, "tls on %s", v->url);
    FCFG_CHECK((v->tls.cert_file == NULL) == (v->tls.key_file == NULL), "cert without key");
}

static const char *fcfg_getenv(const char *name)
{
    /* cfg builds CHECKOUTD_<NAME>_TIMEOUT_MS from a 32-character name at most: 54 bytes; a
     * header's ${NAME} asks for NAME, [A-Z0-9_]{1,128}. */
    size_t len = strlen(name);
    FCFG_CHECK((strncmp(name, "CHECKOUTD_", 10) == 0 && len < 64) ||
                   (len >= 1 && len <= 128 &&
                    strspn(name, "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_") == len),
               "asked for variable \"%s\"", name);
    for (size_t i = 0; i < fcfg_env.n; i++) {
        if (strcmp(fcfg_env.name[i], name) == 0)
            return fcfg_env.value[i];
    }
    return NULL;
}

/* Splits one env segment (a NUL-terminated copy owned by the caller) into fcfg_env. */
static void fcfg_add_env(char *seg)
{
    unsigned pick = (unsigned)((unsigned char)seg[0] - 'A') % (FCFG_NNAMES + 1);
    char *name;
    const char *value;
    if (seg[0] == '\0' || fcfg_env.n == FCFG_MAX_ENV)
        return;
    if (pick < FCFG_NNAMES) {
        name = strdup(fcfg_names[pick]);
        value = seg + 1;
    } else {
        char *eq = strchr(seg + 1, '=');
        if (eq == NULL)
            return;
        *eq = '\0';
        name = strdup(seg + 1);
        value = eq + 1;
    }
    if (name == NULL)
        abort();
    fcfg_env.name[fcfg_env.n] = name;
    fcfg_env.value[fcfg_env.n] = value;
    fcfg_env.n++;
}

static void fcfg_check_message(const char *err, size_t errlen)
{
    size_t len = strnlen(err, errlen);
    FCFG_CHECK(len < errlen, "message not NUL-terminated within %zu bytes", errlen);
    for (size_t i = 0; i < len; i++) {
        unsigned char ch = (unsigned char)err[i];
        FCFG_CHECK(ch >= 0x20 && ch != 0x7f, "control byte 0x%02x at %zu in: %s", ch, i, err);
    }
}

static int fcfg_is_zero(const cfg *c)
{
    static const cfg zero;
    return memcmp(c, &zero, sizeof(zero)) == 0;
}

/* The value of a numeric variable when it is set and a plain decimal; -1 otherwise. */
static long fcfg_env_number(const char *name)
{
    for (size_t i = 0; i < fcfg_env.n; i++) {
        if (strcmp(fcfg_env.name[i], name) != 0)
            continue;
        char *end;
        long v = strtol(fcfg_env.value[i], &end, 10);
        return end != fcfg_env.value[i] && *end == '\0' ? v : -1;
    }
    return -1;
}

static void fcfg_check_range(const char *key, long v, long min, long max)
{
    FCFG_CHECK(v >= min && v <= max, "%s = %ld outside %ld..%ld", key, v, min, max);
}

static void fcfg_check_url(const char *url)
{
    FCFG_CHECK(strncmp(url, "http://", 7) == 0 || strncmp(url, "https://", 8) == 0, "url %s", url);
    for (const char *p = url; *p != '\0'; p++)
        FCFG_CHECK((unsigned char)*p > 0x20 && *p != 0x7f, "blank or control byte in url");
}

static void fcfg_check_accepted(const cfg *c)
{
    FCFG_CHECK(c->listen_host != NULL && c->listen_host[0] != '\0', "empty listen host");
    fcfg_check_range("listen port", c->listen_port, 0, 65535);
    fcfg_check_range("deadline_ms", c->deadline_ms, 1, 600000);
    fcfg_check_range("max_body_bytes", c->max_body_bytes, 1, 16777216);
    fcfg_check_range("max_inflight", c->max_inflight, 1, 1000000);
    fcfg_check_range("max_upstream_body_bytes", c->max_upstream_body_bytes, 1024, 67108864);
    fcfg_check_range("nvalidations", (long)c->nvalidations, 1, CFG_MAX_VALIDATIONS);
    for (size_t i = 0; i < c->nvalidations; i++) {
        const cfg_validation *v = &c->validations[i];
        size_t n = strnlen(v->name, sizeof(v->name));
        FCFG_CHECK(n >= 1 && n <= CFG_NAME_MAX, "validations[%zu] name length %zu", i, n);
        FCFG_CHECK(strspn(v->name, "abcdefghijklmnopqrstuvwxyz0123456789_") == n,
                   "validations[%zu] name %s", i, v->name);
        for (size_t j = 0; j < i; j++)
            FCFG_CHECK(strcmp(v->name, c->validations[j].name) != 0, "duplicate name %s", v->name);
        FCFG_CHECK(v->field != NULL && v->field[0] != '\0', "validations[%zu] empty field", i);
        FCFG_CHECK(v->url != NULL, "validations[%zu] without url", i);
        fcfg_check_url(v->url);
        fcfg_check_range("timeout_ms", v->timeout_ms, 1, 600000);
        fcfg_check_upstream(v);
    }
    /* The environment wins over the text: an accepted numeric variable is the value in force. */
    static const struct {
        const char *env;
        size_t offset;
    } nums[] = {
        {"CHECKOUTD_DEADLINE_MS", offsetof(cfg, deadline_ms)},
        {"CHECKOUTD_MAX_BODY_BYTES", offsetof(cfg, max_body_bytes)},
        {"CHECKOUTD_MAX_INFLIGHT", offsetof(cfg, max_inflight)},
        {"CHECKOUTD_MAX_UPSTREAM_BODY_BYTES", offsetof(cfg, max_upstream_body_bytes)},
    };
    for (size_t i = 0; i < sizeof(nums) / sizeof(nums[0]); i++) {
        long want = fcfg_env_number(nums[i].env);
        long got;
        memcpy(&got, (const char *)c + nums[i].offset, sizeof(got));
        FCFG_CHECK(want < 0 || got == want, "%s=%ld accepted but %ld in force", nums[i].env, want,
                   got);
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    /* One NUL-terminated copy; segments are cut in place. */
    char *buf = malloc(size + 1);
    if (buf == NULL)
        return 0;
    memcpy(buf, data, size);
    buf[size] = '\0';
    const char *text = buf;
    memset(&fcfg_env, 0, sizeof(fcfg_env));
    for (size_t at = strlen(buf); at < size;) {
        char *seg = buf + at + 1;
        size_t len = strlen(seg);
        fcfg_add_env(seg);
        at += 1 + len;
    }

    const char *source = size % 2 ? NULL : "fuzz.json";
    cfg c;
    char err[512];
    memset(&c, 0xA5, sizeof(c)); /* *out is overwritten, not read: garbage in it must not matter */
    if (cfg_load_string(&c, text, source, fcfg_getenv, err, sizeof(err)) == 0) {
        fcfg_check_accepted(&c);
        cfg_free(&c);
        FCFG_CHECK(fcfg_is_zero(&c), "cfg_free left something behind");
        cfg_free(&c); /* twice in a row is documented as safe */
    } else {
        FCFG_CHECK(fcfg_is_zero(&c), "a refused config is not all zero");
        FCFG_CHECK(err[0] != '\0', "refused without a message");
        fcfg_check_message(err, sizeof(err));
        /* A short buffer, allocated to its exact size so that ASan sees any overrun: the same
         * message, cut. */
        size_t small = 1 + size % 48;
        char *cut = malloc(small);
        if (cut == NULL)
            abort();
        cfg again;
        FCFG_CHECK(cfg_load_string(&again, text, source, fcfg_getenv, cut, small) != 0,
                   "refused once, accepted the second time");
        fcfg_check_message(cut, small);
        FCFG_CHECK(strncmp(cut, err, strlen(cut)) == 0 && strlen(cut) == strnlen(err, small - 1),
                   "cut message \"%s\" is not a prefix of \"%s\"", cut, err);
        free(cut);
    }
    for (size_t i = 0; i < fcfg_env.n; i++)
        free(fcfg_env.name[i]);
    free(buf);
    return 0;
}
