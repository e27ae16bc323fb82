/* fu_heap — binary min-heap of intrusive nodes keyed by due time (see fu_heap.h).
 * Invariant after every public call: for all i > 0, v[(i-1)/2]->key <= v[i]->key, and
 * v[i]->idx == i for every stored node. */
#include "fu_heap.h"

#include <stdlib.h>

#define FU_HEAP_MIN_CAP 64

void fu_heap_init(fu_heap *h)
{
    h->v = NULL;
    h->len = 0;
    h->cap = 0;
}

void fu_heap_free(fu_heap *h)
{
    free(h->v);
    fu_heap_init(h);
}

fu_status fu_heap_reserve(fu_heap *h, size_t extra)
{
    fu_status st = FU_OK;
    size_t want;
    size_t cap;
    fu_heap_node **nv;

    if (extra > SIZE_MAX / sizeof(*h->v) - h->len) {
        st = FU_ENOMEM;
        goto fail;
    }
    want = h->len + extra;
    if (want <= h->cap)
        return FU_OK;
    cap = h->cap ? h->cap : FU_HEAP_MIN_CAP;
    while (cap < want)
        cap = cap > SIZE_MAX / 2 / sizeof(*h->v) ? want : cap * 2;
    nv = realloc(h->v, cap * sizeof(*nv));
    if (nv == NULL) {
        st = FU_ENOMEM;
        goto fail;
    }
    h->v = nv;
    h->cap = cap;
    return FU_OK;
fail:
    return st;
}

static void fu_heap_place(fu_heap *h, size_t i, fu_heap_node *n)
{
    h->v[i] = n;
    n->idx = i;
}

/* Moves the node at i towards the root while it is smaller than its parent. O(log n). */
static void fu_heap_up(fu_heap *h, size_t i)
{
    fu_heap_node *n = h->v[i];

    while (i > 0) {
        size_t parent = (i - 1) / 2;
        if (h->v[parent]->key <= n->key)
            break;
        fu_heap_place(h, i, h->v[parent]);
        i = parent;
    }
    fu_heap_place(h, i, n);
}

/* Moves the node at i towards the leaves while a child is smaller. O(log n). */
static void fu_heap_down(fu_heap *h, size_t i)
{
    fu_heap_node *n = h->v[i];

    for (;;) {
        size_t child = 2 * i + 1;
        if (child >= h->len)
            break;
        if (child + 1 < h->len && h->v[child + 1]->key < h->v[child]->key)
            child++;
        if (n->key <= h->v[child]->key)
            break;
        fu_heap_place(h, i, h->v[child]);
        i = child;
    }
    fu_heap_place(h, i, n);
}

fu_status fu_heap_push(fu_heap *h, fu_heap_node *n)
{
    fu_status st = fu_heap_reserve(h, 1);

    if (st != FU_OK)
        goto fail;
    fu_heap_place(h, h->len, n);
    h->len++;
    fu_heap_up(h, h->len - 1);
    return FU_OK;
fail:
    return st;
}

fu_heap_node *fu_heap_peek(const fu_heap *h)
{
    return h->len ? h->v[0] : NULL;
}

void fu_heap_remove(fu_heap *h, fu_heap_node *n)
{
    size_t i = n->idx;
    fu_heap_node *last;

    h->len--;
    last = h->v[h->len];
    n->idx = FU_HEAP_NONE;
    if (i == h->len)
        return; /* n was the last element: nothing to refill */
    fu_heap_place(h, i, last);
    /* The moved element may belong higher or lower than the hole it fills. */
    if (i > 0 && h->v[(i - 1) / 2]->key > last->key)
        fu_heap_up(h, i);
    else
        fu_heap_down(h, i);
}

fu_heap_node *fu_heap_pop(fu_heap *h)
{
    fu_heap_node *top = fu_heap_peek(h);

    if (top != NULL)
        fu_heap_remove(h, top);
    return top;
}
