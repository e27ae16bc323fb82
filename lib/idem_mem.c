/* idem_mem — the embedded Idempotency-Key store: one per process, shared by every worker.
 *
 * A hash table (chains, a power-of-two number of buckets fixed at start) finds an entry by key;
 * two age lists order the entries: claims in the order they were made, stored answers in the order
 * they were stored. Every claim expires after the same claim_ms and every answer after the same
 * ttl_ms, so each list's head is also the first to expire: expiry and eviction look at heads only.
 * Everything is O(1) (but the key's hash, O(key), and the body copies, O(body)).
 *
 * One mutex guards it all; each call holds it once, for a lookup and a few pointer moves (and the
 * copy of a replayed body). Allocation of a new entry and of a stored body's copy happen before
 * the lock is taken; frees after it is dropped, where possible. No lock is held while a checkout
 * runs: a claim is a record, not a lock.
 * Bytes counted per entry: sizeof(entry) + key length + stored body length. */
#include "idem.h"

#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

typedef struct mem_entry mem_entry;
struct mem_entry {
    mem_entry *chain;       /* next in the bucket */
    mem_entry *prev, *next; /* in claims or answers */
    uint64_t hash;
    uint64_t seq; /* the claim's token */
    uint64_t expires_ns;
    int done; /* an answer is stored (else a claim) */
    int status;
    char *body;
    size_t body_len;
    size_t bytes; /* what it adds to the store's count */
    unsigned char fp[IDEM_FP_LEN];
    size_t key_len;
    char key[];
};

typedef struct mem_list {
    mem_entry *head, *tail; /* head: oldest */
} mem_list;

typedef struct mem_store {
    idem_store base;
    pthread_mutex_t lock;
    mem_entry **buckets;
    size_t mask;
    mem_list claims, answers;
    size_t count, bytes;
    size_t max_keys, max_bytes;
    uint64_t claim_ns, ttl_ns;
    uint64_t next_seq;
    idem_log_fn log;
    uint64_t (*clock)(void *arg); /* monotonic ns: mono_ns, or a test's (idem_mem_set_clock) */
    void *clock_arg;
} mem_store;

static uint64_t mono_ns(void *arg)
{
    struct timespec t;
    (void)arg;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (uint64_t)t.tv_sec * 1000000000u + (uint64_t)t.tv_nsec;
}

static uint64_t now_ns(const mem_store *m)
{
    return m->clock(m->clock_arg);
}

/* FNV-1a: keys are short and chosen by clients, but bucket counts are powers of two and the
 * buckets only cost time, never correctness. */
static uint64_t hash_key(const char *k, size_t n)
{
    uint64_t h = 1469598103934665603ull;
    for (size_t i = 0; i < n; i++) {
        h ^= (unsigned char)k[i];
        h *= 1099511628211ull;
    }
    return h ^ (h >> 29);
}

static void list_push(mem_list *l, mem_entry *e)
{
    e->next = NULL;
    e->prev = l->tail;
    if (l->tail)
        l->tail->next = e;
    else
        l->head = e;
    l->tail = e;
}

static void list_unlink(mem_list *l, mem_entry *e)
{
    if (e->prev)
        e->prev->next = e->next;
    else
        l->head = e->next;
    if (e->next)
        e->next->prev = e->prev;
    else
        l->tail = e->prev;
    e->prev = e->next = NULL;
}

static mem_entry **find_slot(mem_store *m, const char *key, size_t len, uint64_t h)
{
    mem_entry **p = &m->buckets[h & m->mask];
    while (*p != NULL &&
           ((*p)->hash != h || (*p)->key_len != len || memcmp((*p)->key, key, len) != 0))
        p = &(*p)->chain;
    return p;
}

/* Unlinks e from its bucket and list and uncounts it; the caller frees it (after the lock). */
static void detach(mem_store *m, mem_entry *e)
{
    mem_entry **p = find_slot(m, e->key, e->key_len, e->hash);
    if (*p == e)
        *p = e->chain;
    list_unlink(e->done ? &m->answers : &m->claims, e);
    m->count--;
    m->bytes -= e->bytes;
    e->chain = NULL;
}

static void entry_free(mem_entry *e)
{
    if (e != NULL)
        free(e->body);
    free(e);
}

/* Frees a chain of detached entries (linked through chain) outside the lock. */
static void free_chain(mem_entry *e)
{
    while (e != NULL) {
        mem_entry *next = e->chain;
        entry_free(e);
        e = next;
    }
}

static void drop(mem_store *m, mem_entry *e, mem_entry **garbage)
{
    detach(m, e);
    e->chain = *garbage;
    *garbage = e;
}

static void expire_heads(mem_store *m, uint64_t now, mem_entry **garbage)
{
    while (m->claims.head && m->claims.head->expires_ns <= now)
        drop(m, m->claims.head, garbage);
    while (m->answers.head && m->answers.head->expires_ns <= now)
        drop(m, m->answers.head, garbage);
}

/* Evicts the oldest answers until need more bytes and one more entry fit; 0, or -1 when only
 * claims are left. */
static int make_room(mem_store *m, size_t need, mem_entry **garbage)
{
    while (m->count + 1 > m->max_keys || m->bytes + need > m->max_bytes) {
        if (m->answers.head == NULL)
            return -1;
        drop(m, m->answers.head, garbage);
    }
    return 0;
}

static void mem_claim(idem_store *s, idem_claim *c, idem_claim_fn done, void *arg)
{
    mem_store *m = (mem_store *)s;
    size_t len = strlen(c->key);
    uint64_t h = hash_key(c->key, len);
    mem_entry *fresh = malloc(sizeof(*fresh) + len);
    mem_entry *garbage = NULL;
    char *copy = NULL;

    c->body = NULL;
    c->why = NULL;
    if (fresh == NULL) {
        c->result = IDEM_UNAVAILABLE;
        c->why = "the idempotency store is out of memory; retry";
        done(c, arg);
        return;
    }
    memset(fresh, 0, sizeof(*fresh));
    fresh->hash = h;
    fresh->key_len = len;
    memcpy(fresh->key, c->key, len);
    memcpy(fresh->fp, c->fp, IDEM_FP_LEN);
    fresh->bytes = sizeof(*fresh) + len;

    pthread_mutex_lock(&m->lock);
    uint64_t now = now_ns(m);
    expire_heads(m, now, &garbage);
    mem_entry *e = *find_slot(m, c->key, len, h);
    if (e != NULL && e->expires_ns <= now) { /* expired, not yet at a head */
        drop(m, e, &garbage);
        e = NULL;
    }
    if (e != NULL) {
        if (memcmp(e->fp, c->fp, IDEM_FP_LEN) != 0) {
            c->result = IDEM_MISMATCH;
        } else if (!e->done) {
            c->result = IDEM_IN_PROGRESS;
        } else if ((copy = malloc(e->body_len ? e->body_len : 1)) == NULL) {
            c->result = IDEM_UNAVAILABLE;
            c->why = "the idempotency store is out of memory; retry";
        } else {
            memcpy(copy, e->body, e->body_len);
            c->result = IDEM_REPLAY;
            c->status = e->status;
            c->body = copy;
            c->body_len = e->body_len;
        }
    } else if (make_room(m, fresh->bytes, &garbage) != 0) {
        c->result = IDEM_UNAVAILABLE;
        c->why = "the idempotency store is full of checkouts in progress; retry";
    } else {
        fresh->seq = ++m->next_seq;
        fresh->expires_ns = now + m->claim_ns;
        fresh->chain = NULL;
        *find_slot(m, c->key, len, h) = fresh;
        list_push(&m->claims, fresh);
        m->count++;
        m->bytes += fresh->bytes;
        c->result = IDEM_NEW;
        c->seq = fresh->seq;
        fresh = NULL;
    }
    pthread_mutex_unlock(&m->lock);
    entry_free(fresh);
    free_chain(garbage);
    if (c->result == IDEM_NEW) {
        unsigned char b[sizeof(c->seq)];
        memcpy(b, &c->seq, sizeof b);
        idem_hex(b, sizeof b, c->token);
    }
    done(c, arg);
}

/* The claim's entry when it still is this claim: not reclaimed by another, and not expired at now
 * (an expired claim is no longer the checkout's, even while it waits to reach a list's head). */
static mem_entry *own_claim(mem_store *m, const idem_claim *c, uint64_t now)
{
    size_t len = strlen(c->key);
    mem_entry *e = *find_slot(m, c->key, len, hash_key(c->key, len));
    return e != NULL && !e->done && e->seq == c->seq && e->expires_ns > now ? e : NULL;
}

/* Stores the answer in place of the claim. When it cannot be kept (larger than the store, out of
 * memory, or no room left by evicting older answers), the claim stays and expires by itself, as
 * the contract asks of a store that fails: a retry meanwhile gets 409, then runs. A claim that
 * expired before its answer came (the worker was held up past deadline_ms + 5 s, the process was
 * paused) is not stored: logged "the claim had expired", as the Redis store does. Expiry runs
 * before the lookup, so an entry it detached is never touched again here. */
static void mem_finish(idem_store *s, const idem_claim *c, int status, const char *body, size_t len)
{
    mem_store *m = (mem_store *)s;
    char *copy = malloc(len ? len : 1);
    mem_entry *garbage = NULL;
    const char *lost = NULL, *event = "idempotency_store_write_failed";

    if (copy != NULL)
        memcpy(copy, body, len);
    pthread_mutex_lock(&m->lock);
    uint64_t now = now_ns(m);
    expire_heads(m, now, &garbage);
    mem_entry *e = own_claim(m, c, now);
    if (e == NULL) {
        event = "idempotency_claim_lost";
        lost = "the claim had expired when the answer was to be stored";
    } else if (copy == NULL) {
        lost = "out of memory storing the answer; the claim expires by itself";
    } else {
        /* e is a claim: make room by evicting answers only; e stays counted as it is */
        while (m->bytes + len > m->max_bytes && m->answers.head != NULL)
            drop(m, m->answers.head, &garbage);
        if (m->bytes + len > m->max_bytes) {
            lost = "the answer does not fit in the store; the claim expires by itself";
        } else {
            list_unlink(&m->claims, e);
            e->done = 1;
            e->status = status;
            e->body = copy;
            e->body_len = len;
            e->bytes += len;
            m->bytes += len;
            e->expires_ns = now + m->ttl_ns;
            list_push(&m->answers, e); /* its age: when it was stored */
            copy = NULL;
        }
    }
    pthread_mutex_unlock(&m->lock);
    free(copy);
    free_chain(garbage);
    if (lost != NULL && m->log != NULL)
        m->log(event, lost);
}

static void mem_release(idem_store *s, const idem_claim *c)
{
    mem_store *m = (mem_store *)s;
    mem_entry *garbage = NULL;
    pthread_mutex_lock(&m->lock);
    mem_entry *e = own_claim(m, c, now_ns(m));
    if (e != NULL)
        drop(m, e, &garbage);
    pthread_mutex_unlock(&m->lock);
    free_chain(garbage);
}

static void mem_free(idem_store *s)
{
    mem_store *m = (mem_store *)s;
    for (size_t b = 0; b <= m->mask; b++)
        free_chain(m->buckets[b]);
    free(m->buckets);
    pthread_mutex_destroy(&m->lock);
    free(m);
}

static void mem_status(idem_store *s, idem_status *out)
{
    size_t entries, bytes;
    idem_mem_usage(s, &entries, &bytes);
    out->state = "up";
    out->entries = (long)entries;
    out->bytes = (long)bytes;
}

static const idem_ops mem_ops = {mem_claim, mem_finish, mem_release,
                                 mem_free,  mem_status, "memory"};

idem_store *idem_mem_new(long max_keys, size_t max_bytes, long claim_ms, long ttl_ms,
                         idem_log_fn log)
{
    mem_store *m = calloc(1, sizeof(*m));
    if (m == NULL || max_keys < 1)
        goto fail;
    /* about one entry per bucket when full, at most 4 Mi buckets (32 MiB) */
    size_t n = 16;
    while (n < (size_t)max_keys && n < ((size_t)1 << 22))
        n *= 2;
    m->buckets = calloc(n, sizeof(*m->buckets));
    if (m->buckets == NULL)
        goto fail;
    m->base.ops = &mem_ops;
    m->mask = n - 1;
    m->max_keys = (size_t)max_keys;
    m->max_bytes = max_bytes;
    m->claim_ns = (uint64_t)claim_ms * 1000000u;
    m->ttl_ns = (uint64_t)ttl_ms * 1000000u;
    m->log = log;
    m->clock = mono_ns;
    if (pthread_mutex_init(&m->lock, NULL) != 0)
        goto fail;
    return &m->base;
fail:
    if (m != NULL)
        free(m->buckets);
    free(m);
    return NULL;
}

void idem_mem_usage(idem_store *s, size_t *entries, size_t *bytes)
{
    mem_store *m = (mem_store *)s;
    pthread_mutex_lock(&m->lock);
    *entries = m->count;
    *bytes = m->bytes;
    pthread_mutex_unlock(&m->lock);
}

void idem_mem_set_clock(idem_store *s, uint64_t (*now_ns_fn)(void *arg), void *arg)
{
    mem_store *m = (mem_store *)s;
    pthread_mutex_lock(&m->lock);
    m->clock = now_ns_fn != NULL ? now_ns_fn : mono_ns;
    m->clock_arg = arg;
    pthread_mutex_unlock(&m->lock);
}
