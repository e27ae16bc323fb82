/* cfg_dns — the top-level "dns" block (v1.3 "Names"; see cfg.h for the keys, ranges and
 * variables). Cost: a few lookups, once at start. */
#include "cfg_internal.h"

#include <arpa/inet.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *const dns_keys[] = {"servers", "refresh_ms", "timeout_ms"};
#define DNS_NKEYS       (sizeof(dns_keys) / sizeof(dns_keys[0]))
#define DNS_MAX_SERVERS 8
#define DNS_SERVER_MAX  64 /* "[IPv6]:PORT" */

/* One server, "IP", "IP:PORT", "[IPv6]" or "[IPv6]:PORT" (a bare IPv6 without port too), into
 * out as c-ares takes it; 0 or -1. */
static int server_norm(const char *s, size_t len, char out[DNS_SERVER_MAX])
{
    char host[DNS_SERVER_MAX];
    unsigned char bin[16];
    long port = 53;
    const char *colon = memchr(s, ':', len);
    if (len == 0 || len >= DNS_SERVER_MAX)
        return -1;
    if (s[0] == '[') {
        const char *end = memchr(s, ']', len);
        if (end == NULL)
            return -1;
        size_t hl = (size_t)(end - s - 1);
        memcpy(host, s + 1, hl);
        host[hl] = '\0';
        const char *rest = end + 1;
        size_t rl = len - (size_t)(rest - s);
        if (rl > 0) {
            char num[8];
            if (rest[0] != ':' || rl < 2 || rl - 1 >= sizeof num)
                return -1;
            memcpy(num, rest + 1, rl - 1);
            num[rl - 1] = '\0';
            if (cfg_parse_long(num, &port) != 0)
                return -1;
        }
        if (inet_pton(AF_INET6, host, bin) != 1)
            return -1;
    } else if (colon != NULL && memchr(colon + 1, ':', len - (size_t)(colon + 1 - s)) != NULL) {
        memcpy(host, s, len); /* a bare IPv6 address: no port */
        host[len] = '\0';
        if (inet_pton(AF_INET6, host, bin) != 1)
            return -1;
    } else {
        size_t hl = colon ? (size_t)(colon - s) : len;
        memcpy(host, s, hl);
        host[hl] = '\0';
        if (colon != NULL) {
            char num[8];
            size_t nl = len - hl - 1;
            if (nl == 0 || nl >= sizeof num)
                return -1;
            memcpy(num, colon + 1, nl);
            num[nl] = '\0';
            if (cfg_parse_long(num, &port) != 0)
                return -1;
        }
        if (inet_pton(AF_INET, host, bin) != 1)
            return -1;
    }
    if (port < 1 || port > 65535)
        return -1;
    int v6 = strchr(host, ':') != NULL;
    snprintf(out, DNS_SERVER_MAX, v6 ? "[%s]:%ld" : "%s:%ld", host, port);
    return 0;
}

/* Appends server s (len bytes) to the comma-separated csv; 0 or -1 after a message. */
static int add_server(const cfg_loader *ld, const cfg_where *w, const char *s, size_t len,
                      char *csv, size_t cap, size_t *n)
{
    char norm[DNS_SERVER_MAX], shown[CFG_SHOW_MAX], raw[DNS_SERVER_MAX + 1];
    if (server_norm(s, len, norm) != 0) {
        size_t l = len < DNS_SERVER_MAX ? len : DNS_SERVER_MAX;
        memcpy(raw, s, l);
        raw[l] = '\0';
        cfg_show_string(raw, shown);
        return cfg_errf(ld, w, "expected an IP address or IP:PORT, got %s", shown);
    }
    if (*n == DNS_MAX_SERVERS)
        return cfg_errf(ld, w, "at most %d servers", DNS_MAX_SERVERS);
    size_t used = strlen(csv);
    snprintf(csv + used, cap - used, "%s%s", *n > 0 ? "," : "", norm);
    (*n)++;
    return 0;
}

static int load_servers(const cfg_loader *ld, const json_t *value, cfg_dns *out)
{
    char csv[DNS_MAX_SERVERS * (DNS_SERVER_MAX + 1)] = "";
    size_t n = 0;
    cfg_where w;
    const char *env = cfg_env(ld, "CHECKOUTD_DNS_SERVERS");
    if (env != NULL) {
        cfg_block_where(ld, "dns", "servers", "CHECKOUTD_DNS_SERVERS", &w);
        const char *p = env;
        for (;;) {
            const char *comma = strchr(p, ',');
            size_t len = comma ? (size_t)(comma - p) : strlen(p);
            if (add_server(ld, &w, p, len, csv, sizeof csv, &n) != 0)
                return -1;
            if (comma == NULL)
                break;
            p = comma + 1;
        }
    } else if (value != NULL) {
        cfg_block_where(ld, "dns", "servers", NULL, &w);
        char shown[CFG_SHOW_MAX];
        if (!json_is_array(value) || json_array_size(value) == 0) {
            cfg_show_json(value, shown);
            return cfg_errf(ld, &w, "expected a non-empty array of \"IP\" or \"IP:PORT\", got %s",
                            shown);
        }
        size_t i;
        const json_t *e;
        json_array_foreach(value, i, e)
        {
            cfg_where we;
            char key[CFG_KEY_MAX];
            snprintf(key, sizeof key, "dns.servers[%zu]", i);
            cfg_top_where(ld, key, &we);
            if (!json_is_string(e)) {
                cfg_show_json(e, shown);
                return cfg_errf(ld, &we, "expected an IP address or IP:PORT, got %s", shown);
            }
            if (add_server(ld, &we, json_string_value(e), strlen(json_string_value(e)), csv,
                           sizeof csv, &n) != 0)
                return -1;
        }
    } else {
        return 0;
    }
    out->servers = cfg_dup(ld, &w, csv);
    return out->servers != NULL ? 0 : -1;
}

static int load_int(const cfg_loader *ld, const json_t *obj, const char *key, const char *envname,
                    long min, long max, long def, long *out)
{
    cfg_where w;
    const char *env = envname ? cfg_env(ld, envname) : NULL;
    *out = def;
    if (env != NULL) {
        cfg_block_where(ld, "dns", key, envname, &w);
        long v;
        if (cfg_parse_long(env, &v) != 0 || v < min || v > max) {
            char shown[CFG_SHOW_MAX];
            cfg_show_string(env, shown);
            return cfg_errf(ld, &w, "expected an integer in %ld..%ld, got %s", min, max, shown);
        }
        *out = v;
        return 0;
    }
    const json_t *v = obj ? json_object_get(obj, key) : NULL;
    if (v == NULL)
        return 0;
    cfg_block_where(ld, "dns", key, NULL, &w);
    return cfg_get_int(ld, &w, v, min, max, out);
}

int cfg_dns_load(const cfg_loader *ld, const json_t *value, cfg *out)
{
    cfg_dns *d = &out->dns;
    cfg_where w;
    memset(d, 0, sizeof *d);
    if (value != NULL) {
        cfg_top_where(ld, "dns", &w);
        if (!json_is_object(value)) {
            char shown[CFG_SHOW_MAX];
            cfg_show_json(value, shown);
            return cfg_errf(ld, &w, "expected an object, got %s", shown);
        }
        if (cfg_check_keys(ld, &w, value, dns_keys, DNS_NKEYS, "servers, refresh_ms, timeout_ms") !=
            0)
            return -1;
    }
    if (load_int(ld, value, "refresh_ms", "CHECKOUTD_DNS_REFRESH_MS", 100, 3600000, 5000,
                 &d->refresh_ms) != 0 ||
        load_int(ld, value, "timeout_ms", NULL, 10, 60000, 2000, &d->timeout_ms) != 0)
        return -1;
    return load_servers(ld, value ? json_object_get(value, "servers") : NULL, d);
}

void cfg_dns_free(cfg *out)
{
    free(out->dns.servers);
    out->dns.servers = NULL;
}
