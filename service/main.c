/* checkoutd — command line, start-up and the graceful drain.
 *
 * Threads: the libmicrohttpd pool (HTTP), one task-group loop (upstream calls), and this main
 * thread, which only waits for SIGTERM/SIGINT (blocked everywhere else, taken with sigtimedwait).
 */
#include "cfg.h"
#include "checkout.h"
#include "server.h"
#include "tg.h"

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
            "usage: checkoutd [--config FILE]\n"
            "       checkoutd --check-config FILE\n"
            "       checkoutd --help | --version\n"
            "\n"
            "Checkout orchestration: POST /checkout validates an order against every configured\n"
            "upstream validation at once, as one task group (see README.md).\n"
            "With no --config, the built-in default (config/checkoutd.json) is used.\n"
            "Every key can be overridden by a CHECKOUTD_* environment variable.\n");
}

static const char *env_lookup(const char *name)
{
    return getenv(name);
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
static void drain(srv *server, tg_loop *loop, const cfg *c, const sigset_t *sigs)
{
    double until = now_s() + (double)c->deadline_ms / 1000.0 + 1.0;
    struct timespec tick = {0, 10 * 1000 * 1000};
    srv_drain(server);
    fprintf(stderr, "{\"event\":\"draining\",\"pending\":%ld}\n", srv_pending(server));
    while (srv_pending(server) > 0 && now_s() < until) {
        if (sigtimedwait(sigs, NULL, &tick) > 0) {
            fprintf(stderr, "{\"event\":\"stop\",\"reason\":\"second signal\"}\n");
            _exit(1);
        }
    }
    tg_loop_stop(loop);
    until = now_s() + 1.0;
    while (srv_pending(server) > 0 && now_s() < until)
        nanosleep(&tick, NULL);
}

int main(int argc, char **argv)
{
    const char *config_path = NULL;
    int check_only = 0;
    char err[512];
    cfg c;

    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
            usage(stdout);
            return 0;
        } else if (strcmp(argv[i], "--version") == 0) {
            printf("checkoutd %s\n", CHECKOUTD_VERSION);
            return 0;
        } else if ((strcmp(argv[i], "--config") == 0 || strcmp(argv[i], "--check-config") == 0) &&
                   i + 1 < argc) {
            check_only = strcmp(argv[i], "--check-config") == 0;
            config_path = argv[++i];
        } else {
            fprintf(stderr, "checkoutd: unknown argument '%s'\n", argv[i]);
            usage(stderr);
            return 2;
        }
    }

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

    int rc = 1;
    co_service checkout;
    srv *server = NULL;
    tg_loop_options lopts = {.max_body_bytes = c.max_upstream_body_bytes, .max_connections = 0};
    tg_loop *loop = tg_loop_new(&lopts);
    if (loop == NULL || tg_loop_start(loop) != 0) {
        fprintf(stderr, "checkoutd: cannot start the upstream loop\n");
        goto out;
    }
    co_service_init(&checkout, &c, loop);
    server = srv_start(&c, &checkout, err, sizeof(err));
    if (server == NULL) {
        fprintf(stderr, "checkoutd: %s\n", err);
        goto out;
    }
    fprintf(stderr,
            "{\"event\":\"start\",\"version\":\"%s\",\"listen\":\"%s:%d\",\"validations\":%zu}\n",
            CHECKOUTD_VERSION, c.listen_host, srv_port(server), c.nvalidations);

    int sig = 0;
    while (sigwait(&sigs, &sig) != 0)
        ;
    drain(server, loop, &c, &sigs);
    fprintf(stderr, "{\"event\":\"stop\",\"signal\":%d}\n", sig);
    rc = 0;
out:
    if (loop != NULL)
        tg_loop_stop(loop);
    srv_stop(server);
    tg_loop_free(loop);
    cfg_free(&c);
    return rc;
}
