/* cfg_journal — the top-level "journal" block (v1.3; see cfg.h for the keys and variables).
 *
 * Loaded after the validations (it needs to know whether some has compensate). The path is checked
 * here without being taken (so --check-config checks it too): an existing file must be readable
 * and writable, else the nearest existing directory on the way to it must be writable (lib/jr
 * creates the rest at start). Cost: a few access() calls, once at start. */
#include "cfg_internal.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define JOURNAL_DEFAULT_PATH "/var/lib/checkoutd/journal.db"

static const char *const journal_keys[] = {"store", "path"};

static int store_ok(const char *s)
{
    return strcmp(s, "file") == 0 || strcmp(s, "off") == 0;
}

static int path_ok(const char *s)
{
    size_t n = strlen(s);
    return n > 0 && n < 4000 && s[n - 1] != '/';
}

/* The string of key: the variable's when set, else the text's; NULL when neither. */
static const char *get(const cfg_loader *ld, const json_t *obj, const char *key, const char *env,
                       const char *what, cfg_string_check check, cfg_where *w, int *failed)
{
    const char *v = cfg_env(ld, env);
    *failed = 0;
    if (v != NULL) {
        cfg_block_where(ld, "journal", key, env, w);
        if (check(v))
            return v;
        char shown[CFG_SHOW_MAX];
        cfg_show_string(v, shown);
        cfg_errf(ld, w, "expected %s, got %s", what, shown);
        *failed = 1;
        return NULL;
    }
    const json_t *j = obj ? json_object_get(obj, key) : NULL;
    if (j == NULL)
        return NULL;
    cfg_block_where(ld, "journal", key, NULL, w);
    v = cfg_get_string(ld, w, j, what, check);
    *failed = v == NULL;
    return v;
}

/* Whether path can be written: the file itself when it exists, else the nearest existing
 * directory on its way. 0, or -1 with errno. */
static int writable(const char *path)
{
    char dir[4096];
    if (access(path, F_OK) == 0)
        return access(path, R_OK | W_OK);
    snprintf(dir, sizeof dir, "%s", path);
    for (;;) {
        char *slash = strrchr(dir, '/');
        if (slash == NULL)
            return access(".", W_OK | X_OK);
        if (slash == dir) {
            dir[1] = '\0';
            return access(dir, W_OK | X_OK);
        }
        *slash = '\0';
        struct stat st;
        if (stat(dir, &st) == 0) {
            if (!S_ISDIR(st.st_mode)) {
                errno = ENOTDIR;
                return -1;
            }
            return access(dir, W_OK | X_OK);
        }
    }
}

int cfg_journal_load(const cfg_loader *ld, const json_t *value, cfg *out)
{
    cfg_journal *j = &out->journal;
    cfg_where w;
    int failed = 0, has_comp = 0;
    memset(j, 0, sizeof *j);
    if (value != NULL) {
        cfg_top_where(ld, "journal", &w);
        if (!json_is_object(value)) {
            char shown[CFG_SHOW_MAX];
            cfg_show_json(value, shown);
            return cfg_errf(ld, &w, "expected an object, got %s", shown);
        }
        if (cfg_check_keys(ld, &w, value, journal_keys, 2, "store, path") != 0)
            return -1;
    }
    for (size_t i = 0; i < out->nvalidations; i++)
        has_comp |= out->validations[i].compensate.url != NULL;
    const char *store = get(ld, value, "store", "CHECKOUTD_JOURNAL_STORE", "\"file\" or \"off\"",
                            store_ok, &w, &failed);
    if (failed)
        return -1;
    int off = store != NULL && strcmp(store, "off") == 0;
    const char *path = get(ld, value, "path", "CHECKOUTD_JOURNAL_PATH",
                           "a file path (not a directory)", path_ok, &w, &failed);
    if (failed)
        return -1;
    if (path == NULL) {
        path = JOURNAL_DEFAULT_PATH;
        cfg_block_where(ld, "journal", "path", NULL, &w);
    }
    j->on = has_comp && !off;
    j->off_given = has_comp && off;
    j->path = cfg_dup(ld, &w, path);
    if (j->path == NULL)
        return -1;
    if (j->on && writable(path) != 0) {
        cfg_errf(ld, &w, "cannot write \"%.300s\": %s", path, strerror(errno));
        cfg_journal_free(out);
        return -1;
    }
    return 0;
}

void cfg_journal_free(cfg *out)
{
    free(out->journal.path);
    out->journal.path = NULL;
}
