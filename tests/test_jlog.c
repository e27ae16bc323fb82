/* Unit tests of service/jlog: the lines are written to a temp file (or a pipe, for the concurrency
 * test), read back and parsed with jansson, so every assertion is about what an operator would
 * see on stderr. */
#include "../service/jlog.h"

#include <fcntl.h>
#include <math.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#define MAX_LINES 64

static FILE *out_file; /* the log of the current test */

static int setup(void **state)
{
    (void)state;
    out_file = tmpfile();
    if (!out_file)
        return -1;
    jlog_init(fileno(out_file), JLOG_DEBUG);
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    jlog_init(2, JLOG_INFO);
    fclose(out_file);
    return 0;
}

/* Everything logged so far, NUL-terminated; the caller frees it. */
static char *captured(void)
{
    struct stat st;
    int fd = fileno(out_file);
    assert_int_equal(fstat(fd, &st), 0);
    char *all = malloc((size_t)st.st_size + 1);
    assert_non_null(all);
    assert_int_equal(pread(fd, all, (size_t)st.st_size, 0), st.st_size);
    all[st.st_size] = '\0';
    return all;
}

/* Splits all into lines, asserting that it ends with '\n' and that each line is one JSON object
 * without duplicate keys. Returns the count; lines[i] are new references. */
static size_t parse_lines(const char *all, json_t **lines, size_t max)
{
    size_t n = 0, len = strlen(all);
    if (len > 0)
        assert_int_equal(all[len - 1], '\n');
    for (const char *p = all; *p != '\0';) {
        const char *nl = strchr(p, '\n');
        json_error_t err;
        assert_non_null(nl);
        assert_true(n < max);
        lines[n] = json_loadb(p, (size_t)(nl - p), JSON_REJECT_DUPLICATES, &err);
        if (!lines[n])
            fail_msg("line %zu is not JSON (%s): %.*s", n, err.text, (int)(nl - p), p);
        assert_true(json_is_object(lines[n]));
        n++;
        p = nl + 1;
    }
    return n;
}

static void free_lines(json_t **lines, size_t n)
{
    for (size_t i = 0; i < n; i++)
        json_decref(lines[i]);
}

/* The one line logged so far (asserted), parsed; *raw gets the text when raw is not NULL. */
static json_t *only_line(char **raw)
{
    json_t *lines[MAX_LINES];
    char *all = captured();
    assert_int_equal(parse_lines(all, lines, MAX_LINES), 1);
    if (raw)
        *raw = all;
    else
        free(all);
    return lines[0];
}

static const char *str_at(json_t *obj, const char *path)
{
    json_t *v = json_object_get(obj, path);
    assert_true(json_is_string(v));
    return json_string_value(v);
}

static void assert_mask(const char *in, const char *want)
{
    char out[256];
    size_t n = jlog_mask(in, out, sizeof out);
    assert_string_equal(out, want);
    assert_int_equal(n, strlen(want));
}

/* ---- levels -------------------------------------------------------------------------------- */

static void test_level_parse(void **state)
{
    (void)state;
    const char *names[] = {"debug", "info", "warn", "error", "off"};
    for (int i = 0; i < 5; i++) {
        jlog_level l = JLOG_OFF;
        assert_int_equal(jlog_level_parse(names[i], &l), 0);
        assert_int_equal(l, (jlog_level)i);
        assert_string_equal(jlog_level_name(l), names[i]);
    }
    const char *bad[] = {"INFO", "", "warning", "info ", "trace"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        jlog_level l = JLOG_WARN;
        assert_int_equal(jlog_level_parse(bad[i], &l), -1);
        assert_int_equal(l, JLOG_WARN);
    }
    jlog_level l;
    assert_int_equal(jlog_level_parse(NULL, &l), -1);
    assert_null(jlog_level_name((jlog_level)7));
}

static void test_levels_filter(void **state)
{
    (void)state;
    jlog_init(fileno(out_file), JLOG_WARN);
    assert_false(jlog_enabled(JLOG_DEBUG));
    assert_false(jlog_enabled(JLOG_INFO));
    assert_true(jlog_enabled(JLOG_WARN));
    assert_true(jlog_enabled(JLOG_ERROR));
    assert_false(jlog_enabled(JLOG_OFF));
    assert_int_equal(jlog_event(JLOG_DEBUG, "d", json_pack("{s:i}", "n", 1)), 1);
    assert_int_equal(jlog_event(JLOG_INFO, "i", NULL), 1);
    assert_int_equal(jlog_checkout("r", "o", "accepted", 200, 1.0, NULL, 0), 1);
    assert_int_equal(jlog_event(JLOG_WARN, "w", NULL), 0);
    assert_int_equal(jlog_event(JLOG_ERROR, "e", NULL), 0);
    assert_int_equal(jlog_event(JLOG_OFF, "never", NULL), 1);

    jlog_init(fileno(out_file), JLOG_OFF);
    assert_false(jlog_enabled(JLOG_ERROR));
    assert_int_equal(jlog_event(JLOG_ERROR, "e2", NULL), 1);

    json_t *lines[MAX_LINES];
    char *all = captured();
    assert_int_equal(parse_lines(all, lines, MAX_LINES), 2);
    assert_string_equal(str_at(lines[0], "level"), "warn");
    assert_string_equal(str_at(lines[0], "event"), "w");
    assert_string_equal(str_at(lines[1], "level"), "error");
    assert_string_equal(str_at(lines[1], "event"), "e");
    free_lines(lines, 2);
    free(all);
}

/* ---- line shape ------------------------------------------------------------------------------ */

static void test_event_line_shape(void **state)
{
    (void)state;
    char *raw;
    assert_int_equal(
        jlog_event(JLOG_INFO, "start",
                   json_pack("{s:s,s:i,s:b}", "listen", "127.0.0.1:8080", "port", 8080, "tls", 0)),
        0);
    json_t *line = only_line(&raw);
    /* ts, level and event come first, in that order. */
    assert_memory_equal(raw, "{\"ts\":\"", 7);
    assert_non_null(strstr(raw, "Z\",\"level\":\"info\",\"event\":\"start\",\"listen\":"));
    const char *ts = str_at(line, "ts");
    assert_int_equal(strlen(ts), 24); /* 2026-11-26T20:15:29.123Z */
    assert_int_equal(ts[4], '-');
    assert_int_equal(ts[10], 'T');
    assert_int_equal(ts[19], '.');
    assert_int_equal(ts[23], 'Z');
    assert_string_equal(str_at(line, "listen"), "127.0.0.1:8080");
    assert_int_equal(json_integer_value(json_object_get(line, "port")), 8080);
    assert_true(json_is_false(json_object_get(line, "tls")));
    assert_int_equal(json_object_size(line), 6);
    json_decref(line);
    free(raw);
}

static void test_event_reserved_and_odd_fields(void **state)
{
    (void)state;
    assert_int_equal(jlog_event(JLOG_WARN, "x", json_pack("{s:s,s:i}", "ts", "fake", "level", 9)),
                     0);
    assert_int_equal(jlog_event(JLOG_WARN, "y", json_integer(5)), 0);
    assert_int_equal(jlog_event(JLOG_WARN, NULL, NULL), 0);
    json_t *lines[MAX_LINES];
    char *all = captured();
    assert_int_equal(parse_lines(all, lines, MAX_LINES), 3);
    assert_int_equal(strlen(str_at(lines[0], "ts")), 24);
    assert_string_equal(str_at(lines[0], "level"), "warn");
    assert_string_equal(str_at(lines[0], "field_ts"), "fake");
    assert_int_equal(json_integer_value(json_object_get(lines[0], "field_level")), 9);
    assert_int_equal(json_integer_value(json_object_get(lines[1], "fields")), 5);
    assert_true(json_is_null(json_object_get(lines[2], "event")));
    assert_int_equal(json_object_size(lines[2]), 3);
    free_lines(lines, 3);
    free(all);
}

static void test_checkout_line(void **state)
{
    (void)state;
    const jlog_validation v[] = {
        {"address", "ok", 1.23, 200, 1},
        {"inventory", "rejected", 6.08, 409, 1},
        {"payment", "cancelled", 0, 0, 0},
        {"fraud", "transport", 0.46, 0, 3},
    };
    char *raw;
    assert_int_equal(jlog_checkout("req-1", "ord-1001", "rejected", 422, 6.34, v, 4), 0);
    json_t *line = only_line(&raw);
    const char *want = "\"level\":\"info\",\"event\":\"checkout\",\"request_id\":\"req-1\","
                       "\"order_id\":\"ord-1001\",\"status\":\"rejected\",\"http_status\":422,"
                       "\"elapsed_ms\":6.3,\"validations\":{\"address\":{\"outcome\":\"ok\","
                       "\"elapsed_ms\":1.2,\"http_status\":200,\"attempts\":1},\"inventory\":{"
                       "\"outcome\":\"rejected\",\"elapsed_ms\":6.1,\"http_status\":409,"
                       "\"attempts\":1},\"payment\":{\"outcome\":\"cancelled\",\"attempts\":0},"
                       "\"fraud\":{\"outcome\":\"transport\",\"elapsed_ms\":0.5,"
                       "\"http_status\":null,\"attempts\":3}}}\n";
    assert_non_null(strstr(raw, want));
    assert_int_equal(strlen(raw), 33 + strlen(want)); /* {"ts":"<24>", + the rest */
    json_t *payment = json_object_get(json_object_get(line, "validations"), "payment");
    assert_int_equal(json_object_size(payment), 2); /* outcome and attempts */
    json_decref(line);
    free(raw);
}

static void test_checkout_nulls(void **state)
{
    (void)state;
    assert_int_equal(jlog_checkout(NULL, NULL, "invalid_json", 400, 0.04, NULL, 0), 0);
    json_t *line = only_line(NULL);
    assert_true(json_is_null(json_object_get(line, "request_id")));
    assert_true(json_is_null(json_object_get(line, "order_id")));
    assert_string_equal(str_at(line, "status"), "invalid_json");
    assert_int_equal(json_integer_value(json_object_get(line, "http_status")), 400);
    assert_true(json_real_value(json_object_get(line, "elapsed_ms")) == 0.0);
    assert_int_equal(json_object_size(json_object_get(line, "validations")), 0);
    json_decref(line);
}

/* ---- masking --------------------------------------------------------------------------------- */

static void test_mask_tokens(void **state)
{
    (void)state;
    assert_mask("tok_visa", "tok_****");
    assert_mask("tok_4111111111111111", "tok_****");
    assert_mask("pm_card_visa", "pm_****");
    assert_mask("card_1MvNabc", "card_****");
    assert_mask("card_declined", "card_****"); /* documented over-masking */
    assert_mask("sk_live_51Habc", "sk_live_****");
    assert_mask("sk_test_abc", "sk_test_****");
    assert_mask("rk_live_abc", "rk_live_****");
    assert_mask("x=tok_visa&y=pm_123 (tok_mastercard)", "x=tok_****&y=pm_**** (tok_****)");
    assert_mask("\"tok_visa\"", "\"tok_****\"");
    /* Not at the start of a word, nothing after the prefix, other case: not tokens. */
    assert_mask("stok_visa", "stok_visa");
    assert_mask("my_tok_visa", "my_tok_visa");
    assert_mask("task_test_1", "task_test_1");
    assert_mask("tok_", "tok_");
    assert_mask("tok_ x", "tok_ x");
    assert_mask("TOK_visa", "TOK_visa");
    assert_mask("", "");
}

static void test_mask_card_numbers(void **state)
{
    (void)state;
    assert_mask("4111111111111111", "************1111");
    assert_mask("4111 1111 1111 1111", "**** **** **** 1111");
    assert_mask("4111-1111-1111-1111", "****-****-****-1111");
    assert_mask("card 5555555555554444, thanks", "card ************4444, thanks");
    assert_mask("378282246310005", "***********0005");           /* Amex, 15 digits */
    assert_mask("4222222222222", "*********2222");               /* 13 digits, passes Luhn */
    assert_mask("ord4111111111111111x", "ord************1111x"); /* glued to letters */
    assert_mask("café 4111111111111111", "café ************1111");
    /* The documented rule: 15+ digits are masked without Luhn, 13-14 only with it. */
    assert_mask("4111111111111112", "************1112");
    assert_mask("41111111111111111111", "****************1111"); /* 20 digits */
    assert_mask("4111111111111111 123", "***************1 123"); /* 19 digits: a PAN + a CVC */
    assert_mask("1764188129123", "1764188129123"); /* a 13-digit ms timestamp failing Luhn */
    assert_mask("12345678901234", "12345678901234");
    /* Short runs and runs that separators do not join stay as they are. */
    assert_mask("2598", "2598");
    assert_mask("12345", "12345");
    assert_mask("ord-1001", "ord-1001");
    assert_mask("2026-11-26", "2026-11-26");
    assert_mask("+1 555-123-4567", "+1 555-123-4567");
    assert_mask("4111  1111 1111 1111", "4111  1111 1111 1111");
    assert_mask("4111--1111-1111-1111", "4111--1111-1111-1111");
    assert_mask("4111111111111111-", "************1111-");
}

static void test_mask_bounds(void **state)
{
    (void)state;
    char out[5];
    assert_int_equal(jlog_mask("tok_visa", out, sizeof out), 8);
    assert_string_equal(out, "tok_");
    assert_int_equal(jlog_mask("4111111111111111", NULL, 0), 16);
    char one[1] = {'x'};
    assert_int_equal(jlog_mask("abc", one, 1), 3);
    assert_int_equal(one[0], '\0');
    assert_int_equal(jlog_mask(NULL, out, sizeof out), 0);
    assert_string_equal(out, "");
}

static void test_checkout_never_shows_secrets(void **state)
{
    (void)state;
    const jlog_validation v[] = {{"payment", "ok", 2.0, 200, 1}};
    assert_int_equal(jlog_checkout("tok_visa", "4111111111111111", "accepted", 200, 3, v, 1), 0);
    assert_int_equal(
        jlog_checkout("req 4111-1111-1111-1111", "ord tok_visa", "accepted", 200, 3, v, 1), 0);
    assert_int_equal(jlog_checkout("r", "4111 1111 1111 1111", "accepted", 200, 3, v, 1), 0);
    json_t *lines[MAX_LINES];
    char *all = captured();
    assert_int_equal(parse_lines(all, lines, MAX_LINES), 3);
    assert_null(strstr(all, "tok_visa"));
    assert_null(strstr(all, "4111111111111111"));
    assert_null(strstr(all, "4111-1111-1111-1111"));
    assert_null(strstr(all, "4111 1111"));
    assert_null(strstr(all, "visa"));
    assert_string_equal(str_at(lines[0], "request_id"), "tok_****");
    assert_string_equal(str_at(lines[0], "order_id"), "************1111");
    assert_string_equal(str_at(lines[1], "request_id"), "req ****-****-****-1111");
    assert_string_equal(str_at(lines[1], "order_id"), "ord tok_****");
    assert_string_equal(str_at(lines[2], "order_id"), "**** **** **** 1111");
    free_lines(lines, 3);
    free(all);
}

static void test_event_masks_secret_keys(void **state)
{
    (void)state;
    json_t *fields =
        json_pack("{s:{s:s,s:i,s:s,s:{s:s,s:i},s:i,s:n},s:s,s:s,s:s,s:I,s:[{s:s,s:i},s],s:i,s:s}",
                  "payment", "token", "tok_visa", "amount", 100, "method", "card", "card", "number",
                  "4242424242424242", "exp", 12, "cvc", 123, "secret", "access_token", "eyJhbGciOi",
                  "Password", "hunter2", "note", "paid with tok_mastercard and 5555555555554444",
                  "ref", (json_int_t)4111111111111111LL, "items", "sku", "SKU-1", "quantity", 2,
                  "tok_abc", "postal", 12345, "tok_key", "v");
    assert_non_null(fields);
    json_incref(fields); /* keep the caller's object to check that it is left untouched */
    char *raw;
    assert_int_equal(jlog_event(JLOG_INFO, "upstream", fields), 0);
    json_t *line = only_line(&raw);
    json_t *payment = json_object_get(line, "payment");
    assert_int_equal(json_integer_value(json_object_get(payment, "amount")), 100);
    assert_string_equal(str_at(payment, "token"), "****");
    assert_string_equal(str_at(payment, "method"), "card");
    assert_string_equal(str_at(payment, "card"), "****");
    assert_string_equal(str_at(payment, "cvc"), "****");
    assert_true(json_is_null(json_object_get(payment, "secret")));
    assert_string_equal(str_at(line, "access_token"), "****");
    assert_string_equal(str_at(line, "Password"), "****");
    assert_string_equal(str_at(line, "note"), "paid with tok_**** and ************4444");
    assert_string_equal(str_at(line, "ref"), "************1111");
    json_t *items = json_object_get(line, "items");
    assert_string_equal(str_at(json_array_get(items, 0), "sku"), "SKU-1");
    assert_string_equal(json_string_value(json_array_get(items, 1)), "tok_****");
    assert_int_equal(json_integer_value(json_object_get(line, "postal")), 12345);
    assert_string_equal(str_at(line, "tok_****"), "v"); /* a key is masked too */
    const char *secrets[] = {
        "tok_visa",         "4242",    "hunter2", "eyJ", "tok_mastercard", "5555555555554444",
        "4111111111111111", "tok_key", "123,"};
    for (size_t i = 0; i < sizeof secrets / sizeof secrets[0]; i++) {
        if (strstr(raw, secrets[i]))
            fail_msg("secret %s logged: %s", secrets[i], raw);
    }
    /* The caller's object is not modified. */
    assert_string_equal(
        json_string_value(json_object_get(json_object_get(fields, "payment"), "token")),
        "tok_visa");
    json_decref(fields);
    json_decref(line);
    free(raw);
}

/* ---- hostile strings ------------------------------------------------------------------------- */

static void test_control_chars_stay_on_one_line(void **state)
{
    (void)state;
    const char *nasty = "a\"b\\c\nd\r\te\x01\x1f}{\"x\":1\n";
    assert_int_equal(jlog_event(JLOG_INFO, "e\nv", json_pack("{s:s}", "msg", nasty)), 0);
    assert_int_equal(jlog_checkout("r\n1", "o\"\n}", "accepted", 200, 1, NULL, 0), 0);
    json_t *lines[MAX_LINES];
    char *all = captured();
    assert_int_equal(parse_lines(all, lines, MAX_LINES), 2); /* exactly 2 newlines in all */
    assert_string_equal(str_at(lines[0], "msg"), nasty);
    assert_string_equal(str_at(lines[0], "event"), "e\nv");
    assert_string_equal(str_at(lines[1], "request_id"), "r\n1");
    assert_string_equal(str_at(lines[1], "order_id"), "o\"\n}");
    free_lines(lines, 2);
    free(all);
}

static void test_invalid_utf8_gives_valid_line(void **state)
{
    (void)state;
    /* A stray byte, a truncated sequence, a surrogate, an overlong '/', above U+10FFFF. */
    assert_int_equal(jlog_checkout("ord-\xff\xfe-1", "\xc3", "accepted", 200, 1, NULL, 0), 0);
    json_t *fields = json_pack("{s:s}", "ok", "caf\xc3\xa9");
    const char *bad[] = {"\xed\xa0\x80", "\xc0\xaf", "\xf4\x90\x80\x80", "x\xe2\x82"};
    json_t *lines[MAX_LINES];
    assert_int_equal(jlog_event(JLOG_INFO, "utf8", fields), 0);
    for (size_t i = 0; i < 4; i++)
        assert_int_equal(jlog_checkout("r", bad[i], "accepted", 200, 1, NULL, 0), 0);
    char *all = captured();
    assert_int_equal(parse_lines(all, lines, MAX_LINES), 6);
    assert_string_equal(str_at(lines[0], "request_id"), "ord-\xef\xbf\xbd\xef\xbf\xbd-1");
    assert_string_equal(str_at(lines[0], "order_id"), "\xef\xbf\xbd");
    assert_string_equal(str_at(lines[1], "ok"), "caf\xc3\xa9");
    for (size_t i = 2; i < 6; i++)
        assert_non_null(strstr(str_at(lines[i], "order_id"), "\xef\xbf\xbd"));
    free_lines(lines, 6);
    free(all);
}

static void test_long_values_are_cut(void **state)
{
    (void)state;
    char big[5000];
    memset(big, 'a', sizeof big - 1);
    big[sizeof big - 1] = '\0';
    char accents[3001]; /* 1500 x "é": a cut in the middle of one must not show */
    for (size_t i = 0; i < 3000; i += 2)
        memcpy(accents + i, "\xc3\xa9", 2);
    accents[3000] = '\0';
    assert_int_equal(jlog_event(JLOG_INFO, "big", json_pack("{s:s,s:s}", "a", big, "b", accents)),
                     0);
    json_t *line = only_line(NULL);
    const char *a = str_at(line, "a"), *b = str_at(line, "b");
    assert_true(strlen(a) <= JLOG_VALUE_MAX && strlen(a) > JLOG_VALUE_MAX - 8);
    assert_string_equal(a + strlen(a) - 3, "...");
    assert_true(strlen(b) <= JLOG_VALUE_MAX);
    assert_string_equal(b + strlen(b) - 3, "...");
    assert_null(strstr(b, "\xef\xbf\xbd"));
    json_decref(line);
}

/* ---- the direct writer against the jansson tree ------------------------------------------- */

/* Logs the same checkout with jlog_checkout and jlog_checkout_tree and asserts that both lines are
 * the same bytes after their "ts" (which may differ by a millisecond). */
static void assert_same_as_tree(const char *rid, const char *oid, const char *status, int http,
                                double ms, const jlog_validation *v, size_t nv)
{
    int fd = fileno(out_file);
    assert_int_equal(ftruncate(fd, 0), 0);
    assert_int_equal(lseek(fd, 0, SEEK_SET), 0);
    assert_int_equal(jlog_checkout(rid, oid, status, http, ms, v, nv), 0);
    assert_int_equal(jlog_checkout_tree(rid, oid, status, http, ms, v, nv), 0);
    char *all = captured();
    char *second = strchr(all, '\n');
    assert_non_null(second);
    second++;
    size_t first_len = (size_t)(second - all);
    assert_int_equal(strlen(second), first_len);
    const size_t ts_len = 33; /* {"ts":"2026-11-26T20:15:29.123Z", */
    assert_true(first_len > ts_len);
    assert_memory_equal(all, "{\"ts\":\"", 7);
    assert_memory_equal(all + ts_len, second + ts_len, first_len - ts_len);
    free(all);
}

static void test_checkout_direct_matches_tree(void **state)
{
    (void)state;
    static char big[5000], accents[3001], nasty[256];
    memset(big, 'a', sizeof big - 1);
    for (size_t i = 0; i + 1 < sizeof accents; i += 2)
        memcpy(accents + i, "\xc3\xa9", 2);
    for (size_t i = 0; i < sizeof nasty - 1; i++)
        nasty[i] = (char)(i + 1); /* every byte value but NUL: escapes, invalid UTF-8 */
    const jlog_validation three[] = {
        {"address", "ok", 1.23, 200, 1},
        {"inventory", "rejected", 6.08, 409, 1},
        {"payment", "cancelled", 0, 0, 1},
    };
    const jlog_validation odd[] = {
        {NULL, NULL, -1.0, -5, 1},
        {"a\"b\n\x01", "tok_visa 4111111111111111", 1e20, 0, 1},
        {"\xff\xfe", "cancelled", NAN, 0, 1},
        {"caf\xc3\xa9", "ok", INFINITY, 200, 1},
        {"x", "ok", 0.04999, 2147483647, 1},
        {"y", "ok", 0.05, 1, 1},
    };
    const jlog_validation dup[] = {{"a", "ok", 1, 200, 1}, {"a", "failed", 2, 500, 1}};
    jlog_validation many[40], long_names[20];
    char names[40][8];
    for (size_t i = 0; i < 40; i++) {
        snprintf(names[i], sizeof names[i], "v%zu", i);
        many[i] = (jlog_validation){names[i], "ok", (double)i * 1.37, 200, 1};
    }
    for (size_t i = 0; i < 20; i++)
        long_names[i] = (jlog_validation){accents + 2 * i, "ok", 1, 200, 1}; /* line over 4 KiB */

    assert_same_as_tree("req-1", "ord-1001", "rejected", 422, 6.34, three, 3);
    assert_same_as_tree(NULL, NULL, "invalid_json", 400, 0.04, NULL, 0);
    assert_same_as_tree(nasty, nasty + 100, nasty + 200, -1, -0.0, odd, 6);
    assert_same_as_tree(big, accents, "accepted", 200, 1e14, three, 3);
    assert_same_as_tree("r", "o", "s", 0, -3.2, dup, 2);
    assert_same_as_tree("r", "o", "s", 0, 999999999.96, many, 40);
    assert_same_as_tree("r", "o", "s", 0, NAN, long_names, 20);
    assert_same_as_tree("pm_123 card_9 sk_live_x", "4111-1111-1111-1111", "a b", 200, 5, three, 2);
    /* Random bytes: whatever a client sends as ids must come out the same both ways. */
    unsigned seed = 12345;
    for (int round = 0; round < 300; round++) {
        char r[3][64];
        for (size_t k = 0; k < 3; k++) {
            size_t len = (size_t)(rand_r(&seed) % 63);
            for (size_t i = 0; i < len; i++) {
                r[k][i] = (char)(rand_r(&seed) % 255 + 1);
            }
            r[k][len] = '\0';
        }
        jlog_validation v[3] = {{r[2], r[0], rand_r(&seed) % 100000 / 7.0, rand_r(&seed) % 600, 1},
                                {"b", r[1], 1, 0, 1},
                                {"c", "cancelled", 0, 0, 1}};
        assert_same_as_tree(r[0], r[1], r[2], rand_r(&seed) % 600, rand_r(&seed) / 3.0, v, 3);
    }
}

static void test_write_failure_is_reported(void **state)
{
    (void)state;
    jlog_init(-1, JLOG_INFO);
    assert_int_equal(jlog_event(JLOG_ERROR, "lost", json_pack("{s:i}", "n", 1)), -1);
    assert_int_equal(jlog_checkout("r", "o", "accepted", 200, 1, NULL, 0), -1);
}

/* ---- threads ----------------------------------------------------------------------------------
 */

#define THREADS      4
#define PER_THREAD   1000
#define BIG_EVERY    50 /* every 50th line is ~6 KiB, past PIPE_BUF, where pipes may split */
#define LINE_PADDING 1000

typedef struct reader {
    int fd;
    char *buf;
    size_t len, cap;
} reader;

static void *read_pipe(void *arg)
{
    reader *r = arg;
    for (;;) {
        if (r->cap - r->len < 65536) {
            r->cap = r->cap * 2 + 65536;
            r->buf = realloc(r->buf, r->cap);
            if (!r->buf)
                return NULL;
        }
        ssize_t n = read(r->fd, r->buf + r->len, r->cap - r->len - 1);
        if (n <= 0)
            break;
        r->len += (size_t)n;
    }
    r->buf[r->len] = '\0';
    return NULL;
}

static void *log_lines(void *arg)
{
    long id = (long)(intptr_t)arg;
    char pad[LINE_PADDING + 1];
    memset(pad, 'p', LINE_PADDING);
    pad[LINE_PADDING] = '\0';
    for (long i = 0; i < PER_THREAD; i++) {
        json_t *f = json_pack("{s:i,s:i}", "thread", (json_int_t)id, "seq", (json_int_t)i);
        for (int k = 0; i % BIG_EVERY == 0 && k < 6; k++) {
            char key[16];
            snprintf(key, sizeof key, "pad%d", k);
            json_object_set_new(f, key, json_string(pad));
        }
        if (jlog_event(JLOG_INFO, "tick", f) != 0)
            return (void *)1;
    }
    return NULL;
}

/* One line of the pipe's output: a JSON object from thread t with seq s, marked as seen. */
static void check_tick(const char *p, size_t len, unsigned char seen[THREADS][PER_THREAD])
{
    json_error_t err;
    json_t *o = json_loadb(p, len, JSON_REJECT_DUPLICATES, &err);
    if (!o)
        fail_msg("interleaved or broken line (%s): %.80s", err.text, p);
    json_int_t t = json_integer_value(json_object_get(o, "thread"));
    json_int_t s = json_integer_value(json_object_get(o, "seq"));
    assert_true(t >= 0 && t < THREADS && s >= 0 && s < PER_THREAD);
    assert_int_equal(seen[t][s], 0);
    seen[t][s] = 1;
    assert_int_equal(json_object_size(o), s % BIG_EVERY == 0 ? 11 : 5);
    json_decref(o);
}

static void test_threads_never_interleave(void **state)
{
    (void)state;
    int fds[2];
    assert_int_equal(pipe(fds), 0);
    reader r = {.fd = fds[0]};
    pthread_t rt, wt[THREADS];
    assert_int_equal(pthread_create(&rt, NULL, read_pipe, &r), 0);
    jlog_init(fds[1], JLOG_INFO);
    for (long i = 0; i < THREADS; i++)
        assert_int_equal(pthread_create(&wt[i], NULL, log_lines, (void *)(intptr_t)i), 0);
    for (int i = 0; i < THREADS; i++) {
        void *ret;
        pthread_join(wt[i], &ret);
        assert_null(ret);
    }
    close(fds[1]);
    pthread_join(rt, NULL);
    close(fds[0]);
    assert_non_null(r.buf);

    static unsigned char seen[THREADS][PER_THREAD];
    size_t lines = 0;
    for (const char *p = r.buf; *p != '\0'; lines++) {
        const char *nl = strchr(p, '\n');
        assert_non_null(nl);
        check_tick(p, (size_t)(nl - p), seen);
        p = nl + 1;
    }
    assert_int_equal(lines, THREADS * PER_THREAD);
    free(r.buf);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_level_parse),
        cmocka_unit_test_setup_teardown(test_levels_filter, setup, teardown),
        cmocka_unit_test_setup_teardown(test_event_line_shape, setup, teardown),
        cmocka_unit_test_setup_teardown(test_event_reserved_and_odd_fields, setup, teardown),
        cmocka_unit_test_setup_teardown(test_checkout_line, setup, teardown),
        cmocka_unit_test_setup_teardown(test_checkout_nulls, setup, teardown),
        cmocka_unit_test(test_mask_tokens),
        cmocka_unit_test(test_mask_card_numbers),
        cmocka_unit_test(test_mask_bounds),
        cmocka_unit_test_setup_teardown(test_checkout_never_shows_secrets, setup, teardown),
        cmocka_unit_test_setup_teardown(test_event_masks_secret_keys, setup, teardown),
        cmocka_unit_test_setup_teardown(test_control_chars_stay_on_one_line, setup, teardown),
        cmocka_unit_test_setup_teardown(test_invalid_utf8_gives_valid_line, setup, teardown),
        cmocka_unit_test_setup_teardown(test_long_values_are_cut, setup, teardown),
        cmocka_unit_test_setup_teardown(test_checkout_direct_matches_tree, setup, teardown),
        cmocka_unit_test_setup_teardown(test_write_failure_is_reported, setup, teardown),
        cmocka_unit_test_setup_teardown(test_threads_never_interleave, setup, teardown),
    };
    return cmocka_run_group_tests_name("jlog", tests, NULL, NULL);
}
