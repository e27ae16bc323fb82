/* dns — the process's one resolver (contract v1.3, "Names"): host names are looked up by a thread
 * of their own with c-ares, never on a worker, and every worker reads the last good answer
 * without a lock and without waiting.
 *
 * A dns owns one resolver thread and a set of hosts (dns_add: the config's names at start; a name
 * first met later is added by whoever meets it). The thread looks every host up at once, then every
 * refresh_ms (ares_getaddrinfo, A and AAAA, the hosts file first: "localhost" resolves as the
 * system resolves it), at most one lookup of a host at a time. A lookup that answers addresses
 * publishes them, as an immutable list (sorted, duplicates dropped; a list equal to the current
 * one is not published again: the generation stays). A lookup that fails (timeout, SERVFAIL,
 * refused, NXDOMAIN, no address) keeps the last good list (stale on failure); the change between
 * failing and answering is reported once through the on_change callback, on the resolver thread.
 *
 * Readers (any thread, any number): dns_snapshot copies a host's current list into the reader's
 * own dns_addrs when its generation changed since the reader's last copy — one atomic load when
 * nothing changed, no lock ever. Addresses are numeric text ("10.0.0.7", "fd00::7"), at most
 * DNS_MAX_ADDRS per host (the first ones in sorted order).
 * IP literals are not hosts: dns_is_literal tells them apart; dns_add refuses them. */
#ifndef CHECKOUTD_DNS_H
#define CHECKOUTD_DNS_H

#include <stddef.h>
#include <stdint.h>

#define DNS_MAX_ADDRS 16
#define DNS_ADDR_LEN  48  /* INET6_ADDRSTRLEN (46) and a NUL, rounded */
#define DNS_MAX_HOSTS 64  /* names of one process: validations, compensate urls, redis */
#define DNS_NAME_MAX  253 /* the longest host name DNS allows */

typedef struct dns dns;
typedef struct dns_host dns_host;

/* One host's addresses as published. generation 0: never resolved (n is 0). */
typedef struct dns_addrs {
    uint64_t generation;
    size_t n;
    char addr[DNS_MAX_ADDRS][DNS_ADDR_LEN];
} dns_addrs;

/* failed 1: the host's lookups started failing (error says why); 0: it answers again. */
typedef void (*dns_change_fn)(void *arg, const char *host, int failed, const char *error);

typedef struct dns_options {
    const char *servers; /* "IP[:PORT],..." for ares_set_servers_ports_csv; NULL: the system's */
    long refresh_ms;     /* between the starts of two lookups of a host (>= 1) */
    long timeout_ms;     /* one lookup (one try per server) */
    dns_change_fn on_change; /* NULL: nothing reported */
    void *arg;
} dns_options;

/* Host statistics for /status.json and metrics (any thread; each field read atomically). */
typedef struct dns_stats {
    uint64_t lookups_ok, lookups_failed;
    int failing;        /* the last lookup failed */
    int64_t last_ok_ms; /* CLOCK_MONOTONIC ms of the last good lookup; 0: none yet */
} dns_stats;

/* A resolver (thread not started). NULL on failure, with a one-line reason in err. */
dns *dns_new(const dns_options *opts, char *err, size_t errlen);
/* Starts the thread (which looks up every host at once). 0 or a negative errno. */
int dns_start(dns *d);
/* Stops the thread (a running lookup is abandoned) and frees everything; NULL is fine. The caller
 * makes sure no reader uses d or its hosts any more. */
void dns_free(dns *d);

/* The host called name (case ignored), added when new (the thread looks it up at once). Any
 * thread. NULL for an IP literal, a name longer than DNS_NAME_MAX, or when DNS_MAX_HOSTS are
 * taken. A host lives as long as d. */
dns_host *dns_add(dns *d, const char *name);
/* The host called name when it was added, else NULL. Any thread. */
dns_host *dns_find(dns *d, const char *name);
/* Hosts by index (0..dns_count-1), in the order they were added. Any thread. */
size_t dns_count(const dns *d);
dns_host *dns_at(const dns *d, size_t i);
const char *dns_host_name(const dns_host *h);

/* Copies h's current list into *out when out->generation differs from it; 1 when copied, 0 when
 * *out was current. Start a reader's copy with generation 0 (memset). Lock-free, any thread. */
int dns_snapshot(const dns_host *h, dns_addrs *out);
/* 1 when h has a published list (it resolved at least once). */
int dns_resolved(const dns_host *h);
void dns_host_stats(const dns_host *h, dns_stats *out);
/* 1 when every host has resolved at least once (/readyz). */
int dns_all_resolved(const dns *d);

/* 1 when host is an IPv4 or IPv6 literal (brackets allowed): it needs no lookup. */
int dns_is_literal(const char *host);
/* The host of an http(s) URL ("https://user@[fd00::7]:8443/x" -> "fd00::7") into out; 0, or -1
 * when there is none or it does not fit. */
int dns_url_host(const char *url, char *out, size_t cap);
/* CLOCK_MONOTONIC in ms, the clock of dns_stats.last_ok_ms. */
int64_t dns_now_ms(void);

#endif
