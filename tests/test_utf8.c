/* utf8_valid_prefix: where a byte string stops being valid UTF-8 (RFC 3629). */
#include "utf8.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <string.h>

#include <cmocka.h>

static void test_valid_prefix(void **state)
{
    (void)state;
    static const struct {
        const char *s;
        size_t want;
    } cases[] = {
        {"", 0},
        {"plain ascii", 11},
        {"caf\xc3\xa9", 5},
        {"caf\xc3", 3},            /* cut inside é */
        {"\xe2\x82\xac euro", 8},  /* € */
        {"\xe2\x82", 0},           /* cut inside € */
        {"\xf0\x9f\x98\x80!", 5},  /* 😀 */
        {"ab\xf0\x9f\x98", 2},     /* cut inside 😀 */
        {"a\x80z", 1},             /* stray continuation byte */
        {"a\xc0\xafz", 1},         /* overlong '/' */
        {"a\xed\xa0\x80z", 1},     /* surrogate U+D800 */
        {"a\xf4\x90\x80\x80z", 1}, /* above U+10FFFF */
        {"a\xff", 1},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        size_t got = utf8_valid_prefix(cases[i].s, strlen(cases[i].s));
        if (got != cases[i].want)
            fail_msg("case %zu: %zu, want %zu", i, got, cases[i].want);
    }
}

static void test_cut(void **state)
{
    (void)state;
    char s[] = "d\xc3\xa9j\xc3";
    assert_int_equal(utf8_cut(s), 4);
    assert_string_equal(s, "d\xc3\xa9j");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_valid_prefix),
        cmocka_unit_test(test_cut),
    };
    return cmocka_run_group_tests_name("utf8", tests, NULL, NULL);
}
