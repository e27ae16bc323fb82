/* clen — the connection of a malformed Content-Length. See clen.h. */
#include "clen.h"

#include <stddef.h>
#include <string.h>

void clen_line(clen *c, struct MHD_Connection *conn)
{
    c->line_conn = conn;
}

void clen_forget(clen *c, struct MHD_Connection *conn)
{
    if (c->line_conn == conn)
        c->line_conn = NULL;
}

struct MHD_Connection *clen_refused(clen *c, const char *fmt, int *too_large)
{
    static const char bad[] = "Failed to parse `Content-Length'";
    static const char big[] = "Too large value of 'Content-Length'";
    static const char other[] = "Error processing request"; /* every refusal logs it */
    struct MHD_Connection *conn = c->line_conn;
    if (conn == NULL)
        return NULL;
    int is_bad = strncmp(fmt, bad, sizeof(bad) - 1) == 0;
    int is_big = strncmp(fmt, big, sizeof(big) - 1) == 0;
    if (!is_bad && !is_big) {
        if (strncmp(fmt, other, sizeof(other) - 1) == 0)
            c->line_conn = NULL;
        return NULL;
    }
    c->line_conn = NULL;
    if (MHD_get_connection_info(conn, MHD_CONNECTION_INFO_REQUEST_HEADER_SIZE) == NULL)
        return NULL; /* its header is not complete: another connection is refused */
    *too_large = is_big;
    return conn;
}
