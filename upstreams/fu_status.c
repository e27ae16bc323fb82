/* fu_status — descriptions of the fake-upstreams status codes (see fu_status.h). */
#include "fu_status.h"

const char *fu_status_str(fu_status st)
{
    switch (st) {
    case FU_OK:
        return "ok";
    case FU_ENOMEM:
        return "out of memory";
    case FU_ESYS:
        return "system call failed";
    case FU_EINVAL:
        return "invalid argument";
    case FU_ESTOPPED:
        return "stopped";
    case FU_ELISTEN:
        return "cannot listen";
    }
    return "unknown status";
}
