/* clen — which connection libmicrohttpd 0.9.75 is refusing for a malformed Content-Length, so that
 * its broken answer can be replaced by ours (server.c, answer_malformed_length).
 *
 * A Content-Length that is not all digits ("+5", "0x5", "5, 5") or does not fit 64 bits is refused
 * by libmicrohttpd itself while it parses the header, before any handler runs. Its error path there
 * is broken: transmit_error_response builds the header block of its HTML 400 (413) and moves the
 * connection on, then parse_connection_headers' caller sets the state back to HEADERS_PROCESSED
 * (connection.c, MHD_connection_handle_idle, case MHD_CONNECTION_HEADERS_RECEIVED), so START_REPLY
 * builds the header block a second time: two status lines and header blocks, then one body. No
 * option or handler is called on that path, but its log message is, synchronously, on the thread
 * that drives the daemon, just before the error response is built.
 *
 * So one clen per worker (that thread only) remembers the connection whose request line was parsed
 * last (the URI log callback) until its handler runs or it closes; on the log message, that
 * connection is the refused one when libmicrohttpd says its header is complete
 * (MHD_CONNECTION_INFO_REQUEST_HEADER_SIZE): a header is completed and handed to the handler in
 * one MHD_connection_handle_idle call, and any other refusal's message forgets it. When it is not
 * the refused connection (that request's line and its header's end came in different reads, with
 * another request line in between), NULL: the connection is still refused and closed, with
 * libmicrohttpd's answer. Cost: one pointer store per request, one compare in the handler. */
#ifndef CHECKOUTD_CLEN_H
#define CHECKOUTD_CLEN_H

#include <microhttpd.h>

typedef struct clen {
    struct MHD_Connection *line_conn;
} clen;

/* The URI log callback: conn's request line was parsed. */
void clen_line(clen *c, struct MHD_Connection *conn);
/* conn's handler ran, or it closed. */
void clen_forget(clen *c, struct MHD_Connection *conn);
/* A libmicrohttpd log message (its format): the connection it is refusing for a malformed
 * Content-Length (*too_large: 1 for "does not fit 64 bits", 0 for "not a number"), or NULL. */
struct MHD_Connection *clen_refused(clen *c, const char *fmt, int *too_large);

#endif
