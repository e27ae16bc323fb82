/* idem: the key's syntax, the fingerprint, and the memory store (claim/finish/release, expiry,
 * eviction by count and by bytes, concurrent claims from several threads). */
#include "idem.h"

#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

/* ---- helpers ---- */

typedef struct got {
    int calls;
    idem_result result;
} got;

/* The store's log lines, for the tests that expect one. */
static char logged_event[64], logged_detail[160];
static int logged;

static void log_line(const char *event, const char *detail)
{
    logged++;
    snprintf(logged_event, sizeof logged_event, "%s", event);
    snprintf(logged_detail, sizeof logged_detail, "%s", detail ? detail : "");
}

/* A clock the test moves: expiry is decided here, not by how loaded the machine is. */
static uint64_t fake_ns = 1000000000u;

static uint64_t fake_clock(void *arg)
{
    (void)arg;
    return fake_ns;
}

static void advance_ms(long ms)
{
    fake_ns += (uint64_t)ms * 1000000u;
}

static void on_claim(idem_claim *c, void *arg)
{
    got *g = arg;
    g->calls++;
    g->result = c->result;
}

/* Claims key with the fingerprint of body; the callback must have run once, synchronously. */
static idem_result claim(idem_store *s, idem_claim *c, const char *key, const char *body)
{
    got g = {0};
    memset(c, 0, sizeof(*c));
    snprintf(c->key, sizeof c->key, "%s", key);
    idem_fingerprint(body, strlen(body), c->fp);
    idem_claim_key(s, c, on_claim, &g);
    assert_int_equal(g.calls, 1);
    assert_int_equal(g.result, c->result);
    return c->result;
}

static void replay_is(idem_store *s, const char *key, const char *body, int status,
                      const char *answer)
{
    idem_claim c;
    assert_int_equal(claim(s, &c, key, body), IDEM_REPLAY);
    assert_int_equal(c.status, status);
    assert_int_equal(c.body_len, strlen(answer));
    assert_memory_equal(c.body, answer, c.body_len);
    free(c.body);
}

/* ---- the key ---- */

static void test_key_syntax(void **state)
{
    char key[IDEM_KEY_MAX + 1], long_key[300];
    const char *why;
    (void)state;
    assert_int_equal(idem_parse_key("abc-123_XYZ", key, &why), 0);
    assert_string_equal(key, "abc-123_XYZ");
    assert_int_equal(idem_parse_key("\"abc\"", key, &why), 0);
    assert_string_equal(key, "abc"); /* "abc" and abc are one key */
    assert_int_equal(idem_parse_key("\"a\\\"b\\\\c\"", key, &why), 0);
    assert_string_equal(key, "a\"b\\c");
    assert_int_equal(idem_parse_key("!~{}", key, &why), 0);
    const char *bad[] = {"",         "a b",     "tab\there",   "\"\"", "\"abc", "\"a\"b\"",
                         "\"a\\b\"", "\"a b\"", "caf\xc3\xa9", "\x7f", "\""};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        why = NULL;
        assert_int_equal(idem_parse_key(bad[i], key, &why), -1);
        assert_non_null(strstr(why, "Idempotency-Key"));
    }
    memset(long_key, 'k', 255);
    long_key[255] = '\0';
    assert_int_equal(idem_parse_key(long_key, key, &why), 0);
    assert_int_equal(strlen(key), 255);
    long_key[255] = 'k';
    long_key[256] = '\0';
    assert_int_equal(idem_parse_key(long_key, key, &why), -1);
}

static void test_fingerprint_is_sha256(void **state)
{
    unsigned char fp[IDEM_FP_LEN];
    char hex[2 * IDEM_FP_LEN + 1];
    (void)state;
    idem_fingerprint("abc", 3, fp);
    idem_hex(fp, sizeof fp, hex);
    assert_string_equal(hex, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    char t1[IDEM_TOKEN_LEN + 1], t2[IDEM_TOKEN_LEN + 1];
    idem_random_token(t1);
    idem_random_token(t2);
    assert_int_equal(strlen(t1), IDEM_TOKEN_LEN);
    assert_string_not_equal(t1, t2);
    assert_string_equal(idem_result_name(IDEM_REPLAY), "replayed");
}

/* ---- the memory store ---- */

static void test_claim_finish_replay(void **state)
{
    idem_store *s = idem_mem_new(100, 1 << 20, 60000, 60000, NULL);
    idem_claim c, d;
    (void)state;
    assert_non_null(s);
    assert_int_equal(claim(s, &c, "k1", "body"), IDEM_NEW);
    assert_int_equal(claim(s, &d, "k1", "body"), IDEM_IN_PROGRESS);
    assert_int_equal(claim(s, &d, "k1", "other"), IDEM_MISMATCH);
    idem_finish(s, &c, 200, "{\"ok\":1}", 8);
    replay_is(s, "k1", "body", 200, "{\"ok\":1}");
    replay_is(s, "k1", "body", 200, "{\"ok\":1}");
    assert_int_equal(claim(s, &d, "k1", "other"), IDEM_MISMATCH); /* nothing overwritten */
    replay_is(s, "k1", "body", 200, "{\"ok\":1}");
    assert_int_equal(claim(s, &d, "k2", "body"), IDEM_NEW); /* another key is another entry */
    idem_free(s);
}

static void test_release_lets_a_retry_run(void **state)
{
    idem_store *s = idem_mem_new(100, 1 << 20, 60000, 60000, NULL);
    idem_claim c, d;
    size_t n, bytes;
    (void)state;
    assert_int_equal(claim(s, &c, "k", "b"), IDEM_NEW);
    idem_release(s, &c);
    idem_mem_usage(s, &n, &bytes);
    assert_int_equal(n, 0);
    assert_int_equal(bytes, 0);
    assert_int_equal(claim(s, &d, "k", "b"), IDEM_NEW);
    idem_release(s, &c); /* a stale claim's release does not free the new one */
    assert_int_equal(claim(s, &c, "k", "b"), IDEM_IN_PROGRESS);
    idem_finish(s, &d, 422, "no", 2);
    idem_release(s, &d); /* a release after the answer was stored changes nothing */
    replay_is(s, "k", "b", 422, "no");
    idem_free(s);
}

static void test_expiry_of_claims_and_answers(void **state)
{
    idem_store *s = idem_mem_new(100, 1 << 20, 50, 100, NULL);
    idem_claim c, d;
    (void)state;
    idem_mem_set_clock(s, fake_clock, NULL);
    assert_int_equal(claim(s, &c, "crashed", "b"), IDEM_NEW);
    assert_int_equal(claim(s, &d, "stored", "b"), IDEM_NEW);
    idem_finish(s, &d, 200, "x", 1);
    advance_ms(49);
    assert_int_equal(claim(s, &d, "crashed", "b"), IDEM_IN_PROGRESS); /* not yet */
    advance_ms(21);
    /* the claim expired: a retry runs; the one that held it can no longer store */
    assert_int_equal(claim(s, &d, "crashed", "b"), IDEM_NEW);
    idem_finish(s, &c, 200, "late", 4);
    assert_int_equal(claim(s, &c, "crashed", "b"), IDEM_IN_PROGRESS);
    replay_is(s, "stored", "b", 200, "x"); /* 70 of its 100 ms */
    advance_ms(29);
    replay_is(s, "stored", "b", 200, "x"); /* 99 */
    advance_ms(1);
    assert_int_equal(claim(s, &c, "stored", "b"), IDEM_NEW); /* the answer's ttl passed */
    idem_free(s);
}

static void test_eviction_by_count_oldest_answer_first(void **state)
{
    idem_store *s = idem_mem_new(3, 1 << 20, 60000, 60000, NULL);
    idem_claim a, b, c, d, e;
    size_t n, bytes;
    (void)state;
    assert_int_equal(claim(s, &a, "a", "1"), IDEM_NEW);
    assert_int_equal(claim(s, &b, "b", "1"), IDEM_NEW);
    assert_int_equal(claim(s, &c, "c", "1"), IDEM_NEW);
    /* full of claims: a new key is refused, nothing is evicted */
    assert_int_equal(claim(s, &d, "d", "1"), IDEM_UNAVAILABLE);
    assert_non_null(d.why);
    idem_finish(s, &b, 200, "B", 1); /* stored first: the oldest answer */
    idem_finish(s, &a, 200, "A", 1);
    assert_int_equal(claim(s, &d, "d", "1"), IDEM_NEW); /* evicts b */
    idem_mem_usage(s, &n, &bytes);
    assert_int_equal(n, 3);
    assert_int_equal(claim(s, &e, "b", "1"), IDEM_NEW);         /* b is gone: evicts a */
    assert_int_equal(claim(s, &e, "c", "1"), IDEM_IN_PROGRESS); /* claims stay */
    assert_int_equal(claim(s, &e, "x", "1"), IDEM_UNAVAILABLE);
    idem_free(s);
}

static void test_eviction_by_bytes(void **state)
{
    char big[1000];
    idem_claim c[4], d;
    size_t n, bytes;
    (void)state;
    memset(big, 'x', sizeof big);
    idem_store *s = idem_mem_new(1000, 2600, 60000, 60000, NULL);
    const char *keys[] = {"k0", "k1", "k2", "k3"};
    for (int i = 0; i < 4; i++) {
        assert_int_equal(claim(s, &c[i], keys[i], "b"), IDEM_NEW);
        idem_finish(s, &c[i], 200, big, sizeof big);
        idem_mem_usage(s, &n, &bytes);
        assert_true(bytes <= 2600);
    }
    /* two answers of 1000 bytes and their entries fit in 2600, not three */
    idem_mem_usage(s, &n, &bytes);
    assert_int_equal(n, 2);
    assert_int_equal(claim(s, &d, "k0", "b"), IDEM_NEW);
    idem_release(s, &d);
    assert_int_equal(claim(s, &d, "k1", "b"), IDEM_NEW);
    idem_release(s, &d);
    assert_int_equal(claim(s, &d, "k2", "b"), IDEM_REPLAY);
    assert_int_equal(d.body_len, sizeof big);
    assert_memory_equal(d.body, big, sizeof big);
    free(d.body);
    assert_int_equal(claim(s, &d, "k3", "b"), IDEM_REPLAY);
    free(d.body);
    idem_free(s);
}

static void test_answer_too_large_leaves_the_claim(void **state)
{
    char big[1000];
    idem_claim c, d;
    (void)state;
    memset(big, 'y', sizeof big);
    /* an answer larger than the whole store is not kept: the claim stays until it expires */
    idem_store *s = idem_mem_new(10, 500, 50, 60000, NULL);
    idem_mem_set_clock(s, fake_clock, NULL);
    assert_int_equal(claim(s, &c, "huge", "b"), IDEM_NEW);
    idem_finish(s, &c, 200, big, sizeof big);
    advance_ms(49);
    assert_int_equal(claim(s, &d, "huge", "b"), IDEM_IN_PROGRESS);
    advance_ms(1);
    assert_int_equal(claim(s, &d, "huge", "b"), IDEM_NEW);
    idem_free(s);
}

/* Issue #21: an answer stored after its claim expired (a worker held up longer than
 * deadline_ms + 5 s, a paused process) is not stored and is logged "the claim had expired". The
 * store freed that entry while it was still listed: the next claim of any key read freed memory
 * (ASan: heap-use-after-free in expire_heads), and its bytes stayed counted. */
static void test_late_answer_of_an_expired_claim(void **state)
{
    idem_store *s = idem_mem_new(1000, 1 << 20, /* claim_ms */ 50, /* ttl_ms */ 100000, log_line);
    idem_claim a, b, x;
    size_t n, bytes;
    (void)state;
    logged = 0;
    assert_int_equal(claim(s, &a, "A", "b"), IDEM_NEW);
    assert_int_equal(claim(s, &b, "B", "b"), IDEM_NEW);
    usleep(100 * 1000); /* both claims expire; A's checkout answers only now */
    idem_finish(s, &a, 200, "{\"ok\":1}", 8);
    idem_mem_usage(s, &n, &bytes);
    assert_int_equal(claim(s, &x, "X", "b"), IDEM_NEW); /* read the freed entry */
    assert_int_equal(logged, 1);
    assert_string_equal(logged_event, "idempotency_claim_lost");
    assert_non_null(strstr(logged_detail, "the claim had expired"));
    assert_int_equal(n, 0); /* nothing stored, nothing left counted */
    assert_int_equal(bytes, 0);
    assert_int_equal(claim(s, &x, "A", "b"), IDEM_NEW); /* not a replay: nothing was stored */
    idem_finish(s, &x, 200, "{\"ok\":2}", 8);
    replay_is(s, "A", "b", 200, "{\"ok\":2}");
    idem_mem_usage(s, &n, &bytes);
    assert_int_equal(n, 2); /* X's claim and A's answer */
    idem_free(s);
}

/* ---- concurrency ---- */

#define RACERS 8
#define ROUNDS 200

typedef struct race {
    idem_store *s;
    pthread_barrier_t *start;
    int won[ROUNDS];
    int replays;
} race;

static void *racer(void *arg)
{
    race *r = arg;
    char key[32];
    pthread_barrier_wait(r->start);
    for (int i = 0; i < ROUNDS; i++) {
        idem_claim c;
        got g = {0};
        memset(&c, 0, sizeof c);
        snprintf(c.key, sizeof c.key, "key-%d", i);
        snprintf(key, sizeof key, "body-%d", i);
        idem_fingerprint(key, strlen(key), c.fp);
        idem_claim_key(r->s, &c, on_claim, &g);
        if (c.result == IDEM_NEW) {
            r->won[i] = 1;
            idem_finish(r->s, &c, 200, key, strlen(key));
        } else if (c.result == IDEM_REPLAY) {
            if (c.body_len == strlen(key) && memcmp(c.body, key, c.body_len) == 0)
                r->replays++;
            free(c.body);
        }
    }
    return NULL;
}

static void test_concurrent_claims_one_wins(void **state)
{
    pthread_t t[RACERS];
    static race r[RACERS];
    pthread_barrier_t start;
    (void)state;
    idem_store *s = idem_mem_new(100000, 1 << 24, 60000, 60000, NULL);
    pthread_barrier_init(&start, NULL, RACERS);
    for (int i = 0; i < RACERS; i++) {
        memset(&r[i], 0, sizeof r[i]);
        r[i].s = s;
        r[i].start = &start;
        assert_int_equal(pthread_create(&t[i], NULL, racer, &r[i]), 0);
    }
    for (int i = 0; i < RACERS; i++)
        pthread_join(t[i], NULL);
    int replays = 0;
    for (int k = 0; k < ROUNDS; k++) {
        int winners = 0;
        for (int i = 0; i < RACERS; i++)
            winners += r[i].won[k];
        assert_int_equal(winners, 1);
    }
    for (int i = 0; i < RACERS; i++)
        replays += r[i].replays;
    assert_true(replays > 0); /* the others saw in_progress or the winner's answer */
    pthread_barrier_destroy(&start);
    idem_free(s);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_key_syntax),
        cmocka_unit_test(test_fingerprint_is_sha256),
        cmocka_unit_test(test_claim_finish_replay),
        cmocka_unit_test(test_release_lets_a_retry_run),
        cmocka_unit_test(test_expiry_of_claims_and_answers),
        cmocka_unit_test(test_eviction_by_count_oldest_answer_first),
        cmocka_unit_test(test_eviction_by_bytes),
        cmocka_unit_test(test_answer_too_large_leaves_the_claim),
        cmocka_unit_test(test_late_answer_of_an_expired_claim),
        cmocka_unit_test(test_concurrent_claims_one_wins),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
