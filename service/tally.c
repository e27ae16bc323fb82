/* tally — what each answer leaves behind: metrics, the live view's windows, the JSON log line.
 * See tally.h. */
#include "tally.h"

#include "jlog.h"

#include <jansson.h>
#include <string.h>

/* Counts the checkout and each of its calls: in the metrics (relaxed atomic adds) and in this
 * worker's ring of the live view's windows (plain stores, see win.h). O(validations). */
void tally_checkout(co_service *s, size_t worker, const tg_group *g, const co_answer *a,
                    double elapsed_ms)
{
    int64_t sec = s->windows != NULL ? win_now() : 0;
    for (size_t i = 0; i < tg_group_size(g); i++) {
        const tg_result *r = tg_group_result(g, i);
        if (r->state == TG_CANCELLED) {
            mx_cancelled(s->metrics, i);
            win_cancelled(s->windows, worker, sec, i);
        } else {
            mx_upstream(s->metrics, i, r->kind, r->elapsed_ms / 1000.0);
            win_call(s->windows, worker, sec, i, (unsigned)r->kind, r->elapsed_ms);
        }
        if (r->nearlier > 0 || r->retries > 0 || r->hedges_won > 0 || r->hedges_lost > 0)
            mx_attempts(s->metrics, i, r);
    }
    mx_outcome o = mx_outcome_from_code(a->code);
    mx_checkout(s->metrics, o, elapsed_ms / 1000.0);
    if (o == MX_ACCEPTED || o == MX_REJECTED || o == MX_FAILED)
        win_checkout(s->windows, worker, sec,
                     o == MX_ACCEPTED   ? WIN_ACCEPTED
                     : o == MX_REJECTED ? WIN_REJECTED
                                        : WIN_FAILED);
}

/* Copies what the log line needs out of the group: the group is freed before the line is written.
 */
void tally_outcomes(const tg_group *g, co_answer *a)
{
    a->noutcomes = tg_group_size(g);
    for (size_t i = 0; i < a->noutcomes; i++) {
        const tg_result *r = tg_group_result(g, i);
        a->outcomes[i].outcome = r->state == TG_CANCELLED ? "cancelled" : tg_kind_name(r->kind);
        a->outcomes[i].elapsed_ms = r->elapsed_ms;
        a->outcomes[i].http_status = r->http_status;
        a->outcomes[i].attempts = r->attempts;
    }
}

void tally_log(const co_service *s, const co_answer *a)
{
    jlog_validation v[CFG_MAX_VALIDATIONS];
    if (!jlog_enabled(JLOG_INFO))
        return;
    for (size_t i = 0; i < a->noutcomes; i++) {
        v[i].name = s->names[i];
        v[i].outcome = a->outcomes[i].outcome;
        v[i].elapsed_ms = a->outcomes[i].elapsed_ms;
        v[i].http_status = a->outcomes[i].http_status;
        v[i].attempts = a->outcomes[i].attempts;
    }
    jlog_checkout(a->request_id, a->order_id[0] ? a->order_id : NULL, a->code, a->http_status,
                  a->elapsed_ms, v, a->noutcomes);
}

void tally_idem_log(const char *event, const char *detail)
{
    int up = strcmp(event, "idempotency_store_up") == 0;
    jlog_event(up ? JLOG_INFO : JLOG_WARN, event,
               json_pack("{s:s}", "detail", detail ? detail : ""));
}
