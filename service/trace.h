/* trace — the "trace" member of a traced checkout's answer (v1.2 "trace": the config's trace is
 * on and the client sent X-Checkout-Trace: 1): per validation, each attempt's timings as libcurl
 * measured them. No header, URL or body in it. Only a traced checkout runs any of this. */
#ifndef CHECKOUTD_TRACE_H
#define CHECKOUTD_TRACE_H

#include "checkout.h"

/* Appends ,"trace":{"validations": {"<name>": {"attempts": [...]}, ...}} inside the answer's
 * outer object. The answer is left as it is when out of memory. */
void trace_add(const co_service *s, const tg_group *g, co_answer *a);

#endif
