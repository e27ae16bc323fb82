/* edge — connection deadlines and the per-address cap. See edge.h. */
#include "edge.h"

#include <netinet/tcp.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

/* Bytes that arrived within this many ms of the answer are not "after" it: TCP_INFO's times count
 * in jiffies (1..10 ms). */
#define EDGE_HEARD_SLACK_MS 10
#define EDGE_CAP_BUCKETS    4096

long long edge_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* ---- lists ---- */

static void unlink_conn(edge *e, edge_conn *c)
{
    if (c->state == EDGE_NONE)
        return;
    edge_list *l = &e->lists[c->state];
    if (c->prev != NULL)
        c->prev->next = c->next;
    else
        l->head = c->next;
    if (c->next != NULL)
        c->next->prev = c->prev;
    else
        l->tail = c->prev;
    c->prev = c->next = NULL;
    c->state = EDGE_NONE;
}

/* Appends with due_ms = due. Callers keep each list ordered: every entry of a list is appended
 * with "now + that list's fixed duration", and now never goes back. */
static void append_conn(edge *e, edge_conn *c, edge_state s, long long due)
{
    unlink_conn(e, c);
    edge_list *l = &e->lists[s];
    c->state = s;
    c->due_ms = due;
    c->prev = l->tail;
    c->next = NULL;
    if (l->tail != NULL)
        l->tail->next = c;
    else
        l->head = c;
    l->tail = c;
}

/* The request list: appended with now + request_ms (never before its tail), so ordered like the
 * others. */
static void request_unlink(edge *e, edge_conn *c)
{
    if (!c->in_request)
        return;
    edge_list *l = &e->request;
    if (c->rprev != NULL)
        c->rprev->rnext = c->rnext;
    else
        l->head = c->rnext;
    if (c->rnext != NULL)
        c->rnext->rprev = c->rprev;
    else
        l->tail = c->rprev;
    c->rprev = c->rnext = NULL;
    c->in_request = 0;
}

static void request_append(edge *e, edge_conn *c, long long now)
{
    if (e->request_ms <= 0)
        return;
    request_unlink(e, c);
    edge_list *l = &e->request;
    c->in_request = 1;
    c->request_due_ms = now + e->request_ms;
    /* a turn's "now" may lag a clock read of the same turn by its duration: never before the tail,
     * so the list stays ordered (such an entry gets at most that much longer) */
    if (l->tail != NULL && l->tail->request_due_ms > c->request_due_ms)
        c->request_due_ms = l->tail->request_due_ms;
    c->rprev = l->tail;
    c->rnext = NULL;
    if (l->tail != NULL)
        l->tail->rnext = c;
    else
        l->head = c;
    l->tail = c;
}

void edge_set_request(edge *e, long request_ms, edge_expire_fn on_expire, void *arg)
{
    e->request_ms = request_ms;
    e->on_expire = on_expire;
    e->expire_arg = arg;
}

void edge_init(edge *e, long header_ms, long idle_ms, edge_ipcap *cap)
{
    memset(e, 0, sizeof(*e));
    e->header_ms = header_ms;
    e->idle_ms = idle_ms;
    e->check_ms = (header_ms < idle_ms ? header_ms : idle_ms) / 2;
    if (e->check_ms < 50)
        e->check_ms = 50;
    e->cap = cap;
}

/* ---- the per-address cap ---- */

typedef struct cap_node {
    struct cap_node *next;
    unsigned char key[16]; /* IPv4 as ::ffff:a.b.c.d */
    long count;
} cap_node;

struct edge_ipcap {
    pthread_mutex_t lock;
    long max;
    cap_node *buckets[EDGE_CAP_BUCKETS];
};

/* 0 and the 16-byte key of addr, or -1 for a family without one (a UNIX socket). */
static int cap_key(const struct sockaddr *addr, unsigned char key[16])
{
    if (addr == NULL)
        return -1;
    if (addr->sa_family == AF_INET) {
        const struct sockaddr_in *in = (const struct sockaddr_in *)(const void *)addr;
        memset(key, 0, 10);
        key[10] = key[11] = 0xff;
        memcpy(key + 12, &in->sin_addr, 4);
        return 0;
    }
    if (addr->sa_family == AF_INET6) {
        const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)(const void *)addr;
        memcpy(key, &in6->sin6_addr, 16);
        return 0;
    }
    return -1;
}

static size_t cap_bucket(const unsigned char key[16])
{
    uint32_t h = 2166136261u; /* FNV-1a */
    for (int i = 0; i < 16; i++)
        h = (h ^ key[i]) * 16777619u;
    return h % EDGE_CAP_BUCKETS;
}

edge_ipcap *edge_ipcap_new(long max_per_address)
{
    edge_ipcap *cap = calloc(1, sizeof(*cap));
    if (cap == NULL)
        return NULL;
    pthread_mutex_init(&cap->lock, NULL);
    cap->max = max_per_address;
    return cap;
}

void edge_ipcap_free(edge_ipcap *cap)
{
    if (cap == NULL)
        return;
    for (size_t i = 0; i < EDGE_CAP_BUCKETS; i++) {
        cap_node *n = cap->buckets[i];
        while (n != NULL) {
            cap_node *next = n->next;
            free(n);
            n = next;
        }
    }
    pthread_mutex_destroy(&cap->lock);
    free(cap);
}

/* Counts one more connection of key; 1 if that stays within the cap, 0 if over it (then not
 * counted), -1 when out of memory (not counted: let it in). */
static int cap_take(edge_ipcap *cap, const unsigned char key[16])
{
    size_t b = cap_bucket(key);
    int ok = 1;
    pthread_mutex_lock(&cap->lock);
    cap_node *n = cap->buckets[b];
    while (n != NULL && memcmp(n->key, key, 16) != 0)
        n = n->next;
    if (n == NULL) {
        n = calloc(1, sizeof(*n));
        if (n == NULL) {
            ok = -1;
            goto out;
        }
        memcpy(n->key, key, 16);
        n->next = cap->buckets[b];
        cap->buckets[b] = n;
    }
    if (n->count >= cap->max)
        ok = 0;
    else
        n->count++;
out:
    pthread_mutex_unlock(&cap->lock);
    return ok;
}

/* Releases one connection of key; an address without connections leaves the table. */
static void cap_release(edge_ipcap *cap, const unsigned char key[16])
{
    size_t b = cap_bucket(key);
    pthread_mutex_lock(&cap->lock);
    cap_node **pp = &cap->buckets[b];
    while (*pp != NULL && memcmp((*pp)->key, key, 16) != 0)
        pp = &(*pp)->next;
    if (*pp != NULL && --(*pp)->count <= 0) {
        cap_node *n = *pp;
        *pp = n->next;
        free(n);
    }
    pthread_mutex_unlock(&cap->lock);
}

long edge_ipcap_count(edge_ipcap *cap, const struct sockaddr *addr)
{
    unsigned char key[16];
    long count = 0;
    if (cap == NULL || cap_key(addr, key) != 0)
        return 0;
    pthread_mutex_lock(&cap->lock);
    for (cap_node *n = cap->buckets[cap_bucket(key)]; n != NULL; n = n->next)
        if (memcmp(n->key, key, 16) == 0)
            count = n->count;
    pthread_mutex_unlock(&cap->lock);
    return count;
}

/* ---- connections ---- */

static void shut(edge *e, edge_conn *c)
{
    unlink_conn(e, c);
    request_unlink(e, c);
    if (!c->closed_by_edge) {
        c->closed_by_edge = 1;
        e->closed++;
        shutdown(c->fd, SHUT_RDWR); /* libmicrohttpd sees end-of-file and closes: see edge.h */
    }
}

edge_conn *edge_open(edge *e, int fd, const struct sockaddr *addr, socklen_t addrlen, long long now)
{
    edge_conn *c = calloc(1, sizeof(*c));
    if (c == NULL)
        return NULL;
    c->fd = fd;
    if (addr != NULL && addrlen <= sizeof(c->addr))
        memcpy(&c->addr, addr, addrlen);
    append_conn(e, c, EDGE_HEADERS, now + e->header_ms);
    request_append(e, c, now);
    unsigned char key[16];
    if (e->cap != NULL && cap_key(addr, key) == 0) {
        int ok = cap_take(e->cap, key);
        c->capped = ok == 1;
        c->refused = ok == 0;
        if (c->refused)
            shut(e, c);
    }
    return c;
}

int edge_refused(const edge_conn *c)
{
    return c != NULL && c->refused;
}

void edge_close(edge *e, edge_conn *c)
{
    if (c == NULL)
        return;
    unlink_conn(e, c);
    request_unlink(e, c);
    unsigned char key[16];
    if (c->capped && cap_key((const struct sockaddr *)&c->addr, key) == 0)
        cap_release(e->cap, key);
    free(c);
}

void edge_headers_done(edge *e, edge_conn *c)
{
    if (c == NULL)
        return;
    /* from idle too: a pipelined request is parsed before any sweep; its request deadline
     * starts now: the time of this loop turn's sweep (no clock read per request) */
    if (c->state == EDGE_IDLE && !c->in_request)
        request_append(e, c, e->now > 0 ? e->now : edge_now_ms());
    if (c->state == EDGE_HEADERS || c->state == EDGE_IDLE)
        unlink_conn(e, c);
}

void edge_request_owner(edge_conn *c, void *owner)
{
    if (c != NULL)
        c->owner = owner;
}

void edge_request_done(edge *e, edge_conn *c)
{
    if (c != NULL)
        request_unlink(e, c);
}

void edge_shut(edge *e, edge_conn *c)
{
    if (c != NULL)
        shut(e, c);
}

void edge_answered(edge *e, edge_conn *c, long long now)
{
    if (c == NULL || c->closed_by_edge)
        return;
    request_unlink(e, c);
    c->since_ms = now;
    append_conn(e, c, EDGE_IDLE, now + e->check_ms);
}

void edge_linger(edge *e, edge_conn *c, long long now)
{
    if (c == NULL)
        return;
    request_unlink(e, c);
    if (!c->closed_by_edge)
        append_conn(e, c, EDGE_LINGER, now + EDGE_LINGER_MS);
}

/* 1 when the peer sent something since the answer (idle_for ms ago), 0 if not or unknown. The
 * kernel counts when the last data arrived; libmicrohttpd has read it already, so recv cannot
 * tell. */
static int heard_since(int fd, long long idle_for)
{
    struct tcp_info ti;
    socklen_t len = sizeof(ti);
    if (getsockopt(fd, IPPROTO_TCP, TCP_INFO, &ti, &len) != 0)
        return 0;
    return (long long)ti.tcpi_last_data_recv + EDGE_HEARD_SLACK_MS < idle_for;
}

static void sweep_idle(edge *e, edge_conn *c, long long now)
{
    long long idle_for = now - c->since_ms;
    if (heard_since(c->fd, idle_for)) {
        /* The next request began at most check_ms ago: its header deadline starts now, so it
         * gets between header_ms and header_ms + check_ms from its first byte. */
        append_conn(e, c, EDGE_HEADERS, now + e->header_ms);
        request_append(e, c, now);
        return;
    }
    if (idle_for >= e->idle_ms) {
        shut(e, c);
        return;
    }
    append_conn(e, c, EDGE_IDLE, now + e->check_ms);
}

long edge_wait_ms(const edge *e, long long now)
{
    long long next = -1;
    for (int s = EDGE_HEADERS; s < EDGE_NSTATES; s++) {
        const edge_conn *head = e->lists[s].head;
        if (head != NULL && (next < 0 || head->due_ms < next))
            next = head->due_ms;
    }
    const edge_conn *req = e->request.head;
    if (req != NULL && (next < 0 || req->request_due_ms < next))
        next = req->request_due_ms;
    if (next < 0)
        return -1;
    return next <= now ? 0 : (long)(next - now);
}

long edge_sweep(edge *e, long long now)
{
    e->now = now;
    /* idle first: what it moves to headers is due later, never in this sweep */
    static const edge_state order[] = {EDGE_IDLE, EDGE_HEADERS, EDGE_LINGER};
    for (size_t i = 0; i < sizeof(order) / sizeof(order[0]); i++) {
        edge_list *l = &e->lists[order[i]];
        /* an entry re-appended to its own list is due later than now: the loop ends */
        while (l->head != NULL && l->head->due_ms <= now) {
            edge_conn *c = l->head;
            if (order[i] == EDGE_IDLE)
                sweep_idle(e, c, now);
            else
                shut(e, c);
        }
    }
    /* each pass unlinks the head: the loop ends */
    while (e->request.head != NULL && e->request.head->request_due_ms <= now) {
        edge_conn *c = e->request.head;
        request_unlink(e, c);
        if (c->owner == NULL || e->on_expire == NULL || !e->on_expire(e->expire_arg, c))
            shut(e, c);
    }
    return edge_wait_ms(e, now);
}
