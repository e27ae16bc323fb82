/* trace — the trace member of an answer. See trace.h. */
#include "trace.h"

#include <jansson.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

static json_t *ms3(double ms)
{
    return json_real(round(ms * 1000.0) / 1000.0); /* libcurl's times are in microseconds */
}

static const char *attempt_outcome(const tg_attempt *t)
{
    if (t->state == TG_CANCELLED)
        return "cancelled";
    return t->state == TG_OK ? "ok" : tg_kind_name(t->kind);
}

/* {"validations": {"<name>": {"attempts": [{...}, ...]}, ...}}: no header, URL or body in it. */
static json_t *trace_member(const co_service *s, const tg_group *g)
{
    json_t *vals = json_object();
    for (size_t i = 0; vals != NULL && i < tg_group_size(g); i++) {
        const tg_attempt *at = NULL;
        size_t n = tg_call_attempts(g, i, &at);
        json_t *list = json_array();
        for (size_t k = 0; list != NULL && k < n; k++) {
            const tg_attempt *t = &at[k];
            json_t *status = t->http_status > 0 ? json_integer(t->http_status) : json_null();
            json_array_append_new(
                list, json_pack("{s:o, s:o, s:o, s:o, s:o, s:o, s:b, s:o, s:s}", "start_ms",
                                ms3(t->start_ms), "dns_ms", ms3(t->dns_ms), "connect_ms",
                                ms3(t->connect_ms), "tls_ms", ms3(t->tls_ms), "first_byte_ms",
                                ms3(t->first_byte_ms), "total_ms", ms3(t->total_ms), "reused",
                                t->reused, "http_status", status, "outcome", attempt_outcome(t)));
        }
        json_object_set_new(vals, s->names[i], json_pack("{s:o}", "attempts", list));
    }
    return json_pack("{s:o}", "validations", vals);
}

/* Appends ,"trace":{...} inside the answer's outer object. Left as it is when out of memory. */
void trace_add(const co_service *s, const tg_group *g, co_answer *a)
{
    json_t *t = trace_member(s, g);
    char *text = t ? json_dumps(t, JSON_COMPACT | JSON_REAL_PRECISION(15)) : NULL;
    json_decref(t);
    if (text == NULL || a->body == NULL || a->body_len < 2 || a->body[a->body_len - 1] != '}') {
        free(text);
        return;
    }
    static const char key[] = ",\"trace\":";
    size_t tlen = strlen(text), len = a->body_len - 1 + sizeof(key) - 1 + tlen + 1;
    char *body = realloc(a->body, len + 1);
    if (body != NULL) {
        char *p = body + a->body_len - 1; /* over the closing brace */
        memcpy(p, key, sizeof(key) - 1);
        memcpy(p + sizeof(key) - 1, text, tlen);
        body[len - 1] = '}';
        body[len] = '\0';
        a->body = body;
        a->body_len = len;
    }
    free(text);
}
