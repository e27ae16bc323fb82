/* idem — Idempotency-Key replay: the store interface, the key's syntax and the body's fingerprint
 * (contract "Idempotency-Key").
 *
 * A keyed checkout claims its key with the SHA-256 of its raw body. The claim's callback says:
 *   IDEM_NEW          claimed (claim->token set): run the checkout, then idem_finish with its final
 *                     answer (200/422) or idem_release (502/504, a 500) exactly once
 *   IDEM_REPLAY       an answer is stored for this key and body: claim->status and claim->body (a
 *                     malloc'd copy that the callback takes) are to be sent as they are
 *   IDEM_IN_PROGRESS  a checkout with this key and body is still running (here or elsewhere)
 *   IDEM_MISMATCH     the key was used with another body (stored or running); nothing changes
 *   IDEM_UNAVAILABLE  the store cannot say in time (down, slow, or full of claims), or its record
 *                     for this key does not parse (redis): fail closed
 * Threads: idem_claim, idem_finish and idem_release are called on the loop thread of worker
 * claim->worker, and the callback runs on that thread, before idem_claim returns (memory) or on a
 * later turn of that loop (redis). finish and release never call back: their outcome is logged
 * through the store's log function. A claim's struct must stay valid until its callback ran; it may
 * be freed right after idem_finish/idem_release return (they copy what they need).
 * Costs: memory — one mutex-held section of O(1) per call (a copy of the body on replay/finish);
 * redis — one or two round trips per claim, one per finish/release, no thread ever blocks. */
#ifndef CHECKOUTD_IDEM_H
#define CHECKOUTD_IDEM_H

#include <stddef.h>
#include <stdint.h>

#define IDEM_KEY_MAX   255 /* characters of a key, quotes of the string form not counted */
#define IDEM_FP_LEN    32  /* SHA-256 */
#define IDEM_TOKEN_LEN 32  /* hex digits */

typedef enum idem_result {
    IDEM_NEW,
    IDEM_REPLAY,
    IDEM_IN_PROGRESS,
    IDEM_MISMATCH,
    IDEM_UNAVAILABLE,
} idem_result;

typedef struct idem_claim {
    /* set by the caller */
    char key[IDEM_KEY_MAX + 1]; /* the key, without the quotes of its string form */
    unsigned char fp[IDEM_FP_LEN];
    size_t worker; /* index of the worker loop it is called on */
    /* set by the store before the callback */
    idem_result result;
    char token[IDEM_TOKEN_LEN + 1]; /* IDEM_NEW: this claim's token */
    uint64_t seq;                   /* IDEM_NEW: the memory store's token */
    int status;                     /* IDEM_REPLAY */
    char *body;                     /* IDEM_REPLAY: malloc'd, the callback owns it */
    size_t body_len;
    const char *why; /* IDEM_UNAVAILABLE: a static sentence for the answer */
} idem_claim;

typedef void (*idem_claim_fn)(idem_claim *claim, void *arg);
/* A store's log line: event ("idempotency_store_down", ...) and a short static or bounded detail.
 * Called from loop threads. */
typedef void (*idem_log_fn)(const char *event, const char *detail);

/* What /status shows of a store. */
typedef struct idem_status {
    const char *state; /* "up"; redis: "down" when no worker's connection is up, "degraded" when
                          some are */
    long entries;      /* memory: entries held now; -1: not known (redis) */
    long bytes;        /* memory: bytes held now; -1: not known */
} idem_status;

typedef struct idem_store idem_store;
typedef struct idem_ops {
    void (*claim)(idem_store *s, idem_claim *c, idem_claim_fn done, void *arg);
    void (*finish)(idem_store *s, const idem_claim *c, int status, const char *body, size_t len);
    void (*release)(idem_store *s, const idem_claim *c);
    void (*free)(idem_store *s);
    void (*status)(idem_store *s, idem_status *out); /* any thread; a short lock at most */
    const char *name;                                /* "memory", "redis" */
} idem_ops;
struct idem_store {
    const idem_ops *ops;
};

static inline void idem_claim_key(idem_store *s, idem_claim *c, idem_claim_fn done, void *arg)
{
    s->ops->claim(s, c, done, arg);
}
static inline void idem_finish(idem_store *s, const idem_claim *c, int status, const char *body,
                               size_t len)
{
    s->ops->finish(s, c, status, body, len);
}
static inline void idem_release(idem_store *s, const idem_claim *c)
{
    s->ops->release(s, c);
}
static inline void idem_get_status(idem_store *s, idem_status *out)
{
    s->ops->status(s, out);
}
/* After every loop that used it has stopped. NULL is fine. */
void idem_free(idem_store *s);

/* The Idempotency-Key header's value: 1..255 characters 0x21..0x7E, or the same but for '"' and
 * '\' in double quotes with \" and \\ as the only escapes (RFC 8941 sf-string: `"abc"` is the
 * key abc). 0 with the key in out (NUL-terminated), or -1 with a static reason in *why. */
int idem_parse_key(const char *value, char out[IDEM_KEY_MAX + 1], const char **why);
/* SHA-256 of the body (OpenSSL libcrypto). */
void idem_fingerprint(const char *body, size_t len, unsigned char fp[IDEM_FP_LEN]);
/* Lower-case hex of n bytes into out (2n + 1 bytes). */
void idem_hex(const unsigned char *bytes, size_t n, char *out);
/* IDEM_TOKEN_LEN random hex digits (getrandom) + NUL. */
void idem_random_token(char out[IDEM_TOKEN_LEN + 1]);
/* "new", "replayed", "in_progress", "mismatch", "unavailable": the metric's label. */
const char *idem_result_name(idem_result r);

/* The embedded store (lib/idem_mem.c): one for every worker of the process. At most max_keys
 * entries and max_bytes bytes (entries' overhead, keys and stored bodies); when full, the oldest
 * stored answer goes first, expired entries before it; claims are never evicted (a new key that
 * finds only claims is IDEM_UNAVAILABLE). A claim expires after claim_ms, an answer ttl_ms after it
 * was stored. NULL when out of memory. */
idem_store *idem_mem_new(long max_keys, size_t max_bytes, long claim_ms, long ttl_ms,
                         idem_log_fn log);
/* Entries and bytes held now (for tests). */
void idem_mem_usage(idem_store *s, size_t *entries, size_t *bytes);
/* For tests: the store's monotonic clock in nanoseconds (NULL: CLOCK_MONOTONIC, the default), so
 * that expiry is decided by the test, not by how loaded the machine is. */
void idem_mem_set_clock(idem_store *s, uint64_t (*now_ns)(void *arg), void *arg);

/* The Redis store (lib/idem_redis.c): one connection per loop (claim->worker picks it), made now
 * (call before the loops start) and remade by itself after a failure. host is resolved here, once.
 * timeout_ms bounds each operation. NULL with a one-line reason in err. */
/* v1.3 "Names": with name non-NULL (the resolver's entry for host, when host is a name), host is
 * not resolved here; every connect, the first and each reconnect, uses name's current addresses
 * (in turn per connection; one not resolved yet is a failed connect, tried again later). */
struct tg_loop;
struct dns_host;
idem_store *idem_redis_new(const char *host, int port, int db, long timeout_ms, long claim_ms,
                           long ttl_ms, struct tg_loop *const *loops, size_t nloops,
                           idem_log_fn log, struct dns_host *name, char *err, size_t errlen);

#endif
