/* admin — the admin listener. See admin.h. */
#include "admin.h"

#include "dns.h"
#include "jr.h"
#include "metrics.h"
#include "status.h"

#include <arpa/inet.h>
#include <jansson.h>
#include <microhttpd.h>
#include <netdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Operators' probes and scrapers, not the public: a few connections, a short idle timeout. */
#define ADM_CONNECTION_LIMIT 64
#define ADM_TIMEOUT_S        10

struct adm {
    struct MHD_Daemon *daemon;
    co_service *checkout;
    const atomic_int *draining;
    int port;
};

/* A request's context: which route, decided on the first call, answered on the last (a probe that
 * keeps its connection: see server.c's ROUTE_HEALTHZ). Static: nothing to free. */
static const adm_page routes[] = {ADM_HEALTHZ, ADM_READYZ, ADM_METRICS, ADM_STATUS,
                                  ADM_STATUS_JSON};

/* no_store: Cache-Control: no-store (the status page and its data) */
static enum MHD_Result queue(struct MHD_Connection *conn, unsigned status, const char *type,
                             void *body, size_t len, enum MHD_ResponseMemoryMode mode, int no_store)
{
    struct MHD_Response *r = MHD_create_response_from_buffer(len, body, mode);
    if (r == NULL) {
        if (mode == MHD_RESPMEM_MUST_FREE)
            free(body);
        return MHD_NO;
    }
    MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, type);
    if (no_store)
        MHD_add_response_header(r, MHD_HTTP_HEADER_CACHE_CONTROL, "no-store");
    if (status == 405)
        MHD_add_response_header(r, MHD_HTTP_HEADER_ALLOW, "GET, HEAD");
    enum MHD_Result ok = MHD_queue_response(conn, status, r);
    MHD_destroy_response(r);
    return ok;
}

static enum MHD_Result queue_json(struct MHD_Connection *conn, unsigned status, const char *json)
{
    return queue(conn, status, "application/json", (void *)json, strlen(json),
                 MHD_RESPMEM_PERSISTENT, 0);
}

/* v1.3 "Names": 503 {"status": "resolving", "hosts": [names never resolved]} until every host
 * name of the config has an address, so that a balancer sends nothing to a replica that cannot
 * reach its upstreams yet. O(hosts), only while some name is unresolved. */
static enum MHD_Result queue_resolving(struct MHD_Connection *conn, dns *names)
{
    json_t *hosts = json_array();
    for (size_t i = 0; i < dns_count(names); i++)
        if (!dns_resolved(dns_at(names, i)))
            json_array_append_new(hosts, json_string(dns_host_name(dns_at(names, i))));
    json_t *doc = json_pack("{s:s, s:o}", "status", "resolving", "hosts", hosts);
    char *text = doc ? json_dumps(doc, JSON_COMPACT) : NULL;
    json_decref(doc);
    if (text == NULL)
        return queue_json(conn, 503, "{\"status\":\"resolving\"}");
    return queue(conn, 503, "application/json", text, strlen(text), MHD_RESPMEM_MUST_FREE, 0);
}

enum MHD_Result adm_answer_page(struct MHD_Connection *conn, adm_page r, co_service *checkout,
                                int draining)
{
    size_t len = 0;
    char *text;
    switch (r) {
    case ADM_HEALTHZ:
        return queue_json(conn, 200, "{\"status\":\"ok\"}");
    case ADM_READYZ:
        if (draining)
            return queue_json(conn, 503, "{\"status\":\"draining\"}");
        if (atomic_load(&checkout->recovering))
            return queue_json(conn, 503, "{\"status\":\"recovering\"}");
        if (checkout->resolver != NULL && !dns_all_resolved(checkout->resolver))
            return queue_resolving(conn, checkout->resolver);
        if (checkout->journal != NULL && !jr_healthy(checkout->journal))
            return queue_json(conn, 503, "{\"status\":\"journal_unavailable\"}");
        return queue_json(conn, 200, "{\"status\":\"ok\"}");
    case ADM_METRICS:
        text = mx_render(checkout->metrics, &len);
        if (text == NULL)
            return MHD_NO;
        return queue(conn, 200, "text/plain; version=0.0.4", text, len, MHD_RESPMEM_MUST_FREE, 0);
    case ADM_STATUS:
        text = (char *)st_page(&len);
        return queue(conn, 200, "text/html; charset=utf-8", text, len, MHD_RESPMEM_PERSISTENT, 1);
    case ADM_STATUS_JSON:
        text = st_json(checkout, draining, win_now(), &len);
        if (text == NULL)
            return MHD_NO;
        return queue(conn, 200, "application/json", text, len, MHD_RESPMEM_MUST_FREE, 1);
    case ADM_NONE:
        break;
    }
    return MHD_NO;
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *conn, const char *url,
                                  const char *method, const char *version, const char *upload_data,
                                  size_t *upload_data_size, void **con_cls)
{
    static const char *const paths[] = {"/healthz", "/readyz", "/metrics", "/status",
                                        "/status.json"};
    adm *a = cls;
    (void)version;
    (void)upload_data;
    if (*con_cls == NULL) {
        for (size_t i = 0; i < sizeof(paths) / sizeof(paths[0]); i++) {
            if (strcmp(url, paths[i]) != 0)
                continue;
            if (strcmp(method, "GET") != 0 && strcmp(method, "HEAD") != 0)
                return queue_json(conn, 405,
                                  "{\"error\":{\"code\":\"method_not_allowed\","
                                  "\"message\":\"use GET\"}}");
            *con_cls = (void *)&routes[i];
            return MHD_YES;
        }
        return queue_json(conn, 404,
                          "{\"error\":{\"code\":\"not_found\",\"message\":\"the admin listener "
                          "serves /healthz, /readyz, /metrics, /status and /status.json\"}}");
    }
    if (*upload_data_size > 0) { /* a body on a GET: read and dropped */
        *upload_data_size = 0;
        return MHD_YES;
    }
    const adm_page *r = *con_cls;
    return adm_answer_page(conn, *r, a->checkout, atomic_load(a->draining));
}

adm *adm_start(const cfg *c, co_service *checkout, const atomic_int *draining, char *err,
               size_t errlen)
{
    struct addrinfo hints = {
        .ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM, .ai_flags = AI_PASSIVE};
    struct addrinfo *found = NULL;
    struct sockaddr_storage ss;
    adm *a = calloc(1, sizeof(*a));
    if (a == NULL) {
        snprintf(err, errlen, "admin_listen: out of memory");
        return NULL;
    }
    a->checkout = checkout;
    a->draining = draining;
    if (getaddrinfo(c->admin_host, NULL, &hints, &found) != 0 || found == NULL) {
        snprintf(err, errlen, "admin_listen: cannot resolve \"%s\"", c->admin_host);
        goto fail;
    }
    memset(&ss, 0, sizeof(ss));
    memcpy(&ss, found->ai_addr, found->ai_addrlen);
    int v6 = found->ai_family == AF_INET6;
    freeaddrinfo(found);
    if (v6)
        ((struct sockaddr_in6 *)&ss)->sin6_port = htons((uint16_t)c->admin_port);
    else
        ((struct sockaddr_in *)&ss)->sin_port = htons((uint16_t)c->admin_port);
    unsigned flags = MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_AUTO | (v6 ? MHD_USE_IPv6 : 0);
    a->daemon = MHD_start_daemon(flags, 0, NULL, NULL, on_request, a, MHD_OPTION_SOCK_ADDR,
                                 (const struct sockaddr *)&ss, MHD_OPTION_CONNECTION_LIMIT,
                                 (unsigned)ADM_CONNECTION_LIMIT, MHD_OPTION_CONNECTION_TIMEOUT,
                                 (unsigned)ADM_TIMEOUT_S, MHD_OPTION_END);
    if (a->daemon == NULL) {
        snprintf(err, errlen,
                 "admin_listen: cannot listen on %s:%d (in use, or not an address here)",
                 c->admin_host, c->admin_port);
        goto fail;
    }
    const union MHD_DaemonInfo *info = MHD_get_daemon_info(a->daemon, MHD_DAEMON_INFO_BIND_PORT);
    a->port = info != NULL ? (int)info->port : c->admin_port;
    return a;
fail:
    adm_stop(a);
    return NULL;
}

int adm_port(const adm *a)
{
    return a->port;
}

void adm_stop(adm *a)
{
    if (a == NULL)
        return;
    if (a->daemon != NULL)
        MHD_stop_daemon(a->daemon);
    free(a);
}
