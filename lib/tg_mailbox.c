/* tg_mailbox — from any thread to a loop's thread. See tg_mailbox.h. */
#include "tg_mailbox.h"

#include "tg_watch.h"

#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <sys/eventfd.h>
#include <unistd.h>

struct tg_mailbox {
    tg_loop *loop;
    tg_watch watch;
    int fd;
    pthread_mutex_t lock;
    tg_mail *head, *tail; /* FIFO, under lock */
};

/* Takes the whole list (under the lock) and runs it in order. */
static void run_all(tg_mailbox *b, int stopped)
{
    pthread_mutex_lock(&b->lock);
    tg_mail *m = b->head;
    b->head = b->tail = NULL;
    pthread_mutex_unlock(&b->lock);
    while (m != NULL) {
        tg_mail *next = m->next; /* fn may free m */
        m->fn(m, stopped);
        m = next;
    }
}

static void on_ready(tg_watch *w, unsigned events, void *arg)
{
    tg_mailbox *b = arg;
    uint64_t n;
    (void)w;
    (void)events;
    /* The counter is reset before the list is taken: a post that lands in between writes again
     * (its list was empty) or is in the list taken now; none is stranded. */
    if (read(b->fd, &n, sizeof n) < 0) {
        /* EAGAIN: nothing to read; run anyway (cheap) */
    }
    run_all(b, 0);
}

tg_mailbox *tg_mailbox_new(tg_loop *loop)
{
    tg_mailbox *b = calloc(1, sizeof *b);
    if (b == NULL)
        return NULL;
    b->loop = loop;
    b->watch.fd = -1;
    b->fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (b->fd < 0)
        goto fail;
    pthread_mutex_init(&b->lock, NULL);
    if (tg_watch_start(loop, &b->watch, b->fd, TG_WATCH_READ, on_ready, b) != 0) {
        pthread_mutex_destroy(&b->lock);
        goto fail;
    }
    return b;
fail:
    if (b->fd >= 0)
        close(b->fd);
    free(b);
    return NULL;
}

void tg_mailbox_post(tg_mailbox *b, tg_mail *m)
{
    m->next = NULL;
    pthread_mutex_lock(&b->lock);
    int was_empty = b->head == NULL;
    if (was_empty)
        b->head = m;
    else
        b->tail->next = m;
    b->tail = m;
    pthread_mutex_unlock(&b->lock);
    if (was_empty) {
        uint64_t one = 1;
        if (write(b->fd, &one, sizeof one) < 0) {
            /* EAGAIN only when the counter is near 2^64: the loop is woken already */
        }
    }
}

void tg_mailbox_free(tg_mailbox *b)
{
    if (b == NULL)
        return;
    tg_watch_stop(b->loop, &b->watch);
    run_all(b, 1);
    close(b->fd);
    pthread_mutex_destroy(&b->lock);
    free(b);
}
