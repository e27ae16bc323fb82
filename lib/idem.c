/* idem — the store-independent parts: the key's syntax, the fingerprint, tokens. See idem.h. */
#include "idem.h"

#include <openssl/sha.h>
#include <stdio.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>

void idem_free(idem_store *s)
{
    if (s != NULL)
        s->ops->free(s);
}

int idem_parse_key(const char *value, char out[IDEM_KEY_MAX + 1], const char **why)
{
    static const char bad[] = "Idempotency-Key must be 1..255 visible ASCII characters, or the "
                              "same in double quotes";
    size_t len = strlen(value), n = 0;
    *why = bad;
    if (len >= 2 && value[0] == '"' && value[len - 1] == '"') {
        for (size_t i = 1; i + 1 < len; i++) {
            char c = value[i];
            if (c == '\\') {
                if (i + 2 >= len || (value[i + 1] != '"' && value[i + 1] != '\\')) {
                    *why = "Idempotency-Key: bad escape in its quoted form";
                    return -1;
                }
                c = value[++i];
            } else if (c == '"') {
                *why = "Idempotency-Key: unescaped quote inside its quoted form";
                return -1;
            }
            if (c < 0x21 || c > 0x7e || n >= IDEM_KEY_MAX)
                return -1;
            out[n++] = c;
        }
    } else {
        if (len > 0 && value[0] == '"') {
            *why = "Idempotency-Key: unterminated quoted form";
            return -1;
        }
        for (size_t i = 0; i < len; i++) {
            char c = value[i];
            if (c < 0x21 || c > 0x7e || n >= IDEM_KEY_MAX)
                return -1;
            out[n++] = c;
        }
    }
    if (n == 0)
        return -1;
    out[n] = '\0';
    *why = NULL;
    return 0;
}

void idem_fingerprint(const char *body, size_t len, unsigned char fp[IDEM_FP_LEN])
{
    SHA256((const unsigned char *)body, len, fp);
}

void idem_hex(const unsigned char *bytes, size_t n, char *out)
{
    static const char hex[] = "0123456789abcdef";
    for (size_t i = 0; i < n; i++) {
        out[2 * i] = hex[bytes[i] >> 4];
        out[2 * i + 1] = hex[bytes[i] & 15];
    }
    out[2 * n] = '\0';
}

void idem_random_token(char out[IDEM_TOKEN_LEN + 1])
{
    unsigned char r[IDEM_TOKEN_LEN / 2];
    if (getrandom(r, sizeof r, 0) != (ssize_t)sizeof r) {
        /* never in practice (getrandom does not fail for 16 bytes once the pool is ready) */
        struct timespec t;
        clock_gettime(CLOCK_REALTIME, &t);
        memset(r, 0, sizeof r);
        memcpy(r, &t, sizeof t < sizeof r ? sizeof t : sizeof r);
    }
    idem_hex(r, sizeof r, out);
}

const char *idem_result_name(idem_result r)
{
    switch (r) {
    case IDEM_NEW:
        return "new";
    case IDEM_REPLAY:
        return "replayed";
    case IDEM_IN_PROGRESS:
        return "in_progress";
    case IDEM_MISMATCH:
        return "mismatch";
    case IDEM_UNAVAILABLE:
        return "unavailable";
    }
    return "unavailable";
}
