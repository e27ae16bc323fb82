/* tg_names — which addresses a loop's transfers connect to (v1.3 "Names"). See tg_internal.h.
 *
 * The loop keeps one entry per URL it has seen (parsed once, CURLOPT_CURLU) and one tg_name per
 * host name, registered with the process's resolver (lib/dns) on first use. A transfer asks its
 * name for the current addresses: one atomic load when the resolver published nothing new, else a
 * copy of the new list and its CONNECT_TO entries rebuilt, once per list and loop, never per
 * transfer. Nothing here resolves a name or waits: lib/dns does that on its own thread. O(URLs) to
 * find a URL's entry, fine for the at most TG_URL_CACHE URLs of a config. */
#include "tg_internal.h"

#include <curl/curl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

/* This loop's entry for host name (added to the resolver when new). NULL only out of memory. */
static tg_name *loop_name(tg_loop *l, const char *host)
{
    for (size_t i = 0; i < l->nhosts; i++)
        if (l->hosts[i]->host != NULL && strcasecmp(dns_host_name(l->hosts[i]->host), host) == 0)
            return l->hosts[i];
    if (l->nhosts == TG_URL_CACHE)
        return NULL;
    tg_name *n = calloc(1, sizeof *n);
    if (n == NULL)
        return NULL;
    n->host = dns_add(l->names, host); /* NULL: a name the resolver refuses never resolves */
    l->hosts[l->nhosts++] = n;
    return n;
}

/* The cache entry of url, parsed on first use (CURLOPT_CURLU) with its host's tg_name; -1 when
 * the cache is full (then libcurl parses the string itself and reports what is wrong). */
long tgi_url_entry(tg_loop *l, const char *url)
{
    for (size_t i = 0; i < l->nurls; i++)
        if (strcmp(l->urls[i].url, url) == 0)
            return (long)i;
    if (l->nurls == TG_URL_CACHE)
        return -1;
    CURLU *u = curl_url();
    char *copy = strdup(url), *host = NULL;
    if (u == NULL || copy == NULL || curl_url_set(u, CURLUPART_URL, url, 0) != CURLUE_OK) {
        curl_url_cleanup(u);
        free(copy);
        return -1;
    }
    tg_name *name = NULL;
    if (l->names != NULL && curl_url_get(u, CURLUPART_HOST, &host, 0) == CURLUE_OK &&
        !dns_is_literal(host)) {
        name = loop_name(l, host);
        if (name == NULL) { /* out of memory: not cached, tried again next time */
            curl_free(host);
            curl_url_cleanup(u);
            free(copy);
            return -1;
        }
    }
    curl_free(host);
    l->urls[l->nurls].url = copy;
    l->urls[l->nurls].parsed = u;
    l->urls[l->nurls].name = name;
    return (long)l->nurls++;
}

/* Refreshes n's copy of its list when the resolver published a new one (one atomic load when
 * not) and rebuilds the CONNECT_TO entries. A transfer already handed an entry may still read
 * it: the entry then names an address of the new list, never freed memory. 0: no address yet. */
size_t tgi_name_current(tg_name *n)
{
    if (n->host == NULL || !dns_snapshot(n->host, &n->addrs))
        return n->addrs.n;
    memset(n->down_until, 0, sizeof n->down_until);
    for (size_t i = 0; i < n->addrs.n; i++) {
        const char *a = n->addrs.addr[i];
        int v6 = strchr(a, ':') != NULL;
        snprintf(n->entry[i], sizeof n->entry[i], v6 ? "::[%s]:" : "::%s:", a);
        n->connect_to[i].data = n->entry[i];
        n->connect_to[i].next = NULL;
    }
    return n->addrs.n;
}
