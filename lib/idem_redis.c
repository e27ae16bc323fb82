/* idem_redis — the Idempotency-Key store on a Redis server shared by replicas (hiredis 0.14.1,
 * asynchronous API, one connection per worker loop, driven by that loop: lib/tg_watch.h).
 *
 * Record: the value of checkoutd:idem:<hex SHA-256 of the key> is a fixed 100-byte head and the
 * answer's body:
 *   token (32 hex) | fingerprint (64 hex, SHA-256 of the request body) | state ('P' claimed,
 *   'D' done) | status (3 digits, "000" while claimed) | body (the answer's bytes, done only)
 * binary-safe, no encoding of the body, and the token at offset 0 so that the compare scripts
 * below need only a string.sub.
 *   claim    SET k <head P> NX PX <deadline_ms + 5000>; when it exists, GET k: replay, mismatch or
 *            in progress (a record that vanished in between: SET again, at most 3 times)
 *   finish   EVAL compare-and-store: SET k <head D + body> PX <ttl> only if k still holds the token
 *   release  EVAL compare-and-delete: DEL k only if k still holds the token
 * So a claim that expired (its checkout outlived deadline_ms + 5 s, its replica died) never
 * overwrites or deletes the record of the checkout that claimed the key after it.
 *
 * Failure: every operation has its own timer of timeout_ms on the loop; when it fires the claim
 * is answered IDEM_UNAVAILABLE (a finish/release is logged) and the connection, which is then
 * suspect (Redis gone, stopped, or a network partition), is freed: hiredis calls back every other
 * command on it with no reply (each answered IDEM_UNAVAILABLE at once). A connection that is down
 * answers claims IDEM_UNAVAILABLE at once and reconnects by itself after 100 ms, doubling to 1 s.
 * A claim whose reply was lost to a timeout may still have been set: it expires by itself.
 * hiredis 0.14 has no connect timeout and resolves names with a blocking getaddrinfo, so it is
 * only ever given numeric addresses: a host name's current addresses from the process's resolver
 * (lib/dns, v1.3: each reconnect follows a change), else the address resolved once here at start
 * (no resolver: tests). */
#include "dns.h"
#include "idem.h"
#include "tg_watch.h"

#include <arpa/inet.h>
#include <hiredis/async.h>
#include <hiredis/hiredis.h>
#include <netdb.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#define RD_PREFIX      "checkoutd:idem:"
#define RD_KEY_LEN     (sizeof(RD_PREFIX) - 1 + 2 * IDEM_FP_LEN)
#define RD_HEAD        (IDEM_TOKEN_LEN + 2 * IDEM_FP_LEN + 1 + 3)
#define RD_CLAIM_TRIES 3
#define RD_BACKOFF_MIN 100
#define RD_BACKOFF_MAX 1000

/* KEYS[1] the record, ARGV[1] this checkout's token, ARGV[2] the final record or "" to release,
 * ARGV[3] its time to live in ms. */
static const char rd_if_mine[] =
    "local cur = redis.call('GET', KEYS[1]) "
    "if not cur or string.sub(cur, 1, 32) ~= ARGV[1] then return 0 end "
    "if ARGV[2] == '' then redis.call('DEL', KEYS[1]) return 1 end "
    "redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3]) return 1";

typedef enum rd_state { RD_DOWN, RD_CONNECTING, RD_UP } rd_state;
typedef enum rd_kind { RD_CLAIM, RD_FINISH, RD_RELEASE } rd_kind;

typedef struct rd_store rd_store;

typedef struct rd_conn {
    rd_store *store;
    tg_loop *loop;
    redisAsyncContext *ac; /* NULL while down */
    rd_state state;
    tg_watch watch;
    unsigned want;
    tg_timer retry;
    long backoff_ms;
    int down_logged; /* this outage was logged */
    int closing;     /* idem_free: no reconnect */
    dns_addrs addrs; /* this connection's copy of the store's name's addresses */
    unsigned next;   /* the address of the next connect (in turn) */
} rd_conn;

struct rd_store {
    idem_store base;
    rd_conn *conns;
    size_t nconns;
    char ip[INET6_ADDRSTRLEN];
    dns_host *name; /* NULL: ip, resolved once at start */
    int port, db;
    long timeout_ms, claim_ms, ttl_ms;
    idem_log_fn log;
    atomic_long up; /* connections up now, for /status (read on any thread) */
};

typedef struct rd_op {
    rd_conn *conn;
    rd_kind kind;
    idem_claim *claim; /* RD_CLAIM */
    idem_claim_fn done;
    void *arg;
    int answered; /* the claim's callback ran, or the finish/release's outcome is known */
    int inflight; /* commands whose hiredis callback has not come yet */
    int tries;    /* SETs sent */
    int reading;  /* the last command sent was the GET */
    tg_timer timer;
    char rkey[RD_KEY_LEN + 1];
    char head[RD_HEAD + 1];
} rd_op;

static void rd_log(const rd_store *s, const char *event, const char *detail)
{
    if (s->log != NULL)
        s->log(event, detail);
}

/* ---- the connection ---- */

static void rd_connect(rd_conn *c);

static void rd_retry_fired(tg_timer *t, void *arg)
{
    (void)t;
    rd_connect(arg);
}

/* The connection is gone (hiredis freed it, or we did): down, and try again later. */
static void rd_down(rd_conn *c, const char *why)
{
    c->ac = NULL;
    if (c->state == RD_UP)
        atomic_fetch_sub(&c->store->up, 1);
    c->state = RD_DOWN;
    c->want = 0;
    if (c->closing)
        return;
    if (!c->down_logged) {
        c->down_logged = 1;
        rd_log(c->store, "idempotency_store_down", why);
    }
    tg_timer_start(c->loop, &c->retry, c->backoff_ms, rd_retry_fired, c);
    c->backoff_ms = c->backoff_ms * 2 > RD_BACKOFF_MAX ? RD_BACKOFF_MAX : c->backoff_ms * 2;
}

static void rd_on_connect(const redisAsyncContext *ac, int status)
{
    rd_conn *c = ac->data;
    if (status != REDIS_OK) {
        rd_down(c, ac->errstr[0] ? ac->errstr : "cannot connect to redis"); /* hiredis frees ac */
        return;
    }
    c->state = RD_UP;
    atomic_fetch_add(&c->store->up, 1);
    c->backoff_ms = RD_BACKOFF_MIN;
    if (c->down_logged) {
        c->down_logged = 0;
        rd_log(c->store, "idempotency_store_up", "connected to redis again");
    }
}

static void rd_on_disconnect(const redisAsyncContext *ac, int status)
{
    rd_conn *c = ac->data;
    if (c->ac == ac)
        rd_down(c, status == REDIS_OK ? "connection closed" : ac->errstr);
}

static void rd_watch_set(rd_conn *c)
{
    if (c->watch.fd >= 0)
        tg_watch_set(c->loop, &c->watch, c->want);
}

static void ev_add_read(void *p)
{
    rd_conn *c = p;
    c->want |= TG_WATCH_READ;
    rd_watch_set(c);
}

static void ev_del_read(void *p)
{
    rd_conn *c = p;
    c->want &= ~TG_WATCH_READ;
    rd_watch_set(c);
}

static void ev_add_write(void *p)
{
    rd_conn *c = p;
    c->want |= TG_WATCH_WRITE;
    rd_watch_set(c);
}

static void ev_del_write(void *p)
{
    rd_conn *c = p;
    c->want &= ~TG_WATCH_WRITE;
    rd_watch_set(c);
}

static void ev_cleanup(void *p)
{
    rd_conn *c = p;
    tg_watch_stop(c->loop, &c->watch);
    c->want = 0;
}

/* hiredis may free the context inside either call (the peer closed, an error): c->ac is then
 * NULL (rd_on_disconnect / rd_on_connect saw it go). */
static void rd_on_io(tg_watch *w, unsigned events, void *arg)
{
    rd_conn *c = arg;
    (void)w;
    if ((events & TG_WATCH_READ) && c->ac != NULL)
        redisAsyncHandleRead(c->ac);
    if ((events & TG_WATCH_WRITE) && c->ac != NULL)
        redisAsyncHandleWrite(c->ac);
}

static void rd_connect(rd_conn *c)
{
    char why[160];
    const char *ip = c->store->ip;
    if (c->store->name != NULL) {
        dns_snapshot(c->store->name, &c->addrs);
        if (c->addrs.n == 0) {
            /* The resolver has not answered yet (it starts with the workers): down, tried again
             * in 100 ms, without an idempotency_store_down line at every start. A name that never
             * resolves says so itself (dns_failed, /readyz "resolving"). */
            c->state = RD_DOWN;
            c->want = 0;
            if (!c->closing)
                tg_timer_start(c->loop, &c->retry, RD_BACKOFF_MIN, rd_retry_fired, c);
            return;
        }
        ip = c->addrs.addr[c->next++ % c->addrs.n];
    }
    redisAsyncContext *ac = redisAsyncConnect(ip, c->store->port);
    if (ac == NULL || ac->err) {
        snprintf(why, sizeof why, "cannot connect to redis: %s", ac ? ac->errstr : "no memory");
        if (ac != NULL)
            redisAsyncFree(ac);
        rd_down(c, why);
        return;
    }
    ac->data = c;
    ac->ev.data = c;
    ac->ev.addRead = ev_add_read;
    ac->ev.delRead = ev_del_read;
    ac->ev.addWrite = ev_add_write;
    ac->ev.delWrite = ev_del_write;
    ac->ev.cleanup = ev_cleanup;
    redisAsyncSetConnectCallback(ac, rd_on_connect);
    redisAsyncSetDisconnectCallback(ac, rd_on_disconnect);
    c->want = TG_WATCH_WRITE; /* writable: the connect completed (or failed) */
    if (tg_watch_start(c->loop, &c->watch, ac->c.fd, c->want, rd_on_io, c) != 0) {
        redisAsyncFree(ac);
        rd_down(c, "cannot watch the redis socket");
        return;
    }
    c->ac = ac;
    c->state = RD_CONNECTING;
    if (c->store->db != 0)
        redisAsyncCommand(ac, NULL, NULL, "SELECT %d", c->store->db);
}

/* Frees a suspect connection: hiredis calls back every command on it with no reply. */
static void rd_drop(rd_conn *c, const char *why)
{
    redisAsyncContext *ac = c->ac;
    if (ac == NULL)
        return;
    c->ac = NULL; /* rd_on_disconnect, called from inside the free, sees it is not current */
    redisAsyncFree(ac);
    rd_down(c, why);
}

/* ---- operations ---- */

static void op_maybe_free(rd_op *op)
{
    if (op->answered && op->inflight == 0) {
        tg_timer_stop(op->conn->loop, &op->timer);
        free(op);
    }
}

static void op_answer(rd_op *op, idem_result r)
{
    if (op->answered)
        return;
    op->answered = 1;
    tg_timer_stop(op->conn->loop, &op->timer);
    if (op->kind == RD_CLAIM) {
        op->claim->result = r;
        if (r == IDEM_UNAVAILABLE && op->claim->why == NULL)
            op->claim->why = "the idempotency store cannot be reached; retry";
        op->done(op->claim, op->arg);
    }
}

static void op_timed_out(tg_timer *t, void *arg)
{
    rd_op *op = arg;
    rd_conn *c = op->conn;
    (void)t;
    if (op->kind != RD_CLAIM)
        rd_log(c->store, "idempotency_store_write_failed",
               op->kind == RD_FINISH ? "timeout storing an answer; the claim expires by itself"
                                     : "timeout releasing a claim; it expires by itself");
    op_answer(op, IDEM_UNAVAILABLE);
    if (op->inflight == 0) {
        op_maybe_free(op);
        return;
    }
    rd_drop(c, "a command timed out (timeout_ms)"); /* frees op through its callback */
}

static rd_op *op_new(rd_store *s, const idem_claim *claim, rd_kind kind)
{
    rd_op *op = calloc(1, sizeof(*op));
    if (op == NULL)
        return NULL;
    op->conn = &s->conns[claim->worker % s->nconns];
    op->kind = kind;
    tg_timer_init(&op->timer);
    char hex[2 * IDEM_FP_LEN + 1];
    unsigned char h[IDEM_FP_LEN];
    idem_fingerprint(claim->key, strlen(claim->key), h);
    idem_hex(h, sizeof h, hex);
    snprintf(op->rkey, sizeof op->rkey, "%s%s", RD_PREFIX, hex);
    return op;
}

static void on_claim_reply(redisAsyncContext *ac, void *r, void *priv);

static int send_set(rd_op *op)
{
    char px[24];
    snprintf(px, sizeof px, "%ld", op->conn->store->claim_ms);
    const char *argv[] = {"SET", op->rkey, op->head, "NX", "PX", px};
    size_t len[] = {3, strlen(op->rkey), RD_HEAD, 2, 2, strlen(px)};
    op->tries++;
    if (redisAsyncCommandArgv(op->conn->ac, on_claim_reply, op, 6, argv, len) != REDIS_OK)
        return -1;
    op->inflight++;
    return 0;
}

static int send_get(rd_op *op)
{
    const char *argv[] = {"GET", op->rkey};
    size_t len[] = {3, strlen(op->rkey)};
    if (redisAsyncCommandArgv(op->conn->ac, on_claim_reply, op, 2, argv, len) != REDIS_OK)
        return -1;
    op->inflight++;
    return 0;
}

/* The status of a done record: 3 digits of a final HTTP status (200..599), else -1. */
static int record_status(const char *st)
{
    int v = 0;
    for (int i = 1; i <= 3; i++) {
        if (st[i] < '0' || st[i] > '9')
            return -1;
        v = v * 10 + (st[i] - '0');
    }
    return v >= 200 && v <= 599 ? v : -1;
}

/* A record read back (GET): what it says to this claim. One whose state or status does not parse
 * (corrupted, or written by something else under our prefix) is never sent: the store cannot
 * answer for this key (503), logged once per claim that meets it; it expires by itself. */
static idem_result read_record(rd_op *op, const redisReply *r)
{
    idem_claim *cl = op->claim;
    if ((size_t)r->len < RD_HEAD)
        return IDEM_MISMATCH; /* not ours to overwrite */
    if (memcmp(r->str, op->head, IDEM_TOKEN_LEN) == 0)
        return IDEM_NEW; /* our own SET went through */
    if (memcmp(r->str + IDEM_TOKEN_LEN, op->head + IDEM_TOKEN_LEN, 2 * IDEM_FP_LEN) != 0)
        return IDEM_MISMATCH;
    const char *st = r->str + IDEM_TOKEN_LEN + 2 * IDEM_FP_LEN;
    if (st[0] == 'P')
        return IDEM_IN_PROGRESS;
    int status = st[0] == 'D' ? record_status(st) : -1;
    if (status < 0) {
        cl->why = "the idempotency store holds an unreadable record for this key; retry later";
        rd_log(op->conn->store, "idempotency_record_invalid",
               "a stored record's state or status does not parse; answered 503");
        return IDEM_UNAVAILABLE;
    }
    size_t blen = (size_t)r->len - RD_HEAD;
    cl->body = malloc(blen ? blen : 1);
    if (cl->body == NULL)
        return IDEM_UNAVAILABLE;
    memcpy(cl->body, r->str + RD_HEAD, blen);
    cl->body_len = blen;
    cl->status = status;
    return IDEM_REPLAY;
}

static void on_claim_reply(redisAsyncContext *ac, void *reply, void *priv)
{
    rd_op *op = priv;
    const redisReply *r = reply;
    idem_result res = IDEM_UNAVAILABLE;
    (void)ac;
    op->inflight--;
    if (op->answered) {
        op_maybe_free(op);
        return;
    }
    if (r == NULL || r->type == REDIS_REPLY_ERROR) {
        res = IDEM_UNAVAILABLE;
    } else if (!op->reading) { /* SET ... NX: OK, or nil when the key exists */
        res = r->type == REDIS_REPLY_STATUS ? IDEM_NEW : IDEM_UNAVAILABLE;
        if (r->type == REDIS_REPLY_NIL) {
            op->reading = 1;
            if (send_get(op) == 0)
                return;
        }
    } else if (r->type == REDIS_REPLY_STRING) {
        res = read_record(op, r);
    } else if (r->type == REDIS_REPLY_NIL) { /* expired or released since the SET: claim again */
        res = IDEM_IN_PROGRESS;
        op->reading = 0;
        if (op->tries < RD_CLAIM_TRIES && send_set(op) == 0)
            return;
    }
    op_answer(op, res);
    op_maybe_free(op);
}

static void rd_claim(idem_store *st, idem_claim *cl, idem_claim_fn done, void *arg)
{
    rd_store *s = (rd_store *)st;
    rd_op *op = op_new(s, cl, RD_CLAIM);
    char fphex[2 * IDEM_FP_LEN + 1];
    cl->body = NULL;
    cl->why = NULL;
    if (op == NULL || op->conn->ac == NULL) {
        free(op);
        cl->result = IDEM_UNAVAILABLE;
        cl->why = "the idempotency store cannot be reached; retry";
        done(cl, arg);
        return;
    }
    op->claim = cl;
    op->done = done;
    op->arg = arg;
    idem_random_token(cl->token);
    idem_hex(cl->fp, IDEM_FP_LEN, fphex);
    snprintf(op->head, sizeof op->head, "%s%sP000", cl->token, fphex);
    if (tg_timer_start(op->conn->loop, &op->timer, s->timeout_ms, op_timed_out, op) != 0 ||
        send_set(op) != 0) {
        op_answer(op, IDEM_UNAVAILABLE);
        op_maybe_free(op);
    }
}

static void on_write_reply(redisAsyncContext *ac, void *reply, void *priv)
{
    rd_op *op = priv;
    const redisReply *r = reply;
    (void)ac;
    op->inflight--;
    if (!op->answered) {
        if (r == NULL || r->type == REDIS_REPLY_ERROR)
            rd_log(op->conn->store, "idempotency_store_write_failed",
                   r ? r->str : "redis went away; the claim expires by itself");
        else if (r->type == REDIS_REPLY_INTEGER && r->integer == 0 && op->kind == RD_FINISH)
            rd_log(op->conn->store, "idempotency_claim_lost",
                   "the claim had expired when the answer was to be stored");
        op_answer(op, IDEM_NEW);
    }
    op_maybe_free(op);
}

/* EVAL rd_if_mine 1 <key> <token> <record or ""> <ttl ms>. */
static void rd_write(rd_store *s, const idem_claim *cl, rd_kind kind, int status, const char *body,
                     size_t len)
{
    rd_op *op = op_new(s, cl, kind);
    char *rec = NULL, ttl[24], fphex[2 * IDEM_FP_LEN + 1];
    size_t rec_len = 0;
    if (op == NULL || op->conn->ac == NULL) {
        rd_log(s, "idempotency_store_write_failed", "redis is down; the claim expires by itself");
        free(op);
        return;
    }
    if (kind == RD_FINISH) {
        rec = malloc(RD_HEAD + len + 1);
        if (rec == NULL)
            goto fail;
        idem_hex(cl->fp, IDEM_FP_LEN, fphex);
        snprintf(rec, RD_HEAD + 1, "%s%sD%03d", cl->token, fphex,
                 status >= 0 && status <= 999 ? status : 0);
        memcpy(rec + RD_HEAD, body, len);
        rec_len = RD_HEAD + len;
    }
    snprintf(ttl, sizeof ttl, "%ld", kind == RD_FINISH ? s->ttl_ms : 0L);
    const char *argv[] = {"EVAL", rd_if_mine, "1", op->rkey, cl->token, rec ? rec : "", ttl};
    size_t lens[] = {
        4, sizeof(rd_if_mine) - 1, 1, strlen(op->rkey), strlen(cl->token), rec_len, strlen(ttl)};
    if (tg_timer_start(op->conn->loop, &op->timer, s->timeout_ms, op_timed_out, op) != 0 ||
        redisAsyncCommandArgv(op->conn->ac, on_write_reply, op, 7, argv, lens) != REDIS_OK)
        goto fail;
    op->inflight++;
    free(rec); /* hiredis formatted its own copy */
    return;
fail:
    free(rec);
    rd_log(s, "idempotency_store_write_failed",
           "cannot send to redis; the claim expires by itself");
    op->answered = 1;
    op_maybe_free(op);
}

static void rd_finish(idem_store *st, const idem_claim *cl, int status, const char *body,
                      size_t len)
{
    rd_write((rd_store *)st, cl, RD_FINISH, status, body, len);
}

static void rd_release(idem_store *st, const idem_claim *cl)
{
    rd_write((rd_store *)st, cl, RD_RELEASE, 0, NULL, 0);
}

/* After the loops stopped: pending commands are called back with no reply (claims answered
 * IDEM_UNAVAILABLE) on this thread. */
static void rd_free(idem_store *st)
{
    rd_store *s = (rd_store *)st;
    for (size_t i = 0; i < s->nconns; i++) {
        rd_conn *c = &s->conns[i];
        c->closing = 1;
        tg_timer_stop(c->loop, &c->retry);
        if (c->ac != NULL) {
            redisAsyncContext *ac = c->ac;
            c->ac = NULL;
            redisAsyncFree(ac);
        }
    }
    free(s->conns);
    free(s);
}

static void rd_status(idem_store *base, idem_status *out)
{
    rd_store *s = (rd_store *)base;
    long up = atomic_load(&s->up);
    out->state = up <= 0 ? "down" : (size_t)up < s->nconns ? "degraded" : "up";
    out->entries = -1;
    out->bytes = -1;
}

static const idem_ops rd_ops = {rd_claim, rd_finish, rd_release, rd_free, rd_status, "redis"};

idem_store *idem_redis_new(const char *host, int port, int db, long timeout_ms, long claim_ms,
                           long ttl_ms, tg_loop *const *loops, size_t nloops, idem_log_fn log,
                           dns_host *name, char *err, size_t errlen)
{
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM};
    struct addrinfo *found = NULL;
    rd_store *s = calloc(1, sizeof(*s));
    if (s == NULL || nloops == 0) {
        snprintf(err, errlen, "idempotency: out of memory");
        free(s);
        return NULL;
    }
    s->name = name;
    int rc = name != NULL ? 0 : getaddrinfo(host, NULL, &hints, &found);
    if (name == NULL && (rc != 0 || found == NULL)) {
        snprintf(err, errlen, "idempotency.redis_url: cannot resolve \"%s\": %s", host,
                 gai_strerror(rc));
        free(s);
        return NULL;
    }
    if (found != NULL) {
        const void *addr = found->ai_family == AF_INET6
                               ? (const void *)&((struct sockaddr_in6 *)found->ai_addr)->sin6_addr
                               : (const void *)&((struct sockaddr_in *)found->ai_addr)->sin_addr;
        inet_ntop(found->ai_family, addr, s->ip, sizeof s->ip);
        freeaddrinfo(found);
    }
    s->base.ops = &rd_ops;
    s->port = port;
    s->db = db;
    s->timeout_ms = timeout_ms;
    s->claim_ms = claim_ms;
    s->ttl_ms = ttl_ms;
    s->log = log;
    s->conns = calloc(nloops, sizeof(*s->conns));
    if (s->conns == NULL) {
        snprintf(err, errlen, "idempotency: out of memory");
        free(s);
        return NULL;
    }
    s->nconns = nloops;
    for (size_t i = 0; i < nloops; i++) {
        rd_conn *c = &s->conns[i];
        c->store = s;
        c->loop = loops[i];
        c->watch.fd = -1;
        c->backoff_ms = RD_BACKOFF_MIN;
        c->next = (unsigned)i; /* connections spread over the name's addresses */
        tg_timer_init(&c->retry);
        rd_connect(c); /* the loop has not started: its thread is not running yet */
    }
    return &s->base;
}
