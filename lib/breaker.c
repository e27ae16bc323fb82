/* breaker — see breaker.h. Each call takes the lock for a handful of loads and stores. */
#include "breaker.h"

#include <errno.h>

int breaker_init(breaker *b, long threshold, long open_ms)
{
    if (threshold < 1 || open_ms < 1)
        return -EINVAL;
    b->threshold = threshold;
    b->open_ms = open_ms;
    b->failures = 0;
    b->open = 0;
    b->probing = 0;
    b->until_ms = 0;
    atomic_init(&b->rejections, 0);
    int rc = pthread_mutex_init(&b->lock, NULL);
    return rc == 0 ? 0 : -rc;
}

void breaker_destroy(breaker *b)
{
    pthread_mutex_destroy(&b->lock);
}

static breaker_state state_locked(const breaker *b, uint64_t now_ms)
{
    if (!b->open)
        return BREAKER_CLOSED;
    return now_ms >= b->until_ms ? BREAKER_HALF_OPEN : BREAKER_OPEN;
}

breaker_verdict breaker_admit(breaker *b, uint64_t now_ms, long *half_open_in_ms)
{
    breaker_verdict v = BREAKER_REJECT;
    long left = 0;
    pthread_mutex_lock(&b->lock);
    breaker_state s = state_locked(b, now_ms);
    if (s == BREAKER_CLOSED) {
        v = BREAKER_ADMIT;
    } else if (s == BREAKER_HALF_OPEN && !b->probing) {
        b->probing = 1;
        v = BREAKER_PROBE;
    } else if (s == BREAKER_OPEN) {
        left = (long)(b->until_ms - now_ms);
    }
    pthread_mutex_unlock(&b->lock);
    if (v == BREAKER_REJECT) {
        atomic_fetch_add_explicit(&b->rejections, 1, memory_order_relaxed);
        if (half_open_in_ms != NULL)
            *half_open_in_ms = left;
    }
    return v;
}

static void trip_locked(breaker *b, uint64_t now_ms)
{
    b->open = 1;
    b->failures = 0;
    b->until_ms = now_ms + (uint64_t)b->open_ms;
}

void breaker_record(breaker *b, breaker_verdict v, breaker_outcome o, uint64_t now_ms)
{
    pthread_mutex_lock(&b->lock);
    if (v == BREAKER_PROBE) {
        b->probing = 0;
        if (o == BREAKER_SUCCESS) {
            b->open = 0;
            b->failures = 0;
        } else if (o == BREAKER_FAILURE) {
            trip_locked(b, now_ms);
        }
    } else if (v == BREAKER_ADMIT && !b->open && o != BREAKER_CANCELLED) {
        /* an attempt admitted before the breaker opened no longer matters once it is open */
        if (o == BREAKER_SUCCESS)
            b->failures = 0;
        else if (++b->failures >= b->threshold)
            trip_locked(b, now_ms);
    }
    pthread_mutex_unlock(&b->lock);
}

breaker_state breaker_state_at(breaker *b, uint64_t now_ms)
{
    pthread_mutex_lock(&b->lock);
    breaker_state s = state_locked(b, now_ms);
    pthread_mutex_unlock(&b->lock);
    return s;
}

uint64_t breaker_rejections(const breaker *b)
{
    return atomic_load_explicit(&b->rejections, memory_order_relaxed);
}

const char *breaker_state_name(breaker_state s)
{
    switch (s) {
    case BREAKER_OPEN:
        return "open";
    case BREAKER_HALF_OPEN:
        return "half_open";
    case BREAKER_CLOSED:
        break;
    }
    return "closed";
}
