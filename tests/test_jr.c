/* Unit tests of lib/jr (the journal): records written and read back at "start" (jr_recover), group
 * commit, one process per file, refusal of a corrupt file or an unknown schema, a failing write
 * (RLIMIT_FSIZE, in a child) and the durable callbacks on a worker loop's thread. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <pthread.h>
#include <signal.h>
#include <sqlite3.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "jr.h"
#include "tg.h"

static char dir[128], path[256];
static tg_loop *loop;

static void rm_journal(void)
{
    char p[300];
    static const char *const sfx[] = {"", "-wal", "-shm", ".lock", "-journal"};
    for (size_t i = 0; i < 5; i++) {
        snprintf(p, sizeof p, "%s%s", path, sfx[i]);
        unlink(p);
    }
}

static int setup(void **state)
{
    (void)state;
    snprintf(dir, sizeof dir, "/tmp/checkoutd-test-jr-%d/sub", (int)getpid());
    snprintf(path, sizeof path, "%s/journal.db", dir);
    rm_journal();
    tg_loop_options o = {.max_body_bytes = 1 << 20, .max_connections = 0};
    loop = tg_loop_new(&o);
    return loop != NULL ? 0 : -1;
}

static int teardown(void **state)
{
    (void)state;
    tg_loop_free(loop);
    rm_journal();
    rmdir(dir);
    char parent[128];
    snprintf(parent, sizeof parent, "/tmp/checkoutd-test-jr-%d", (int)getpid());
    rmdir(parent);
    return 0;
}

typedef struct waiter {
    atomic_int calls;
    atomic_int status;
    pthread_t thread;
} waiter;

static void on_done(void *arg, int status)
{
    waiter *w = arg;
    w->thread = pthread_self();
    atomic_store(&w->status, status);
    atomic_fetch_add(&w->calls, 1);
}

static void wait_calls(waiter *w, int n)
{
    for (int i = 0; i < 5000 && atomic_load(&w->calls) < n; i++)
        usleep(1000);
    assert_int_equal(atomic_load(&w->calls), n);
}

static jr *open_started(void)
{
    char err[512];
    tg_loop *loops[1] = {loop};
    jr *j = jr_open(path, loops, 1, NULL, err, sizeof err);
    if (j == NULL)
        fprintf(stderr, "jr_open: %s\n", err);
    assert_non_null(j);
    return j;
}

static const jr_field fields[2] = {
    {"inventory", "\"items\"", 7, "[{\"sku\":\"A\"}]", 13},
    {"payment", "\"payment\"", 9, "{\"token\":\"t\"}", 13},
};

typedef struct seen {
    int n;
    jr_pending p[8];
    char order[8][64], answer[8][256], step_result[8][64];
} seen;

static void collect(void *arg, const jr_pending *p)
{
    seen *s = arg;
    if (s->n >= 8)
        return;
    s->p[s->n] = *p;
    snprintf(s->order[s->n], 64, "%s", p->order_id);
    snprintf(s->answer[s->n], 256, "%.*s", (int)p->answer_len, p->answer ? p->answer : "");
    if (p->nsteps > 0 && p->steps[0].result != NULL)
        snprintf(s->step_result[s->n], 64, "%.*s", (int)p->steps[0].result_len, p->steps[0].result);
    /* the field values are checked here, while their strings are valid */
    if (p->nfields == 2) {
        assert_string_equal(p->fields[1].name, "payment");
        assert_int_equal(p->fields[1].value_len, 13);
        assert_memory_equal(p->fields[1].value, "{\"token\":\"t\"}", 13);
        assert_memory_equal(p->fields[0].key, "\"items\"", 7);
    }
    s->n++;
}

/* Every kind of record, then a "restart": what recovery sees. */
static void test_records_and_recovery(void **state)
{
    (void)state;
    assert_int_equal(tg_loop_start(loop), 0);
    jr *j = open_started();
    char err[512];
    seen none = {0};
    assert_int_equal(jr_recover(j, collect, &none, err, sizeof err), 0);
    assert_int_equal(none.n, 0); /* a new file */
    assert_int_equal(jr_start(j, 3600), 0);

    waiter w = {0};
    jr_begin_info b = {.request_id = "r1", .order_id = "o-begun", .nfields = 2, .fields = fields};
    int64_t begun = jr_begin(j, &b, 0, on_done, &w);
    b.order_id = "o-accepted";
    int64_t accepted = jr_begin(j, &b, 0, on_done, &w);
    b.order_id = "o-keyed";
    b.idem_key = "\"k1\"";
    b.idem_token = "tok";
    int64_t keyed = jr_begin(j, &b, 0, on_done, &w);
    b.order_id = "o-planned";
    b.idem_key = b.idem_token = NULL;
    int64_t planned = jr_begin(j, &b, 0, on_done, &w);
    b.order_id = "o-undone";
    int64_t undone = jr_begin(j, &b, 0, on_done, &w);
    assert_true(begun > 0 && accepted > begun && undone > planned);
    wait_calls(&w, 5);
    assert_int_equal(atomic_load(&w.status), 0);

    assert_int_equal(jr_accepted(j, accepted, 200, NULL, 0, 0, on_done, &w), 0);
    assert_int_equal(jr_accepted(j, keyed, 200, "{\"status\":\"accepted\"}", 21, 0, on_done, &w),
                     0);
    jr_step steps[2] = {{"inventory", "{\"held\":1}", 10}, {"payment", NULL, 0}};
    assert_int_equal(jr_plan(j, planned, steps, 2, 0, NULL, 0), 0);
    assert_int_equal(jr_undo_end(j, planned, "payment", 1), 0);
    assert_int_equal(jr_plan(j, undone, steps, 1, 0, NULL, 0), 0);
    assert_int_equal(jr_undo_end(j, undone, "inventory", 0), 0);
    wait_calls(&w, 7);
    jr_close(j); /* writes what was queued */

    j = open_started();
    seen s = {0};
    if (jr_recover(j, collect, &s, err, sizeof err) != 0)
        fail_msg("jr_recover: %s", err);
    /* begun (mid-flight), keyed (accepted, its answer kept), planned (inventory pending); the
     * unkeyed accepted one and the fully undone one are gone */
    assert_int_equal(s.n, 3);
    assert_string_equal(s.order[0], "o-begun");
    assert_int_equal(s.p[0].state, JR_BEGUN);
    assert_int_equal(s.p[0].nfields, 2);
    assert_string_equal(s.order[1], "o-keyed");
    assert_int_equal(s.p[1].state, JR_ACCEPTED);
    assert_int_equal(s.p[1].answer_status, 200);
    assert_string_equal(s.answer[1], "{\"status\":\"accepted\"}");
    assert_string_equal(s.order[2], "o-planned");
    assert_int_equal(s.p[2].state, JR_PLANNED);
    assert_int_equal(s.p[2].nsteps, 1);
    assert_string_equal(s.step_result[2], "{\"held\":1}");
    /* ids go on after the largest in the file */
    assert_int_equal(jr_start(j, 3600), 0);
    waiter w2 = {0};
    b.order_id = "o-next";
    assert_true(jr_begin(j, &b, 0, on_done, &w2) > undone);
    wait_calls(&w2, 1);
    jr_close(j);
    tg_loop_stop(loop);
}

/* Records queued before the thread starts go in one transaction: one commit for all of them. */
static void test_group_commit(void **state)
{
    (void)state;
    assert_int_equal(tg_loop_start(loop), 0);
    jr *j = open_started();
    waiter w = {0};
    jr_begin_info b = {.request_id = "r", .order_id = "o", .nfields = 2, .fields = fields};
    for (int i = 0; i < 50; i++)
        assert_true(jr_begin(j, &b, 0, on_done, &w) > 0);
    jr_stats st;
    jr_get_stats(j, &st);
    assert_int_equal(st.pending, 50);
    assert_int_equal(jr_start(j, 3600), 0);
    wait_calls(&w, 50);
    jr_get_stats(j, &st);
    assert_int_equal(st.commits, 1);
    assert_int_equal(st.records, 50);
    assert_int_equal(st.pending, 0);
    assert_int_equal(st.rpc[6], 1); /* 50 records: in the bucket le 64 */
    assert_int_equal(st.rpc[5], 0); /* not in le 32 */
    assert_true(st.last_commit > 1e9);
    assert_int_equal(st.healthy, 1);
    jr_close(j);
    tg_loop_stop(loop);
}

/* Keyed records that ended are kept ttl_s, then pruned in batches of 256 (300: two of them). */
static void test_prune(void **state)
{
    (void)state;
    assert_int_equal(tg_loop_start(loop), 0);
    jr *j = open_started();
    assert_int_equal(jr_start(j, 1), 0);
    waiter w = {0};
    jr_begin_info b = {
        .request_id = "r", .order_id = "o", .idem_key = "k", .nfields = 2, .fields = fields};
    for (int i = 0; i < 300; i++) {
        int64_t id = jr_begin(j, &b, 0, on_done, &w);
        assert_true(id > 0);
        assert_int_equal(jr_accepted(j, id, 200, "{}", 2, 0, on_done, &w), 0);
    }
    wait_calls(&w, 600);
    jr_stats st;
    jr_get_stats(j, &st);
    assert_int_equal(st.pruned, 0); /* kept for ttl_s */
    for (int i = 0; i < 100 && st.pruned < 300; i++) {
        usleep(100 * 1000);
        jr_get_stats(j, &st);
    }
    assert_int_equal(st.pruned, 300);
    jr_close(j);
    char err[512];
    seen s0 = {0};
    j = open_started();
    assert_int_equal(jr_recover(j, collect, &s0, err, sizeof err), 0);
    assert_int_equal(s0.n, 0); /* gone from the file */
    jr_close(j);
    tg_loop_stop(loop);
}

/* The callback runs on the worker loop's thread, not the journal's. */
static void test_callbacks_on_loop(void **state)
{
    (void)state;
    waiter first = {0};
    assert_int_equal(tg_loop_start(loop), 0);
    jr *j = open_started();
    assert_int_equal(jr_start(j, 3600), 0);
    jr_begin_info b = {.request_id = "r", .order_id = "o", .nfields = 0, .fields = NULL};
    waiter second = {0};
    jr_begin(j, &b, 0, on_done, &first);
    jr_begin(j, &b, 0, on_done, &second);
    wait_calls(&first, 1);
    wait_calls(&second, 1);
    assert_false(pthread_equal(first.thread, pthread_self()));
    assert_true(pthread_equal(first.thread, second.thread));
    jr_close(j);
    tg_loop_stop(loop);
}

/* A second open of the same path is refused while the first holds it, naming the file. */
static void test_one_process(void **state)
{
    (void)state;
    char err[512];
    jr *j = open_started();
    jr *k = jr_open(path, &loop, 1, NULL, err, sizeof err);
    assert_null(k);
    assert_non_null(strstr(err, path));
    assert_non_null(strstr(err, "in use"));
    jr_close(j);
    k = jr_open(path, &loop, 1, NULL, err, sizeof err); /* free again */
    assert_non_null(k);
    jr_close(k);
}

static void test_corrupt_and_unknown_version(void **state)
{
    (void)state;
    char err[512];
    jr_close(open_started()); /* creates dir and file */
    rm_journal();
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    for (int i = 0; i < 512; i++)
        fputs("this is not a sqlite database at all ", f);
    fclose(f);
    jr *j = jr_open(path, &loop, 1, NULL, err, sizeof err);
    assert_null(j);
    assert_non_null(strstr(err, path));
    assert_non_null(strstr(err, "journal.path"));

    rm_journal();
    jr_close(open_started());
    sqlite3 *db = NULL;
    assert_int_equal(sqlite3_open(path, &db), SQLITE_OK);
    assert_int_equal(sqlite3_exec(db, "PRAGMA user_version = 7", NULL, NULL, NULL), SQLITE_OK);
    sqlite3_close(db);
    j = jr_open(path, &loop, 1, NULL, err, sizeof err);
    assert_null(j);
    assert_non_null(strstr(err, path));
    assert_non_null(strstr(err, "unknown journal schema version 7"));

    rm_journal();
    assert_int_equal(sqlite3_open(path, &db), SQLITE_OK);
    assert_int_equal(sqlite3_exec(db, "CREATE TABLE t(x)", NULL, NULL, NULL), SQLITE_OK);
    sqlite3_close(db);
    j = jr_open(path, &loop, 1, NULL, err, sizeof err);
    assert_null(j);
    assert_non_null(strstr(err, "not a checkoutd journal"));
}

static const char *last_event;
static void log_event(const char *event, const char *detail)
{
    (void)detail;
    last_event = event;
}

/* A write that fails (the file may not grow: RLIMIT_FSIZE) is reported as JR_FAILED and makes the
 * journal unhealthy; in a child, so that the limit does not touch the test. */
static void test_failing_write(void **state)
{
    (void)state;
    jr_close(open_started());
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        char err[512];
        signal(SIGXFSZ, SIG_IGN);
        tg_loop_options o = {.max_body_bytes = 1 << 20, .max_connections = 0};
        tg_loop *l = tg_loop_new(&o);
        if (l == NULL || tg_loop_start(l) != 0)
            _exit(10);
        jr *j = jr_open(path, &l, 1, log_event, err, sizeof err);
        if (j == NULL || jr_start(j, 3600) != 0)
            _exit(11);
        struct rlimit rl = {256 * 1024, 256 * 1024};
        setrlimit(RLIMIT_FSIZE, &rl);
        static char big[60000];
        memset(big, 'x', sizeof big - 1);
        jr_field f = {"payment", "\"p\"", 3, big, sizeof big - 1};
        jr_begin_info b = {.request_id = "r", .order_id = "o", .nfields = 1, .fields = &f};
        waiter w = {0};
        int failed = 0;
        for (int i = 0; i < 40 && !failed; i++) {
            int before = atomic_load(&w.calls);
            jr_begin(j, &b, 0, on_done, &w);
            for (int k = 0; k < 5000 && atomic_load(&w.calls) == before; k++)
                usleep(1000);
            failed = atomic_load(&w.status) == JR_FAILED;
        }
        if (!failed)
            _exit(12);
        if (jr_healthy(j) != 0 || last_event == NULL || strcmp(last_event, "journal_unavailable"))
            _exit(13);
        jr_close(j);
        tg_loop_free(l);
        _exit(0);
    }
    int st = 0;
    assert_int_equal(waitpid(pid, &st, 0), pid);
    assert_true(WIFEXITED(st));
    assert_int_equal(WEXITSTATUS(st), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_records_and_recovery, setup, teardown),
        cmocka_unit_test_setup_teardown(test_group_commit, setup, teardown),
        cmocka_unit_test_setup_teardown(test_prune, setup, teardown),
        cmocka_unit_test_setup_teardown(test_callbacks_on_loop, setup, teardown),
        cmocka_unit_test_setup_teardown(test_one_process, setup, teardown),
        cmocka_unit_test_setup_teardown(test_corrupt_and_unknown_version, setup, teardown),
        cmocka_unit_test_setup_teardown(test_failing_write, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
