/* jr_db — SQLite for lib/jr. See jr_db.h. */
#include "jr_db.h"

#include <errno.h>
#include <fcntl.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#define JR_APP_ID  0x636b6a72 /* "ckjr" */
#define JR_VERSION 1

enum {
    S_BEGIN_TX,
    S_COMMIT,
    S_ROLLBACK,
    S_INSERT,
    S_ACCEPT_KEYED,
    S_DELETE,
    S_DELETE_STEPS,
    S_PLAN,
    S_STEP,
    S_UNDO_END,
    S_FINISH,
    S_PROBE,
    S_PRUNE_SELECT,
    S_COUNT
};

static const char *const sql_text[S_COUNT] = {
    [S_BEGIN_TX] = "BEGIN",
    [S_COMMIT] = "COMMIT",
    [S_ROLLBACK] = "ROLLBACK",
    [S_INSERT] = "INSERT INTO checkout(id, request_id, order_id, idem_key, idem_token, fields, "
                 "state, created, idem_fp) VALUES(?1, ?2, ?3, ?4, ?5, ?6, 0, ?7, ?8)",
    [S_ACCEPT_KEYED] = "UPDATE checkout SET state = ?5, finished = ?2, answer_status = ?3, "
                       "answer = ?4 WHERE id = ?1",
    [S_DELETE] = "DELETE FROM checkout WHERE id = ?1",
    [S_DELETE_STEPS] = "DELETE FROM step WHERE checkout_id = ?1",
    [S_PLAN] = "UPDATE checkout SET state = 2, answer_status = ?2, answer = ?3 WHERE id = ?1",
    [S_STEP] = "INSERT OR REPLACE INTO step(checkout_id, validation, result, state) "
               "VALUES(?1, ?2, ?3, 0)",
    [S_UNDO_END] = "UPDATE step SET state = ?3 WHERE checkout_id = ?1 AND validation = ?2",
    /* the record ends when no step of its plan is pending */
    [S_FINISH] = "UPDATE checkout SET state = 3, finished = ?2 WHERE id = ?1 AND state = 2 AND "
                 "NOT EXISTS (SELECT 1 FROM step WHERE checkout_id = ?1 AND state = 0)",
    [S_PROBE] = "INSERT OR REPLACE INTO meta(k, v) VALUES('probe', ?1)",
    [S_PRUNE_SELECT] = "SELECT id FROM checkout WHERE finished IS NOT NULL AND "
                       "(idem_key IS NULL OR finished < ?1) LIMIT ?2",
};

static const char schema[] =
    "CREATE TABLE checkout(id INTEGER PRIMARY KEY, request_id TEXT NOT NULL, order_id TEXT NOT "
    "NULL, idem_key TEXT, idem_token TEXT, idem_fp TEXT, fields BLOB NOT NULL, state INTEGER NOT "
    "NULL, created "
    "INTEGER NOT NULL, finished INTEGER, answer_status INTEGER, answer BLOB);"
    "CREATE INDEX checkout_finished ON checkout(finished) WHERE finished IS NOT NULL;"
    "CREATE TABLE step(checkout_id INTEGER NOT NULL, validation TEXT NOT NULL, result BLOB, state "
    "INTEGER NOT NULL, PRIMARY KEY(checkout_id, validation)) WITHOUT ROWID;"
    "CREATE TABLE meta(k TEXT PRIMARY KEY, v);"
    "PRAGMA application_id = 1667983986;" /* JR_APP_ID */
    "PRAGMA user_version = 1;";

struct jr_db {
    sqlite3 *db;
    sqlite3_stmt *st[S_COUNT];
    int lock_fd;
    char path[4096];
};

/* mkdir -p of path's directory. 0 or -1 (errno). */
static int make_dirs(const char *path)
{
    char dir[4096];
    snprintf(dir, sizeof dir, "%s", path);
    char *slash = strrchr(dir, '/');
    if (slash == NULL || slash == dir)
        return 0;
    *slash = '\0';
    for (char *p = dir + 1; *p; p++) {
        if (*p != '/')
            continue;
        *p = '\0';
        if (mkdir(dir, 0750) != 0 && errno != EEXIST)
            return -1;
        *p = '/';
    }
    if (mkdir(dir, 0750) != 0 && errno != EEXIST)
        return -1;
    return 0;
}

static int64_t pragma_int(jr_db *d, const char *sql, int *rc)
{
    sqlite3_stmt *st = NULL;
    int64_t v = 0;
    *rc = sqlite3_prepare_v2(d->db, sql, -1, &st, NULL);
    if (*rc == SQLITE_OK) {
        *rc = sqlite3_step(st);
        if (*rc == SQLITE_ROW) {
            v = sqlite3_column_int64(st, 0);
            *rc = SQLITE_OK;
        }
    }
    sqlite3_finalize(st);
    return v;
}

/* The file's schema: created when the file is new, else checked. 0, or -1 after a message. */
static int check_schema(jr_db *d, char *err, size_t errlen)
{
    int rc;
    int64_t app = pragma_int(d, "PRAGMA application_id", &rc);
    int64_t ver = rc == SQLITE_OK ? pragma_int(d, "PRAGMA user_version", &rc) : 0;
    int64_t tables = rc == SQLITE_OK ? pragma_int(d, "SELECT count(*) FROM sqlite_schema", &rc) : 0;
    if (rc != SQLITE_OK) {
        snprintf(err, errlen, "journal.path: %s: cannot read it: %s (corrupt or not a journal)",
                 d->path, sqlite3_errstr(rc));
        return -1;
    }
    if (app == 0 && ver == 0 && tables == 0) {
        if (sqlite3_exec(d->db, schema, NULL, NULL, NULL) != SQLITE_OK) {
            snprintf(err, errlen, "journal.path: %s: cannot create the journal: %s", d->path,
                     sqlite3_errmsg(d->db));
            return -1;
        }
        return 0;
    }
    if (app != JR_APP_ID) {
        snprintf(err, errlen, "journal.path: %s: not a checkoutd journal (application_id %lld)",
                 d->path, (long long)app);
        return -1;
    }
    if (ver != JR_VERSION) {
        snprintf(err, errlen,
                 "journal.path: %s: unknown journal schema version %lld (this checkoutd knows %d)",
                 d->path, (long long)ver, JR_VERSION);
        return -1;
    }
    return 0;
}

jr_db *jr_db_open(const char *path, char *err, size_t errlen)
{
    char lock_path[4200];
    jr_db *d = calloc(1, sizeof *d);
    if (d == NULL) {
        snprintf(err, errlen, "journal: out of memory");
        return NULL;
    }
    d->lock_fd = -1;
    snprintf(d->path, sizeof d->path, "%s", path);
    if (make_dirs(path) != 0) {
        snprintf(err, errlen, "journal.path: %s: cannot create its directory: %s", path,
                 strerror(errno));
        goto fail;
    }
    /* One process per journal: a flock on a sidecar file, held for the process's life (the kernel
     * drops it when the process dies, kill -9 included). */
    snprintf(lock_path, sizeof lock_path, "%s.lock", path);
    d->lock_fd = open(lock_path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
    if (d->lock_fd < 0) {
        snprintf(err, errlen, "journal.path: %s: cannot open %s: %s", path, lock_path,
                 strerror(errno));
        goto fail;
    }
    if (flock(d->lock_fd, LOCK_EX | LOCK_NB) != 0) {
        snprintf(err, errlen, "journal.path: %s: in use by another checkoutd process (%s)", path,
                 errno == EWOULDBLOCK ? "locked" : strerror(errno));
        goto fail;
    }
    if (sqlite3_open_v2(path, &d->db,
                        SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX |
                            SQLITE_OPEN_EXRESCODE,
                        NULL) != SQLITE_OK) {
        snprintf(err, errlen, "journal.path: %s: cannot open: %s", path,
                 d->db ? sqlite3_errmsg(d->db) : "out of memory");
        goto fail;
    }
    /* Exclusive locking before WAL: the WAL index lives in heap memory (no -shm file), which is
     * right for a file only this process opens (the flock says so). synchronous=FULL: a commit
     * returns after the WAL's fsync. */
    char *msg = NULL;
    if (sqlite3_exec(d->db,
                     "PRAGMA locking_mode = EXCLUSIVE; PRAGMA journal_mode = WAL; "
                     "PRAGMA synchronous = FULL;",
                     NULL, NULL, &msg) != SQLITE_OK) {
        snprintf(err, errlen, "journal.path: %s: cannot open it: %s (corrupt or not a journal)",
                 path, msg ? msg : sqlite3_errmsg(d->db));
        sqlite3_free(msg);
        goto fail;
    }
    int rc;
    (void)pragma_int(d, "PRAGMA journal_mode", &rc);
    if (check_schema(d, err, errlen) != 0)
        goto fail;
    for (int i = 0; i < S_COUNT; i++)
        if (sqlite3_prepare_v3(d->db, sql_text[i], -1, SQLITE_PREPARE_PERSISTENT, &d->st[i],
                               NULL) != SQLITE_OK) {
            snprintf(err, errlen, "journal.path: %s: %s (corrupt or not a journal)", path,
                     sqlite3_errmsg(d->db));
            goto fail;
        }
    return d;
fail:
    jr_db_close(d);
    return NULL;
}

void jr_db_close(jr_db *d)
{
    if (d == NULL)
        return;
    for (int i = 0; i < S_COUNT; i++)
        sqlite3_finalize(d->st[i]);
    sqlite3_close(d->db);
    if (d->lock_fd >= 0)
        close(d->lock_fd); /* drops the flock */
    free(d);
}

int64_t jr_db_max_id(jr_db *d)
{
    int rc;
    return pragma_int(d, "SELECT coalesce(max(id), 0) FROM checkout", &rc);
}

/* Runs a statement to its end and resets it. SQLITE_OK or the error. */
static int run(sqlite3_stmt *st)
{
    int rc = sqlite3_step(st);
    sqlite3_reset(st);
    sqlite3_clear_bindings(st);
    return rc == SQLITE_DONE || rc == SQLITE_ROW ? SQLITE_OK : rc;
}

static void bind_text(sqlite3_stmt *st, int i, const char *s)
{
    if (s != NULL)
        sqlite3_bind_text(st, i, s, -1, SQLITE_STATIC);
    else
        sqlite3_bind_null(st, i);
}

static void bind_blob(sqlite3_stmt *st, int i, const char *p, size_t n)
{
    if (p != NULL)
        sqlite3_bind_blob64(st, i, p, n, SQLITE_STATIC);
    else
        sqlite3_bind_null(st, i);
}

/* The end of a record: an unkeyed one goes at once (nothing to replay), a keyed one keeps its
 * answer (accepted, or finished: an empty plan) until pruned. */
static int end_record(jr_db *d, const jr_rec *r, int64_t now)
{
    int rc;
    if (r->answer == NULL) {
        sqlite3_bind_int64(d->st[S_DELETE_STEPS], 1, r->id);
        rc = run(d->st[S_DELETE_STEPS]);
        if (rc != SQLITE_OK)
            return rc;
        sqlite3_bind_int64(d->st[S_DELETE], 1, r->id);
        return run(d->st[S_DELETE]);
    }
    sqlite3_stmt *st = d->st[S_ACCEPT_KEYED];
    sqlite3_bind_int64(st, 1, r->id);
    sqlite3_bind_int64(st, 2, now);
    sqlite3_bind_int(st, 3, r->answer_status);
    bind_blob(st, 4, r->answer, r->answer_len);
    sqlite3_bind_int(st, 5, r->kind == JRK_ACCEPTED ? JR_ACCEPTED : JR_FINISHED);
    return run(st);
}

static int apply(jr_db *d, const jr_rec *r, int64_t now)
{
    sqlite3_stmt *st;
    int rc;
    switch (r->kind) {
    case JRK_BEGIN:
        st = d->st[S_INSERT];
        sqlite3_bind_int64(st, 1, r->id);
        bind_text(st, 2, r->request_id);
        bind_text(st, 3, r->order_id);
        bind_text(st, 4, r->idem_key);
        bind_text(st, 5, r->idem_token);
        sqlite3_bind_blob64(st, 6, r->fields ? r->fields : "", r->fields_len, SQLITE_STATIC);
        sqlite3_bind_int64(st, 7, now);
        bind_text(st, 8, r->idem_fp);
        return run(st);
    case JRK_ACCEPTED:
        return end_record(d, r, now);
    case JRK_PLAN:
        if (r->nsteps == 0)
            return end_record(d, r, now);
        st = d->st[S_PLAN];
        sqlite3_bind_int64(st, 1, r->id);
        if (r->answer != NULL)
            sqlite3_bind_int(st, 2, r->answer_status);
        else
            sqlite3_bind_null(st, 2);
        bind_blob(st, 3, r->answer, r->answer_len);
        rc = run(st);
        for (size_t i = 0; rc == SQLITE_OK && i < r->nsteps; i++) {
            st = d->st[S_STEP];
            sqlite3_bind_int64(st, 1, r->id);
            bind_text(st, 2, r->steps[i].name);
            bind_blob(st, 3, r->steps[i].result, r->steps[i].result_len);
            rc = run(st);
        }
        return rc;
    case JRK_UNDO_END:
        st = d->st[S_UNDO_END];
        sqlite3_bind_int64(st, 1, r->id);
        bind_text(st, 2, r->name);
        sqlite3_bind_int(st, 3, r->undo_done ? 1 : 2);
        rc = run(st);
        if (rc != SQLITE_OK)
            return rc;
        st = d->st[S_FINISH];
        sqlite3_bind_int64(st, 1, r->id);
        sqlite3_bind_int64(st, 2, now);
        return run(st);
    }
    return SQLITE_MISUSE;
}

static int fail_with(jr_db *d, int rc, char *why, size_t cap)
{
    snprintf(why, cap, "%s: %s", d->path, sqlite3_errstr(rc));
    run(d->st[S_ROLLBACK]); /* after a failed COMMIT too: leaves no transaction open */
    return -1;
}

int jr_db_write(jr_db *d, jr_rec *const *recs, size_t n, int64_t now, char *why, size_t cap)
{
    int rc = run(d->st[S_BEGIN_TX]);
    if (rc != SQLITE_OK)
        return fail_with(d, rc, why, cap);
    for (size_t i = 0; i < n; i++) {
        rc = apply(d, recs[i], now);
        if (rc != SQLITE_OK)
            return fail_with(d, rc, why, cap);
    }
    rc = run(d->st[S_COMMIT]);
    if (rc != SQLITE_OK)
        return fail_with(d, rc, why, cap);
    return 0;
}

int jr_db_probe(jr_db *d, int64_t now, char *why, size_t cap)
{
    int rc = run(d->st[S_BEGIN_TX]);
    if (rc == SQLITE_OK) {
        sqlite3_bind_int64(d->st[S_PROBE], 1, now);
        rc = run(d->st[S_PROBE]);
    }
    if (rc == SQLITE_OK)
        rc = run(d->st[S_COMMIT]);
    return rc == SQLITE_OK ? 0 : fail_with(d, rc, why, cap);
}

int jr_db_prune(jr_db *d, int64_t cutoff, int max)
{
    int64_t ids[256];
    int n = 0, rc;
    if (max > 256)
        max = 256;
    sqlite3_stmt *st = d->st[S_PRUNE_SELECT];
    sqlite3_bind_int64(st, 1, cutoff);
    sqlite3_bind_int(st, 2, max);
    while (n < max && (rc = sqlite3_step(st)) == SQLITE_ROW)
        ids[n++] = sqlite3_column_int64(st, 0);
    sqlite3_reset(st);
    sqlite3_clear_bindings(st);
    if (n == 0)
        return 0;
    if (run(d->st[S_BEGIN_TX]) != SQLITE_OK)
        return -1;
    for (int i = 0; i < n; i++) {
        sqlite3_bind_int64(d->st[S_DELETE_STEPS], 1, ids[i]);
        sqlite3_bind_int64(d->st[S_DELETE], 1, ids[i]);
        if (run(d->st[S_DELETE_STEPS]) != SQLITE_OK || run(d->st[S_DELETE]) != SQLITE_OK) {
            run(d->st[S_ROLLBACK]);
            return -1;
        }
    }
    if (run(d->st[S_COMMIT]) != SQLITE_OK) {
        run(d->st[S_ROLLBACK]);
        return -1;
    }
    return n;
}

/* Splits "name\0key\0value\0"... into p->fields (pointers into blob, which must stay). */
static void split_fields(const char *blob, size_t len, jr_pending *p)
{
    const char *q = blob, *end = blob + len;
    p->nfields = 0;
    while (q < end && p->nfields < 32) {
        jr_field *f = &p->fields[p->nfields];
        f->name = q;
        q += strnlen(q, (size_t)(end - q)) + 1;
        if (q >= end)
            break;
        f->key = q;
        f->key_len = strnlen(q, (size_t)(end - q));
        q += f->key_len + 1;
        if (q > end)
            break;
        f->value = q;
        f->value_len = strnlen(q, (size_t)(end - q));
        q += f->value_len + 1;
        if (q > end)
            break;
        p->nfields++;
    }
}

static const char *col_text(sqlite3_stmt *st, int i)
{
    return (const char *)sqlite3_column_text(st, i);
}

int jr_db_scan(jr_db *d, jr_recover_fn fn, void *arg, char *err, size_t errlen)
{
    static const char q[] =
        "SELECT id, state, request_id, order_id, idem_key, idem_token, fields, "
        "created, answer_status, answer, idem_fp FROM checkout WHERE state IN (0, 2) "
        "OR answer IS NOT NULL ORDER BY id";
    static const char qs[] = "SELECT validation, result FROM step WHERE checkout_id = ?1 AND "
                             "state = 0 ORDER BY validation";
    sqlite3_stmt *st = NULL, *ss = NULL;
    int rc = sqlite3_prepare_v2(d->db, q, -1, &st, NULL);
    if (rc == SQLITE_OK)
        rc = sqlite3_prepare_v2(d->db, qs, -1, &ss, NULL);
    while (rc == SQLITE_OK) {
        rc = sqlite3_step(st);
        if (rc != SQLITE_ROW)
            break;
        rc = SQLITE_OK;
        jr_pending p;
        memset(&p, 0, sizeof p);
        p.id = sqlite3_column_int64(st, 0);
        p.state = sqlite3_column_int(st, 1);
        p.request_id = col_text(st, 2);
        p.order_id = col_text(st, 3);
        p.idem_key = col_text(st, 4);
        p.idem_token = col_text(st, 5);
        /* the blob's text copy keeps its bytes, NULs included, until the next step */
        const char *blob = sqlite3_column_blob(st, 6);
        size_t blen = (size_t)sqlite3_column_bytes(st, 6);
        if (blob != NULL)
            split_fields(blob, blen, &p);
        p.created = sqlite3_column_int64(st, 7);
        p.answer_status = sqlite3_column_int(st, 8);
        p.answer = sqlite3_column_blob(st, 9);
        p.answer_len = (size_t)sqlite3_column_bytes(st, 9);
        p.idem_fp = col_text(st, 10);
        if (p.answer == NULL)
            p.answer_status = 0;
        if (p.state == JR_PLANNED) {
            sqlite3_bind_int64(ss, 1, p.id);
            /* copies: the next step of ss ends the previous row's strings */
            while (p.nsteps < 32 && (rc = sqlite3_step(ss)) == SQLITE_ROW) {
                jr_step *s = &p.steps[p.nsteps];
                const char *name = col_text(ss, 0), *res = sqlite3_column_blob(ss, 1);
                size_t rlen = (size_t)sqlite3_column_bytes(ss, 1);
                char *copy = malloc(strlen(name ? name : "") + 1 + rlen + 1);
                if (copy == NULL) {
                    rc = SQLITE_NOMEM;
                    break;
                }
                s->name = copy;
                memcpy(copy, name ? name : "", strlen(name ? name : "") + 1);
                s->result = NULL;
                if (res != NULL) {
                    char *r = copy + strlen(copy) + 1;
                    memcpy(r, res, rlen);
                    r[rlen] = '\0';
                    s->result = r;
                }
                s->result_len = rlen;
                p.nsteps++;
            }
            if (rc != SQLITE_ROW && rc != SQLITE_DONE) {
                for (size_t i = 0; i < p.nsteps; i++)
                    free((char *)p.steps[i].name);
                sqlite3_reset(ss);
                break;
            }
            rc = SQLITE_OK;
        }
        if (p.request_id != NULL && p.order_id != NULL)
            fn(arg, &p);
        for (size_t i = 0; i < p.nsteps; i++)
            free((char *)p.steps[i].name);
        sqlite3_reset(ss);
    }
    if (rc == SQLITE_DONE)
        rc = SQLITE_OK;
    if (rc != SQLITE_OK)
        snprintf(err, errlen, "journal.path: %s: cannot read it: %s (corrupt?)", d->path,
                 sqlite3_errmsg(d->db));
    sqlite3_finalize(ss);
    sqlite3_finalize(st);
    return rc == SQLITE_OK ? 0 : -1;
}
