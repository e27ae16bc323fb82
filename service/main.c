/* checkoutd — command line, start-up and the graceful drain.
 *
 * Threads: one worker per core — a task-group loop (upstream calls) whose thread also drives one
 * libmicrohttpd daemon (HTTP) — and this main thread, which only waits for SIGTERM/SIGINT (blocked
 * everywhere else, taken with sigtimedwait).
 */
#include "cfg.h"
#include "checkout.h"
#include "dns.h"
#include "jlog.h"
#include "metrics.h"
#include "recover.h"
#include "server.h"
#include "tally.h"
#include "tg.h"
#include "win.h"

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#ifndef CHECKOUTD_VERSION
#define CHECKOUTD_VERSION "0.0.0"
#endif

static void usage(FILE *to)
{
    fprintf(to,
            "usage: checkoutd [--config FILE] [--log-level debug|info|warn|error|off]\n"
            "       checkoutd --check-config FILE\n"
            "       checkoutd --help | --version\n"
            "\n"
            "Checkout orchestration: POST /checkout validates an order against every configured\n"
            "upstream validation at once, as one task group (see README.md and docs/).\n"
            "With no --config, the built-in default (config/checkoutd.json) is used.\n"
            "Every key can be overridden by a CHECKOUTD_* environment variable.\n");
}

static const char *env_lookup(const char *name)
{
    return getenv(name);
}

#define CHECKOUTD_MAX_LOOPS 8
/* The contract's bound on running compensations at SIGTERM: 30 s. CHECKOUTD_COMPENSATION_DRAIN_MS
 * (0..30000) shortens it, so that tests can stop a process with compensations pending quickly. */
static double comp_drain_s(void)
{
    const char *env = getenv("CHECKOUTD_COMPENSATION_DRAIN_MS");
    char *end = NULL;
    long ms = env ? strtol(env, &end, 10) : -1;
    if (env == NULL || end == env || *end != '\0' || ms < 0 || ms > 30000)
        ms = 30000;
    return (double)ms / 1000.0;
}

/* One worker (loop + daemon) per core (at most 8): a checkout's whole life runs on one worker's
 * thread, so workers are what uses the cores. CHECKOUTD_LOOPS overrides it (1..8). */
static size_t loop_count(void)
{
    const char *env = getenv("CHECKOUTD_LOOPS");
    long n = env ? strtol(env, NULL, 10) : sysconf(_SC_NPROCESSORS_ONLN);
    if (n < 1)
        n = 1;
    return n > CHECKOUTD_MAX_LOOPS ? CHECKOUTD_MAX_LOOPS : (size_t)n;
}

/* Thousands of client connections plus three upstream connections per checkout need descriptors;
 * the soft limit (often 1024) is raised to the hard one. */
static void raise_nofile(void)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* Drain: stop accepting, let in-flight checkouts answer (bounded by deadline_ms plus a second for
 * the answers to be written), then cancel what is left. A second signal exits at once. */
static void stop_loops(tg_loop *const *loops, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (loops[i] != NULL)
            tg_loop_stop(loops[i]);
}

static void drain(srv *server, tg_loop *const *loops, size_t nloops, const cfg *c,
                  const sigset_t *sigs)
{
    double until = now_s() + (double)c->deadline_ms / 1000.0 + 1.0;
    struct timespec tick = {0, 10 * 1000 * 1000};
    srv_drain(server);
    jlog_event(JLOG_INFO, "draining",
               json_pack("{s:I}", "in_flight", (json_int_t)srv_pending(server)));
    while (srv_pending(server) > 0 && now_s() < until) {
        if (sigtimedwait(sigs, NULL, &tick) > 0) {
            jlog_event(JLOG_WARN, "stop",
                       json_pack("{s:s, s:i}", "reason", "second signal", "exit", 1));
            _exit(1);
        }
    }
    /* v1.2: running compensations may finish, for at most 30 s after the last checkout ended;
     * the loops' stop then gives up those still running (each logs compensation_failed). */
    until = now_s() + comp_drain_s();
    if (comp_run_pending() > 0)
        jlog_event(JLOG_INFO, "draining_compensations",
                   json_pack("{s:I}", "pending", (json_int_t)comp_run_pending()));
    while (comp_run_pending() > 0 && now_s() < until) {
        if (sigtimedwait(sigs, NULL, &tick) > 0) {
            jlog_event(JLOG_WARN, "stop",
                       json_pack("{s:s, s:i, s:I, s:I, s:I}", "reason", "second signal", "exit", 1,
                                 "compensations_done", (json_int_t)comp_run_done(),
                                 "compensations_given_up", (json_int_t)comp_run_given_up(),
                                 "compensations_lost", (json_int_t)comp_run_pending()));
            _exit(1);
        }
    }
    stop_loops(loops, nloops);
    srv_serve_here(server, 1000); /* the answers of what the stop cancelled */
}

/* The start line: version, where it listens, and each validation's upstream. */
static void log_start(const cfg *c, int port)
{
    json_t *vals = json_array();
    for (size_t i = 0; i < c->nvalidations; i++) {
        const cfg_validation *v = &c->validations[i];
        char url[1024]; /* userinfo is a secret like a header value: never in a log line */
        cfg_url_redact(v->url, url, sizeof url);
        json_array_append_new(vals,
                              json_pack("{s:s, s:s, s:s, s:I}", "name", v->name, "field", v->field,
                                        "url", url, "timeout_ms", (json_int_t)v->timeout_ms));
    }
    jlog_event(JLOG_INFO, "start",
               json_pack("{s:s, s:s, s:i, s:I, s:I, s:o}", "version", CHECKOUTD_VERSION, "host",
                         c->listen_host, "port", port, "deadline_ms", (json_int_t)c->deadline_ms,
                         "max_inflight", (json_int_t)c->max_inflight, "validations", vals));
}

/* Parses the command line. 0 to run, 1 when done (help, version), 2 on a usage error. */
static int parse_args(int argc, char **argv, const char **config_path, int *check_only,
                      jlog_level *level)
{
    for (int i = 1; i < argc; i++) {
        const char *arg = argv[i];
        int has_value = i + 1 < argc;
        if (strcmp(arg, "--help") == 0 || strcmp(arg, "-h") == 0) {
            usage(stdout);
            return 1;
        } else if (strcmp(arg, "--version") == 0) {
            printf("checkoutd %s\n", CHECKOUTD_VERSION);
            return 1;
        } else if (strcmp(arg, "--log-level") == 0 && has_value) {
            if (jlog_level_parse(argv[++i], level) != 0) {
                fprintf(stderr,
                        "checkoutd: --log-level: expected debug, info, warn, error or off\n");
                return 2;
            }
        } else if ((strcmp(arg, "--config") == 0 || strcmp(arg, "--check-config") == 0) &&
                   has_value) {
            *check_only = strcmp(arg, "--check-config") == 0;
            *config_path = argv[++i];
        } else {
            fprintf(stderr, "checkoutd: unknown argument '%s'\n", arg);
            usage(stderr);
            return 2;
        }
    }
    return 0;
}

/* The memory store's byte bound (entries, keys and stored answers): 256 MiB holds the default
 * 100000 keys with answers of about 2.5 KiB each; beyond it the oldest answers go first. */
#define CHECKOUTD_IDEM_MAX_BYTES ((size_t)256 << 20)

/* The journal's log lines: its health changes (once per change) and lost records. */
static void journal_log(const char *event, const char *detail)
{
    int up = strcmp(event, "journal_recovered") == 0;
    jlog_event(up ? JLOG_INFO : JLOG_ERROR, event,
               json_pack("{s:s}", "detail", detail ? detail : ""));
}

/* v1.3: the journal of the config (before the loops start), its records taken up (recovery) and
 * its thread started; NULL with *ok 1 when checkouts do not journal, *ok 0 after a message. */
static jr *journal_open(const cfg *c, co_service *s, tg_loop *const *loops, size_t nloops, int *ok)
{
    char err[600];
    *ok = 1;
    if (c->journal.off_given)
        jlog_event(JLOG_WARN, "journal_off",
                   json_pack("{s:s}", "detail",
                             "journal.store is \"off\": a kill (kill -9, OOM, node loss) loses "
                             "the undo steps pending and the checkouts in flight"));
    if (!c->journal.on)
        return NULL;
    jr *j = jr_open(c->journal.path, loops, nloops, journal_log, err, sizeof err);
    if (j == NULL) {
        fprintf(stderr, "checkoutd: %s\n", err);
        *ok = 0;
        return NULL;
    }
    s->journal = j;
    mx_set_journal(s->metrics, j);
    long taken = recover_journal(s, c->idempotency.ttl_s, err, sizeof err);
    if (taken < 0 || jr_start(j, c->idempotency.ttl_s) != 0) {
        fprintf(stderr, "checkoutd: %s\n", taken < 0 ? err : "cannot start the journal thread");
        *ok = 0;
        return j; /* closed by the caller, after the loops */
    }
    jlog_event(JLOG_INFO, "journal_open",
               json_pack("{s:s, s:I}", "path", c->journal.path, "recovered", (json_int_t)taken));
    return j;
}

/* The Idempotency-Key store of the config (before the loops start); NULL with *ok 1 for "off",
 * *ok 0 after a message on failure. A claim expires after deadline_ms + 5 s (contract). */
static idem_store *idem_open(const cfg *c, tg_loop *const *loops, size_t nloops, dns *names,
                             int *ok)
{
    const cfg_idempotency *ic = &c->idempotency;
    long ttl_ms = ic->ttl_s * 1000;
    /* v1.3: a journaled checkout's claim lasts ttl_s: until the next start's recovery replaces it,
     * retries get 409 (a crashed replica's checkout is never run again while it is undone) */
    long claim_ms = c->journal.on ? ttl_ms : c->deadline_ms + 5000;
    char err[300] = "out of memory";
    idem_store *s = NULL;
    *ok = 1;
    if (ic->store == CFG_IDEM_OFF)
        return NULL;
    if (ic->store == CFG_IDEM_MEMORY)
        s = idem_mem_new(ic->max_keys, CHECKOUTD_IDEM_MAX_BYTES, claim_ms, ttl_ms, tally_idem_log);
    else
        s = idem_redis_new(ic->redis_host, ic->redis_port, ic->redis_db, ic->timeout_ms, claim_ms,
                           ttl_ms, loops, nloops, tally_idem_log, dns_add(names, ic->redis_host),
                           err, sizeof err);
    *ok = s != NULL;
    if (s == NULL)
        fprintf(stderr, "checkoutd: %s\n", err);
    return s;
}

/* v1.3 "Names": dns_failed / dns_recovered, once per change (on the resolver's thread). */
static void on_dns_change(void *arg, const char *host, int failed, const char *error)
{
    (void)arg;
    if (failed)
        jlog_event(JLOG_WARN, "dns_failed", json_pack("{s:s, s:s}", "host", host, "error", error));
    else
        jlog_event(JLOG_INFO, "dns_recovered", json_pack("{s:s}", "host", host));
}

/* The resolver with every host name of the config (validation and compensate URLs; the Redis
 * URL's host is added by idem_open), not started. NULL after a message. */
static dns *names_open(const cfg *c)
{
    char err[300];
    dns_options o = {.servers = c->dns.servers,
                     .refresh_ms = c->dns.refresh_ms,
                     .timeout_ms = c->dns.timeout_ms,
                     .on_change = on_dns_change};
    dns *d = dns_new(&o, err, sizeof err);
    if (d == NULL) {
        fprintf(stderr, "checkoutd: %s\n", err);
        return NULL;
    }
    for (size_t i = 0; i < c->nvalidations; i++) {
        char host[DNS_NAME_MAX + 1];
        const cfg_validation *v = &c->validations[i];
        if (dns_url_host(v->url, host, sizeof host) == 0)
            dns_add(d, host); /* nothing for an IP literal */
        if (v->compensate.url != NULL && dns_url_host(v->compensate.url, host, sizeof host) == 0)
            dns_add(d, host);
    }
    return d;
}

int main(int argc, char **argv)
{
    const char *config_path = NULL;
    int check_only = 0;
    jlog_level level = JLOG_INFO;
    char err[512];
    cfg c;

    int args = parse_args(argc, argv, &config_path, &check_only, &level);
    if (args != 0)
        return args == 1 ? 0 : 2;
    if (cfg_load_file(&c, config_path, env_lookup, err, sizeof(err)) != 0) {
        fprintf(stderr, "checkoutd: %s\n", err);
        return 2;
    }
    if (check_only) {
        printf("%s: ok (%zu validations)\n", config_path, c.nvalidations);
        cfg_free(&c);
        return 0;
    }

    raise_nofile();
    sigset_t sigs;
    sigemptyset(&sigs);
    sigaddset(&sigs, SIGTERM);
    sigaddset(&sigs, SIGINT);
    pthread_sigmask(SIG_BLOCK, &sigs, NULL); /* every thread started below inherits the mask */
    signal(SIGPIPE, SIG_IGN);
    signal(SIGXFSZ, SIG_IGN); /* a journal past RLIMIT_FSIZE: a failed write (503), not a death */
    jlog_init(STDERR_FILENO, level);

    int rc = 1;
    co_service checkout = {0};
    jr *journal = NULL;
    srv *server = NULL;
    const char *names[CFG_MAX_VALIDATIONS];
    for (size_t i = 0; i < c.nvalidations; i++)
        names[i] = c.validations[i].name;
    mx *metrics = mx_new(names, c.nvalidations);
    win *windows = NULL;
    dns *resolver = names_open(&c);
    tg_loop_options lopts = {
        .max_body_bytes = c.max_upstream_body_bytes, .max_connections = 0, .names = resolver};
    tg_loop *loops[CHECKOUTD_MAX_LOOPS] = {0};
    size_t nloops = loop_count();
    int loops_ok = metrics != NULL && resolver != NULL;
    for (size_t i = 0; loops_ok && i < nloops; i++) {
        loops[i] = tg_loop_new(&lopts);
        loops_ok = loops[i] != NULL;
    }
    if (!loops_ok) {
        fprintf(stderr, "checkoutd: cannot create the upstream loops\n");
        goto out;
    }
    co_service_init(&checkout, &c, loops, nloops, metrics);
    checkout.resolver = resolver;
    for (size_t i = 0; i < c.nvalidations; i++) {
        char host[DNS_NAME_MAX + 1];
        if (dns_url_host(c.validations[i].url, host, sizeof host) == 0)
            checkout.hosts[i] = dns_find(resolver, host); /* NULL: an IP literal */
    }
    mx_set_names(metrics, resolver);
    checkout.idem = idem_open(&c, loops, nloops, resolver, &loops_ok);
    if (!loops_ok)
        goto out;
    /* The lookups start now, beside the workers: /readyz says "resolving" until they answer. */
    if (dns_start(resolver) != 0) {
        fprintf(stderr, "checkoutd: cannot start the resolver thread\n");
        goto out;
    }
    windows = win_new(nloops, c.nvalidations); /* /status; NULL (out of memory): all zeros */
    checkout.windows = windows;
    atomic_store(&checkout.recovering, c.journal.on);
    server = srv_start(&c, &checkout, loops, nloops, err, sizeof(err));
    if (server == NULL) {
        fprintf(stderr, "checkoutd: %s\n", err);
        goto out;
    }
    /* Recovery before any loop runs: no request is accepted before its keys' answers are back. */
    journal = journal_open(&c, &checkout, loops, nloops, &loops_ok);
    atomic_store(&checkout.recovering, 0);
    if (!loops_ok)
        goto out;
    for (size_t i = 0; loops_ok && i < nloops; i++)
        loops_ok = tg_loop_start(loops[i]) == 0;
    if (!loops_ok) {
        fprintf(stderr, "checkoutd: cannot start the worker threads\n");
        goto out;
    }
    /* Only now, with every worker running: tests and scripts take this line as "ready". */
    printf(strchr(c.listen_host, ':') ? "listening on [%s]:%d\n" : "listening on %s:%d\n",
           c.listen_host, srv_port(server));
    /* after the line above: tests and scripts take the first "listening on" as listen's */
    if (c.admin_host != NULL)
        printf(strchr(c.admin_host, ':') ? "admin listening on [%s]:%d\n"
                                         : "admin listening on %s:%d\n",
               c.admin_host, srv_admin_port(server));
    fflush(stdout);
    log_start(&c, srv_port(server));

    int sig = 0;
    while (sigwait(&sigs, &sig) != 0)
        ;
    drain(server, loops, nloops, &c, &sigs);
    jlog_event(JLOG_INFO, "stop",
               json_pack("{s:s, s:i, s:I, s:I}", "signal", sig == SIGINT ? "SIGINT" : "SIGTERM",
                         "exit", 0, "compensations_done", (json_int_t)comp_run_done(),
                         "compensations_given_up", (json_int_t)comp_run_given_up()));
    rc = 0;
out:
    stop_loops(loops, nloops);
    /* the admin listener's own thread reads the store and the windows: it stops before they go */
    srv_stop_admin(server);
    /* After the loops (nothing journals any more), before srv_stop (a record's answer may still
     * go to its connection): what was queued is written. */
    jr_close(journal);
    /* Before srv_stop: a claim still waiting for Redis is answered (503) on this thread, and its
     * connection must still exist; after the loops: nothing else drives the store any more. */
    idem_free(checkout.idem);
    srv_stop(server);
    for (size_t i = 0; i < nloops; i++)
        tg_loop_free(loops[i]);
    dns_free(resolver); /* after every reader: the loops, the server, the store */
    mx_free(metrics);
    win_free(windows);
    cfg_free(&c);
    return rc;
}
