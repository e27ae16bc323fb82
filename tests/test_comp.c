/* Unit tests of lib/comp: which validations are compensated, the undo body, the done rule and the
 * undo request's Idempotency-Key. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <jansson.h>
#include <stdlib.h>
#include <string.h>

#include "comp.h"

static tg_result result(tg_state st, tg_kind kind)
{
    tg_result r;
    memset(&r, 0, sizeof r);
    r.state = st;
    r.kind = kind;
    return r;
}

static void test_which(void **state)
{
    (void)state;
    tg_result r = result(TG_OK, TG_KIND_NONE);
    assert_int_equal(comp_needed(&r, 1), 1); /* completed */
    r = result(TG_CANCELLED, TG_KIND_NONE);
    assert_int_equal(comp_needed(&r, 1), 1); /* cancelled after sending */
    assert_int_equal(comp_needed(&r, 0), 0); /* cancelled before sending */
    r = result(TG_FAILED, TG_TIMEOUT);
    assert_int_equal(comp_needed(&r, 1), 1);
    assert_int_equal(comp_needed(&r, 0), 0); /* timed out connecting: nothing left */
    r = result(TG_FAILED, TG_INVALID_RESPONSE);
    assert_int_equal(comp_needed(&r, 1), 1);
    r = result(TG_FAILED, TG_TRANSPORT);
    assert_int_equal(comp_needed(&r, 1), 1); /* reset after sending: unknown */
    assert_int_equal(comp_needed(&r, 0), 0); /* refused: nothing left */
    r = result(TG_FAILED, TG_REJECTED);
    assert_int_equal(comp_needed(&r, 1), 0);
    r = result(TG_FAILED, TG_UPSTREAM_ERROR);
    assert_int_equal(comp_needed(&r, 1), 0);
    r = result(TG_PENDING, TG_KIND_NONE);
    assert_int_equal(comp_needed(&r, 1), 0);
}

static void test_done(void **state)
{
    (void)state;
    for (long s = 200; s <= 299; s++)
        assert_int_equal(comp_done_status(s), 1);
    assert_int_equal(comp_done_status(404), 1);
    assert_int_equal(comp_done_status(409), 1);
    assert_int_equal(comp_done_status(410), 1);
    static const long not_done[] = {0,   100, 199, 300, 301, 400, 401, 402,
                                    403, 408, 422, 429, 500, 502, 503, 504};
    for (size_t i = 0; i < sizeof not_done / sizeof not_done[0]; i++)
        assert_int_equal(comp_done_status(not_done[i]), 0);
}

static void test_body(void **state)
{
    (void)state;
    size_t len = 0;
    const char value[] = "{\"token\":\"tok_visa\",\"amount\": 2598}";
    const char res[] = "{\"authorization\":\"auth-1\"}";
    char *b = comp_body("\"ord-1\"", 7, "payment", "\"payment\"", 9, value, sizeof value - 1, res,
                        sizeof res - 1, &len);
    assert_non_null(b);
    assert_int_equal(strlen(b), len);
    assert_string_equal(
        b, "{\"order_id\":\"ord-1\",\"validation\":\"payment\",\"payment\":{\"token\":"
           "\"tok_visa\",\"amount\": 2598},\"result\":{\"authorization\":\"auth-1\"}}");
    json_error_t je;
    json_t *doc = json_loads(b, JSON_REJECT_DUPLICATES, &je);
    assert_non_null(doc);
    json_decref(doc);
    free(b);
    b = comp_body("\"o\"", 3, "inventory", "\"items\"", 7, "[]", 2, NULL, 0, &len);
    assert_string_equal(
        b, "{\"order_id\":\"o\",\"validation\":\"inventory\",\"items\":[],\"result\":null}");
    free(b);
}

static void test_idempotency_key(void **state)
{
    (void)state;
    char out[600];
    assert_int_equal(comp_idempotency_key("k-1", "rid", "payment", out, sizeof out), 0);
    assert_string_equal(out, "k-1:compensate:payment");
    assert_int_equal(comp_idempotency_key("\"k-2\"", "rid", "payment", out, sizeof out), 0);
    assert_string_equal(out, "k-2:compensate:payment");
    assert_int_equal(comp_idempotency_key(NULL, "abc123", "inventory", out, sizeof out), 0);
    assert_string_equal(out, "abc123:compensate:inventory");
    /* issue #21: the key is the one the store uses (idem_parse_key): the quoted form's escapes are
     * undone, so "a\\b" and a\b are one key, and so are "a\"b" and a"b */
    assert_int_equal(comp_idempotency_key("\"a\\\\b\"", "rid", "p", out, sizeof out), 0);
    assert_string_equal(out, "a\\b:compensate:p");
    assert_int_equal(comp_idempotency_key("a\\b", "rid", "p", out, sizeof out), 0);
    assert_string_equal(out, "a\\b:compensate:p");
    assert_int_equal(comp_idempotency_key("\"a\\\"b\"", "rid", "p", out, sizeof out), 0);
    assert_string_equal(out, "a\"b:compensate:p");
    assert_int_equal(comp_idempotency_key("a\"b", "rid", "p", out, sizeof out), 0);
    assert_string_equal(out, "a\"b:compensate:p");
    /* a header that is no key (store "off" forwards it uninspected): too long, a space, a lone
     * quote, unterminated: the request id, as when there is none; never an empty key */
    char big[700];
    memset(big, 'k', sizeof big - 1);
    big[sizeof big - 1] = '\0';
    const char *nokey[] = {big, "\"k 2\"", "a b", "\"", "\"abc", "\"\"", ""};
    for (size_t i = 0; i < sizeof nokey / sizeof nokey[0]; i++) {
        assert_int_equal(comp_idempotency_key(nokey[i], "rid-9", "p", out, sizeof out), 0);
        assert_string_equal(out, "rid-9:compensate:p");
    }
    big[255] = '\0'; /* the longest key: used whole */
    assert_int_equal(comp_idempotency_key(big, "rid-9", "payment", out, sizeof out), 0);
    assert_int_equal(strlen(out), 255 + strlen(":compensate:payment"));
    assert_memory_equal(out, big, 255);
    char small[8];
    assert_int_equal(comp_idempotency_key("longer-key", "rid", "payment", small, sizeof small), -1);
    assert_string_equal(small, "");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_which),
        cmocka_unit_test(test_done),
        cmocka_unit_test(test_body),
        cmocka_unit_test(test_idempotency_key),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
