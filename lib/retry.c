/* retry — see retry.h. */
#include "retry.h"

#include <string.h>

unsigned retry_kind_bit(const char *name)
{
    static const struct {
        const char *name;
        unsigned bit;
    } kinds[] = {
        {"transport", RETRY_ON_TRANSPORT},
        {"upstream_error", RETRY_ON_UPSTREAM_ERROR},
        {"timeout", RETRY_ON_TIMEOUT},
        {"invalid_response", RETRY_ON_INVALID_RESPONSE},
    };
    for (size_t i = 0; i < sizeof kinds / sizeof kinds[0]; i++)
        if (strcmp(kinds[i].name, name) == 0)
            return kinds[i].bit;
    return 0;
}

int retry_may_retry(const retry_policy *p, unsigned kind_bit, long attempt)
{
    return kind_bit != 0 && (p->on & kind_bit) != 0 && attempt < p->attempts;
}

long retry_delay_ms(const retry_policy *p, long n, uint64_t rnd, long retry_after_ms)
{
    if (retry_after_ms >= 0)
        return retry_after_ms;
    long shift = n - 2 < 0 ? 0 : n - 2;
    uint64_t cap = (uint64_t)p->backoff_ms;
    /* backoff_ms <= 10000 < 2^14 and the cap stops at max_backoff_ms <= 60000: 2^20 is plenty */
    for (long i = 0; i < shift && i < 20 && cap < (uint64_t)p->max_backoff_ms; i++)
        cap *= 2;
    if (cap > (uint64_t)p->max_backoff_ms)
        cap = (uint64_t)p->max_backoff_ms;
    return (long)(rnd % (cap + 1)); /* modulo bias < 2^-44: uniform enough for a backoff */
}

int retry_fits(const retry_policy *p, uint64_t now_ns, long delay_ms, uint64_t call_end_ns,
               uint64_t group_end_ns)
{
    uint64_t end = now_ns + (uint64_t)delay_ms * 1000000u + (uint64_t)p->per_try_ms * 1000000u;
    return end <= call_end_ns && end <= group_end_ns;
}

long retry_after_ms(const char *value)
{
    long s = 0;
    if (value == NULL)
        return -1;
    while (*value == ' ' || *value == '\t')
        value++;
    if (*value < '0' || *value > '9')
        return -1;
    for (; *value >= '0' && *value <= '9'; value++) {
        s = s * 10 + (*value - '0');
        if (s > 86400)
            return -1;
    }
    while (*value == ' ' || *value == '\t')
        value++;
    return *value == '\0' ? s * 1000 : -1;
}
