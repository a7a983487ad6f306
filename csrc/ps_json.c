/*
 * ps_json.c - the one rule pystate applies to JSON text from outside (the
 * CLI, the wire): an integer literal must fit the 64-bit range values hold.
 */
#include <string.h>

#include "pystate.h"

/* The widest literals that fit, as digits: 2^64-1 and 2^63 (for -2^63). */
static const char U64_MAX_DIGITS[] = "18446744073709551615";
static const char I64_MIN_DIGITS[] = "9223372036854775808";

static int is_digit(char c)
{
    return c >= '0' && c <= '9';
}

/* Whether the digit run [d, d + nd) exceeds the limit given as digits. A
 * run with leading zeros is not JSON (the parser refuses it), so lengths
 * compare first. */
static int exceeds(const char *d, size_t nd, const char *limit)
{
    size_t nl = strlen(limit);
    if (nd != nl)
        return nd > nl;
    return memcmp(d, limit, nd) > 0;
}

int ps_json_check_ints(const char *text, size_t len, size_t *at, size_t *n)
{
    size_t i = 0;
    while (i < len) {
        char c = text[i];
        if (c == '"') {
            /* Skip the string: digits inside it are text, not numbers. */
            for (i++; i < len && text[i] != '"'; i++)
                if (text[i] == '\\' && i + 1 < len)
                    i++;
            i++;
            continue;
        }
        if (c != '-' && !is_digit(c)) {
            i++;
            continue;
        }
        size_t start = i;
        int negative = c == '-';
        if (negative)
            i++;
        size_t digits = i;
        while (i < len && is_digit(text[i]))
            i++;
        size_t nd = i - digits;
        if (i < len && (text[i] == '.' || text[i] == 'e' || text[i] == 'E')) {
            /* A float: the parser may round it, as JSON allows. */
            while (i < len && (is_digit(text[i]) || text[i] == '.' || text[i] == 'e' ||
                               text[i] == 'E' || text[i] == '+' || text[i] == '-'))
                i++;
            continue;
        }
        if (nd && exceeds(text + digits, nd, negative ? I64_MIN_DIGITS : U64_MAX_DIGITS)) {
            if (at)
                *at = start;
            if (n)
                *n = i - start;
            return PS_RANGE;
        }
    }
    return PS_OK;
}
