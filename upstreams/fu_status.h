/* fu_status — the result type shared by the fake-upstreams modules (fu_heap, fu_timer, fu_rules,
 * fu_role). Every fallible function returns one of these; FU_OK is 0 so `if (st != FU_OK)` reads
 * naturally. fu_status_str gives a short constant description for log lines. */
#ifndef FU_STATUS_H
#define FU_STATUS_H

typedef enum fu_status {
    FU_OK = 0,
    FU_ENOMEM,   /* an allocation failed */
    FU_ESYS,     /* a system call failed; errno tells which */
    FU_EINVAL,   /* a bad argument (command line, option value) */
    FU_ESTOPPED, /* the timer is shutting down and takes no new holds */
    FU_ELISTEN,  /* a daemon could not listen on its address */
} fu_status;

/* A static, never-NULL description of st. O(1). */
const char *fu_status_str(fu_status st);

#endif
