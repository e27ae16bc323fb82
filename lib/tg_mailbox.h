/* tg_mailbox — hands work from any thread to one tg_loop's thread (the journal's "durable"
 * callbacks, a recovery's store writes): the caller's node is queued and fn(node, 0) runs on the
 * loop thread at its next turn.
 *
 * Intrusive: the node lives in the caller's record (no allocation per post). Posts from one thread
 * run in the order they were posted. A node posted but not yet run when the loop stops runs as
 * fn(node, 1) on the thread that calls tg_mailbox_free, so nothing is lost or leaked.
 * Costs: a post is one mutex-held push, plus one eventfd write when the box was empty (a burst of
 * posts wakes the loop once); a delivery is one eventfd read and one list swap per loop turn.
 * Mechanism: an eventfd watched by the loop (lib/tg_watch), so tg.c needs nothing new. */
#ifndef CHECKOUTD_TG_MAILBOX_H
#define CHECKOUTD_TG_MAILBOX_H

#include "tg.h"

typedef struct tg_mail tg_mail;
struct tg_mail {
    tg_mail *next;
    void (*fn)(tg_mail *m, int stopped);
};

typedef struct tg_mailbox tg_mailbox;

/* A box for loop; call before the loop starts (or on its thread). NULL on failure. */
tg_mailbox *tg_mailbox_new(tg_loop *loop);
/* Queues m (fn set by the caller); any thread. */
void tg_mailbox_post(tg_mailbox *b, tg_mail *m);
/* After the loop stopped (or before it started): runs what is left as fn(m, 1), then frees the
 * box. Before tg_loop_free. NULL is fine. */
void tg_mailbox_free(tg_mailbox *b);

#endif
