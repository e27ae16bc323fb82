/* comp — which validations to undo and what to send. See comp.h. */
#include "comp.h"
#include "idem.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int comp_needed(const tg_result *r, int sent)
{
    switch (r->state) {
    case TG_OK:
        return 1;
    case TG_CANCELLED:
        return sent;
    case TG_FAILED:
        break;
    default:
        return 0;
    }
    switch (r->kind) {
    case TG_INVALID_RESPONSE:
        return 1; /* an answer came, so the request left; whether it took effect is unknown */
    case TG_TIMEOUT:
    case TG_TRANSPORT:
        /* after sending: unknown. Before (refused, unresolvable, a TLS handshake that failed or
         * timed out, a connect that timed out): nothing reached the upstream, nothing to undo */
        return sent;
    default:
        return 0; /* rejected, upstream_error: the upstream said no, or that it failed */
    }
}

int comp_done_status(long http_status)
{
    return (http_status >= 200 && http_status <= 299) || http_status == 404 || http_status == 409 ||
           http_status == 410;
}

/* Appends n bytes of s at *p (room was counted by the caller). */
static char *put(char *p, const char *s, size_t n)
{
    memcpy(p, s, n);
    return p + n;
}

char *comp_body(const char *id_json, size_t id_len, const char *name, const char *key_json,
                size_t key_len, const char *value_json, size_t value_len, const char *result_json,
                size_t result_len, size_t *len)
{
    static const char head[] = "{\"order_id\":", mid[] = ",\"validation\":\"", tail[] = "\",",
                      res[] = ",\"result\":", null[] = "null";
    size_t name_len = strlen(name);
    if (result_json == NULL) {
        result_json = null;
        result_len = sizeof null - 1;
    }
    /* name is [a-z0-9_]{1,32} (cfg): it needs no escaping. */
    size_t total = sizeof head - 1 + id_len + sizeof mid - 1 + name_len + sizeof tail - 1 +
                   key_len + 1 + value_len + sizeof res - 1 + result_len + 1;
    char *body = malloc(total + 1);
    if (body == NULL)
        return NULL;
    char *p = put(body, head, sizeof head - 1);
    p = put(p, id_json, id_len);
    p = put(p, mid, sizeof mid - 1);
    p = put(p, name, name_len);
    p = put(p, tail, sizeof tail - 1);
    p = put(p, key_json, key_len);
    *p++ = ':';
    p = put(p, value_json, value_len);
    p = put(p, res, sizeof res - 1);
    p = put(p, result_json, result_len);
    *p++ = '}';
    *p = '\0';
    *len = total;
    return body;
}

int comp_idempotency_key(const char *client_key, const char *request_id, const char *name,
                         char *out, size_t cap)
{
    char parsed[IDEM_KEY_MAX + 1];
    const char *why = NULL;
    /* the store's key; a header that is no key (only possible with the store off, where it is
     * not inspected) counts as none: the request id, stable across the undo's attempts */
    const char *key =
        client_key != NULL && idem_parse_key(client_key, parsed, &why) == 0 ? parsed : request_id;
    int n = snprintf(out, cap, "%s:compensate:%s", key, name);
    if (n < 0 || (size_t)n >= cap) {
        if (cap > 0)
            out[0] = '\0';
        return -1;
    }
    return 0;
}
