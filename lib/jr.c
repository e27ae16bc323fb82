/* jr — the journal thread, its queue and group commit. See jr.h; SQLite is in lib/jr_db.c. */
#include "jr.h"

#include "jr_db.h"
#include "tg_mailbox.h"

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define JR_MAX_LOOPS    64
#define JR_PRUNE_BATCH  256 /* records per prune transaction: short, so commits never wait long */
#define JR_HOUSEKEEP_MS 1000

const double jr_rpc_bounds[JR_RPC_BUCKETS - 1] = {1, 2, 4, 8, 16, 32, 64, 128, 256};
const double jr_sec_bounds[JR_SEC_BUCKETS - 1] = {0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005,
                                                  0.01,   0.025,   0.05,   0.1,   1.0};

struct jr {
    jr_db *db;
    jr_log_fn log;
    char path[4096];
    tg_mailbox *boxes[JR_MAX_LOOPS];
    size_t nboxes;
    pthread_t thread;
    int started;
    long ttl_s;
    pthread_mutex_t lock; /* guards the queue and stopping */
    pthread_cond_t wake;
    jr_rec *head, *tail;
    int stopping;
    int closed; /* the thread has ended: a record pushed now is dropped */
    atomic_llong next_id;
    atomic_int healthy;
    /* statistics: written by the journal thread, read by any (relaxed) */
    atomic_long commits, records, pending, pruned, rpc[JR_RPC_BUCKETS], sec[JR_SEC_BUCKETS];
    _Atomic double seconds_sum, last_commit;
    int fault; /* test builds: _exit after a commit holding a record of this kind + 1 (0: off) */
};

static double wall_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static double mono_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* A fault point for the kill tests, compiled only into the test build (-DJR_FAULTS):
 * CHECKOUTD_JOURNAL_FAULT=begin|accepted|plan|undo_end makes the process _exit(137) right after
 * the first commit that held such a record (the record is durable, nothing after it happened). */
static int fault_from_env(void)
{
#ifdef JR_FAULTS
    static const char *const names[] = {"begin", "accepted", "plan", "undo_end"};
    const char *v = getenv("CHECKOUTD_JOURNAL_FAULT");
    for (int i = 0; v != NULL && i < 4; i++)
        if (strcmp(v, names[i]) == 0)
            return i + 1;
#endif
    return 0;
}

jr *jr_open(const char *path, tg_loop *const *loops, size_t nloops, jr_log_fn log, char *err,
            size_t errlen)
{
    jr *j = calloc(1, sizeof *j);
    if (j == NULL || nloops > JR_MAX_LOOPS) {
        snprintf(err, errlen, "journal: out of memory");
        free(j);
        return NULL;
    }
    snprintf(j->path, sizeof j->path, "%s", path);
    j->log = log;
    pthread_mutex_init(&j->lock, NULL);
    pthread_cond_init(&j->wake, NULL);
    atomic_init(&j->healthy, 1);
    j->db = jr_db_open(path, err, errlen);
    if (j->db == NULL)
        goto fail;
    atomic_init(&j->next_id, jr_db_max_id(j->db) + 1);
    for (size_t i = 0; i < nloops; i++) {
        j->boxes[i] = tg_mailbox_new(loops[i]);
        if (j->boxes[i] == NULL) {
            snprintf(err, errlen, "journal: cannot watch the worker loops");
            goto fail;
        }
        j->nboxes++;
    }
    j->fault = fault_from_env();
    return j;
fail:
    jr_close(j);
    return NULL;
}

int jr_recover(jr *j, jr_recover_fn fn, void *arg, char *err, size_t errlen)
{
    return jr_db_scan(j->db, fn, arg, err, errlen);
}

void jr_post(jr *j, size_t worker, tg_mail *m)
{
    if (worker < j->nboxes)
        tg_mailbox_post(j->boxes[worker], m);
    else
        m->fn(m, 1);
}

/* Every record handed back was written (or failed): its status is known, so even one delivered
 * after its loop stopped (on jr_close's thread) gets its real status. */
static void deliver(tg_mail *m, int stopped)
{
    jr_rec *r = (jr_rec *)m;
    (void)stopped;
    r->done(r->arg, r->status);
    free(r);
}

static void count_commit(jr *j, size_t n, double seconds)
{
    size_t b = 0;
    while (b < JR_RPC_BUCKETS - 1 && (double)n > jr_rpc_bounds[b])
        b++;
    atomic_fetch_add_explicit(&j->rpc[b], 1, memory_order_relaxed);
    b = 0;
    while (b < JR_SEC_BUCKETS - 1 && seconds > jr_sec_bounds[b])
        b++;
    atomic_fetch_add_explicit(&j->sec[b], 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&j->commits, 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&j->records, (long)n, memory_order_relaxed);
    atomic_store_explicit(&j->seconds_sum, atomic_load(&j->seconds_sum) + seconds,
                          memory_order_relaxed);
    atomic_store_explicit(&j->last_commit, wall_now(), memory_order_relaxed);
}

/* The change of health, logged once per change. */
static void set_health(jr *j, int ok, const char *why)
{
    if (atomic_exchange(&j->healthy, ok) == ok)
        return;
    if (j->log != NULL)
        j->log(ok ? "journal_recovered" : "journal_unavailable", why);
}

/* One batch: a transaction, then each record handed back (or freed). */
static void commit_batch(jr *j, jr_rec *batch)
{
    jr_rec *recs[512];
    char why[512] = "";
    while (batch != NULL) {
        size_t n = 0;
        int fault = 0;
        for (; batch != NULL && n < sizeof recs / sizeof recs[0]; batch = batch->next) {
            recs[n++] = batch;
            fault |= j->fault == (int)batch->kind + 1;
        }
        double t0 = mono_now();
        int rc = jr_db_write(j->db, recs, n, (int64_t)wall_now(), why, sizeof why);
        if (rc == 0) {
            count_commit(j, n, mono_now() - t0);
            set_health(j, 1, j->path);
            if (fault)
                _exit(137); /* test builds only: the commit is durable, nothing after it ran */
        } else {
            set_health(j, 0, why);
        }
        atomic_fetch_sub_explicit(&j->pending, (long)n, memory_order_relaxed);
        for (size_t i = 0; i < n; i++) {
            jr_rec *r = recs[i];
            r->status = rc == 0 ? 0 : JR_FAILED;
            if (r->done == NULL) {
                if (rc != 0 && j->log != NULL)
                    j->log("journal_write_failed", why);
                free(r);
            } else if (r->worker < j->nboxes) {
                tg_mailbox_post(j->boxes[r->worker], &r->mail);
            } else {
                deliver(&r->mail, 0);
            }
        }
    }
}

static void *thread_main(void *arg)
{
    jr *j = arg;
    double next_housekeeping = mono_now();
    double next_prune = 0;
    int backlog = 0; /* the last prune was a full batch: more are due, 50 ms later at most */
    for (;;) {
        pthread_mutex_lock(&j->lock);
        while (j->head == NULL && !j->stopping) {
            struct timespec until;
            clock_gettime(CLOCK_REALTIME, &until);
            until.tv_nsec += backlog ? 50 * 1000000L : 0;
            until.tv_sec += backlog ? 0 : 1;
            if (until.tv_nsec >= 1000000000L) {
                until.tv_sec++;
                until.tv_nsec -= 1000000000L;
            }
            if (pthread_cond_timedwait(&j->wake, &j->lock, &until) == ETIMEDOUT)
                break;
        }
        jr_rec *batch = j->head;
        j->head = j->tail = NULL;
        int stopping = j->stopping;
        pthread_mutex_unlock(&j->lock);
        if (batch != NULL)
            commit_batch(j, batch);
        else if (stopping)
            break;
        double now = mono_now();
        if (now >= next_housekeeping || (backlog && now >= next_prune)) {
            /* Only between batches, and small: a prune never holds a commit up for long. */
            char why[512];
            if (now >= next_housekeeping)
                next_housekeeping = now + JR_HOUSEKEEP_MS / 1000.0;
            backlog = 0;
            if (!atomic_load(&j->healthy)) {
                if (jr_db_probe(j->db, (int64_t)wall_now(), why, sizeof why) == 0)
                    set_health(j, 1, j->path);
            } else {
                /* a full batch: another one 50 ms later, between commits (up to ~5,000
                 * records a second; each is one short transaction) */
                int n = jr_db_prune(j->db, (int64_t)wall_now() - j->ttl_s, JR_PRUNE_BATCH);
                if (n > 0)
                    atomic_fetch_add_explicit(&j->pruned, n, memory_order_relaxed);
                backlog = n == JR_PRUNE_BATCH;
                next_prune = now + 0.05;
            }
        }
    }
    return NULL;
}

int jr_start(jr *j, long ttl_s)
{
    j->ttl_s = ttl_s;
    int rc = pthread_create(&j->thread, NULL, thread_main, j);
    if (rc != 0)
        return -rc;
    j->started = 1;
    return 0;
}

static void push(jr *j, jr_rec *r)
{
    r->next = NULL;
    r->mail.fn = deliver;
    atomic_fetch_add_explicit(&j->pending, 1, memory_order_relaxed);
    pthread_mutex_lock(&j->lock);
    if (j->closed) {
        /* after jr_close's drain (a checkout cut short at the very end): the record is lost, and
         * the next start compensates from what was written before (an undo of nothing at worst) */
        pthread_mutex_unlock(&j->lock);
        atomic_fetch_sub_explicit(&j->pending, 1, memory_order_relaxed);
        if (r->done != NULL)
            r->done(r->arg, JR_FAILED);
        free(r);
        return;
    }
    int was_empty = j->head == NULL;
    if (was_empty)
        j->head = r;
    else
        j->tail->next = r;
    j->tail = r;
    pthread_mutex_unlock(&j->lock);
    if (was_empty)
        pthread_cond_signal(&j->wake);
}

/* Copies n bytes of s (NUL added) at *p; returns the copy. */
static char *put(char **p, const char *s, size_t n)
{
    char *at = *p;
    memcpy(at, s, n);
    at[n] = '\0';
    *p += n + 1;
    return at;
}

static size_t len0(const char *s)
{
    return s != NULL ? strlen(s) + 1 : 0;
}

static jr_rec *rec_new(size_t tail, jr_kind kind, int64_t id, size_t worker, jr_done_fn done,
                       void *arg)
{
    jr_rec *r = calloc(1, sizeof *r + tail);
    if (r == NULL)
        return NULL;
    r->kind = kind;
    r->id = id;
    r->worker = worker;
    r->done = done;
    r->arg = arg;
    return r;
}

int64_t jr_begin(jr *j, const jr_begin_info *b, size_t worker, jr_done_fn done, void *arg)
{
    size_t fields = 0;
    for (size_t i = 0; i < b->nfields; i++)
        fields +=
            strlen(b->fields[i].name) + 1 + b->fields[i].key_len + 1 + b->fields[i].value_len + 1;
    size_t tail = len0(b->request_id) + len0(b->order_id) + len0(b->idem_key) +
                  len0(b->idem_token) + len0(b->idem_fp) + fields + 1;
    int64_t id = atomic_fetch_add(&j->next_id, 1);
    jr_rec *r = rec_new(tail, JRK_BEGIN, id, worker, done, arg);
    if (r == NULL)
        return 0;
    char *p = (char *)(r + 1);
    r->request_id = put(&p, b->request_id, strlen(b->request_id));
    r->order_id = put(&p, b->order_id, strlen(b->order_id));
    if (b->idem_key != NULL)
        r->idem_key = put(&p, b->idem_key, strlen(b->idem_key));
    if (b->idem_token != NULL)
        r->idem_token = put(&p, b->idem_token, strlen(b->idem_token));
    if (b->idem_fp != NULL)
        r->idem_fp = put(&p, b->idem_fp, strlen(b->idem_fp));
    r->fields = p;
    for (size_t i = 0; i < b->nfields; i++) {
        const jr_field *f = &b->fields[i];
        put(&p, f->name, strlen(f->name));
        put(&p, f->key, f->key_len);
        put(&p, f->value, f->value_len);
    }
    r->fields_len = (size_t)(p - r->fields);
    push(j, r);
    return id;
}

int jr_accepted(jr *j, int64_t id, int status, const char *answer, size_t len, size_t worker,
                jr_done_fn done, void *arg)
{
    jr_rec *r = rec_new(answer ? len + 1 : 0, JRK_ACCEPTED, id, worker, done, arg);
    if (r == NULL)
        return -1;
    char *p = (char *)(r + 1);
    r->answer_status = status;
    if (answer != NULL) {
        r->answer = put(&p, answer, len);
        r->answer_len = len;
    }
    push(j, r);
    return 0;
}

int jr_plan(jr *j, int64_t id, const jr_step *steps, size_t n, int status, const char *answer,
            size_t len)
{
    size_t tail = n * sizeof(jr_step) + (answer ? len + 1 : 0);
    for (size_t i = 0; i < n; i++)
        tail += strlen(steps[i].name) + 1 + (steps[i].result ? steps[i].result_len + 1 : 0);
    jr_rec *r = rec_new(tail, JRK_PLAN, id, 0, NULL, NULL);
    if (r == NULL) {
        if (j->log != NULL)
            j->log("journal_write_failed", "out of memory");
        return -1;
    }
    r->steps = (jr_step *)(r + 1);
    r->nsteps = n;
    char *p = (char *)(r->steps + n);
    for (size_t i = 0; i < n; i++) {
        r->steps[i].name = put(&p, steps[i].name, strlen(steps[i].name));
        r->steps[i].result = NULL;
        if (steps[i].result != NULL) {
            r->steps[i].result = put(&p, steps[i].result, steps[i].result_len);
            r->steps[i].result_len = steps[i].result_len;
        }
    }
    r->answer_status = status;
    if (answer != NULL) {
        r->answer = put(&p, answer, len);
        r->answer_len = len;
    }
    push(j, r);
    return 0;
}

int jr_undo_end(jr *j, int64_t id, const char *name, int done)
{
    jr_rec *r = rec_new(strlen(name) + 1, JRK_UNDO_END, id, 0, NULL, NULL);
    if (r == NULL) {
        if (j->log != NULL)
            j->log("journal_write_failed", "out of memory");
        return -1;
    }
    char *p = (char *)(r + 1);
    r->name = put(&p, name, strlen(name));
    r->undo_done = done;
    push(j, r);
    return 0;
}

int jr_healthy(const jr *j)
{
    return atomic_load_explicit(&j->healthy, memory_order_relaxed);
}

void jr_get_stats(const jr *j, jr_stats *out)
{
    memset(out, 0, sizeof *out);
    out->path = j->path;
    out->commits = atomic_load_explicit(&j->commits, memory_order_relaxed);
    out->records = atomic_load_explicit(&j->records, memory_order_relaxed);
    out->pruned = atomic_load_explicit(&j->pruned, memory_order_relaxed);
    long sum = 0;
    for (int i = 0; i < JR_RPC_BUCKETS; i++)
        out->rpc[i] = sum += atomic_load_explicit(&j->rpc[i], memory_order_relaxed);
    sum = 0;
    for (int i = 0; i < JR_SEC_BUCKETS; i++)
        out->sec[i] = sum += atomic_load_explicit(&j->sec[i], memory_order_relaxed);
    out->seconds_sum = atomic_load_explicit(&j->seconds_sum, memory_order_relaxed);
    out->pending = atomic_load_explicit(&j->pending, memory_order_relaxed);
    out->last_commit = atomic_load_explicit(&j->last_commit, memory_order_relaxed);
    out->healthy = jr_healthy(j);
}

void jr_close(jr *j)
{
    if (j == NULL)
        return;
    if (j->started) {
        pthread_mutex_lock(&j->lock);
        j->stopping = 1;
        pthread_mutex_unlock(&j->lock);
        pthread_cond_signal(&j->wake);
        pthread_join(j->thread, NULL);
        pthread_mutex_lock(&j->lock);
        j->closed = 1;
        pthread_mutex_unlock(&j->lock);
    } else if (j->head != NULL) {
        commit_batch(j, j->head); /* queued before a start that never came (recovery's plans) */
        j->head = j->tail = NULL;
    }
    for (size_t i = 0; i < j->nboxes; i++)
        tg_mailbox_free(j->boxes[i]);
    jr_db_close(j->db);
    pthread_cond_destroy(&j->wake);
    pthread_mutex_destroy(&j->lock);
    free(j);
}
