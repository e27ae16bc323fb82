/* jlog — structured JSON log lines: one line per event, one JSON object per line, on one fd.
 *
 * Contract:
 *   - Each line is {"ts":"2026-11-26T20:15:29.123Z","level":"info","event":"...",...} + '\n',
 *     built whole in memory by jansson (so it is valid JSON whatever the strings hold: quotes,
 *     newlines and control characters are escaped, invalid UTF-8 bytes become U+FFFD) and handed
 *     to the fd in one write(2) under a process-wide mutex: lines of different threads never
 *     interleave, whatever their size. Not async-signal-safe: never log from a signal handler.
 *   - No secret reaches the fd: every string (values and object keys) passes through jlog_mask,
 *     and members of jlog_event's fields whose key names a secret ("token", "cvv", ...) are
 *     replaced by "****" entirely. The exact rules are at jlog_mask and jlog_event.
 *   - A string value is cut to JLOG_VALUE_MAX bytes (after masking, on a UTF-8 boundary, ending
 *     in "..."), so one hostile value cannot make a line huge.
 *   - Lines below the level given to jlog_init are dropped before anything is built (cost: one
 *     atomic load). Defaults before jlog_init: fd 2, JLOG_INFO.
 * Cost per line: one masked copy of the fields, one json_dumpb (a second one, into the heap, only
 * for lines over 4 KiB), one write(2). */
#ifndef CHECKOUTD_JLOG_H
#define CHECKOUTD_JLOG_H

#include <jansson.h>
#include <stddef.h>

#define JLOG_VALUE_MAX 1024 /* bytes of one string value in a line, "..." included */

typedef enum jlog_level { JLOG_DEBUG, JLOG_INFO, JLOG_WARN, JLOG_ERROR, JLOG_OFF } jlog_level;

/* "debug", "info", "warn", "error" or "off" (exactly, lower case) -> *out, 0; else -1. */
int jlog_level_parse(const char *text, jlog_level *out);
/* "debug", "info", "warn", "error", "off"; NULL for a value outside the enum. */
const char *jlog_level_name(jlog_level level);

/* Logs to fd (not owned: never closed) the lines of min_level and above; JLOG_OFF logs nothing.
 * Safe to call at any time from any thread; a line being written goes to the old fd. */
void jlog_init(int fd, jlog_level min_level);
/* 1 when a line of this level would be written (JLOG_OFF never is), else 0. */
int jlog_enabled(jlog_level level);

/* One event line. fields (may be NULL) is stolen: decref'd here in every case. Its members follow
 * ts/level/event in their order; a member named "ts", "level" or "event" is renamed "field_<key>";
 * fields that is not an object is logged as the member "fields". The masked copy walks at most 32
 * levels deep; a deeper value is logged as "<too deep>".
 * Secret keys: a member whose key equals (case-insensitively) token, card, card_number, pan,
 * number, cvv, cvc, secret or password, or contains token, secret, password or card_number
 * (access_token, client_secret, ...), is logged as "****" whatever its value (null stays null).
 * Every other string, and every key, passes through jlog_mask; an integer whose digits jlog_mask
 * would mask is logged as the masked string. Masked keys that collide: the later member wins.
 * 0: written; 1: below the level (nothing built); -1: out of memory or write(2) failed. */
int jlog_event(jlog_level level, const char *event, json_t *fields);

typedef struct jlog_validation {
    const char *name;    /* from the config ([a-z0-9_]{1,32}): logged as it is, not masked */
    const char *outcome; /* "ok", a tg kind name, or "cancelled" */
    double elapsed_ms;
    long http_status;  /* 0: no HTTP answer came (logged as null) */
    unsigned attempts; /* v1.2: requests sent upstream (retries and hedges included) */
} jlog_validation;

/* The per-checkout line, at info:
 * {"ts":..,"level":"info","event":"checkout","request_id":..,"order_id":..,"status":..,
 *  "http_status":422,"elapsed_ms":6.3,"validations":{"address":{"outcome":"ok","elapsed_ms":1.2,
 *  "http_status":200,"attempts":1},"payment":{"outcome":"cancelled","attempts":0}}}
 * request_id, order_id, status and outcomes pass through jlog_mask (NULL is logged as null); times
 * are rounded to 0.1 ms; a cancelled validation shows only its outcome and attempts. Returns as
 * jlog_event. */
int jlog_checkout(const char *request_id, const char *order_id, const char *status, int http_status,
                  double elapsed_ms, const jlog_validation *v, size_t nv);

/* The same line built as a jansson tree and dumped: ~25x the instructions of jlog_checkout, which
 * writes its bytes directly and falls back to this for what it does not handle (a line over 4 KiB,
 * duplicate names, negative or huge times). Public so that tests compare the two byte for byte. */
int jlog_checkout_tree(const char *request_id, const char *order_id, const char *status,
                       int http_status, double elapsed_ms, const jlog_validation *v, size_t nv);

/* Masks secrets in the NUL-terminated in, writing at most cap bytes (NUL included) to out, like
 * snprintf; returns the length of the whole masked text (out may be NULL when cap is 0). Rules:
 *   1. Tokens: tok_, pm_, card_, sk_live_, sk_test_, rk_live_ or rk_test_ (case-sensitive), at
 *      the start of a word (not preceded by [A-Za-z0-9_]) and followed by [A-Za-z0-9_]+: the
 *      prefix stays, the rest becomes exactly "****" ("tok_visa" -> "tok_****", and also
 *      "card_declined" -> "card_****": over-masking is the safe side).
 *   2. Card numbers: a digit run is a maximal sequence of digits in which single spaces or
 *      dashes may separate digits. A run of 15 or more digits is masked whether or not it
 *      passes Luhn (a mistyped card number is still a card number; a 15+ digit number rarely
 *      needs to be read in a log - the cost is that such ids and ns timestamps are masked too);
 *      a run of 13 or 14 digits is masked only when it passes the Luhn check (this keeps most
 *      13-digit ms timestamps and EAN codes); shorter runs ("2598", "12345") are never touched.
 *      Masking replaces every digit but the last 4 by '*' and keeps the separators:
 *      "4111 1111 1111 1111" -> "**** **** **** 1111".
 * Only ASCII bytes are replaced, by ASCII bytes: the UTF-8 (in)validity of in is kept. */
size_t jlog_mask(const char *in, char *out, size_t cap);

#endif
