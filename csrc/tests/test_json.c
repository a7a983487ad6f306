/*
 * test_json.c - ps_json_check_ints: which integer literals in JSON text
 * are outside the 64-bit range.
 */
#include "harness.h"

/* The rc of the check on a C string; *at and *n as the call set them. */
static int check(const char *text, size_t *at, size_t *n)
{
    *at = *n = (size_t)-1;
    return ps_json_check_ints(text, strlen(text), at, n);
}

TEST(integers_in_range_pass)
{
    size_t at, n;
    CHECK_RC(check("[0, -1, 18446744073709551615, -9223372036854775808]", &at, &n), PS_OK);
    CHECK_RC(check("{\"a\": 9223372036854775807, \"b\": 1}", &at, &n), PS_OK);
    CHECK(at == (size_t)-1 && n == (size_t)-1);
    CHECK_RC(ps_json_check_ints(NULL, 0, NULL, NULL), PS_OK);
}

TEST(wide_integers_are_found_with_offset_and_length)
{
    size_t at, n;
    CHECK_RC(check("18446744073709551616", &at, &n), PS_RANGE);
    CHECK(at == 0 && n == 20);
    CHECK_RC(check("[1, -9223372036854775809]", &at, &n), PS_RANGE);
    CHECK(at == 4 && n == 20);
    CHECK_RC(check("{\"k\":{\"x\":[1180591620717411303424]}}", &at, &n), PS_RANGE);
    CHECK(at == 11 && n == 22);
    CHECK_RC(check("99999999999999999999999999999999999999", &at, &n), PS_RANGE);
    CHECK(at == 0);
}

TEST(digits_in_strings_and_floats_are_not_integers)
{
    size_t at, n;
    CHECK_RC(check("\"18446744073709551616\"", &at, &n), PS_OK);
    CHECK_RC(check("{\"18446744073709551616\": \"a\\\"99999999999999999999\"}", &at, &n), PS_OK);
    CHECK_RC(check("[18446744073709551616.0, 1e400, 99999999999999999999e-5, -1E+30]", &at, &n),
             PS_OK);
}

TEST(unterminated_text_is_read_within_its_length)
{
    size_t at, n;
    /* A string or escape running off the end, a lone sign: no read past len. */
    CHECK_RC(check("\"abc\\", &at, &n), PS_OK);
    CHECK_RC(check("[\"x", &at, &n), PS_OK);
    CHECK_RC(check("-", &at, &n), PS_OK);
    CHECK_RC(ps_json_check_ints("123456789012345678901", 5, &at, &n), PS_OK);
    CHECK_RC(check("[1, 184467440737095516160", &at, &n), PS_RANGE);
    CHECK(at == 4 && n == 21);
}

TEST(range_code_has_a_description)
{
    CHECK(strstr(ps_strerror(PS_RANGE), "64-bit") != NULL);
}

RUN_TESTS()
