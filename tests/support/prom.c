/* prom — the exposition-format checker. See prom.h.
 *
 * One pass over the lines. Spans point into the text (nothing is copied but a histogram series'
 * label key). The family table is linear: a /metrics page has a handful of families. */
#include "prom.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_FAMILIES 256
#define MAX_LABELS   16
#define KEY_MAX      1024 /* labels of one histogram series, as written, without le */
#define NUMBER_MAX   64   /* longest number text accepted */

typedef struct span {
    const char *p;
    size_t n;
} span;

typedef enum ptype { P_NONE, P_COUNTER, P_GAUGE, P_HISTOGRAM } ptype;

typedef struct family {
    span name;
    ptype type;
    int has_help, has_samples, closed;
} family;

/* The histogram series being read: its buckets, then its _sum and _count. */
typedef struct hseries {
    int active;
    char key[KEY_MAX];
    size_t keylen;
    double last_le, last_count, inf_count;
    int has_inf, has_sum, has_count;
} hseries;

typedef struct sample {
    span name;
    span lname[MAX_LABELS], lvalue[MAX_LABELS]; /* values as written (escaped) */
    size_t nlabels;
    double value;
} sample;

typedef struct checker {
    family fam[MAX_FAMILIES];
    size_t nfam;
    family *current; /* the family whose group is open */
    hseries hs;
    size_t line;
    char *err;
    size_t errlen;
} checker;

__attribute__((format(printf, 2, 3))) static int fail(checker *c, const char *fmt, ...)
{
    char msg[256];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    if (c->errlen > 0)
        snprintf(c->err, c->errlen, "line %zu: %s", c->line, msg);
    return -1;
}

static int span_is(span s, const char *lit)
{
    return s.n == strlen(lit) && memcmp(s.p, lit, s.n) == 0;
}

static int starts(span s, const char *lit)
{
    return s.n >= strlen(lit) && memcmp(s.p, lit, strlen(lit)) == 0;
}

/* ---- tokens ---------------------------------------------------------------------------------- */

static int is_alpha_(char ch)
{
    return (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || ch == '_';
}

static int is_digit(char ch)
{
    return ch >= '0' && ch <= '9';
}

/* Length of the name at the start of s ([a-zA-Z_:][a-zA-Z0-9_:]* with colons when metric), 0 if
 * none. */
static size_t name_len(span s, int metric)
{
    size_t i = 0;
    while (i < s.n) {
        char ch = s.p[i];
        int ok = is_alpha_(ch) || (metric && ch == ':') || (i > 0 && is_digit(ch));
        if (!ok)
            break;
        i++;
    }
    return i;
}

static size_t digits(const char *p, size_t n, size_t i)
{
    while (i < n && is_digit(p[i]))
        i++;
    return i;
}

/* [+-]? (d+ (. d*)? | . d+) ([eE] [+-]? d+)? over the whole span: what strtod reads, minus
 * hexadecimal, inf/nan spellings and blanks. */
static int is_decimal(span s)
{
    size_t i = 0, start;
    if (i < s.n && (s.p[i] == '+' || s.p[i] == '-'))
        i++;
    start = i;
    i = digits(s.p, s.n, i);
    size_t int_digits = i - start;
    size_t frac_digits = 0;
    if (i < s.n && s.p[i] == '.') {
        size_t f = i + 1;
        i = digits(s.p, s.n, f);
        frac_digits = i - f;
    }
    if (int_digits + frac_digits == 0)
        return 0;
    if (i < s.n && (s.p[i] == 'e' || s.p[i] == 'E')) {
        i++;
        if (i < s.n && (s.p[i] == '+' || s.p[i] == '-'))
            i++;
        size_t e = i;
        i = digits(s.p, s.n, i);
        if (i == e)
            return 0;
    }
    return i == s.n;
}

static int parse_number(span s, double *out)
{
    char buf[NUMBER_MAX];
    if (span_is(s, "+Inf")) {
        *out = INFINITY;
        return 0;
    }
    if (span_is(s, "-Inf")) {
        *out = -INFINITY;
        return 0;
    }
    if (span_is(s, "NaN")) {
        *out = NAN;
        return 0;
    }
    if (s.n >= sizeof(buf) || !is_decimal(s))
        return -1;
    memcpy(buf, s.p, s.n);
    buf[s.n] = '\0';
    *out = strtod(buf, NULL);
    return 0;
}

/* Scans an escaped label value from s.p (just after its opening quote) to its closing quote;
 * returns the value's length, or -1 for a bad escape or no closing quote. */
static long label_value_len(span s)
{
    for (size_t i = 0; i < s.n; i++) {
        if (s.p[i] == '"')
            return (long)i;
        if (s.p[i] != '\\')
            continue;
        if (i + 1 >= s.n || (s.p[i + 1] != '\\' && s.p[i + 1] != '"' && s.p[i + 1] != 'n'))
            return -1;
        i++;
    }
    return -1;
}

/* ---- samples --------------------------------------------------------------------------------- */

static int check_label_name(checker *c, sample *s, span name)
{
    if (name.n >= 2 && name.p[0] == '_' && name.p[1] == '_')
        return fail(c, "label name %.*s is reserved (starts with __)", (int)name.n, name.p);
    for (size_t i = 0; i < s->nlabels; i++)
        if (s->lname[i].n == name.n && memcmp(s->lname[i].p, name.p, name.n) == 0)
            return fail(c, "label %.*s appears twice", (int)name.n, name.p);
    if (s->nlabels == MAX_LABELS)
        return fail(c, "more than %d labels", MAX_LABELS);
    return 0;
}

/* Reads `{a="x",b="y"}` from the start of *rest (which starts at '{'), advancing it. */
static int parse_labels(checker *c, span *rest, sample *s)
{
    span r = {rest->p + 1, rest->n - 1};
    for (;;) {
        span name = {r.p, name_len(r, 0)};
        if (name.n == 0)
            return fail(c, "expected a label name at \"%.20s\"", r.p);
        if (check_label_name(c, s, name) != 0)
            return -1;
        r.p += name.n;
        r.n -= name.n;
        if (r.n < 2 || r.p[0] != '=' || r.p[1] != '"')
            return fail(c, "expected =\" after label %.*s", (int)name.n, name.p);
        span v = {r.p + 2, r.n - 2};
        long vlen = label_value_len(v);
        if (vlen < 0)
            return fail(c, "label %.*s: bad escape or no closing quote", (int)name.n, name.p);
        s->lname[s->nlabels] = name;
        s->lvalue[s->nlabels] = (span){v.p, (size_t)vlen};
        s->nlabels++;
        r.p = v.p + vlen + 1;
        r.n = v.n - (size_t)vlen - 1;
        if (r.n > 0 && r.p[0] == '}')
            break;
        if (r.n < 2 || r.p[0] != ',' || r.p[1] == '}')
            return fail(c, "expected , and a label, or } after label %.*s", (int)name.n, name.p);
        r.p++;
        r.n--;
    }
    rest->p = r.p + 1;
    rest->n = r.n - 1;
    return 0;
}

static int parse_sample(checker *c, span line, sample *s)
{
    memset(s, 0, sizeof(*s));
    s->name = (span){line.p, name_len(line, 1)};
    if (s->name.n == 0)
        return fail(c, "expected a metric name, # HELP or # TYPE");
    span rest = {line.p + s->name.n, line.n - s->name.n};
    if (rest.n > 0 && rest.p[0] == '{' && parse_labels(c, &rest, s) != 0)
        return -1;
    if (rest.n < 2 || rest.p[0] != ' ')
        return fail(c, "%.*s: expected one space and a value", (int)s->name.n, s->name.p);
    span value = {rest.p + 1, rest.n - 1};
    if (parse_number(value, &s->value) != 0)
        return fail(c, "%.*s: value \"%.*s\" is not a number (timestamps are not accepted)",
                    (int)s->name.n, s->name.p, (int)value.n, value.p);
    return 0;
}

/* ---- families -------------------------------------------------------------------------------- */

static family *find_family(checker *c, span name)
{
    for (size_t i = 0; i < c->nfam; i++)
        if (c->fam[i].name.n == name.n && memcmp(c->fam[i].name.p, name.p, name.n) == 0)
            return &c->fam[i];
    return NULL;
}

static family *add_family(checker *c, span name)
{
    family *f = find_family(c, name);
    if (f != NULL || c->nfam == MAX_FAMILIES)
        return f;
    f = &c->fam[c->nfam++];
    f->name = name;
    return f;
}

/* The open histogram series must be complete before another starts or its family ends. */
static int series_end(checker *c)
{
    hseries *h = &c->hs;
    if (h->active && !(h->has_inf && h->has_sum && h->has_count))
        return fail(c, "histogram series {%.*s} lacks its +Inf bucket, _sum or _count",
                    (int)h->keylen, h->key);
    h->active = 0;
    return 0;
}

/* Makes f the open group; a family may not come back once another one started. */
static int enter(checker *c, family *f)
{
    if (f == c->current)
        return 0;
    if (f->closed)
        return fail(c, "family %.*s: its lines are split into two groups", (int)f->name.n,
                    f->name.p);
    if (c->current != NULL) {
        if (series_end(c) != 0)
            return -1;
        c->current->closed = 1;
    }
    c->current = f;
    return 0;
}

static int check_help_text(checker *c, span text)
{
    for (size_t i = 0; i < text.n; i++) {
        if (text.p[i] != '\\')
            continue;
        if (i + 1 >= text.n || (text.p[i + 1] != '\\' && text.p[i + 1] != 'n'))
            return fail(c, "HELP text: only \\\\ and \\n escapes are allowed");
        i++;
    }
    return 0;
}

/* `# HELP name text` or `# TYPE name type`: the name and what follows its space. */
static int comment_parts(checker *c, span line, span *name, span *rest)
{
    span after = {line.p + 7, line.n - 7}; /* both keywords are 4 letters */
    name->p = after.p;
    name->n = name_len(after, 1);
    if (name->n == 0 || name->n + 1 >= after.n || after.p[name->n] != ' ')
        return fail(c, "expected \"%.6s name text\"", line.p);
    rest->p = after.p + name->n + 1;
    rest->n = after.n - name->n - 1;
    return 0;
}

static int check_help(checker *c, span line)
{
    span name, text;
    if (comment_parts(c, line, &name, &text) != 0)
        return -1;
    family *f = add_family(c, name);
    if (f == NULL)
        return fail(c, "more than %d families", MAX_FAMILIES);
    if (enter(c, f) != 0)
        return -1;
    if (f->has_help)
        return fail(c, "second HELP for %.*s", (int)name.n, name.p);
    f->has_help = 1;
    return check_help_text(c, text);
}

static int check_type(checker *c, span line)
{
    span name, type;
    if (comment_parts(c, line, &name, &type) != 0)
        return -1;
    family *f = add_family(c, name);
    if (f == NULL)
        return fail(c, "more than %d families", MAX_FAMILIES);
    if (enter(c, f) != 0)
        return -1;
    if (f->type != P_NONE)
        return fail(c, "second TYPE for %.*s", (int)name.n, name.p);
    if (f->has_samples)
        return fail(c, "TYPE for %.*s after its samples", (int)name.n, name.p);
    if (span_is(type, "counter"))
        f->type = P_COUNTER;
    else if (span_is(type, "gauge"))
        f->type = P_GAUGE;
    else if (span_is(type, "histogram"))
        f->type = P_HISTOGRAM;
    else
        return fail(c, "type \"%.*s\" is not counter, gauge or histogram", (int)type.n, type.p);
    if (f->type == P_COUNTER && !(name.n > 6 && memcmp(name.p + name.n - 6, "_total", 6) == 0))
        return fail(c, "counter %.*s does not end in _total", (int)name.n, name.p);
    return 0;
}

/* ---- histograms ------------------------------------------------------------------------------ */

/* The labels of s without le, as `a="x",b="y"`, into key; *le gets le's value (or NULL span). */
static int series_key(checker *c, const sample *s, char *key, size_t *keylen, span *le)
{
    size_t n = 0;
    *le = (span){NULL, 0};
    for (size_t i = 0; i < s->nlabels; i++) {
        if (span_is(s->lname[i], "le")) {
            *le = s->lvalue[i];
            continue;
        }
        int w = snprintf(key + n, KEY_MAX - n, "%s%.*s=\"%.*s\"", n ? "," : "", (int)s->lname[i].n,
                         s->lname[i].p, (int)s->lvalue[i].n, s->lvalue[i].p);
        if (w < 0 || (size_t)w >= KEY_MAX - n)
            return fail(c, "labels longer than %d bytes", KEY_MAX);
        n += (size_t)w;
    }
    key[n] = '\0';
    *keylen = n;
    return 0;
}

static int same_series(const hseries *h, const char *key, size_t keylen)
{
    return h->active && h->keylen == keylen && memcmp(h->key, key, keylen) == 0;
}

static int hist_bucket(checker *c, const sample *s, const char *key, size_t keylen, span le)
{
    hseries *h = &c->hs;
    double bound;
    if (le.p == NULL)
        return fail(c, "_bucket without le");
    if (parse_number(le, &bound) != 0 || isnan(bound))
        return fail(c, "le=\"%.*s\" is not a number", (int)le.n, le.p);
    if (!same_series(h, key, keylen)) {
        if (series_end(c) != 0)
            return -1;
        memset(h, 0, sizeof(*h));
        h->active = 1;
        memcpy(h->key, key, keylen + 1);
        h->keylen = keylen;
        h->last_le = -INFINITY;
    } else if (h->has_inf || h->has_sum || h->has_count) {
        return fail(c, "bucket after the +Inf bucket, _sum or _count of {%s}", key);
    }
    if (!(bound > h->last_le))
        return fail(c, "le=\"%.*s\" does not increase", (int)le.n, le.p);
    if (!(s->value >= h->last_count))
        return fail(c, "bucket le=\"%.*s\" is %g, below the previous %g (not cumulative)",
                    (int)le.n, le.p, s->value, h->last_count);
    h->last_le = bound;
    h->last_count = s->value;
    if (isinf(bound)) {
        h->has_inf = 1;
        h->inf_count = s->value;
    }
    return 0;
}

static int hist_total(checker *c, const sample *s, const char *key, size_t keylen, int is_count)
{
    hseries *h = &c->hs;
    int *seen = is_count ? &h->has_count : &h->has_sum;
    if (!same_series(h, key, keylen) || !h->has_inf)
        return fail(c, "%s of {%s} before its buckets up to +Inf", is_count ? "_count" : "_sum",
                    key);
    if (*seen)
        return fail(c, "second %s for {%s}", is_count ? "_count" : "_sum", key);
    *seen = 1;
    if (is_count && s->value != h->inf_count)
        return fail(c, "_count %g of {%s} differs from its +Inf bucket %g", s->value, key,
                    h->inf_count);
    return 0;
}

/* suffix: "_bucket", "_sum" or "_count". */
static int hist_sample(checker *c, const sample *s, const char *suffix)
{
    char key[KEY_MAX];
    size_t keylen = 0;
    span le;
    if (series_key(c, s, key, &keylen, &le) != 0)
        return -1;
    if (!(s->value >= 0) && strcmp(suffix, "_sum") != 0)
        return fail(c, "%.*s is negative or NaN", (int)s->name.n, s->name.p);
    if (strcmp(suffix, "_bucket") == 0)
        return hist_bucket(c, s, key, keylen, le);
    if (le.p != NULL)
        return fail(c, "%s with an le label", suffix);
    return hist_total(c, s, key, keylen, strcmp(suffix, "_count") == 0);
}

/* The histogram family that name is a _bucket/_sum/_count sample of; *suffix gets which. */
static family *histogram_of(checker *c, span name, const char **suffix)
{
    static const char *const suffixes[] = {"_bucket", "_sum", "_count"};
    for (size_t k = 0; k < 3; k++) {
        size_t sl = strlen(suffixes[k]);
        if (name.n <= sl || memcmp(name.p + name.n - sl, suffixes[k], sl) != 0)
            continue;
        family *f = find_family(c, (span){name.p, name.n - sl});
        if (f != NULL && f->type == P_HISTOGRAM) {
            *suffix = suffixes[k];
            return f;
        }
    }
    return NULL;
}

static int check_sample(checker *c, span line)
{
    sample s;
    const char *suffix = NULL;
    if (parse_sample(c, line, &s) != 0)
        return -1;
    family *f = find_family(c, s.name);
    if (f != NULL && f->type == P_HISTOGRAM)
        return fail(c, "histogram %.*s: samples are _bucket, _sum or _count", (int)s.name.n,
                    s.name.p);
    if (f == NULL || f->type == P_NONE)
        f = histogram_of(c, s.name, &suffix);
    if (f == NULL)
        return fail(c, "sample %.*s has no # TYPE before it", (int)s.name.n, s.name.p);
    if (enter(c, f) != 0)
        return -1;
    f->has_samples = 1;
    if (f->type == P_COUNTER && !(s.value >= 0))
        return fail(c, "counter %.*s is negative or NaN", (int)s.name.n, s.name.p);
    if (f->type == P_HISTOGRAM)
        return hist_sample(c, &s, suffix);
    return 0;
}

/* ---- lines ----------------------------------------------------------------------------------- */

static int check_line(checker *c, span line)
{
    if (starts(line, "# HELP "))
        return check_help(c, line);
    if (starts(line, "# TYPE "))
        return check_type(c, line);
    if (line.n == 0)
        return fail(c, "blank line");
    if (line.p[0] == '#')
        return fail(c, "a comment other than # HELP or # TYPE");
    return check_sample(c, line);
}

int prom_check(const char *text, char *err, size_t errlen)
{
    int rc = -1;
    checker *c = calloc(1, sizeof(*c));
    if (c == NULL) {
        if (errlen > 0)
            snprintf(err, errlen, "out of memory");
        return -1;
    }
    c->err = err;
    c->errlen = errlen;
    if (errlen > 0)
        err[0] = '\0';
    const char *p = text;
    while (*p != '\0') {
        const char *nl = strchr(p, '\n');
        c->line++;
        if (nl == NULL) {
            fail(c, "the last line does not end with a newline");
            goto fail;
        }
        if (check_line(c, (span){p, (size_t)(nl - p)}) != 0)
            goto fail;
        p = nl + 1;
    }
    if (series_end(c) != 0)
        goto fail;
    rc = 0;
fail:
    free(c);
    return rc;
}

int prom_value(const char *text, const char *series, double *out)
{
    size_t n = strlen(series);
    const char *p = text;
    while (*p != '\0') {
        const char *nl = strchr(p, '\n');
        size_t len = nl ? (size_t)(nl - p) : strlen(p);
        if (p[0] != '#' && len > n && strncmp(p, series, n) == 0 && p[n] == ' ')
            return parse_number((span){p + n + 1, len - n - 1}, out);
        p += len + (nl ? 1 : 0);
    }
    return -1;
}
