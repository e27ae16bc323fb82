/* dnsd — a test DNS server. See dnsd.h.
 *
 * One thread polls the UDP socket, the TCP listener, accepted TCP connections and a wake-up pipe.
 * A delayed answer is built at once and queued with its due time, so a slow name never holds up
 * another. TCP connections are read one message at a time (the length prefix and the message are
 * expected in one read: test resolvers send small queries). */
#include "dnsd.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define DNSD_NAMES   32
#define DNSD_ADDRS   16
#define DNSD_PENDING 256
#define DNSD_TCP     16
#define DNSD_MSG     1024

typedef struct dnsd_name {
    char name[256];
    int n4, n6;
    unsigned char a4[DNSD_ADDRS][4];
    unsigned char a6[DNSD_ADDRS][16];
    dnsd_mode mode;
    long delay_ms;
    unsigned queries;
} dnsd_name;

typedef struct dnsd_pending {
    int64_t due_ms;
    int tcp_fd; /* -1: UDP to peer */
    struct sockaddr_in peer;
    size_t len;
    unsigned char msg[DNSD_MSG];
} dnsd_pending;

struct dnsd {
    int udp, tcp, port;
    int wake[2];
    pthread_t thread;
    pthread_mutex_t mu; /* the table */
    dnsd_name names[DNSD_NAMES];
    size_t nnames;
    /* the thread's only */
    dnsd_pending *pending[DNSD_PENDING];
    size_t npending;
    int conns[DNSD_TCP];
    size_t nconns;
};

static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static dnsd_name *find(dnsd *d, const char *name, int add)
{
    for (size_t i = 0; i < d->nnames; i++)
        if (strcasecmp(d->names[i].name, name) == 0)
            return &d->names[i];
    if (!add || d->nnames == DNSD_NAMES || strlen(name) >= sizeof d->names[0].name)
        return NULL;
    dnsd_name *e = &d->names[d->nnames++];
    memset(e, 0, sizeof *e);
    memcpy(e->name, name, strlen(name) + 1);
    return e;
}

int dnsd_set(dnsd *d, const char *name, const char *addrs)
{
    int rc = -1;
    char *copy = strdup(addrs), *save = NULL;
    if (copy == NULL)
        return -1;
    pthread_mutex_lock(&d->mu);
    dnsd_name *e = find(d, name, 1);
    if (e != NULL) {
        e->n4 = e->n6 = 0;
        for (char *t = strtok_r(copy, ",", &save); t != NULL; t = strtok_r(NULL, ",", &save)) {
            if (e->n4 < DNSD_ADDRS && inet_pton(AF_INET, t, e->a4[e->n4]) == 1)
                e->n4++;
            else if (e->n6 < DNSD_ADDRS && inet_pton(AF_INET6, t, e->a6[e->n6]) == 1)
                e->n6++;
        }
        rc = 0;
    }
    pthread_mutex_unlock(&d->mu);
    free(copy);
    return rc;
}

void dnsd_behave(dnsd *d, const char *name, dnsd_mode mode, long delay_ms)
{
    pthread_mutex_lock(&d->mu);
    dnsd_name *e = find(d, name, 1);
    if (e != NULL) {
        e->mode = mode;
        e->delay_ms = delay_ms;
    }
    pthread_mutex_unlock(&d->mu);
}

unsigned dnsd_queries(dnsd *d, const char *name)
{
    pthread_mutex_lock(&d->mu);
    dnsd_name *e = find(d, name, 0);
    unsigned n = e ? e->queries : 0;
    pthread_mutex_unlock(&d->mu);
    return n;
}

static void put16(unsigned char *p, unsigned v)
{
    p[0] = (unsigned char)(v >> 8);
    p[1] = (unsigned char)v;
}

/* The answer to query q (len bytes) into out; its length, 0 to drop; *delay the wait. */
static size_t answer(dnsd *d, const unsigned char *q, size_t len, unsigned char *out, long *delay)
{
    *delay = 0;
    if (len < 12 + 5 || (q[2] & 0x80) != 0)
        return 0;
    /* the question's name, as text */
    char name[256];
    size_t pos = 12, nl = 0;
    while (pos < len && q[pos] != 0) {
        size_t l = q[pos];
        if (l > 63 || pos + 1 + l >= len || nl + l + 1 >= sizeof name)
            return 0;
        if (nl > 0)
            name[nl++] = '.';
        memcpy(name + nl, q + pos + 1, l);
        nl += l;
        pos += 1 + l;
    }
    name[nl] = '\0';
    if (pos + 5 > len)
        return 0;
    size_t qend = pos + 5; /* the root label, type, class */
    unsigned qtype = (unsigned)q[pos + 1] << 8 | q[pos + 2];
    if (qend > DNSD_MSG)
        return 0;
    memcpy(out, q, qend);
    out[2] = (unsigned char)(0x80 | (q[2] & 0x79)); /* QR, the opcode and RD as asked */
    out[3] = 0x80;                                  /* RA, rcode 0 */
    put16(out + 4, 1);
    put16(out + 6, 0);
    put16(out + 8, 0);
    put16(out + 10, 0);
    size_t n = qend;
    pthread_mutex_lock(&d->mu);
    dnsd_name *e = find(d, name, 0);
    dnsd_mode mode = e ? e->mode : DNSD_NXDOMAIN;
    if (e != NULL) {
        e->queries++;
        *delay = e->delay_ms;
    }
    if (mode == DNSD_DROP) {
        n = 0;
    } else if (mode == DNSD_SERVFAIL) {
        out[3] = 0x82;
    } else if (mode == DNSD_NXDOMAIN) {
        out[3] = 0x83;
    } else if (qtype == 1 || qtype == 28) {
        int count = qtype == 1 ? e->n4 : e->n6;
        size_t rdlen = qtype == 1 ? 4 : 16;
        for (int i = 0; i < count && n + 12 + rdlen <= DNSD_MSG; i++) {
            put16(out + n, 0xc00c); /* the question's name */
            put16(out + n + 2, qtype);
            put16(out + n + 4, 1);
            put16(out + n + 6, 0);
            put16(out + n + 8, 1); /* TTL 1 s */
            put16(out + n + 10, (unsigned)rdlen);
            memcpy(out + n + 12, qtype == 1 ? e->a4[i] : e->a6[i], rdlen);
            n += 12 + rdlen;
            put16(out + 6, (unsigned)i + 1);
        }
    }
    pthread_mutex_unlock(&d->mu);
    return n;
}

static void send_msg(dnsd *d, int tcp_fd, const struct sockaddr_in *peer, const unsigned char *msg,
                     size_t len)
{
    if (tcp_fd < 0) {
        ssize_t r =
            sendto(d->udp, msg, len, MSG_NOSIGNAL, (const struct sockaddr *)peer, sizeof *peer);
        (void)r;
        return;
    }
    unsigned char buf[DNSD_MSG + 2];
    put16(buf, (unsigned)len);
    memcpy(buf + 2, msg, len);
    ssize_t r = send(tcp_fd, buf, len + 2, MSG_NOSIGNAL);
    (void)r;
}

static void handle(dnsd *d, int tcp_fd, const struct sockaddr_in *peer, const unsigned char *q,
                   size_t len)
{
    dnsd_pending *p = malloc(sizeof *p);
    if (p == NULL)
        return;
    long delay;
    p->len = answer(d, q, len, p->msg, &delay);
    p->tcp_fd = tcp_fd;
    if (peer != NULL)
        p->peer = *peer;
    if (p->len == 0) {
        free(p);
        return;
    }
    if (delay <= 0 || d->npending == DNSD_PENDING) {
        send_msg(d, tcp_fd, peer, p->msg, p->len);
        free(p);
        return;
    }
    p->due_ms = now_ms() + delay;
    d->pending[d->npending++] = p;
}

static void conn_close(dnsd *d, size_t i)
{
    int fd = d->conns[i];
    for (size_t k = 0; k < d->npending;) { /* what was due on it goes with it */
        if (d->pending[k]->tcp_fd == fd) {
            free(d->pending[k]);
            d->pending[k] = d->pending[--d->npending];
        } else {
            k++;
        }
    }
    close(fd);
    d->conns[i] = d->conns[--d->nconns];
}

static void *dnsd_main(void *arg)
{
    dnsd *d = arg;
    for (;;) {
        struct pollfd fds[3 + DNSD_TCP];
        fds[0] = (struct pollfd){.fd = d->wake[0], .events = POLLIN};
        fds[1] = (struct pollfd){.fd = d->udp, .events = POLLIN};
        fds[2] = (struct pollfd){.fd = d->tcp, .events = POLLIN};
        size_t nc = d->nconns;
        for (size_t i = 0; i < nc; i++)
            fds[3 + i] = (struct pollfd){.fd = d->conns[i], .events = POLLIN};
        int64_t now = now_ms(), wait = 1000;
        for (size_t i = 0; i < d->npending; i++)
            if (d->pending[i]->due_ms - now < wait)
                wait = d->pending[i]->due_ms - now;
        if (wait < 0)
            wait = 0;
        int rc = poll(fds, 3 + nc, (int)wait);
        if (rc > 0 && fds[0].revents)
            break;
        unsigned char buf[DNSD_MSG + 2];
        if (rc > 0 && (fds[1].revents & POLLIN)) {
            struct sockaddr_in peer;
            socklen_t pl = sizeof peer;
            ssize_t n = recvfrom(d->udp, buf, DNSD_MSG, 0, (struct sockaddr *)&peer, &pl);
            if (n > 0)
                handle(d, -1, &peer, buf, (size_t)n);
        }
        if (rc > 0 && (fds[2].revents & POLLIN)) {
            int fd = accept4(d->tcp, NULL, NULL, SOCK_CLOEXEC);
            if (fd >= 0 && d->nconns < DNSD_TCP)
                d->conns[d->nconns++] = fd;
            else if (fd >= 0)
                close(fd);
        }
        for (size_t i = nc; rc > 0 && i-- > 0;) {
            if (fds[3 + i].revents == 0)
                continue;
            ssize_t n = recv(fds[3 + i].fd, buf, sizeof buf, 0);
            size_t k = 0;
            while (k < d->nconns && d->conns[k] != fds[3 + i].fd)
                k++;
            if (n < 2 || (size_t)n < 2u + ((size_t)buf[0] << 8 | buf[1])) {
                if (k < d->nconns)
                    conn_close(d, k);
                continue;
            }
            handle(d, fds[3 + i].fd, NULL, buf + 2, (size_t)(buf[0] << 8 | buf[1]));
        }
        now = now_ms();
        for (size_t i = 0; i < d->npending;) {
            dnsd_pending *p = d->pending[i];
            if (p->due_ms <= now) {
                send_msg(d, p->tcp_fd, &p->peer, p->msg, p->len);
                free(p);
                d->pending[i] = d->pending[--d->npending];
            } else {
                i++;
            }
        }
    }
    return NULL;
}

dnsd *dnsd_start(void)
{
    dnsd *d = calloc(1, sizeof *d);
    if (d == NULL)
        return NULL;
    d->udp = d->tcp = d->wake[0] = d->wake[1] = -1;
    pthread_mutex_init(&d->mu, NULL);
    if (pipe2(d->wake, O_CLOEXEC) != 0)
        goto fail;
    /* a UDP port the kernel picks, then TCP on the same port (tried again when taken) */
    for (int tries = 0; tries < 50 && d->tcp < 0; tries++) {
        struct sockaddr_in sa = {.sin_family = AF_INET};
        socklen_t sl = sizeof sa;
        sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        if (d->udp >= 0)
            close(d->udp);
        d->udp = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
        if (d->udp < 0 || bind(d->udp, (struct sockaddr *)&sa, sizeof sa) != 0 ||
            getsockname(d->udp, (struct sockaddr *)&sa, &sl) != 0)
            goto fail;
        int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0), one = 1;
        if (fd < 0)
            goto fail;
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
        if (bind(fd, (struct sockaddr *)&sa, sizeof sa) == 0 && listen(fd, 16) == 0) {
            d->tcp = fd;
            d->port = ntohs(sa.sin_port);
        } else {
            close(fd);
        }
    }
    if (d->tcp < 0)
        goto fail;
    if (pthread_create(&d->thread, NULL, dnsd_main, d) != 0)
        goto fail;
    return d;
fail:
    if (d->udp >= 0)
        close(d->udp);
    if (d->tcp >= 0)
        close(d->tcp);
    if (d->wake[0] >= 0) {
        close(d->wake[0]);
        close(d->wake[1]);
    }
    pthread_mutex_destroy(&d->mu);
    free(d);
    return NULL;
}

int dnsd_port(const dnsd *d)
{
    return d->port;
}

void dnsd_stop(dnsd *d)
{
    if (d == NULL)
        return;
    ssize_t r = write(d->wake[1], "x", 1);
    (void)r;
    pthread_join(d->thread, NULL);
    while (d->nconns > 0)
        conn_close(d, d->nconns - 1);
    for (size_t i = 0; i < d->npending; i++)
        free(d->pending[i]);
    close(d->udp);
    close(d->tcp);
    close(d->wake[0]);
    close(d->wake[1]);
    pthread_mutex_destroy(&d->mu);
    free(d);
}
