/* jr_db — the SQLite side of lib/jr: the file, its lock, its schema and the statements. Only
 * lib/jr.c includes it; every function runs on one thread at a time (jr_open's, then the journal
 * thread's).
 *
 * Schema (version 1; PRAGMA application_id 0x636b6a72 "ckjr", PRAGMA user_version 1):
 *   checkout(id PK, request_id, order_id, idem_key, idem_token, idem_fp, fields BLOB, state,
 * created, finished, answer_status, answer BLOB)    one row per journaled checkout
 *   step(checkout_id, validation, result BLOB, state)  one row per planned undo step
 *   meta(k PK, v)                                      the probe's row
 * fields is "name\0key\0value\0" per validation with compensate (JSON texts hold no NUL). */
#ifndef CHECKOUTD_JR_DB_H
#define CHECKOUTD_JR_DB_H

#include "jr.h"
#include "tg_mailbox.h"

#include <stddef.h>
#include <stdint.h>

typedef enum jr_kind { JRK_BEGIN, JRK_ACCEPTED, JRK_PLAN, JRK_UNDO_END } jr_kind;

/* A record, one allocation (strings in its tail). */
typedef struct jr_rec {
    tg_mail mail; /* first: the mailbox hands it back */
    struct jr_rec *next;
    jr_kind kind;
    int64_t id;
    int status; /* set by the journal thread */
    size_t worker;
    jr_done_fn done; /* NULL: not awaited, the journal thread frees it */
    void *arg;
    const char *request_id, *order_id, *idem_key, *idem_token, *idem_fp; /* begin */
    const char *fields;                                                  /* begin */
    size_t fields_len;
    int answer_status; /* accepted, plan */
    const char *answer;
    size_t answer_len;
    size_t nsteps; /* plan */
    jr_step *steps;
    const char *name; /* undo end */
    int undo_done;
} jr_rec;

typedef struct jr_db jr_db;

jr_db *jr_db_open(const char *path, char *err, size_t errlen);
void jr_db_close(jr_db *d);
/* The largest record id in the file (0 when none). */
int64_t jr_db_max_id(jr_db *d);
/* One transaction: BEGIN, each record, COMMIT. 0, or -1 (rolled back) with the reason in why. */
int jr_db_write(jr_db *d, jr_rec *const *recs, size_t n, int64_t now, char *why, size_t cap);
/* One small write (the probe while unavailable). 0 or -1. */
int jr_db_probe(jr_db *d, int64_t now, char *why, size_t cap);
/* Deletes at most max records finished before cutoff (and every finished unkeyed one). The
 * number deleted, or -1. */
int jr_db_prune(jr_db *d, int64_t cutoff, int max);
int jr_db_scan(jr_db *d, jr_recover_fn fn, void *arg, char *err, size_t errlen);

#endif
