/* cfg — checkoutd's configuration (see cfg.h for the rules a caller relies on).
 *
 * Loading is a pipeline over one jansson tree, so that every value, whatever its origin, passes the
 * same checks and gets the same messages:
 *   parse the text -> refuse unknown top-level keys -> add the default of every missing key
 *   -> apply the CHECKOUTD_* environment to the tree -> check each value and copy it into a cfg.
 * While the environment is applied, the loader records which values came from a variable, so that a
 * message about such a value names the variable (and not the file) as where it came from. */
#include "cfg.h"
#include "cfg_internal.h"

#include <errno.h>
#include <jansson.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* A config bigger than this is a mistake (the default is < 1 KiB); the limit bounds the read. */
#define CFG_FILE_MAX (1024 * 1024)
/* "CHECKOUTD_" + a 32-character name + "_TIMEOUT_MS" + NUL is 54 bytes. */
#define ENV_NAME_MAX 64
#define KEY_MAX      CFG_KEY_MAX
#define SHOW_MAX     CFG_SHOW_MAX
/* The longest host name DNS allows; also bounds an IPv6 literal with its zone. */
#define HOST_MAX CFG_HOST_MAX
#define MSG_MAX  512

#define TIMEOUT_MIN     1L
#define TIMEOUT_MAX     600000L
#define TIMEOUT_DEFAULT 1000L

/* The text of config/checkoutd.json (today byte for byte); tests/test_cfg.c checks that both give
 * the same cfg. */
static const char default_json[] = "{\n"
                                   "  \"listen\": \"127.0.0.1:8080\",\n"
                                   "  \"deadline_ms\": 2000,\n"
                                   "  \"max_body_bytes\": 65536,\n"
                                   "  \"max_inflight\": 10000,\n"
                                   "  \"max_upstream_body_bytes\": 1048576,\n"
                                   "  \"validations\": [\n"
                                   "    {\"name\": \"address\",   \"field\": \"address\", \"url\": "
                                   "\"http://127.0.0.1:9101/validate\", \"timeout_ms\": 1000},\n"
                                   "    {\"name\": \"inventory\", \"field\": \"items\",   \"url\": "
                                   "\"http://127.0.0.1:9102/check\",    \"timeout_ms\": 1000},\n"
                                   "    {\"name\": \"payment\",   \"field\": \"payment\", \"url\": "
                                   "\"http://127.0.0.1:9103/verify\",   \"timeout_ms\": 1500}\n"
                                   "  ]\n"
                                   "}\n";

typedef enum key_kind { KIND_LISTEN, KIND_INT, KIND_LIST } key_kind;

/* The top-level keys, in the order they are checked. */
typedef struct top_key {
    const char *key;
    const char *env; /* the variable that overrides it */
    key_kind kind;
    long min, max; /* KIND_INT only */
    size_t offset; /* KIND_INT only: of its long in struct cfg */
    long def;      /* KIND_INT keys that default_json leaves out (v1.2): the value when absent */
} top_key;

static const top_key top_keys[] = {
    {"listen", "CHECKOUTD_LISTEN", KIND_LISTEN, 0, 0, 0, 0},
    {"deadline_ms", "CHECKOUTD_DEADLINE_MS", KIND_INT, 1, 600000, offsetof(cfg, deadline_ms), 0},
    {"max_body_bytes", "CHECKOUTD_MAX_BODY_BYTES", KIND_INT, 1, 16777216,
     offsetof(cfg, max_body_bytes), 0},
    {"max_inflight", "CHECKOUTD_MAX_INFLIGHT", KIND_INT, 1, 1000000, offsetof(cfg, max_inflight),
     0},
    {"max_upstream_body_bytes", "CHECKOUTD_MAX_UPSTREAM_BODY_BYTES", KIND_INT, 1024, 67108864,
     offsetof(cfg, max_upstream_body_bytes), 0},
    {"header_timeout_ms", "CHECKOUTD_HEADER_TIMEOUT_MS", KIND_INT, 100, 600000,
     offsetof(cfg, header_timeout_ms), 10000},
    {"idle_timeout_ms", "CHECKOUTD_IDLE_TIMEOUT_MS", KIND_INT, 1000, 3600000,
     offsetof(cfg, idle_timeout_ms), 30000},
    {"max_connections_per_ip", "CHECKOUTD_MAX_CONNECTIONS_PER_IP", KIND_INT, 0, 16384,
     offsetof(cfg, max_connections_per_ip), 0},
    {"request_timeout_ms", "CHECKOUTD_REQUEST_TIMEOUT_MS", KIND_INT, 100, 600000,
     offsetof(cfg, request_timeout_ms), 30000},
    {"validations", "CHECKOUTD_VALIDATIONS", KIND_LIST, 0, 0, 0, 0},
};
#define NTOP            (sizeof top_keys / sizeof top_keys[0])
#define TOP_LISTEN      0
#define TOP_VALIDATIONS (NTOP - 1)

/* The keys of one validation; env_suffix: CHECKOUTD_<NAME>_<suffix> overrides it (the name has
 * none). */
enum { VK_NAME, VK_FIELD, VK_URL, VK_TIMEOUT, VK_COUNT };
static const struct {
    const char *key;
    const char *env_suffix;
} val_keys[VK_COUNT] = {
    [VK_NAME] = {"name", NULL},
    [VK_FIELD] = {"field", "_FIELD"},
    [VK_URL] = {"url", "_URL"},
    [VK_TIMEOUT] = {"timeout_ms", "_TIMEOUT_MS"},
};
#define VAL_KEY_NAMES "name, field, url, timeout_ms"

typedef struct loader {
    const char *source; /* names the text in messages; NULL: none */
    cfg_getenv_fn getenv_fn;
    char *err;
    size_t errlen;
    int top_env[NTOP]; /* 1: top_keys[i] was set from its variable */
    /* 1: key k of validation i was set from its variable. Only the first CFG_MAX_VALIDATIONS
     * entries are ever overridden: a longer list is refused anyway. */
    int val_env[CFG_MAX_VALIDATIONS][VK_COUNT];
} loader;

typedef cfg_where where; /* cfg_internal.h */

const char *cfg_default_json(void)
{
    return default_json;
}

/* ---- messages ---- */

/* Invariant: err holds one line. Values are escaped by cfg_show_string; this also covers a file
 * path or a jansson message that carries a control character. */
static void one_line(char *s)
{
    for (; *s != '\0'; s++) {
        unsigned char ch = (unsigned char)*s;
        if (ch < 0x20 || ch == 0x7f)
            *s = '?';
    }
}

/* Writes "<source>: <key>: <reason>" into err, cut to errlen; returns -1 for "return cfg_errf()".
 */
int cfg_errf(const loader *ld, const where *w, const char *fmt, ...)
{
    char msg[MSG_MAX];
    va_list ap;

    if (ld->err == NULL || ld->errlen == 0)
        return -1;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    snprintf(ld->err, ld->errlen, "%s%s%s%s%s", w->source ? w->source : "", w->source ? ": " : "",
             w->key, w->key[0] ? ": " : "", msg);
    one_line(ld->err);
    return -1;
}

/* Writes one byte of a string as it is shown in a message: printable bytes as they are (UTF-8 too),
 * quote and backslash escaped, control characters as \n, \t or \xNN. */
static void escape_byte(unsigned char ch, char out[5])
{
    if (ch == '"' || ch == '\\')
        snprintf(out, 5, "\\%c", ch);
    else if (ch == '\n')
        snprintf(out, 5, "\\n");
    else if (ch == '\t')
        snprintf(out, 5, "\\t");
    else if (ch < 0x20 || ch == 0x7f)
        snprintf(out, 5, "\\x%02x", ch);
    else
        snprintf(out, 5, "%c", ch);
}

/* s quoted and escaped into buf[SHOW_MAX]; a long value is cut and ends in "...". */
void cfg_show_string(const char *s, char buf[SHOW_MAX])
{
    /* Room kept at the end for "...", the closing quote and the NUL. */
    const size_t limit = SHOW_MAX - 5;
    size_t used = 1;

    buf[0] = '"';
    for (; *s != '\0'; s++) {
        char piece[5];
        size_t len;
        escape_byte((unsigned char)*s, piece);
        len = strlen(piece);
        if (used + len > limit)
            break;
        memcpy(buf + used, piece, len);
        used += len;
    }
    snprintf(buf + used, SHOW_MAX - used, "%s\"", *s != '\0' ? "..." : "");
}

/* A JSON value as it is shown after "got": numbers and literals as written, strings quoted. */
void cfg_show_json(const json_t *v, char buf[SHOW_MAX])
{
    switch (v ? json_typeof(v) : JSON_NULL) {
    case JSON_INTEGER:
        snprintf(buf, SHOW_MAX, "%" JSON_INTEGER_FORMAT, json_integer_value(v));
        break;
    case JSON_REAL:
        snprintf(buf, SHOW_MAX, "a real number (%g)", json_real_value(v));
        break;
    case JSON_STRING:
        cfg_show_string(json_string_value(v), buf);
        break;
    case JSON_TRUE:
        snprintf(buf, SHOW_MAX, "true");
        break;
    case JSON_FALSE:
        snprintf(buf, SHOW_MAX, "false");
        break;
    case JSON_OBJECT:
        snprintf(buf, SHOW_MAX, "an object");
        break;
    case JSON_ARRAY:
        snprintf(buf, SHOW_MAX, "an array");
        break;
    default:
        snprintf(buf, SHOW_MAX, v ? "null" : "nothing");
        break;
    }
}

static void top_where(const loader *ld, size_t i, where *w)
{
    w->source = ld->top_env[i] ? NULL : ld->source;
    snprintf(w->key, sizeof w->key, "%s", ld->top_env[i] ? top_keys[i].env : top_keys[i].key);
}

/* The variable that overrides key k of the validation called name: CHECKOUTD_<NAME>_<SUFFIX>.
 * name is valid ([a-z0-9_]): upper-casing it is plain, and no two (name, key) share a variable. */
static void env_name(const char *name, size_t k, char buf[ENV_NAME_MAX])
{
    snprintf(buf, ENV_NAME_MAX, "CHECKOUTD_%s%s", name,
             val_keys[k].env_suffix ? val_keys[k].env_suffix : "");
    for (char *p = buf; *p != '\0'; p++) {
        if (*p >= 'a' && *p <= 'z')
            *p = (char)(*p - 'a' + 'A');
    }
}

/* Where key k (VK_COUNT: the entry itself) of validation i came from: its variable, or its place in
 * the list of the file or of CHECKOUTD_VALIDATIONS. */
static void val_where(const loader *ld, size_t i, size_t k, const char *name, where *w)
{
    const int list_env = ld->top_env[TOP_VALIDATIONS];
    const char *list = list_env ? "CHECKOUTD_VALIDATIONS" : "validations";

    if (k < VK_COUNT && i < CFG_MAX_VALIDATIONS && ld->val_env[i][k] && name != NULL) {
        w->source = NULL;
        env_name(name, k, w->key);
        return;
    }
    w->source = list_env ? NULL : ld->source;
    if (k < VK_COUNT)
        snprintf(w->key, sizeof w->key, "%s[%zu].%s", list, i, val_keys[k].key);
    else
        snprintf(w->key, sizeof w->key, "%s[%zu]", list, i);
}

/* ---- the tree: parse, keys, defaults ---- */

/* Parses text (duplicate keys refused); NULL after a message giving line and column. */
static json_t *parse_json(const loader *ld, const where *w, const char *text)
{
    json_error_t je;
    json_t *v = json_loads(text, JSON_REJECT_DUPLICATES, &je);

    if (v == NULL)
        cfg_errf(ld, w, "invalid JSON at line %d, column %d: %s", je.line, je.column, je.text);
    return v;
}

/* Refuses a key of obj that names is not in list (a typo would otherwise be silently ignored). */
int cfg_check_keys(const loader *ld, const where *w, const json_t *obj, const char *const *list,
                   size_t n, const char *expected)
{
    const char *key;
    json_t *v;

    /* json_object_foreach wants a non-const object; it only reads it. */
    json_object_foreach((json_t *)obj, key, v)
    {
        size_t i = 0;
        char shown[SHOW_MAX];
        while (i < n && strcmp(list[i], key) != 0)
            i++;
        if (i < n)
            continue;
        cfg_show_string(key, shown);
        return cfg_errf(ld, w, "unknown key %s (expected one of %s)", shown, expected);
    }
    return 0;
}

/* The names of the flat keys and then of the blocks, and the same joined by ", " for messages. */
static size_t key_names(const char *const *flat, size_t nflat, const char *(*block)(size_t),
                        const char **names, size_t cap, char *joined, size_t joined_cap)
{
    size_t n = 0, used = 0;

    for (size_t i = 0; i < nflat && n < cap; i++)
        names[n++] = flat[i];
    for (size_t i = 0; block(i) != NULL && n < cap; i++)
        names[n++] = block(i);
    joined[0] = '\0';
    for (size_t i = 0; i < n && used < joined_cap; i++) {
        int w = snprintf(joined + used, joined_cap - used, "%s%s", i ? ", " : "", names[i]);
        used += w > 0 ? (size_t)w : 0;
    }
    return n;
}

static const char *top_block_key(size_t i)
{
    return cfg_top_blocks[i].key;
}

static const char *val_block_key(size_t i)
{
    return cfg_val_blocks[i].key;
}

#define NAMES_MAX  64
#define JOINED_MAX 768

static int check_top_keys(const loader *ld, const json_t *root)
{
    const char *flat[NTOP], *names[NAMES_MAX];
    char joined[JOINED_MAX];
    const where w = {ld->source, ""};
    size_t n;

    for (size_t i = 0; i < NTOP; i++)
        flat[i] = top_keys[i].key;
    n = key_names(flat, NTOP, top_block_key, names, NAMES_MAX, joined, sizeof joined);
    return cfg_check_keys(ld, &w, root, names, n, joined);
}

/* Gives every top-level key missing from root its built-in default, so that the environment and the
 * checks see one complete object whatever the file left out (validations missing: the default
 * three). */
static int fill_defaults(const loader *ld, json_t *root)
{
    const where w = {"built-in default", ""};
    json_t *def = NULL;
    int rc = -1;

    def = parse_json(ld, &w, default_json);
    if (def == NULL)
        goto fail;
    for (size_t i = 0; i < NTOP; i++) {
        const char *key = top_keys[i].key;
        if (json_object_get(root, key) != NULL || json_object_get(def, key) == NULL)
            continue;
        /* Shares the default's value; def is dropped below, so root ends up its only owner. */
        if (json_object_set(root, key, json_object_get(def, key)) != 0) {
            cfg_errf(ld, &w, "out of memory");
            goto fail;
        }
    }
    rc = 0;
fail:
    json_decref(def);
    return rc;
}

/* ---- the environment ---- */

const char *cfg_env(const loader *ld, const char *name)
{
    return ld->getenv_fn ? ld->getenv_fn(name) : NULL;
}

/* The value of variable var as JSON: an integer when is_int (strictly parsed; the range is checked
 * later with every other value), else a string. NULL after a message naming var. */
static json_t *env_json(const loader *ld, const char *var, const char *val, int is_int, long min,
                        long max)
{
    where w = {NULL, ""};
    char shown[SHOW_MAX];
    long n = 0;
    json_t *v;

    snprintf(w.key, sizeof w.key, "%s", var);
    if (is_int && cfg_parse_long(val, &n) != 0) {
        cfg_show_string(val, shown);
        cfg_errf(ld, &w, "expected an integer in %ld..%ld, got %s", min, max, shown);
        return NULL;
    }
    v = is_int ? json_integer(n) : json_string(val);
    if (v == NULL)
        cfg_errf(ld, &w, is_int ? "out of memory" : "expected a UTF-8 string");
    return v;
}

/* Sets obj.key to v (taking v), as the value of variable var. */
static int set_from_env(const loader *ld, json_t *obj, const char *key, const char *var, json_t *v)
{
    where w = {NULL, ""};

    if (v == NULL)
        return -1;
    if (json_object_set_new(obj, key, v) != 0) {
        snprintf(w.key, sizeof w.key, "%s", var);
        return cfg_errf(ld, &w, "out of memory");
    }
    return 0;
}

static int apply_env_top(loader *ld, json_t *root)
{
    for (size_t i = 0; i < NTOP; i++) {
        const top_key *k = &top_keys[i];
        const char *val = cfg_env(ld, k->env);
        where w = {NULL, ""};
        json_t *v;

        if (val == NULL)
            continue;
        snprintf(w.key, sizeof w.key, "%s", k->env);
        if (k->kind == KIND_LIST)
            v = parse_json(ld, &w, val);
        else
            v = env_json(ld, k->env, val, k->kind == KIND_INT, k->min, k->max);
        if (set_from_env(ld, root, k->key, k->env, v) != 0)
            return -1;
        ld->top_env[i] = 1;
    }
    return 0;
}

/* Applies CHECKOUTD_<NAME>_FIELD, _URL and _TIMEOUT_MS to validation i. An entry without a valid
 * name has no variables; the checks refuse it later. */
static int apply_env_validation(loader *ld, json_t *v, size_t i)
{
    const char *name = json_string_value(json_object_get(v, "name"));

    if (!json_is_object(v) || name == NULL || !cfg_name_ok(name))
        return 0;
    for (size_t k = 0; k < VK_COUNT; k++) {
        char var[ENV_NAME_MAX];
        const char *val;

        if (val_keys[k].env_suffix == NULL)
            continue;
        env_name(name, k, var);
        val = cfg_env(ld, var);
        if (val == NULL)
            continue;
        if (set_from_env(ld, v, val_keys[k].key, var,
                         env_json(ld, var, val, k == VK_TIMEOUT, TIMEOUT_MIN, TIMEOUT_MAX)) != 0)
            return -1;
        ld->val_env[i][k] = 1;
    }
    return 0;
}

static int apply_env(loader *ld, json_t *root)
{
    json_t *list;

    if (apply_env_top(ld, root) != 0)
        return -1;
    /* After CHECKOUTD_VALIDATIONS: the per-validation variables apply to the list in force. */
    list = json_object_get(root, "validations");
    if (!json_is_array(list) || json_array_size(list) > CFG_MAX_VALIDATIONS)
        return 0; /* refused by the checks */
    for (size_t i = 0; i < json_array_size(list); i++) {
        if (apply_env_validation(ld, json_array_get(list, i), i) != 0)
            return -1;
    }
    return 0;
}

/* ---- checks: the tree into a cfg ---- */

int cfg_get_int(const loader *ld, const where *w, const json_t *v, long min, long max, long *out)
{
    char shown[SHOW_MAX];

    if (!json_is_integer(v) || json_integer_value(v) < min || json_integer_value(v) > max) {
        cfg_show_json(v, shown);
        return cfg_errf(ld, w, "expected an integer in %ld..%ld, got %s", min, max, shown);
    }
    *out = (long)json_integer_value(v);
    return 0;
}

/* The string v when it passes check; NULL after "expected <what>" (missing, another type, or
 * refused). */
const char *cfg_get_string(const loader *ld, const where *w, const json_t *v, const char *what,
                           cfg_string_check check)
{
    char shown[SHOW_MAX];

    if (v == NULL) {
        cfg_errf(ld, w, "missing, expected %s", what);
        return NULL;
    }
    if (!json_is_string(v) || !check(json_string_value(v))) {
        cfg_show_json(v, shown);
        cfg_errf(ld, w, "expected %s, got %s", what, shown);
        return NULL;
    }
    return json_string_value(v);
}

/* strdup that reports: the copy, or NULL after "out of memory". */
char *cfg_dup(const loader *ld, const where *w, const char *s)
{
    char *d = strdup(s);

    if (d == NULL)
        cfg_errf(ld, w, "out of memory");
    return d;
}

static int load_listen(const loader *ld, const json_t *root, cfg *c)
{
    char host[HOST_MAX + 1];
    char shown[SHOW_MAX];
    const json_t *v = json_object_get(root, "listen");
    where w;

    top_where(ld, TOP_LISTEN, &w);
    if (!json_is_string(v) || cfg_parse_listen(json_string_value(v), host, &c->listen_port) != 0) {
        cfg_show_json(v, shown);
        return cfg_errf(
            ld, &w,
            "expected \"host:port\" with a port in 0..65535 (IPv6 as \"[::1]:8080\"), got %s",
            shown);
    }
    c->listen_host = cfg_dup(ld, &w, host);
    return c->listen_host ? 0 : -1;
}

static int load_ints(const loader *ld, const json_t *root, cfg *c)
{
    for (size_t i = 0; i < NTOP; i++) {
        const top_key *k = &top_keys[i];
        long *slot = (long *)(void *)((char *)c + k->offset);
        where w;

        if (k->kind != KIND_INT)
            continue;
        top_where(ld, i, &w);
        if (json_object_get(root, k->key) == NULL) {
            *slot = k->def; /* a v1.2 key that default_json leaves out */
            continue;
        }
        if (cfg_get_int(ld, &w, json_object_get(root, k->key), k->min, k->max, slot) != 0)
            return -1;
    }
    return 0;
}

/* Name of validation i: valid and not used by an earlier one (names key metrics and variables). */
static int load_name(const loader *ld, const json_t *v, size_t i, cfg *c)
{
    const char *name;
    where w;

    val_where(ld, i, VK_NAME, NULL, &w);
    name = cfg_get_string(ld, &w, json_object_get(v, "name"),
                          "a name of 1..32 characters from [a-z0-9_]", cfg_name_ok);
    if (name == NULL)
        return -1;
    for (size_t j = 0; j < i; j++) {
        char shown[SHOW_MAX];
        if (strcmp(c->validations[j].name, name) != 0)
            continue;
        cfg_show_string(name, shown);
        return cfg_errf(ld, &w, "duplicate name %s (first at index %zu)", shown, j);
    }
    /* cfg_name_ok bounds the length to CFG_NAME_MAX; the array is zeroed, so the copy ends in NUL.
     */
    memcpy(c->validations[i].name, name, strlen(name));
    return 0;
}

/* A required string key (field or url) of validation i, checked and copied into *out. */
static int load_val_string(const loader *ld, const json_t *v, size_t i, size_t k, const char *what,
                           cfg_string_check check, char **out)
{
    const char *s;
    where w;

    val_where(ld, i, k, json_string_value(json_object_get(v, "name")), &w);
    s = cfg_get_string(ld, &w, json_object_get(v, val_keys[k].key), what, check);
    if (s == NULL)
        return -1;
    *out = cfg_dup(ld, &w, s);
    return *out ? 0 : -1;
}

/* The nested keys of validation i (cfg_blocks.c), after its flat keys. */
static int load_val_blocks(const loader *ld, const json_t *v, size_t i, cfg_validation *out)
{
    for (size_t b = 0; cfg_val_blocks[b].key != NULL; b++) {
        const cfg_val_block *blk = &cfg_val_blocks[b];
        if (blk->load(ld, i, v, json_object_get(v, blk->key), out) != 0)
            return -1;
    }
    return 0;
}

static int load_validation(const loader *ld, const json_t *v, size_t i, cfg *c)
{
    const char *flat[VK_COUNT], *names[NAMES_MAX];
    char joined[JOINED_MAX];
    cfg_validation *out = &c->validations[i];
    const json_t *timeout;
    char shown[SHOW_MAX];
    size_t n;
    where w;

    for (size_t k = 0; k < VK_COUNT; k++)
        flat[k] = val_keys[k].key;
    n = key_names(flat, VK_COUNT, val_block_key, names, NAMES_MAX, joined, sizeof joined);
    val_where(ld, i, VK_COUNT, NULL, &w);
    if (!json_is_object(v)) {
        cfg_show_json(v, shown);
        return cfg_errf(ld, &w, "expected an object with %s, got %s", VAL_KEY_NAMES, shown);
    }
    if (cfg_check_keys(ld, &w, v, names, n, joined) != 0 || load_name(ld, v, i, c) != 0)
        return -1;
    if (load_val_string(ld, v, i, VK_FIELD, "a non-empty string", cfg_nonempty_ok, &out->field) !=
        0)
        return -1;
    if (load_val_string(ld, v, i, VK_URL, "an http:// or https:// URL", cfg_url_ok, &out->url) != 0)
        return -1;
    timeout = json_object_get(v, "timeout_ms");
    out->timeout_ms = TIMEOUT_DEFAULT;
    if (timeout != NULL) {
        val_where(ld, i, VK_TIMEOUT, out->name, &w);
        if (cfg_get_int(ld, &w, timeout, TIMEOUT_MIN, TIMEOUT_MAX, &out->timeout_ms) != 0)
            return -1;
    }
    return load_val_blocks(ld, v, i, out);
}

/* The top-level blocks (cfg_blocks.c), after the flat keys and the validations. */
static int load_top_blocks(const loader *ld, const json_t *root, cfg *c)
{
    for (size_t b = 0; cfg_top_blocks[b].key != NULL; b++) {
        const cfg_top_block *blk = &cfg_top_blocks[b];
        if (blk->load(ld, json_object_get(root, blk->key), c) != 0)
            return -1;
    }
    return 0;
}

void cfg_val_where(const cfg_loader *ld, size_t i, const char *key, cfg_where *w)
{
    const int list_env = ld->top_env[TOP_VALIDATIONS];

    w->source = list_env ? NULL : ld->source;
    snprintf(w->key, sizeof w->key, "%s[%zu].%s",
             list_env ? "CHECKOUTD_VALIDATIONS" : "validations", i, key);
}

void cfg_top_where(const cfg_loader *ld, const char *key, cfg_where *w)
{
    w->source = ld->source;
    snprintf(w->key, sizeof w->key, "%s", key);
}

void cfg_block_where(const cfg_loader *ld, const char *block, const char *key, const char *env_used,
                     cfg_where *w)
{
    if (env_used != NULL) {
        w->source = NULL;
        snprintf(w->key, sizeof w->key, "%s", env_used);
    } else {
        char dotted[CFG_KEY_MAX];
        snprintf(dotted, sizeof dotted, "%s.%s", block, key);
        cfg_top_where(ld, dotted, w);
    }
}

static int load_validations(const loader *ld, const json_t *root, cfg *c)
{
    const json_t *list = json_object_get(root, "validations");
    char shown[SHOW_MAX];
    size_t n;
    where w;

    top_where(ld, TOP_VALIDATIONS, &w);
    if (!json_is_array(list)) {
        cfg_show_json(list, shown);
        return cfg_errf(ld, &w, "expected an array of 1..%d validations, got %s",
                        CFG_MAX_VALIDATIONS, shown);
    }
    n = json_array_size(list);
    if (n < 1 || n > CFG_MAX_VALIDATIONS)
        return cfg_errf(ld, &w, "expected 1..%d validations, got %zu", CFG_MAX_VALIDATIONS, n);
    /* Entries are zeroed until loaded, so cfg_free may run on a partly loaded list. */
    c->nvalidations = n;
    for (size_t i = 0; i < n; i++) {
        if (load_validation(ld, json_array_get(list, i), i, c) != 0)
            return -1;
    }
    return 0;
}

/* ---- the API ---- */

int cfg_load_string(cfg *out, const char *json_text, const char *source, cfg_getenv_fn getenv_fn,
                    char *err, size_t errlen)
{
    loader ld;
    cfg c;
    json_t *root = NULL;
    const where whole = {source, ""};
    char shown[SHOW_MAX];
    int rc = -1;

    memset(&ld, 0, sizeof ld);
    memset(&c, 0, sizeof c);
    ld.source = source;
    ld.getenv_fn = getenv_fn;
    ld.err = err;
    ld.errlen = errlen;
    if (err != NULL && errlen > 0)
        err[0] = '\0';
    if (out != NULL)
        memset(out, 0, sizeof *out);
    if (out == NULL || json_text == NULL) {
        cfg_errf(&ld, &whole, "no config given");
        goto fail;
    }
    root = parse_json(&ld, &whole, json_text);
    if (root == NULL)
        goto fail;
    if (!json_is_object(root)) {
        cfg_show_json(root, shown);
        cfg_errf(&ld, &whole, "expected a JSON object at the top level, got %s", shown);
        goto fail;
    }
    if (check_top_keys(&ld, root) != 0 || fill_defaults(&ld, root) != 0 ||
        apply_env(&ld, root) != 0)
        goto fail;
    if (load_listen(&ld, root, &c) != 0 || load_ints(&ld, root, &c) != 0 ||
        load_validations(&ld, root, &c) != 0 || load_top_blocks(&ld, root, &c) != 0)
        goto fail;
    /* c moves into *out: nothing is left for the cleanup to free. */
    *out = c;
    memset(&c, 0, sizeof c);
    rc = 0;
fail:
    json_decref(root);
    cfg_free(&c);
    return rc;
}

/* The whole file as a NUL-terminated string (free it), or NULL after a message. */
static char *read_text(const loader *ld)
{
    const where w = {ld->source, ""};
    FILE *f = NULL;
    char *buf = NULL;
    char *text = NULL;
    size_t len;

    f = fopen(ld->source, "rb");
    if (f == NULL) {
        cfg_errf(ld, &w, "cannot open: %s", strerror(errno));
        goto fail;
    }
    buf = malloc(CFG_FILE_MAX + 2);
    if (buf == NULL) {
        cfg_errf(ld, &w, "out of memory");
        goto fail;
    }
    len = fread(buf, 1, CFG_FILE_MAX + 1, f);
    if (ferror(f)) {
        cfg_errf(ld, &w, "cannot read: %s", strerror(errno));
        goto fail;
    }
    if (len > CFG_FILE_MAX) {
        cfg_errf(ld, &w, "larger than %d bytes", CFG_FILE_MAX);
        goto fail;
    }
    /* A NUL would silently end the text that jansson sees. */
    if (memchr(buf, '\0', len) != NULL) {
        cfg_errf(ld, &w, "contains a NUL byte; expected JSON text");
        goto fail;
    }
    buf[len] = '\0';
    text = buf;
    buf = NULL;
fail:
    if (f != NULL)
        fclose(f);
    free(buf);
    return text;
}

int cfg_load_file(cfg *out, const char *path, cfg_getenv_fn getenv_fn, char *err, size_t errlen)
{
    loader ld;
    char *text = NULL;
    int rc = -1;

    if (path == NULL)
        return cfg_load_string(out, default_json, NULL, getenv_fn, err, errlen);
    memset(&ld, 0, sizeof ld);
    ld.source = path;
    ld.err = err;
    ld.errlen = errlen;
    if (out != NULL)
        memset(out, 0, sizeof *out);
    text = read_text(&ld);
    if (text == NULL)
        goto fail;
    rc = cfg_load_string(out, text, path, getenv_fn, err, errlen);
fail:
    free(text);
    return rc;
}

void cfg_free(cfg *c)
{
    if (c == NULL)
        return;
    free(c->listen_host);
    for (size_t i = 0; i < c->nvalidations && i < CFG_MAX_VALIDATIONS; i++) {
        free(c->validations[i].field);
        free(c->validations[i].url);
        for (size_t b = 0; cfg_val_blocks[b].key != NULL; b++) {
            if (cfg_val_blocks[b].free != NULL)
                cfg_val_blocks[b].free(&c->validations[i]);
        }
    }
    for (size_t b = 0; cfg_top_blocks[b].key != NULL; b++) {
        if (cfg_top_blocks[b].free != NULL)
            cfg_top_blocks[b].free(c);
    }
    memset(c, 0, sizeof *c);
}
