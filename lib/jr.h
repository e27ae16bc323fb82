/* jr — the journal of durable compensation (contract v1.3, "Durable compensation"): a saga log in
 * one SQLite file, owned by one journal thread; workers hand it records and hear back on their own
 * loops when a record is durable.
 *
 *   begin      a checkout's record (request id, order id, the client's Idempotency-Key and the
 *              store's claim token, and for each validation with compensate the field its undo
 *              body needs); the checkout's first upstream request waits for it (jr_begin's done)
 *   accepted   the 200 waits for it; a record that says accepted is never compensated
 *   plan       the checkout failed: which validations are undone, with each one's result body
 *              (the answer does not wait); an empty plan ends the record
 *   undo end   one undo step ended (done or given up); the last one ends the record
 * Records of an unkeyed checkout are deleted when they end (nothing to replay); a keyed one keeps
 * its answer for idempotency.ttl_s (replayed into a memory store after a restart), then is pruned.
 *
 * Group commit: the thread takes every record queued so far and writes them in one transaction
 * (one fsync: WAL, synchronous=FULL); what arrives during that commit goes into the next one. Then
 * each awaited record's done(arg, status) is posted to its worker's loop (lib/tg_mailbox):
 * status 0 durable, or JR_FAILED (the write failed: disk full, I/O error; or the record came after
 * jr_close's drain). A record whose loop had stopped gets its done on the thread of jr_close. A
 * failed write marks the journal unavailable (jr_healthy 0, logged once) until a write succeeds
 * again; the thread probes once a second.
 *
 * Ownership: one process per file: jr_open takes an exclusive flock on "<path>.lock" (kept until
 * jr_close) and refuses a file in use, a file that is not a SQLite database or is corrupt, and a
 * schema it does not know (PRAGMA application_id / user_version), with a message naming the file.
 * Threads: jr_begin, jr_accepted, jr_plan, jr_undo_end, jr_healthy and jr_get_stats from any
 * thread; jr_open, jr_recover, jr_start and jr_close from the main thread (jr_recover before
 * jr_start). Costs per journaled checkout: one allocation and a copy of its ids and undo fields,
 * two queue pushes under a mutex, two posts back; on the journal thread one INSERT and one DELETE
 * (or UPDATE) by primary key, and a share of one fsync per batch. */
#ifndef CHECKOUTD_JR_H
#define CHECKOUTD_JR_H

#include "tg.h"

#include <stddef.h>
#include <stdint.h>

#define JR_FAILED (-5) /* -EIO: the record is not on disk */

typedef struct jr jr;
typedef void (*jr_done_fn)(void *arg, int status);
/* A log line: event and detail (bounded text). Called from the journal thread. */
typedef void (*jr_log_fn)(const char *event, const char *detail);

/* One validation's undo field: its name, and the JSON texts of the field's key and value as they
 * go into the undo body (lib/comp's comp_body). */
typedef struct jr_field {
    const char *name;
    const char *key;
    size_t key_len;
    const char *value;
    size_t value_len;
} jr_field;

typedef struct jr_begin_info {
    const char *request_id;
    const char *order_id;
    const char *idem_key;   /* the client's Idempotency-Key header as sent, or NULL */
    const char *idem_token; /* the store's claim token, or NULL */
    const char *idem_fp;    /* the request's fingerprint in hex (lib/idem), or NULL */
    size_t nfields;
    const jr_field *fields;
} jr_begin_info;

/* One step of a plan: a validation to undo and its success body (NULL: null in the undo body). */
typedef struct jr_step {
    const char *name;
    const char *result;
    size_t result_len;
} jr_step;

/* Opens (creating the directory and the file when missing) and checks path; loops: the workers,
 * each gets a mailbox (call before they start). NULL with a one-line reason naming the file. */
jr *jr_open(const char *path, tg_loop *const *loops, size_t nloops, jr_log_fn log, char *err,
            size_t errlen);

/* What a record held at start (jr_recover). Strings are valid during the callback only. */
enum { JR_BEGUN = 0, JR_ACCEPTED = 1, JR_PLANNED = 2, JR_FINISHED = 3 };
typedef struct jr_pending {
    int64_t id;
    int state;
    const char *request_id, *order_id, *idem_key, *idem_token, *idem_fp; /* key.. may be NULL */
    int64_t created;                                                     /* unix seconds */
    int answer_status;                                                   /* 0: no answer kept */
    const char *answer;
    size_t answer_len;
    size_t nfields; /* the begin record's fields */
    jr_field fields[32];
    /* JR_PLANNED: the plan's steps not yet ended */
    size_t nsteps;
    jr_step steps[32];
} jr_pending;
typedef void (*jr_recover_fn)(void *arg, const jr_pending *p);
/* Hands m to worker's loop (tg_mailbox_post): recovery's store writes that must run there. */
struct tg_mail;
void jr_post(jr *j, size_t worker, struct tg_mail *m);
/* Calls fn for every record not finished, and for every finished one that kept an answer, oldest
 * first. Before jr_start. 0, or -1 with a reason in err (a corrupt file). */
int jr_recover(jr *j, jr_recover_fn fn, void *arg, char *err, size_t errlen);

/* Starts the journal thread; records pruned ttl_s after they end, JR_PRUNE_BATCH (256) per
 * transaction, between commits (a full batch is followed by the next 50 ms later, else once a
 * second). 0 or a negative errno. */
int jr_start(jr *j, long ttl_s);

/* Queues the begin record; done(arg, status) on loop worker once it is durable (or failed).
 * Returns the record's id (> 0), or 0 when out of memory (then done never runs). */
int64_t jr_begin(jr *j, const jr_begin_info *b, size_t worker, jr_done_fn done, void *arg);
/* The checkout answered 200: answer (NULL: unkeyed, the record is deleted) is kept for replay.
 * done as for jr_begin. 0, or -1 when out of memory (done never runs). */
int jr_accepted(jr *j, int64_t id, int status, const char *answer, size_t len, size_t worker,
                jr_done_fn done, void *arg);
/* The checkout failed: its plan (n steps, 0 ends the record) and its answer (NULL: unkeyed). Not
 * awaited. 0 or -1 (out of memory: logged). */
int jr_plan(jr *j, int64_t id, const jr_step *steps, size_t n, int status, const char *answer,
            size_t len);
/* Undo step name of record id ended: done 1, given up 0. Not awaited. */
int jr_undo_end(jr *j, int64_t id, const char *name, int done);

/* 1 while the last write succeeded. Any thread, one atomic load. */
int jr_healthy(const jr *j);

/* For metrics and /status. The histogram bounds are JR_RPC_BOUNDS / JR_SEC_BOUNDS (cumulative
 * counts, the last bucket +Inf). */
#define JR_RPC_BUCKETS 10
#define JR_SEC_BUCKETS 12
extern const double jr_rpc_bounds[JR_RPC_BUCKETS - 1];
extern const double jr_sec_bounds[JR_SEC_BUCKETS - 1];
typedef struct jr_stats {
    const char *path;
    long commits;
    long records; /* in every commit, for the records-per-commit sum */
    long pruned;  /* finished records deleted after ttl_s */
    long rpc[JR_RPC_BUCKETS];
    double seconds_sum;
    long sec[JR_SEC_BUCKETS];
    long pending;       /* queued, not yet committed */
    double last_commit; /* unix seconds of the last commit, 0 when none */
    int healthy;
} jr_stats;
void jr_get_stats(const jr *j, jr_stats *out);

/* Stops the thread after it wrote what was queued, then runs what its mailboxes still hold (on
 * this thread, with each record's real status), closes the file and frees. After the loops
 * stopped. NULL is fine. */
void jr_close(jr *j);

#endif
