/* prom — a checker for the Prometheus text exposition format (0.0.4), for tests: unit tests on
 * mx_render and integration tests on a live GET /metrics.
 *
 * prom_check accepts a text when every line is one of
 *   # HELP name text                       (text: \\ and \n are the only escapes)
 *   # TYPE name counter|gauge|histogram
 *   name{label="value",...} number         or   name number
 * where metric names match [a-zA-Z_:][a-zA-Z0-9_:]*, label names [a-zA-Z_][a-zA-Z0-9_]* (not
 * "__..."), no label appears twice in a sample, values escape only \\ \" \n, and a number is a
 * decimal float or +Inf, -Inf, NaN. Per family: one TYPE before its first sample, at most one
 * HELP, all its lines in one group. Counter names end in _total, counter values are >= 0.
 * Histogram samples are name_bucket (with le), name_sum and name_count (without le); each series
 * (a label set without le) lists its buckets with le strictly increasing and counts >= 0 and
 * non-decreasing up to le="+Inf", then _sum and _count, and _count equals the +Inf bucket.
 * Stricter than the format where checkoutd promises more: single spaces, no timestamps, no blank
 * lines or other comments, no empty braces or trailing comma, the text ends with a newline.
 * UTF-8 validity is not checked. Cost: O(lines x families); no allocation beyond one checker. */
#ifndef CHECKOUTD_TEST_PROM_H
#define CHECKOUTD_TEST_PROM_H

#include <stddef.h>

/* 0 when text is valid; -1 otherwise, with "line N: what is wrong" in err (when errlen > 0). */
int prom_check(const char *text, char *err, size_t errlen);

/* The value of the first sample written exactly as series: `name{a="b",c="d"}` (labels in the
 * order and escaping of the text) or a bare `name`. 0 with *out set, or -1 when absent or when its
 * value is not a number. O(text). */
int prom_value(const char *text, const char *series, double *out);

#endif
