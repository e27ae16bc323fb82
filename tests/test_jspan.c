/* jspan: raw member spans of a JSON object, checked against jansson's own reading of the same
 * texts (each span must parse to the member's value), and byte-exactness of what is forwarded. */
#include "../service/jspan.h"

#include <jansson.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

/* Every member jspan finds parses (jansson) to the value jansson found under the same key, and
 * there are as many members as jansson saw. */
static void assert_spans_agree(const char *text)
{
    json_error_t err;
    json_t *doc = json_loads(text, JSON_DECODE_ANY, &err);
    if (!json_is_object(doc))
        fail_msg("test input is not an object: %s", text);
    jspan_member m[JSPAN_MAX];
    int n = jspan_members(text, strlen(text), m, JSPAN_MAX);
    if (n != (int)json_object_size(doc))
        fail_msg("%d members, jansson sees %zu: %s", n, json_object_size(doc), text);
    for (int i = 0; i < n; i++) {
        json_t *key = json_loadb(m[i].key, m[i].key_len, JSON_DECODE_ANY, &err);
        json_t *value = json_loadb(m[i].value, m[i].value_len, JSON_DECODE_ANY, &err);
        assert_non_null(key);
        assert_non_null(value);
        json_t *want = json_object_get(doc, json_string_value(key));
        if (!json_equal(value, want))
            fail_msg("member %d: span \"%.*s\" differs: %s", i, (int)m[i].value_len, m[i].value,
                     text);
        json_decref(key);
        json_decref(value);
    }
    json_decref(doc);
}

static void test_spans_match_jansson(void **state)
{
    (void)state;
    static const char *const texts[] = {
        "{}",
        " { } ",
        "{\"a\":1}",
        "{\"a\" : 1 , \"b\" :\"x\"}",
        "{\"order_id\":\"o-1\",\"address\":{\"city\":\"}{\\\"\",\"n\":[1,{\"x\":[]}]},"
        "\"items\":[{\"sku\":\"S,1\",\"q\":2}],\"payment\":{\"token\":\"tok_visa\"}}",
        "{\"n\":-1.50e+3,\"t\":true,\"f\":false,\"z\":null,\"s\":\"\\u00e9\\n\\\\\"}",
        "{\n  \"a\": [\n    1,\n    2\n  ],\n  \"b\": {\n    \"c\": \"d\"\n  }\n}",
        "{\"deep\":[[[[[[[[[[{\"k\":\"]]]]\"}]]]]]]]]]],\"after\":0}",
        "{\"\\u0061ddress\":{},\"x\":\"\"}",
    };
    for (size_t i = 0; i < sizeof(texts) / sizeof(texts[0]); i++)
        assert_spans_agree(texts[i]);
}

static void test_spans_are_byte_exact(void **state)
{
    (void)state;
    const char *text = "{\"payment\": {\"amount\": 1.50, \"note\": \"caf\\u00e9\"} , \"x\": 1}";
    jspan_member m[8];
    int n = jspan_members(text, strlen(text), m, 8);
    assert_int_equal(n, 2);
    const jspan_member *p = jspan_find(m, (size_t)n, "payment");
    assert_non_null(p);
    assert_int_equal(p->value_len, strlen("{\"amount\": 1.50, \"note\": \"caf\\u00e9\"}"));
    assert_memory_equal(p->value, "{\"amount\": 1.50, \"note\": \"caf\\u00e9\"}", p->value_len);
    assert_int_equal(p->key_len, 9);
    assert_memory_equal(p->key, "\"payment\"", 9);
}

static void test_find_refuses_escaped_keys_and_names(void **state)
{
    (void)state;
    const char *text = "{\"\\u0061ddress\": 1, \"a\\\\b\": 2}";
    jspan_member m[8];
    int n = jspan_members(text, strlen(text), m, 8);
    assert_int_equal(n, 2);
    assert_null(jspan_find(m, (size_t)n, "address")); /* escaped on the wire: caller falls back */
    assert_null(jspan_find(m, (size_t)n, "a\\b"));    /* a name JSON would escape */
    assert_null(jspan_find(m, (size_t)n, "missing"));
}

static void test_not_an_object(void **state)
{
    (void)state;
    static const char *const texts[] = {"[1,2]", "\"x\"", "1", "null", "", "   "};
    jspan_member m[4];
    for (size_t i = 0; i < sizeof(texts) / sizeof(texts[0]); i++)
        assert_int_equal(jspan_members(texts[i], strlen(texts[i]), m, 4), -1);
}

static void test_more_members_than_room(void **state)
{
    (void)state;
    const char *text = "{\"a\":1,\"b\":2,\"c\":3,\"d\":4}";
    jspan_member m[2];
    assert_int_equal(jspan_members(text, strlen(text), m, 2), 2);
    assert_memory_equal(m[1].key, "\"b\"", 3);
}

/* Random documents written by jansson in several layouts: spans agree with jansson's reading. */
static void test_generated_documents(void **state)
{
    (void)state;
    static const size_t flags[] = {JSON_COMPACT, JSON_INDENT(2), JSON_INDENT(0), 0};
    srand(7);
    for (int round = 0; round < 200; round++) {
        json_t *doc = json_object();
        int members = rand() % 8;
        for (int k = 0; k < members; k++) {
            char key[32];
            snprintf(key, sizeof(key), "k%d\"%d", k, rand() % 100);
            json_t *v;
            switch (rand() % 5) {
            case 0:
                v = json_integer(rand() - RAND_MAX / 2);
                break;
            case 1:
                v = json_real((double)rand() / 7.0);
                break;
            case 2:
                v = json_string("s,}]\"\\\n");
                break;
            case 3:
                v = json_pack("[i,{s:[s,n]},b]", rand(), "x", "]}", 1);
                break;
            default:
                v = json_pack("{s:{s:{s:s}}}", "a", "b", "c", "{[");
                break;
            }
            json_object_set_new(doc, key, v);
        }
        char *text = json_dumps(doc, flags[round % 4]);
        assert_spans_agree(text);
        free(text);
        json_decref(doc);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_spans_match_jansson),
        cmocka_unit_test(test_spans_are_byte_exact),
        cmocka_unit_test(test_find_refuses_escaped_keys_and_names),
        cmocka_unit_test(test_not_an_object),
        cmocka_unit_test(test_more_members_than_room),
        cmocka_unit_test(test_generated_documents),
    };
    return cmocka_run_group_tests_name("jspan", tests, NULL, NULL);
}
