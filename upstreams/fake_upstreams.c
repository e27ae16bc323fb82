/* fake-upstreams — plays checkoutd's address, inventory and payment upstreams on three ports of one
 * process, by the rules of shared/checkout-api.md ("Fake upstreams"), so checkoutd can be
 * demonstrated and tested on one machine.
 *
 * Threads: main (parses options, waits for SIGTERM/SIGINT with sigwait), one libmicrohttpd epoll
 * thread per role, and one fu_timer thread that holds every delayed answer. The count is fixed at
 * five whatever the load. stdout carries only the "<role> listening on HOST:PORT" lines and "ready"
 * (tests parse them); stderr carries JSON start/stop and client_closed_early events. */
#include <errno.h>
#include <getopt.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#include "fu_role.h"
#include "fu_rules.h"
#include "fu_status.h"
#include "fu_timer.h"

#define FU_MAX_BODY (1024UL * 1024UL) /* the contract's default max_upstream_body_bytes */
#define FU_MAX_MS   86400000UL        /* one day: bounds every delay option */
#define FU_DRAIN_MS 1000UL            /* at stop, time allowed for released answers to go out */

typedef struct fu_cli {
    const char *host;
    uint16_t ports[FU_RULES_NROLES]; /* indexed by fu_rules_role */
    unsigned long latency_ms;
    unsigned long jitter_ms;
    unsigned long slow_ms;
    const char *tls_cert; /* paths given; NULL: plain http */
    const char *tls_key;
    const char *tls_client_ca;
    int help;
} fu_cli;

static void fu_usage(FILE *f)
{
    fprintf(f, "usage: fake-upstreams [--host 127.0.0.1] [--address-port 9101] "
               "[--inventory-port 9102]\n"
               "                      [--payment-port 9103] [--latency-ms 0] [--jitter-ms 0] "
               "[--slow-ms 5000] [--help]\n"
               "\n"
               "Plays the address, inventory and payment upstreams of checkoutd. Port 0 picks a "
               "free port;\n"
               "the bound ports are printed as '<role> listening on HOST:PORT', then 'ready'.\n"
               "Every answer waits latency-ms + random(0..jitter-ms) ms; payment token tok_slow "
               "waits slow-ms more.\n"
               "Any port also answers GET /_fake/stats and GET /_fake/last. SIGTERM/SIGINT stop "
               "it (exit 0).\n"
               "\n"
               "https: --tls-cert FILE --tls-key FILE (PEM) serve every role over TLS;\n"
               "       --tls-client-ca FILE also requires a client certificate signed by that "
               "CA.\n");
}

/* A decimal number 0..max, the whole string. */
static fu_status fu_parse_ulong(const char *s, unsigned long max, unsigned long *out)
{
    char *end;
    unsigned long v;

    if (s[0] < '0' || s[0] > '9')
        return FU_EINVAL;
    errno = 0;
    v = strtoul(s, &end, 10);
    if (errno != 0 || *end != '\0' || v > max)
        return FU_EINVAL;
    *out = v;
    return FU_OK;
}

static fu_status fu_parse_cli(int argc, char **argv, fu_cli *cli)
{
    fu_status st = FU_OK;
    static const struct option longopts[] = {
        {"host", required_argument, NULL, 'H'},
        {"address-port", required_argument, NULL, 'a'},
        {"inventory-port", required_argument, NULL, 'i'},
        {"payment-port", required_argument, NULL, 'p'},
        {"latency-ms", required_argument, NULL, 'l'},
        {"jitter-ms", required_argument, NULL, 'j'},
        {"slow-ms", required_argument, NULL, 's'},
        {"tls-cert", required_argument, NULL, 'C'},
        {"tls-key", required_argument, NULL, 'K'},
        {"tls-client-ca", required_argument, NULL, 'T'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    unsigned long v = 0;
    int idx = 0;
    int c;

    cli->host = "127.0.0.1";
    cli->ports[FU_RULES_ADDRESS] = 9101;
    cli->ports[FU_RULES_INVENTORY] = 9102;
    cli->ports[FU_RULES_PAYMENT] = 9103;
    cli->latency_ms = 0;
    cli->jitter_ms = 0;
    cli->slow_ms = 5000;
    cli->tls_cert = NULL;
    cli->tls_key = NULL;
    cli->tls_client_ca = NULL;
    cli->help = 0;
    for (;;) {
        c = getopt_long(argc, argv, "", longopts, &idx);
        if (c == -1)
            break;
        if (c == '?') {
            st = FU_EINVAL; /* getopt_long has said what was wrong */
            goto fail;
        }
        if (c == 'h') {
            cli->help = 1;
            continue;
        }
        if (c == 'H' || c == 'C' || c == 'K' || c == 'T') {
            const char **slot = c == 'H'   ? &cli->host
                                : c == 'C' ? &cli->tls_cert
                                : c == 'K' ? &cli->tls_key
                                           : &cli->tls_client_ca;
            *slot = optarg;
            continue;
        }
        /* Every other option is a number: ports up to 65535, delays up to FU_MAX_MS. */
        st = fu_parse_ulong(optarg, (c == 'a' || c == 'i' || c == 'p') ? 65535 : FU_MAX_MS, &v);
        if (st != FU_OK) {
            fprintf(stderr, "fake-upstreams: --%s: expected a number 0..%lu, got '%s'\n",
                    longopts[idx].name, (c == 'a' || c == 'i' || c == 'p') ? 65535UL : FU_MAX_MS,
                    optarg);
            goto fail;
        }
        if (c == 'a')
            cli->ports[FU_RULES_ADDRESS] = (uint16_t)v;
        else if (c == 'i')
            cli->ports[FU_RULES_INVENTORY] = (uint16_t)v;
        else if (c == 'p')
            cli->ports[FU_RULES_PAYMENT] = (uint16_t)v;
        else if (c == 'l')
            cli->latency_ms = v;
        else if (c == 'j')
            cli->jitter_ms = v;
        else
            cli->slow_ms = v;
    }
    if ((cli->tls_cert == NULL) != (cli->tls_key == NULL) ||
        (cli->tls_client_ca != NULL && cli->tls_cert == NULL)) {
        fprintf(stderr, "fake-upstreams: --tls-cert and --tls-key go together; --tls-client-ca "
                        "needs them\n");
        st = FU_EINVAL;
        goto fail;
    }
    if (optind < argc) {
        fprintf(stderr, "fake-upstreams: unexpected argument '%s'\n", argv[optind]);
        st = FU_EINVAL;
        goto fail;
    }
    return FU_OK;
fail:
    return st;
}

/* The whole file (at most 1 MiB: a PEM bundle) as a string for libmicrohttpd; NULL after a
 * message. path NULL: NULL, no message. */
static char *fu_read_pem(const char *path, const char *option)
{
    FILE *f = NULL;
    char *text = NULL;
    size_t len;

    if (path == NULL)
        return NULL;
    f = fopen(path, "rb");
    if (f == NULL)
        goto fail;
    text = malloc(FU_MAX_BODY + 1);
    if (text == NULL)
        goto fail;
    len = fread(text, 1, FU_MAX_BODY, f);
    if (ferror(f) || len == 0 || len == FU_MAX_BODY)
        goto fail;
    text[len] = '\0';
    fclose(f);
    return text;
fail:
    fprintf(stderr, "fake-upstreams: --%s: cannot read %s (or empty, or over 1 MiB): %s\n", option,
            path, strerror(errno));
    if (f != NULL)
        fclose(f);
    free(text);
    return NULL;
}

/* After the daemons stopped: they read the texts at start. */
static void fu_free_pems(fu_role_opts *opts)
{
    free((char *)opts->tls_cert);
    free((char *)opts->tls_key);
    free((char *)opts->tls_trust);
}

/* After fu_timer_stop every held answer has been released; give the daemons up to limit_ms to send
 * them (polls every 10 ms; returns at once when nothing is in flight), so a stop does not cut off
 * answers that were already decided. A client that never finishes its request costs the limit. */
static void fu_drain(fu_role *const *roles, unsigned long limit_ms)
{
    const struct timespec step = {0, 10 * 1000000L};

    for (unsigned long waited = 0; waited < limit_ms; waited += 10) {
        long busy = 0;
        for (int i = 0; i < FU_RULES_NROLES; i++)
            busy += fu_role_unfinished(roles[i]);
        if (busy == 0)
            return;
        nanosleep(&step, NULL);
    }
}

/* Thousands of held connections need thousands of fds: lift the soft limit to the hard one. */
static void fu_raise_nofile(void)
{
    struct rlimit rl;

    if (getrlimit(RLIMIT_NOFILE, &rl) != 0)
        return;
    if (rl.rlim_cur == rl.rlim_max)
        return;
    rl.rlim_cur = rl.rlim_max;
    if (setrlimit(RLIMIT_NOFILE, &rl) != 0)
        fprintf(stderr, "{\"event\":\"warning\",\"what\":\"setrlimit NOFILE\",\"errno\":%d}\n",
                errno);
}

int main(int argc, char **argv)
{
    fu_status st = FU_OK;
    fu_cli cli;
    fu_timer *timer = NULL;
    fu_role *roles[FU_RULES_NROLES] = {NULL};
    fu_role_opts opts;
    sigset_t stop_set;
    int sig = 0;
    const char *lb;
    const char *rb;

    memset(&opts, 0, sizeof(opts));
    setvbuf(stdout, NULL, _IOLBF, 0);
    st = fu_parse_cli(argc, argv, &cli);
    if (st != FU_OK) {
        fprintf(stderr, "fake-upstreams: try --help\n");
        return 2;
    }
    if (cli.help) {
        fu_usage(stdout);
        return 0;
    }
    fu_raise_nofile();
    /* Block the stop signals before any thread exists, so every thread inherits the mask and
     * main takes them synchronously with sigwait (no async-signal-safety concerns). */
    sigemptyset(&stop_set);
    sigaddset(&stop_set, SIGTERM);
    sigaddset(&stop_set, SIGINT);
    pthread_sigmask(SIG_BLOCK, &stop_set, NULL);
    signal(SIGPIPE, SIG_IGN); /* a client gone mid-answer must not kill the process */

    st = fu_timer_create(&timer);
    if (st != FU_OK) {
        fprintf(stderr, "fake-upstreams: cannot start the timer: %s: %s\n", fu_status_str(st),
                strerror(errno));
        goto fail;
    }
    opts.host = cli.host;
    opts.latency_ms = cli.latency_ms;
    opts.jitter_ms = cli.jitter_ms;
    opts.slow_ms = cli.slow_ms;
    opts.max_body = FU_MAX_BODY;
    opts.tls_cert = fu_read_pem(cli.tls_cert, "tls-cert");
    opts.tls_key = fu_read_pem(cli.tls_key, "tls-key");
    opts.tls_trust = fu_read_pem(cli.tls_client_ca, "tls-client-ca");
    if ((cli.tls_cert != NULL && (opts.tls_cert == NULL || opts.tls_key == NULL)) ||
        (cli.tls_client_ca != NULL && opts.tls_trust == NULL))
        goto fail;
    lb = strchr(cli.host, ':') != NULL ? "[" : ""; /* IPv6 literals print as [::1]:PORT */
    rb = *lb != '\0' ? "]" : "";
    for (int i = 0; i < FU_RULES_NROLES; i++) {
        opts.port = cli.ports[i];
        st = fu_role_start(&roles[i], (fu_rules_role)i, &opts, timer);
        if (st != FU_OK) {
            fprintf(stderr, "fake-upstreams: %s: cannot listen on %s%s%s:%u: %s\n",
                    fu_rules_role_name((fu_rules_role)i), lb, cli.host, rb, (unsigned)opts.port,
                    st == FU_EINVAL ? "not a numeric IP address"
                                    : "address in use or not available");
            goto fail;
        }
    }
    for (int i = 0; i < FU_RULES_NROLES; i++)
        printf("%s listening on %s%s%s:%u%s\n", fu_role_name(roles[i]), lb, cli.host, rb,
               (unsigned)fu_role_port(roles[i]),
               cli.tls_client_ca ? " (https, client certificate required)"
               : cli.tls_cert    ? " (https)"
                                 : "");
    printf("ready\n");
    fflush(stdout);
    fprintf(stderr,
            "{\"event\":\"started\",\"pid\":%ld,\"address_port\":%u,\"inventory_port\":%u,"
            "\"payment_port\":%u,\"latency_ms\":%lu,\"jitter_ms\":%lu,\"slow_ms\":%lu}\n",
            (long)getpid(), (unsigned)fu_role_port(roles[FU_RULES_ADDRESS]),
            (unsigned)fu_role_port(roles[FU_RULES_INVENTORY]),
            (unsigned)fu_role_port(roles[FU_RULES_PAYMENT]), cli.latency_ms, cli.jitter_ms,
            cli.slow_ms);

    while (sigwait(&stop_set, &sig) != 0)
        ;
    fprintf(stderr, "{\"event\":\"stopping\",\"signal\":\"%s\"}\n",
            sig == SIGINT ? "SIGINT" : "SIGTERM");
    /* Order matters: the timer resumes every held connection (their answers go out) before the
     * daemons stop, because MHD_stop_daemon must not find a suspended connection. */
    fu_timer_stop(timer);
    fu_drain(roles, FU_DRAIN_MS);
    for (int i = 0; i < FU_RULES_NROLES; i++)
        fu_role_destroy(roles[i]);
    fu_timer_destroy(timer);
    fu_free_pems(&opts);
    fprintf(stderr, "{\"event\":\"stopped\"}\n");
    return 0;
fail:
    if (timer != NULL)
        fu_timer_stop(timer);
    for (int i = 0; i < FU_RULES_NROLES; i++)
        fu_role_destroy(roles[i]);
    fu_timer_destroy(timer);
    fu_free_pems(&opts);
    return 1;
}
