/* undo — one undo step and the observer of every one. See undo.h. */
#include "undo.h"

#include "comp.h"
#include "eg.h"
#include "jlog.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* One undo step: its body, its headers, a task on the job's loop. */
int undo_start(co_service *s, const undo_job *j)
{
    const cfg_validation *v = &s->cfg->validations[j->validation];
    char key[600], h_key[640], h_id[CO_ID_MAX + 32], h_trace[600];
    size_t len = 0;
    json_t *id = json_string(j->order_id);
    char *id_json = id ? json_dumps(id, JSON_ENCODE_ANY) : NULL;
    json_decref(id);
    char *body = id_json ? comp_body(id_json, strlen(id_json), v->name, j->key_json, j->key_len,
                                     j->value_json, j->value_len, j->result, j->result_len, &len)
                         : NULL;
    free(id_json);
    const char *common[] = {"Content-Type: application/json", h_id, h_key, NULL, NULL};
    const char *lines[CO_COMMON_HEADERS + CFG_MAX_HEADERS + 1];
    const tg_tls tls = {v->tls.ca_file, v->tls.cert_file, v->tls.key_file};
    snprintf(h_id, sizeof h_id, "X-Request-Id: %s", j->request_id);
    comp_idempotency_key(j->idem_key, j->request_id, v->name, key, sizeof key);
    snprintf(h_key, sizeof h_key, "Idempotency-Key: %s", key);
    if (j->traceparent != NULL) { /* the undo belongs to the checkout's trace */
        snprintf(h_trace, sizeof h_trace, "traceparent: %.512s", j->traceparent);
        common[3] = h_trace;
    }
    comp_spec spec = {.loop = s->loops[j->worker % s->nloops],
                      .validation = j->validation,
                      .name = v->name,
                      .c = &v->compensate,
                      .order_id = j->order_id,
                      .request_id = j->request_id,
                      .has_result = j->result != NULL,
                      .body = body,
                      .body_len = len,
                      .headers = co_call_headers(v, common, lines), /* the validation's too */
                      .tls = v->tls.ca_file != NULL || v->tls.cert_file != NULL ? &tls : NULL,
                      .observer = &s->comp_events,
                      .journal_id = j->journal_id};
    if (body != NULL && comp_run_start(&spec) == 0)
        return 0;
    jlog_event(JLOG_ERROR, "compensation_failed",
               json_pack("{s:s, s:s, s:s, s:i, s:s}", "request_id", j->request_id, "order_id",
                         j->order_id, "validation", v->name, "attempts", 0, "last_outcome",
                         "not started"));
    return -1;
}

static void comp_started(void *arg, const comp_task *t)
{
    co_service *s = arg;
    mx_comp_started(s->metrics);
    jlog_event(JLOG_INFO, "compensation_started",
               json_pack("{s:s, s:s, s:s, s:b}", "request_id", comp_task_request_id(t), "order_id",
                         comp_task_order_id(t), "validation", comp_task_name(t), "cancelled",
                         !comp_task_has_result(t)));
}

static void comp_request(void *arg, const comp_task *t, tg_kind kind)
{
    co_service *s = arg;
    mx_comp_request(s->metrics, comp_task_validation(t), kind);
}

/* The fields of the reference peer's lines; never a header value or a body. */
static void comp_ended(void *arg, const comp_task *t, int done)
{
    co_service *s = arg;
    mx_comp_ended(s->metrics, comp_task_validation(t), done);
    /* v1.3: the step's end is journaled; one cut short by the drain stays owed to the next start */
    if (s->journal != NULL && comp_task_journal_id(t) != 0 && !comp_task_stopped(t))
        jr_undo_end(s->journal, comp_task_journal_id(t), comp_task_name(t), done);
    json_t *status =
        comp_task_last_status(t) > 0 ? json_integer(comp_task_last_status(t)) : json_null();
    json_t *f = json_pack("{s:s, s:s, s:s, s:I, s:o, s:o}", "request_id", comp_task_request_id(t),
                          "order_id", comp_task_order_id(t), "validation", comp_task_name(t),
                          "attempts", (json_int_t)comp_task_attempts(t), "http_status", status,
                          "elapsed_ms", eg_ms(comp_task_elapsed_ms(t)));
    if (f != NULL && !done)
        json_object_set_new(f, "last_outcome", json_string(comp_task_last(t)));
    jlog_event(done ? JLOG_INFO : JLOG_ERROR, done ? "compensation_done" : "compensation_failed",
               f);
}

comp_observer undo_observer(co_service *s)
{
    return (comp_observer){
        .started = comp_started, .request = comp_request, .ended = comp_ended, .arg = s};
}
