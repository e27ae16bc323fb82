/* jlog — structured JSON log lines. See jlog.h for the contract.
 *
 * jlog_event builds a line as a jansson object from masked copies of everything given (the
 * caller's objects are never modified), dumped with JSON_COMPACT into a 4 KiB stack buffer (a heap
 * buffer only for longer lines), ended with '\n'.
 *
 * jlog_checkout, the one line per checkout (on the hot path of every request), does not: it writes
 * its fixed-shape line directly into a 4 KiB stack buffer - fixed keys as literals, each string
 * masked into a stack buffer then UTF-8-cleaned and JSON-escaped in one pass, numbers with integer
 * arithmetic. Why a hand-written writer when jansson is the project's JSON library everywhere else:
 * cost only. The jansson tree cost ~84,000 instructions per line (a heap node and a masked copy per
 * value, json_dumpb, "%.15g" for each time, gmtime_r + strftime + snprintf for ts); the direct
 * writer (lib/jw) costs ~3,000 and no malloc. It writes the same bytes as the tree did
 * (tests/test_jlog.c compares both on hostile inputs); whatever it does not handle itself - a line
 * over 4 KiB, duplicate validation names, a negative or huge time - goes to checkout_tree(), the
 * jansson path, unchanged. Any change to the line's shape must be made in both.
 *
 * Every line is written with one write(2) while holding g_write_lock. The lock is held only for
 * the system call, never while building. It stays even though a single write(2) of one line is
 * already whole on a regular file (the inode lock) and on a pipe up to PIPE_BUF: stderr may also be
 * a stream socket (journald) or a tty, where Linux gives no such promise, an event line may exceed
 * PIPE_BUF, and after a short write or EINTR the rest must follow before another thread's line.
 * Uncontended, it costs two atomic operations next to a system call. The fd and level are atomics
 * so that jlog_init may run while other threads log. */
#include "jlog.h"

#include "jw.h"

#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

#define LINE_STACK  4096 /* most lines fit: a checkout line with 3 validations is ~350 bytes */
#define DEPTH_MAX   32   /* jlog_event's masked copy recurses at most this deep */
#define MASK_STARS  "****"
#define ELLIPSIS    "..."
#define INVALID_TXT "<invalid utf-8>"
/* Real numbers with 15 significant digits: 6.3 stays "6.3" (17 would show 6.2999999999999998). */
#define DUMP_FLAGS (JSON_COMPACT | JSON_REAL_PRECISION(15))

static atomic_int g_fd = 2;
static atomic_int g_level = JLOG_INFO;
static pthread_mutex_t g_write_lock = PTHREAD_MUTEX_INITIALIZER;

static const char *const level_names[] = {"debug", "info", "warn", "error", "off"};

/* Prefixes of payment tokens and API keys. The first match wins; as the masked rest runs over
 * [A-Za-z0-9_], a shorter prefix matching first could only hide more, never less. */
static const char *const secret_prefixes[] = {"tok_",     "pm_",      "card_",   "sk_live_",
                                              "sk_test_", "rk_live_", "rk_test_"};
/* Keys whose whole value is a secret: equal to one of these, or containing one of the next. */
static const char *const secret_keys[] = {"token", "card", "card_number", "pan",     "number",
                                          "cvv",   "cvc",  "secret",      "password"};
static const char *const secret_key_parts[] = {"token", "secret", "password", "card_number"};

#define COUNT(a) (sizeof(a) / sizeof((a)[0]))

int jlog_level_parse(const char *text, jlog_level *out)
{
    if (!text || !out)
        return -1;
    for (size_t i = 0; i < COUNT(level_names); i++) {
        if (strcmp(text, level_names[i]) == 0) {
            *out = (jlog_level)i;
            return 0;
        }
    }
    return -1;
}

const char *jlog_level_name(jlog_level level)
{
    if ((int)level < 0 || (size_t)level >= COUNT(level_names))
        return NULL;
    return level_names[level];
}

void jlog_init(int fd, jlog_level min_level)
{
    atomic_store(&g_fd, fd);
    atomic_store(&g_level, (int)min_level);
}

int jlog_enabled(jlog_level level)
{
    int min = atomic_load_explicit(&g_level, memory_order_relaxed);
    return (int)level >= (int)JLOG_DEBUG && level < JLOG_OFF && (int)level >= min;
}

/* ---- masking ---------------------------------------------------------------------------- */

/* Output of jlog_mask: counts every byte, stores those that fit (snprintf semantics). */
typedef struct sink {
    char *out;
    size_t cap, len;
} sink;

static void sink_put(sink *s, char c)
{
    if (s->len + 1 < s->cap)
        s->out[s->len] = c;
    s->len++;
}

static void sink_puts(sink *s, const char *text, size_t n)
{
    for (size_t i = 0; i < n; i++)
        sink_put(s, text[i]);
}

/* ASCII only, whatever the locale: bytes of multi-byte UTF-8 sequences are never digits. */
static int is_digit(char c)
{
    return c >= '0' && c <= '9';
}

static int is_word(char c)
{
    return is_digit(c) || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_';
}

/* Length of the secret prefix that starts a token at in + i, or 0. */
static size_t token_prefix(const char *in, size_t i)
{
    if (i > 0 && is_word(in[i - 1]))
        return 0;
    for (size_t k = 0; k < COUNT(secret_prefixes); k++) {
        const char *p = secret_prefixes[k];
        if (in[i] != p[0]) /* the cheap test first: most words start no prefix */
            continue;
        size_t n = strlen(p);
        if (strncmp(in + i, p, n) == 0 && is_word(in[i + n]))
            return n;
    }
    return 0;
}

/* End (exclusive) of the digit run that starts at in + i; *ndigits counts its digits. */
static size_t digit_run_end(const char *in, size_t i, size_t *ndigits)
{
    size_t j = i, n = 0;
    for (;;) {
        while (is_digit(in[j])) {
            j++;
            n++;
        }
        if ((in[j] == ' ' || in[j] == '-') && is_digit(in[j + 1]))
            j++;
        else
            break;
    }
    *ndigits = n;
    return j;
}

/* The Luhn check over the digits of in[0..len), separators skipped. */
static int luhn_ok(const char *in, size_t len)
{
    unsigned sum = 0, pos = 0;
    for (size_t k = len; k-- > 0;) {
        if (!is_digit(in[k]))
            continue;
        unsigned d = (unsigned)(in[k] - '0');
        if (pos % 2 == 1)
            d = d * 2 > 9 ? d * 2 - 9 : d * 2;
        sum += d;
        pos++;
    }
    return sum % 10 == 0;
}

static int run_is_card(const char *run, size_t len, size_t ndigits)
{
    if (ndigits >= 15)
        return 1;
    return ndigits >= 13 && luhn_ok(run, len);
}

/* Copies the run, every digit but the last 4 replaced by '*'. */
static void put_masked_run(sink *s, const char *run, size_t len, size_t ndigits)
{
    size_t seen = 0;
    for (size_t k = 0; k < len; k++) {
        if (!is_digit(run[k])) {
            sink_put(s, run[k]);
            continue;
        }
        sink_put(s, seen + 4 < ndigits ? '*' : run[k]);
        seen++;
    }
}

size_t jlog_mask(const char *in, char *out, size_t cap)
{
    sink s = {.out = out, .cap = out ? cap : 0, .len = 0};
    size_t i = 0;
    while (in && in[i] != '\0') {
        size_t plen = token_prefix(in, i);
        if (plen > 0) {
            sink_puts(&s, in + i, plen);
            sink_puts(&s, MASK_STARS, strlen(MASK_STARS));
            i += plen;
            while (is_word(in[i]))
                i++;
            continue;
        }
        if (!is_digit(in[i])) {
            sink_put(&s, in[i++]);
            continue;
        }
        size_t ndigits = 0, end = digit_run_end(in, i, &ndigits);
        if (run_is_card(in + i, end - i, ndigits))
            put_masked_run(&s, in + i, end - i, ndigits);
        else
            sink_puts(&s, in + i, end - i);
        i = end;
    }
    if (s.cap > 0)
        s.out[s.len < s.cap ? s.len : s.cap - 1] = '\0';
    return s.len;
}

/* ---- strings that jansson accepts ---------------------------------------------------------- */

/* Copies in[0..n) to out (cap >= 3n + 1 holds it all), each byte that starts no valid sequence
 * replaced by U+FFFD. Returns the bytes written (without the NUL). */
static size_t utf8_clean(const char *in, size_t n, char *out, size_t cap)
{
    const unsigned char *u = (const unsigned char *)in;
    size_t i = 0, o = 0;
    while (i < n) {
        size_t len = jw_utf8_seq(u + i, n - i);
        if (o + (len ? len : 3) >= cap)
            break;
        if (len == 0) {
            memcpy(out + o, JW_REPLACEMENT, 3);
            o += 3;
            i++;
            continue;
        }
        memcpy(out + o, in + i, len);
        o += len;
        i += len;
    }
    out[o] = '\0';
    return o;
}

/* Where to cut buf before max so that no UTF-8 sequence is split (at most 3 bytes back). */
static size_t utf8_cut(const char *buf, size_t max)
{
    size_t cut = max;
    while (cut > 0 && max - cut < 3 && ((unsigned char)buf[cut] & 0xC0) == 0x80)
        cut--;
    return cut;
}

/* The bytes of the non-NULL s that go into a line, before UTF-8 cleaning: masked when mask is set,
 * cut to JLOG_VALUE_MAX bytes (on a UTF-8 boundary, ending in "..."). Returns their count. */
static size_t value_raw(const char *s, int mask, char raw[JLOG_VALUE_MAX + 1])
{
    size_t n;
    if (mask) {
        n = jlog_mask(s, raw, JLOG_VALUE_MAX + 1);
    } else {
        n = strnlen(s, JLOG_VALUE_MAX + 1);
        memcpy(raw, s, n < JLOG_VALUE_MAX + 1 ? n : JLOG_VALUE_MAX);
        raw[JLOG_VALUE_MAX] = '\0';
    }
    if (n > JLOG_VALUE_MAX) {
        n = utf8_cut(raw, JLOG_VALUE_MAX - strlen(ELLIPSIS));
        memcpy(raw + n, ELLIPSIS, strlen(ELLIPSIS));
        n += strlen(ELLIPSIS);
    }
    return n;
}

/* A jansson string of s for a log line: value_raw, then bad UTF-8 bytes replaced. NULL s gives
 * null. NULL only when out of memory. Cost: ~4 KiB of stack. */
static json_t *text(const char *s, int mask)
{
    char raw[JLOG_VALUE_MAX + 1];
    char clean[3 * JLOG_VALUE_MAX + 1];
    if (!s)
        return json_null();
    size_t n = value_raw(s, mask, raw);
    size_t m = utf8_clean(raw, n, clean, sizeof clean);
    json_t *j = json_stringn(clean, m);
    if (!j)
        j = json_string(INVALID_TXT); /* cannot happen after utf8_clean; kept as the last guard */
    return j;
}

/* ---- masked copies of jlog_event's fields ---------------------------------------------- */

static int is_secret_key(const char *key)
{
    for (size_t k = 0; k < COUNT(secret_keys); k++) {
        if (strcasecmp(key, secret_keys[k]) == 0)
            return 1;
    }
    for (size_t k = 0; k < COUNT(secret_key_parts); k++) {
        if (strcasestr(key, secret_key_parts[k]))
            return 1;
    }
    return 0;
}

/* An integer that looks like a card number becomes its masked text; others stay as they are. */
static json_t *mask_integer(json_t *v)
{
    char digits[32], masked[32];
    snprintf(digits, sizeof digits, "%" JSON_INTEGER_FORMAT, json_integer_value(v));
    jlog_mask(digits, masked, sizeof masked);
    if (strcmp(digits, masked) == 0)
        return json_incref(v);
    return json_string(masked);
}

static json_t *mask_value(json_t *v, int depth);

/* The name under which a member goes into the line: ts/level/event of the fields do not replace
 * the line's own. */
static const char *member_key(const char *key, int top)
{
    static const char *const reserved[][2] = {
        {"ts", "field_ts"}, {"level", "field_level"}, {"event", "field_event"}};
    for (size_t k = 0; top && k < COUNT(reserved); k++) {
        if (strcmp(key, reserved[k][0]) == 0)
            return reserved[k][1];
    }
    return key;
}

/* The masked copy of the member key: val. NULL when out of memory. */
static json_t *mask_member(const char *key, json_t *val, int depth)
{
    if (!is_secret_key(key))
        return mask_value(val, depth + 1);
    return json_is_null(val) ? json_null() : json_string(MASK_STARS);
}

/* Sets the masked copy of every member of src into dst (top: the line itself). 0 or -1. */
static int mask_members(json_t *dst, json_t *src, int depth, int top)
{
    const char *key;
    json_t *val, *name = NULL, *copy = NULL;
    json_object_foreach(src, key, val)
    {
        copy = mask_member(key, val, depth);
        name = text(key, 1);
        if (!copy || !name)
            goto fail;
        int rc = json_object_set_new(dst, member_key(json_string_value(name), top), copy);
        copy = NULL; /* json_object_set_new took it, even when it failed */
        json_decref(name);
        name = NULL;
        if (rc != 0)
            goto fail;
    }
    return 0;
fail:
    json_decref(copy);
    json_decref(name);
    return -1;
}

static json_t *mask_array(json_t *src, int depth)
{
    json_t *dst = json_array(), *val;
    size_t i;
    if (!dst)
        goto fail;
    json_array_foreach(src, i, val)
    {
        if (json_array_append_new(dst, mask_value(val, depth + 1)) != 0)
            goto fail;
    }
    return dst;
fail:
    json_decref(dst);
    return NULL;
}

/* A new reference to the masked copy of v; NULL when out of memory. Recursion is bounded by
 * DEPTH_MAX, so a hostile nesting cannot exhaust the stack. */
static json_t *mask_value(json_t *v, int depth)
{
    json_t *dst;
    switch (json_typeof(v)) {
    case JSON_OBJECT:
        if (depth >= DEPTH_MAX)
            return json_string("<too deep>");
        dst = json_object();
        if (dst && mask_members(dst, v, depth, 0) != 0) {
            json_decref(dst);
            dst = NULL;
        }
        return dst;
    case JSON_ARRAY:
        if (depth >= DEPTH_MAX)
            return json_string("<too deep>");
        return mask_array(v, depth);
    case JSON_STRING:
        return text(json_string_value(v), 1);
    case JSON_INTEGER:
        return mask_integer(v);
    default: /* real, true, false, null: nothing to mask; shared, never modified */
        return json_incref(v);
    }
}

/* ---- lines ------------------------------------------------------------------------------- */

#define TS_SIZE 32 /* "2026-11-26T20:15:29.123Z" and its NUL, with room to spare */

/* The "2026-11-26T20:15:29" part of ts for the second last seen by this thread: gmtime_r and
 * strftime run once per second and thread, not once per line. */
typedef struct ts_cache {
    int valid;
    time_t sec;
    char date[24];
    size_t len;
} ts_cache;

static _Thread_local ts_cache t_ts;

/* "2026-11-26T20:15:29.123Z", UTC, millisecond precision, NUL-terminated. Returns its length. */
static size_t format_ts(char out[TS_SIZE])
{
    struct timespec now;
    clock_gettime(CLOCK_REALTIME, &now);
    if (!t_ts.valid || t_ts.sec != now.tv_sec) {
        struct tm tm;
        size_t n = 0;
        if (gmtime_r(&now.tv_sec, &tm))
            n = strftime(t_ts.date, sizeof t_ts.date, "%Y-%m-%dT%H:%M:%S", &tm);
        t_ts.date[n] = '\0'; /* "" for a year strftime cannot write in 23 bytes */
        t_ts.len = n;
        t_ts.sec = now.tv_sec;
        t_ts.valid = 1;
    }
    unsigned ms = (unsigned)(now.tv_nsec / 1000000L);
    char *p = out;
    memcpy(p, t_ts.date, t_ts.len);
    p += t_ts.len;
    *p++ = '.';
    *p++ = (char)('0' + ms / 100);
    *p++ = (char)('0' + ms / 10 % 10);
    *p++ = (char)('0' + ms % 10);
    *p++ = 'Z';
    *p = '\0';
    return (size_t)(p - out);
}

/* Milliseconds rounded to 0.1, as the answers show them; null for NaN or infinity. */
static json_t *ms_value(double ms)
{
    if (!isfinite(ms))
        return json_null();
    return json_real(round(ms * 10.0) / 10.0);
}

/* Sets key to val (stolen; NULL means out of memory). 0 or -1. */
static int put(json_t *obj, const char *key, json_t *val)
{
    if (!val)
        return -1;
    return json_object_set_new(obj, key, val);
}

/* {"ts":..,"level":..,"event":..}; NULL when out of memory. */
static json_t *new_line(jlog_level level, const char *event)
{
    char ts[TS_SIZE];
    json_t *line = json_object();
    if (!line)
        goto fail;
    size_t tslen = format_ts(ts);
    if (put(line, "ts", json_stringn(ts, tslen)) != 0 ||
        put(line, "level", json_string(jlog_level_name(level))) != 0 ||
        put(line, "event", text(event, 1)) != 0)
        goto fail;
    return line;
fail:
    json_decref(line);
    return NULL;
}

/* Writes all of buf; normally one write(2), continued only after a signal or a short write. */
static int write_all(int fd, const char *buf, size_t len)
{
    int rc = 0;
    size_t off = 0;
    pthread_mutex_lock(&g_write_lock);
    while (off < len) {
        ssize_t n = write(fd, buf + off, len - off);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0) {
            rc = -1;
            break;
        }
        off += (size_t)n;
    }
    pthread_mutex_unlock(&g_write_lock);
    return rc;
}

/* Dumps line + '\n' and writes it. 0 or -1. */
static int emit(const json_t *line)
{
    char stack[LINE_STACK];
    char *buf = stack;
    int rc = -1;
    size_t n = json_dumpb(line, stack, sizeof stack - 1, DUMP_FLAGS);
    if (n == 0)
        goto fail;
    if (n > sizeof stack - 1) {
        buf = malloc(n + 1);
        if (!buf || json_dumpb(line, buf, n, DUMP_FLAGS) != n)
            goto fail;
    }
    buf[n] = '\n';
    rc = write_all(atomic_load(&g_fd), buf, n + 1);
fail:
    if (buf != stack)
        free(buf);
    return rc;
}

int jlog_event(jlog_level level, const char *event, json_t *fields)
{
    json_t *line = NULL;
    int rc = 1;
    if (!jlog_enabled(level))
        goto done;
    rc = -1;
    line = new_line(level, event);
    if (!line)
        goto done;
    if (json_is_object(fields) && mask_members(line, fields, 0, 1) != 0)
        goto done;
    if (fields && !json_is_object(fields) && put(line, "fields", mask_value(fields, 1)) != 0)
        goto done;
    rc = emit(line);
done:
    json_decref(line);
    json_decref(fields);
    return rc;
}

/* {"outcome":..,"elapsed_ms":..,"http_status":..}, or only the outcome when cancelled. */
static json_t *validation_line(const jlog_validation *v)
{
    json_t *o = json_object();
    if (!o || put(o, "outcome", text(v->outcome, 1)) != 0)
        goto fail;
    if (!v->outcome || strcmp(v->outcome, "cancelled") != 0) {
        if (put(o, "elapsed_ms", ms_value(v->elapsed_ms)) != 0 ||
            put(o, "http_status",
                v->http_status > 0 ? json_integer(v->http_status) : json_null()) != 0)
            goto fail;
    }
    if (put(o, "attempts", json_integer((json_int_t)v->attempts)) != 0)
        goto fail;
    return o;
fail:
    json_decref(o);
    return NULL;
}

static json_t *validations_line(const jlog_validation *v, size_t nv)
{
    json_t *all = json_object(), *name = NULL;
    if (!all)
        goto fail;
    for (size_t i = 0; v && i < nv; i++) {
        name = text(v[i].name ? v[i].name : "?", 0);
        if (!name || put(all, json_string_value(name), validation_line(&v[i])) != 0)
            goto fail;
        json_decref(name);
        name = NULL;
    }
    return all;
fail:
    json_decref(name);
    json_decref(all);
    return NULL;
}

/* The checkout line built as a jansson tree: the reference for checkout_direct, and its fallback
 * for what it does not write itself. 0 or -1. */
static int checkout_tree(const char *request_id, const char *order_id, const char *status,
                         int http_status, double elapsed_ms, const jlog_validation *v, size_t nv)
{
    json_t *line = NULL;
    int rc = -1;
    line = new_line(JLOG_INFO, "checkout");
    if (!line)
        goto done;
    if (put(line, "request_id", text(request_id, 1)) != 0 ||
        put(line, "order_id", text(order_id, 1)) != 0 ||
        put(line, "status", text(status, 1)) != 0 ||
        put(line, "http_status", json_integer(http_status)) != 0 ||
        put(line, "elapsed_ms", ms_value(elapsed_ms)) != 0 ||
        put(line, "validations", validations_line(v, nv)) != 0)
        goto done;
    rc = emit(line);
done:
    json_decref(line);
    return rc;
}

/* ---- the checkout line, written directly ------------------------------------------------------
 * Every function here writes the bytes that json_dumpb(DUMP_FLAGS) writes for the same value of
 * checkout_tree. */

#define FAST_NAMES 32 /* validations compared for duplicate names; more go to checkout_tree */

/* As text(s, mask): null, or the masked, cut, cleaned and escaped string. */
static void line_text(jw *b, const char *s, int mask)
{
    char raw[JLOG_VALUE_MAX + 1];
    if (!s) {
        JW_LIT(b, "null");
        return;
    }
    jw_string(b, raw, value_raw(s, mask, raw));
}

/* "name":{...} of one validation; keys[i] gets where its escaped name is in b, and a name that
 * another validation already has sends the line to checkout_tree (where the later one wins). */
static void line_validation(jw *b, const jlog_validation *v, size_t i, size_t keys[][2])
{
    size_t at = b->len;
    line_text(b, v->name ? v->name : "?", 0);
    keys[i][0] = at;
    keys[i][1] = b->len - at;
    for (size_t k = 0; k < i && !b->fail; k++) {
        if (keys[k][1] == keys[i][1] && memcmp(b->p + keys[k][0], b->p + at, keys[i][1]) == 0)
            b->fail = 1;
    }
    JW_LIT(b, ":{\"outcome\":");
    line_text(b, v->outcome, 1);
    if (!v->outcome || strcmp(v->outcome, "cancelled") != 0) {
        JW_LIT(b, ",\"elapsed_ms\":");
        jw_tenths(b, v->elapsed_ms);
        JW_LIT(b, ",\"http_status\":");
        if (v->http_status > 0)
            jw_int(b, v->http_status);
        else
            JW_LIT(b, "null");
    }
    JW_LIT(b, ",\"attempts\":");
    jw_int(b, (long)v->attempts);
    jw_char(b, '}');
}

/* The whole checkout line, '\n' included, into b; b->fail when checkout_tree must write it. */
static void checkout_direct(jw *b, const char *request_id, const char *order_id, const char *status,
                            int http_status, double elapsed_ms, const jlog_validation *v, size_t nv)
{
    char ts[TS_SIZE];
    size_t keys[FAST_NAMES][2];
    if (v && nv > FAST_NAMES) {
        b->fail = 1;
        return;
    }
    size_t tslen = format_ts(ts);
    JW_LIT(b, "{\"ts\":\"");
    jw_raw(b, ts, tslen);
    JW_LIT(b, "\",\"level\":\"info\",\"event\":\"checkout\",\"request_id\":");
    line_text(b, request_id, 1);
    JW_LIT(b, ",\"order_id\":");
    line_text(b, order_id, 1);
    JW_LIT(b, ",\"status\":");
    line_text(b, status, 1);
    JW_LIT(b, ",\"http_status\":");
    jw_int(b, http_status);
    JW_LIT(b, ",\"elapsed_ms\":");
    jw_tenths(b, elapsed_ms);
    JW_LIT(b, ",\"validations\":{");
    for (size_t i = 0; v && i < nv && !b->fail; i++) {
        if (i > 0)
            jw_char(b, ',');
        line_validation(b, &v[i], i, keys);
    }
    JW_LIT(b, "}}\n");
}

int jlog_checkout(const char *request_id, const char *order_id, const char *status, int http_status,
                  double elapsed_ms, const jlog_validation *v, size_t nv)
{
    char buf[LINE_STACK];
    jw b = {.p = buf, .len = 0, .cap = sizeof buf, .fail = 0};
    if (!jlog_enabled(JLOG_INFO))
        return 1;
    checkout_direct(&b, request_id, order_id, status, http_status, elapsed_ms, v, nv);
    if (b.fail)
        return checkout_tree(request_id, order_id, status, http_status, elapsed_ms, v, nv);
    return write_all(atomic_load(&g_fd), buf, b.len);
}

int jlog_checkout_tree(const char *request_id, const char *order_id, const char *status,
                       int http_status, double elapsed_ms, const jlog_validation *v, size_t nv)
{
    if (!jlog_enabled(JLOG_INFO))
        return 1;
    return checkout_tree(request_id, order_id, status, http_status, elapsed_ms, v, nv);
}
