/* fu_heap — a binary min-heap of intrusive nodes ordered by a 64-bit key (a due time in ns).
 *
 * Nodes live inside the caller's structs; the heap only stores pointers to them and writes each
 * node's position into node->idx, so a node can be removed from the middle in O(log n) (needed when
 * a client closes before its answer is due). A node not in any heap has idx == FU_HEAP_NONE. Not
 * thread-safe: the owner (fu_timer) serialises access with its mutex. */
#ifndef FU_HEAP_H
#define FU_HEAP_H

#include <stddef.h>
#include <stdint.h>

#include "fu_status.h"

#define FU_HEAP_NONE ((size_t)-1)

typedef struct fu_heap_node {
    uint64_t key; /* smaller keys come out first; ties in no particular order */
    size_t idx;   /* position in the heap, FU_HEAP_NONE when not in one; maintained by fu_heap */
} fu_heap_node;

typedef struct fu_heap {
    fu_heap_node **v; /* v[0] is the minimum; v[i] <= v[2i+1], v[2i+2] */
    size_t len;
    size_t cap;
} fu_heap;

void fu_heap_init(fu_heap *h);

/* Releases the pointer array; the nodes belong to the caller and are left untouched. */
void fu_heap_free(fu_heap *h);

/* Makes room for `extra` more nodes, so the next pushes cannot fail. Amortised O(1) (doubling). */
fu_status fu_heap_reserve(fu_heap *h, size_t extra);

/* Inserts n (which must not be in a heap). O(log n); FU_ENOMEM only if growing fails. */
fu_status fu_heap_push(fu_heap *h, fu_heap_node *n);

/* The node with the smallest key, or NULL when empty. O(1). */
fu_heap_node *fu_heap_peek(const fu_heap *h);

/* Removes and returns the minimum, or NULL when empty. O(log n). */
fu_heap_node *fu_heap_pop(fu_heap *h);

/* Removes n, which must be in h. O(log n). */
void fu_heap_remove(fu_heap *h, fu_heap_node *n);

#endif
