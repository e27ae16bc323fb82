/* jspan — raw member spans of a validated JSON object. See jspan.h. */
#include "jspan.h"

#include <string.h>

static size_t skip_blanks(const char *t, size_t len, size_t i)
{
    while (i < len && (t[i] == ' ' || t[i] == '\t' || t[i] == '\n' || t[i] == '\r'))
        i++;
    return i;
}

/* t[i] is '"': returns the index just past the closing quote, or len when unterminated. */
static size_t skip_string(const char *t, size_t len, size_t i)
{
    for (i++; i < len; i++) {
        if (t[i] == '\\')
            i++;
        else if (t[i] == '"')
            return i + 1;
    }
    return len;
}

/* Returns the index just past the value starting at t[i]. Nesting is counted, not recursed, so
 * depth costs nothing (jansson already refused what is too deep). */
static size_t skip_value(const char *t, size_t len, size_t i)
{
    size_t depth = 0;
    while (i < len) {
        char ch = t[i];
        if (ch == '"') {
            i = skip_string(t, len, i);
        } else if (ch == '{' || ch == '[') {
            depth++;
            i++;
        } else if (ch == '}' || ch == ']') {
            if (depth == 0)
                return i; /* the end of the enclosing object */
            depth--;
            i++;
        } else if (ch == ',' && depth == 0) {
            return i;
        } else {
            i++;
        }
        if (depth == 0 && (ch == '"' || ch == '}' || ch == ']'))
            return i;
    }
    return i;
}

/* A literal or number ends at a blank, ',' or the closing brace. */
static size_t trim_end(const char *t, size_t start, size_t end)
{
    while (end > start &&
           (t[end - 1] == ' ' || t[end - 1] == '\t' || t[end - 1] == '\n' || t[end - 1] == '\r'))
        end--;
    return end;
}

int jspan_members(const char *text, size_t len, jspan_member *out, size_t max)
{
    size_t n = 0;
    size_t i = skip_blanks(text, len, 0);
    if (i >= len || text[i] != '{')
        return -1;
    i = skip_blanks(text, len, i + 1);
    if (i < len && text[i] == '}')
        return 0;
    while (i < len) {
        if (text[i] != '"')
            return -1;
        size_t key_end = skip_string(text, len, i);
        size_t colon = skip_blanks(text, len, key_end);
        if (colon >= len || text[colon] != ':')
            return -1;
        size_t value = skip_blanks(text, len, colon + 1);
        size_t value_end = trim_end(text, value, skip_value(text, len, value));
        if (value_end <= value)
            return -1;
        if (n < max) {
            out[n].key = text + i;
            out[n].key_len = key_end - i;
            out[n].value = text + value;
            out[n].value_len = value_end - value;
            n++;
        }
        i = skip_blanks(text, len, value_end);
        if (i >= len)
            return -1;
        if (text[i] == '}')
            return (int)n;
        if (text[i] != ',')
            return -1;
        i = skip_blanks(text, len, i + 1);
    }
    return -1;
}

const jspan_member *jspan_find(const jspan_member *m, size_t n, const char *name)
{
    size_t name_len = strlen(name);
    /* a name that JSON would escape cannot be matched byte for byte */
    for (size_t i = 0; i < name_len; i++)
        if (name[i] == '"' || name[i] == '\\' || (unsigned char)name[i] < 0x20)
            return NULL;
    for (size_t i = 0; i < n; i++) {
        if (m[i].key_len == name_len + 2 && memcmp(m[i].key + 1, name, name_len) == 0)
            return &m[i];
    }
    return NULL;
}
