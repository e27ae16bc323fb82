/* dns — one resolver thread with c-ares. See dns.h for the contract.
 *
 * The thread owns the ares channel: c-ares tells it which sockets to watch through its
 * socket-state callback (kept in a small array, waited on with poll: c-ares uses a handful of
 * sockets, and poll has no FD_SETSIZE limit in a process with thousands of descriptors), and
 * ares_timeout tells it when a try times out. An eventfd wakes it for a new host or the stop.
 *
 * Publication: each host has an atomic pointer to its current list (immutable once published)
 * and an atomic generation. Why a pointer swap and not per-worker copies handed over on each
 * loop's wake-up: the resolver then knows nothing of workers (metrics, /status.json and the Redis
 * reconnect read the same lists from other threads), and a worker's hot path is one atomic load
 * of the generation, compared with the generation of its own copy. Only when it changed does a
 * reader enter the read section (d->readers, two atomic increments around one memcpy) to copy the
 * new list. The resolver frees a replaced list once no reader is in the section: with sequentially
 * consistent atomics, a reader that entered after the swap can only have loaded the new pointer,
 * and one that entered before is waited for. Readers enter only when a list changed (rare) and
 * stay for one copy of at most ~800 bytes, so the resolver's wait is microseconds and cannot
 * starve; readers never wait at all. */
#include "dns.h"

#include <ares.h>
#include <arpa/inet.h>
#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/eventfd.h>
#include <time.h>
#include <unistd.h>

#define DNS_MAX_SOCKS 64 /* c-ares sockets at once: one or two per server */

struct dns_host {
    dns *owner;
    char name[DNS_NAME_MAX + 1];
    _Atomic(dns_addrs *) cur; /* NULL until the first good lookup */
    atomic_uint_fast64_t gen; /* cur->generation, or 0 */
    atomic_uint_fast64_t ok, failed;
    atomic_int failing;
    atomic_int_fast64_t last_ok_ms;
    /* the resolver thread's only */
    int in_flight;
    int64_t next_ms; /* when the next lookup starts; 0: at once */
};

struct dns {
    ares_channel channel;
    long refresh_ms;
    dns_change_fn on_change;
    void *arg;
    int wakefd;
    pthread_t thread;
    int started;
    atomic_int stopping;
    atomic_long readers; /* dns_snapshot's read section */
    uint64_t generation; /* resolver thread: the last generation given out */

    pthread_mutex_t add_lock; /* dns_add only: readers use nhosts */
    dns_host *hosts[DNS_MAX_HOSTS];
    atomic_size_t nhosts;

    struct pollfd socks[DNS_MAX_SOCKS]; /* the resolver thread's (sock_state_cb) */
    size_t nsocks;
};

static pthread_once_t ares_once = PTHREAD_ONCE_INIT;
static int ares_init_rc;
static void ares_init_once(void)
{
    ares_init_rc = ares_library_init(ARES_LIB_INIT_ALL);
}

int64_t dns_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int dns_is_literal(const char *host)
{
    unsigned char buf[sizeof(struct in6_addr)];
    char tmp[DNS_ADDR_LEN];
    size_t n = strlen(host);
    if (n >= 2 && host[0] == '[' && host[n - 1] == ']') {
        if (n - 2 >= sizeof tmp)
            return 0;
        memcpy(tmp, host + 1, n - 2);
        tmp[n - 2] = '\0';
        return inet_pton(AF_INET6, tmp, buf) == 1;
    }
    return inet_pton(AF_INET, host, buf) == 1 || inet_pton(AF_INET6, host, buf) == 1;
}

int dns_url_host(const char *url, char *out, size_t cap)
{
    const char *p = strstr(url, "://");
    if (p == NULL)
        return -1;
    p += 3;
    size_t auth = strcspn(p, "/?#");
    const char *at = memchr(p, '@', auth);
    if (at != NULL) {
        auth -= (size_t)(at + 1 - p);
        p = at + 1;
    }
    size_t len;
    if (p[0] == '[') {
        const char *end = memchr(p, ']', auth);
        if (end == NULL)
            return -1;
        p++;
        len = (size_t)(end - p);
    } else {
        const char *colon = memchr(p, ':', auth);
        len = colon ? (size_t)(colon - p) : auth;
    }
    if (len == 0 || len >= cap)
        return -1;
    memcpy(out, p, len);
    out[len] = '\0';
    return 0;
}

/* c-ares: fd is to be watched for read/write (both 0: no longer). */
static void on_sock_state(void *data, ares_socket_t fd, int readable, int writable)
{
    dns *d = data;
    size_t i = 0;
    while (i < d->nsocks && d->socks[i].fd != fd)
        i++;
    if (!readable && !writable) {
        if (i < d->nsocks)
            d->socks[i] = d->socks[--d->nsocks];
        return;
    }
    if (i == d->nsocks) {
        if (d->nsocks == DNS_MAX_SOCKS)
            return; /* never with a handful of servers; the try then times out */
        d->nsocks++;
    }
    d->socks[i].fd = fd;
    d->socks[i].events = (short)((readable ? POLLIN : 0) | (writable ? POLLOUT : 0));
    d->socks[i].revents = 0;
}

dns *dns_new(const dns_options *opts, char *err, size_t errlen)
{
    pthread_once(&ares_once, ares_init_once);
    dns *d = calloc(1, sizeof *d);
    if (d == NULL) {
        snprintf(err, errlen, "dns: out of memory");
        return NULL;
    }
    d->wakefd = -1;
    pthread_mutex_init(&d->add_lock, NULL);
    if (ares_init_rc != ARES_SUCCESS) {
        snprintf(err, errlen, "dns: %s", ares_strerror(ares_init_rc));
        goto fail;
    }
    d->refresh_ms = opts->refresh_ms > 0 ? opts->refresh_ms : 5000;
    d->on_change = opts->on_change;
    d->arg = opts->arg;
    d->wakefd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (d->wakefd < 0) {
        snprintf(err, errlen, "dns: eventfd: %s", strerror(errno));
        goto fail;
    }
    struct ares_options ao;
    memset(&ao, 0, sizeof ao);
    ao.sock_state_cb = on_sock_state;
    ao.sock_state_cb_data = d;
    ao.timeout = (int)(opts->timeout_ms > 0 ? opts->timeout_ms : 2000);
    ao.tries = 1; /* a failed lookup is simply tried again at the next refresh */
    int rc = ares_init_options(&d->channel, &ao,
                               ARES_OPT_SOCK_STATE_CB | ARES_OPT_TIMEOUTMS | ARES_OPT_TRIES);
    if (rc != ARES_SUCCESS) {
        d->channel = NULL;
        snprintf(err, errlen, "dns: %s", ares_strerror(rc));
        goto fail;
    }
    if (opts->servers != NULL && opts->servers[0] != '\0') {
        rc = ares_set_servers_ports_csv(d->channel, opts->servers);
        if (rc != ARES_SUCCESS) {
            snprintf(err, errlen, "dns.servers: %s", ares_strerror(rc));
            goto fail;
        }
    }
    return d;
fail:
    dns_free(d);
    return NULL;
}

static void wake(dns *d)
{
    uint64_t one = 1;
    ssize_t n = write(d->wakefd, &one, sizeof one);
    (void)n; /* EAGAIN: a wake-up is pending already */
}

size_t dns_count(const dns *d)
{
    return atomic_load(&((dns *)d)->nhosts);
}

dns_host *dns_at(const dns *d, size_t i)
{
    return i < dns_count(d) ? d->hosts[i] : NULL;
}

const char *dns_host_name(const dns_host *h)
{
    return h->name;
}

dns_host *dns_find(dns *d, const char *name)
{
    size_t n = dns_count(d);
    for (size_t i = 0; i < n; i++)
        if (strcasecmp(d->hosts[i]->name, name) == 0)
            return d->hosts[i];
    return NULL;
}

dns_host *dns_add(dns *d, const char *name)
{
    if (strlen(name) > DNS_NAME_MAX || name[0] == '\0' || dns_is_literal(name))
        return NULL;
    pthread_mutex_lock(&d->add_lock);
    dns_host *h = dns_find(d, name);
    size_t n = atomic_load(&d->nhosts);
    if (h == NULL && n < DNS_MAX_HOSTS) {
        h = calloc(1, sizeof *h);
        if (h != NULL) {
            h->owner = d;
            memcpy(h->name, name, strlen(name) + 1);
            d->hosts[n] = h;
            atomic_store(&d->nhosts, n + 1); /* publishes the host to readers and the thread */
        }
    }
    pthread_mutex_unlock(&d->add_lock);
    if (h != NULL)
        wake(d);
    return h;
}

int dns_snapshot(const dns_host *h, dns_addrs *out)
{
    dns_host *hh = (dns_host *)h;
    if (atomic_load(&hh->gen) == out->generation)
        return 0;
    dns *d = h->owner;
    atomic_fetch_add(&d->readers, 1);
    const dns_addrs *p = atomic_load(&hh->cur);
    if (p != NULL) {
        out->generation = p->generation;
        out->n = p->n;
        memcpy(out->addr, p->addr, p->n * sizeof p->addr[0]);
    } else {
        out->generation = 0;
        out->n = 0;
    }
    atomic_fetch_sub(&d->readers, 1);
    return 1;
}

int dns_resolved(const dns_host *h)
{
    return atomic_load(&((dns_host *)h)->gen) != 0;
}

void dns_host_stats(const dns_host *h, dns_stats *out)
{
    dns_host *hh = (dns_host *)h;
    out->lookups_ok = atomic_load(&hh->ok);
    out->lookups_failed = atomic_load(&hh->failed);
    out->failing = atomic_load(&hh->failing);
    out->last_ok_ms = atomic_load(&hh->last_ok_ms);
}

int dns_all_resolved(const dns *d)
{
    size_t n = dns_count(d);
    for (size_t i = 0; i < n; i++)
        if (!dns_resolved(d->hosts[i]))
            return 0;
    return 1;
}

/* ---- the resolver thread ---- */

/* IPv4 first (the address every host can route), then in text order: one order for one set. */
static int addr_cmp(const void *a, const void *b)
{
    const char *x = a, *y = b;
    int x6 = strchr(x, ':') != NULL, y6 = strchr(y, ':') != NULL;
    if (x6 != y6)
        return x6 - y6;
    return strcmp(x, y);
}

/* Swaps in next as h's list (next NULL: nothing changes) and frees the one it replaced once no
 * reader can still be copying it (see the top of this file). */
static void publish(dns *d, dns_host *h, dns_addrs *next)
{
    dns_addrs *old = atomic_exchange(&h->cur, next);
    atomic_store(&h->gen, next->generation);
    while (atomic_load(&d->readers) != 0)
        sched_yield();
    free(old);
}

static void lookup_fail(dns *d, dns_host *h, const char *why)
{
    atomic_fetch_add(&h->failed, 1);
    if (!atomic_exchange(&h->failing, 1) && d->on_change != NULL)
        d->on_change(d->arg, h->name, 1, why);
}

static void on_answer(void *arg, int status, int timeouts, struct ares_addrinfo *res)
{
    (void)timeouts;
    dns_host *h = arg;
    dns *d = h->owner;
    dns_addrs *next = NULL;
    h->in_flight = 0;
    if (status == ARES_EDESTRUCTION || status == ARES_ECANCELLED)
        goto out; /* the stop */
    if (status != ARES_SUCCESS) {
        lookup_fail(d, h, ares_strerror(status));
        goto out;
    }
    next = calloc(1, sizeof *next);
    if (next == NULL) {
        lookup_fail(d, h, "out of memory");
        goto out;
    }
    for (struct ares_addrinfo_node *a = res ? res->nodes : NULL; a != NULL; a = a->ai_next) {
        char text[DNS_ADDR_LEN];
        const void *bin = NULL;
        if (a->ai_family == AF_INET)
            bin = &((const struct sockaddr_in *)(const void *)a->ai_addr)->sin_addr;
        else if (a->ai_family == AF_INET6)
            bin = &((const struct sockaddr_in6 *)(const void *)a->ai_addr)->sin6_addr;
        if (bin == NULL || inet_ntop(a->ai_family, bin, text, sizeof text) == NULL)
            continue;
        int dup = 0;
        for (size_t i = 0; i < next->n && !dup; i++)
            dup = strcmp(next->addr[i], text) == 0;
        if (!dup && next->n < DNS_MAX_ADDRS)
            memcpy(next->addr[next->n++], text, strlen(text) + 1);
    }
    if (next->n == 0) {
        lookup_fail(d, h, "no address in the answer");
        goto out;
    }
    qsort(next->addr, next->n, sizeof next->addr[0], addr_cmp);
    atomic_fetch_add(&h->ok, 1);
    atomic_store(&h->last_ok_ms, dns_now_ms());
    if (atomic_exchange(&h->failing, 0) && d->on_change != NULL)
        d->on_change(d->arg, h->name, 0, NULL);
    /* the thread is the only writer of cur: reading it here needs no read section */
    const dns_addrs *cur = atomic_load(&h->cur);
    if (cur != NULL && cur->n == next->n &&
        memcmp(cur->addr, next->addr, next->n * sizeof next->addr[0]) == 0)
        goto out; /* the same list: readers keep their copies */
    next->generation = ++d->generation;
    publish(d, h, next);
    next = NULL;
out:
    free(next);
    if (res != NULL)
        ares_freeaddrinfo(res);
}

/* Starts the lookups that are due; returns ms until the next one is (-1: none). */
static long start_due(dns *d)
{
    int64_t now = dns_now_ms();
    long wait = -1;
    size_t n = dns_count(d);
    for (size_t i = 0; i < n; i++) {
        dns_host *h = d->hosts[i];
        if (h->in_flight)
            continue;
        if (h->next_ms <= now) {
            struct ares_addrinfo_hints hints;
            memset(&hints, 0, sizeof hints);
            hints.ai_family = AF_UNSPEC;
            hints.ai_flags = ARES_AI_NOSORT; /* sorted here; c-ares would connect() to sort */
            h->in_flight = 1;
            h->next_ms = now + d->refresh_ms;
            ares_getaddrinfo(d->channel, h->name, NULL, &hints, on_answer, h);
            if (h->in_flight) /* still running (an answer from the hosts file came at once) */
                continue;
        }
        long ms = (long)(h->next_ms - now);
        if (ms < 0)
            ms = 0;
        if (wait < 0 || ms < wait)
            wait = ms;
    }
    return wait;
}

static void *dns_main(void *arg)
{
    dns *d = arg;
    struct pollfd fds[DNS_MAX_SOCKS + 1];
    while (!atomic_load(&d->stopping)) {
        long wait = start_due(d);
        struct timeval tv, *tvp = ares_timeout(d->channel, NULL, &tv);
        if (tvp != NULL) {
            long ms = (long)tvp->tv_sec * 1000 + (tvp->tv_usec + 999) / 1000;
            if (wait < 0 || ms < wait)
                wait = ms;
        }
        if (wait < 0 || wait > 1000)
            wait = 1000;
        fds[0].fd = d->wakefd;
        fds[0].events = POLLIN;
        fds[0].revents = 0;
        size_t n = d->nsocks;
        memcpy(&fds[1], d->socks, n * sizeof fds[0]);
        int rc = poll(fds, n + 1, (int)wait);
        if (rc > 0 && (fds[0].revents & POLLIN)) {
            uint64_t v;
            ssize_t r = read(d->wakefd, &v, sizeof v);
            (void)r;
        }
        for (size_t i = 1; rc > 0 && i <= n; i++) {
            short ev = fds[i].revents;
            if (ev == 0)
                continue;
            ares_socket_t rfd = (ev & (POLLIN | POLLERR | POLLHUP)) ? fds[i].fd : ARES_SOCKET_BAD;
            ares_socket_t wfd = (ev & (POLLOUT | POLLERR)) ? fds[i].fd : ARES_SOCKET_BAD;
            ares_process_fd(d->channel, rfd, wfd);
        }
        ares_process_fd(d->channel, ARES_SOCKET_BAD, ARES_SOCKET_BAD); /* the tries timed out */
    }
    return NULL;
}

int dns_start(dns *d)
{
    if (d->started)
        return -EALREADY;
    int rc = pthread_create(&d->thread, NULL, dns_main, d);
    if (rc != 0)
        return -rc;
    d->started = 1;
    return 0;
}

void dns_free(dns *d)
{
    if (d == NULL)
        return;
    if (d->started) {
        atomic_store(&d->stopping, 1);
        wake(d);
        pthread_join(d->thread, NULL);
    }
    if (d->channel != NULL)
        ares_destroy(d->channel); /* answers ARES_EDESTRUCTION to what still runs */
    size_t n = atomic_load(&d->nhosts);
    for (size_t i = 0; i < n; i++) {
        free(atomic_load(&d->hosts[i]->cur));
        free(d->hosts[i]);
    }
    if (d->wakefd >= 0)
        close(d->wakefd);
    pthread_mutex_destroy(&d->add_lock);
    free(d);
}
