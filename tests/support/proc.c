/* proc — child processes for integration tests; the contract is in proc.h. */
#include "proc.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

extern char **environ;

#define PROC_STOP_GRACE_MS 5000
#define PROC_POLL_STEP_MS  5

static long long now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void sleep_ms(int ms)
{
    struct timespec ts = {.tv_sec = ms / 1000, .tv_nsec = (long)(ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
    }
}

/* Moves *fd to a number above 2, close-on-exec, so that the child's dup2 onto 0..2 can never
 * clobber another fd we still need (possible only when the test process runs with stdio closed). */
static int fd_above_stdio(int *fd)
{
    int moved;

    if (*fd > 2)
        return 0;
    moved = fcntl(*fd, F_DUPFD_CLOEXEC, 3);
    if (moved < 0)
        goto fail;
    close(*fd);
    *fd = moved;
    return 0;
fail:
    return -1;
}

/* "K=V" entries of extra replace the same K of the environment; the array borrows the strings. */
static char **build_env(char *const extra[])
{
    size_t n_env = 0, n_extra = 0, k = 0;
    char **envp = NULL;

    while (environ != NULL && environ[n_env] != NULL)
        n_env++;
    while (extra != NULL && extra[n_extra] != NULL)
        n_extra++;
    envp = calloc(n_env + n_extra + 1, sizeof *envp);
    if (envp == NULL)
        goto fail;
    for (size_t i = 0; i < n_env; i++) {
        const char *eq = strchr(environ[i], '=');
        size_t keylen = eq != NULL ? (size_t)(eq - environ[i]) : strlen(environ[i]);
        int overridden = 0;
        for (size_t j = 0; j < n_extra; j++) {
            if (strncmp(extra[j], environ[i], keylen) == 0 && extra[j][keylen] == '=')
                overridden = 1;
        }
        if (!overridden)
            envp[k++] = environ[i];
    }
    for (size_t j = 0; j < n_extra; j++)
        envp[k++] = extra[j];
    envp[k] = NULL;
    return envp;
fail:
    return NULL;
}

/* Between fork and exec: only async-signal-safe calls, since other threads (MHD, curl) may have
 * held locks at the moment of the fork. Never returns. */
static void child_exec(char *const argv[], char *const envp[], int out_w, int err_fd, int report_w,
                       pid_t parent)
{
    sigset_t all;
    int err;

    /* Ignored signals and the mask survive exec; the daemon under test must see SIGTERM/SIGPIPE as
     * a normal process would, whatever the test harness did to its own. */
    sigemptyset(&all);
    sigprocmask(SIG_SETMASK, &all, NULL);
    for (int sig = 1; sig < NSIG; sig++) {
        if (sig != SIGKILL && sig != SIGSTOP)
            signal(sig, SIG_DFL);
    }
    if (prctl(PR_SET_PDEATHSIG, SIGKILL) != 0)
        goto fail;
    /* The parent may have died before prctl took effect; then nobody would ever kill us. */
    if (getppid() != parent)
        goto fail;
    if (dup2(out_w, STDOUT_FILENO) < 0)
        goto fail;
    if (err_fd >= 0 && dup2(err_fd, STDERR_FILENO) < 0)
        goto fail;
    execvpe(argv[0], argv, envp);
fail:
    err = errno;
    /* report_w is close-on-exec: the parent reads EOF on success, an errno on failure. */
    if (write(report_w, &err, sizeof err) < 0) {
    }
    _exit(127);
}

int proc_spawn(proc *p, char *const argv[], char *const extra_env[], const char *stderr_path)
{
    int out[2] = {-1, -1}, report[2] = {-1, -1}, err_fd = -1, child_errno = 0;
    char **envp = NULL;
    pid_t pid = -1, parent = getpid();
    ssize_t got;

    memset(p, 0, sizeof *p);
    p->exit_status = -1;
    if (argv == NULL || argv[0] == NULL)
        goto fail;
    envp = build_env(extra_env);
    if (envp == NULL)
        goto fail;
    if (pipe2(out, O_CLOEXEC) != 0 || pipe2(report, O_CLOEXEC) != 0)
        goto fail;
    if (stderr_path != NULL) {
        err_fd = open(stderr_path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
        if (err_fd < 0)
            goto fail;
    }
    if (fd_above_stdio(&out[1]) != 0 || fd_above_stdio(&report[1]) != 0)
        goto fail;
    if (err_fd >= 0 && fd_above_stdio(&err_fd) != 0)
        goto fail;
    pid = fork();
    if (pid < 0)
        goto fail;
    if (pid == 0)
        child_exec(argv, envp, out[1], err_fd, report[1], parent);

    close(report[1]);
    report[1] = -1;
    do {
        got = read(report[0], &child_errno, sizeof child_errno);
    } while (got < 0 && errno == EINTR);
    if (got != 0) {
        /* The exec failed: the child exits 127 right away; reap it so no zombie is left. */
        while (waitpid(pid, NULL, 0) < 0 && errno == EINTR) {
        }
        goto fail;
    }
    close(out[1]);
    close(report[0]);
    if (err_fd >= 0)
        close(err_fd);
    free(envp);
    p->pid = pid;
    p->out_fd = out[0];
    p->out_open = 1;
    return 0;
fail:
    for (int i = 0; i < 2; i++) {
        if (out[i] >= 0)
            close(out[i]);
        if (report[i] >= 0)
            close(report[i]);
    }
    if (err_fd >= 0)
        close(err_fd);
    free(envp);
    memset(p, 0, sizeof *p);
    p->exit_status = -1;
    if (child_errno != 0)
        errno = child_errno;
    return -1;
}

/* Delivers the first buffered line containing needle; consumed lines are dropped either way.
 * 1 delivered, 0 no complete matching line buffered. A full buffer without a newline counts as a
 * line, so that an endless line cannot wedge the reader. */
static int take_line(proc *p, const char *needle, char *line, size_t linecap)
{
    for (;;) {
        char *nl = memchr(p->buf, '\n', p->buf_len);
        size_t len, used;
        int match;

        if (nl == NULL && p->buf_len < sizeof p->buf)
            return 0;
        len = nl != NULL ? (size_t)(nl - p->buf) : p->buf_len;
        used = nl != NULL ? len + 1 : len;
        /* NUL-terminate a copy so that strstr cannot run past the line. */
        char tmp[PROC_BUF_BYTES + 1];
        memcpy(tmp, p->buf, len);
        tmp[len] = '\0';
        if (len > 0 && tmp[len - 1] == '\r')
            tmp[len - 1] = '\0';
        match = strstr(tmp, needle) != NULL;
        memmove(p->buf, p->buf + used, p->buf_len - used);
        p->buf_len -= used;
        if (match) {
            if (linecap > 0)
                snprintf(line, linecap, "%s", tmp);
            return 1;
        }
    }
}

int proc_wait_line(proc *p, const char *needle, char *line, size_t linecap, int timeout_ms)
{
    long long deadline = now_ms() + timeout_ms;

    if (linecap > 0)
        line[0] = '\0';
    if (!p->out_open)
        goto fail;
    for (;;) {
        struct pollfd pfd = {.fd = p->out_fd, .events = POLLIN};
        long long left;
        ssize_t got;
        int rc;

        if (take_line(p, needle, line, linecap))
            return 0;
        left = deadline - now_ms();
        if (left <= 0)
            goto fail;
        rc = poll(&pfd, 1, (int)left);
        if (rc < 0 && errno == EINTR)
            continue;
        if (rc <= 0)
            goto fail;
        got = read(p->out_fd, p->buf + p->buf_len, sizeof p->buf - p->buf_len);
        if (got < 0 && errno == EINTR)
            continue;
        if (got <= 0)
            goto fail; /* EOF: the child closed stdout (usually it exited) */
        p->buf_len += (size_t)got;
    }
fail:
    return -1;
}

int proc_port_from_line(const char *line)
{
    static const char key[] = "listening on ";
    const char *at, *end, *colon = NULL;
    char *stop = NULL;
    long port;

    if (line == NULL)
        goto fail;
    at = strstr(line, key);
    if (at == NULL)
        goto fail;
    at += sizeof key - 1;
    /* HOST:PORT ends at whitespace; the port follows the last ':' (so "[::1]:8080" works). */
    for (end = at; *end != '\0' && *end != ' ' && *end != '\t' && *end != '\r' && *end != '\n';
         end++) {
        if (*end == ':')
            colon = end;
    }
    if (colon == NULL || colon + 1 == end || colon[1] < '0' || colon[1] > '9')
        goto fail;
    errno = 0;
    port = strtol(colon + 1, &stop, 10);
    if (errno != 0 || stop != end || port < 1 || port > 65535)
        goto fail;
    return (int)port;
fail:
    return -1;
}

int proc_signal(proc *p, int sig)
{
    /* Never signal a reaped PID: the kernel may have given the number to another process. */
    if (p->pid <= 0 || p->reaped)
        goto fail;
    if (kill(p->pid, sig) != 0)
        goto fail;
    return 0;
fail:
    return -1;
}

static int decode_status(int wstatus)
{
    if (WIFEXITED(wstatus))
        return WEXITSTATUS(wstatus);
    if (WIFSIGNALED(wstatus))
        return 128 + WTERMSIG(wstatus);
    return -1;
}

int proc_wait_exit(proc *p, int timeout_ms, int *exit_status)
{
    long long deadline = now_ms() + timeout_ms;

    if (p->pid <= 0)
        goto fail;
    /* Polling waitpid(WNOHANG) keeps this independent of SIGCHLD handling in the test process. */
    while (!p->reaped) {
        int wstatus = 0;
        pid_t got = waitpid(p->pid, &wstatus, WNOHANG);

        if (got < 0 && errno == EINTR)
            continue;
        if (got < 0 && errno == ECHILD) {
            /* Someone else reaped it (SIGCHLD ignored?): gone, status unknown, never signal it. */
            p->reaped = 1;
            break;
        }
        if (got < 0)
            goto fail;
        if (got == p->pid) {
            p->reaped = 1;
            p->exit_status = decode_status(wstatus);
            break;
        }
        if (now_ms() >= deadline)
            goto fail;
        sleep_ms(PROC_POLL_STEP_MS);
    }
    if (exit_status != NULL)
        *exit_status = p->exit_status;
    return 0;
fail:
    return -1;
}

void proc_stop(proc *p)
{
    if (p->pid > 0 && !p->reaped) {
        if (proc_signal(p, SIGTERM) != 0 || proc_wait_exit(p, PROC_STOP_GRACE_MS, NULL) != 0) {
            proc_signal(p, SIGKILL);
            /* After SIGKILL only the kernel can delay the exit; waiting for it is always right. */
            while (!p->reaped && proc_wait_exit(p, 60000, NULL) != 0) {
            }
        }
    }
    if (p->out_open) {
        close(p->out_fd);
        p->out_open = 0;
    }
    p->buf_len = 0;
    if (p->journal[0] != '\0') { /* after the exit: the file is no longer held */
        static const char *const sfx[] = {"", "-wal", "-shm", ".lock"};
        char f[160];
        for (size_t i = 0; i < 4; i++) {
            snprintf(f, sizeof f, "%s%s", p->journal, sfx[i]);
            unlink(f);
        }
        p->journal[0] = '\0';
    }
}

/* Counts the entries of a /proc directory, skipping "." and ".." and, if skip_self_fd, the entry
 * of the directory handle itself (when counting our own fds). */
static int count_dir(const char *path, int skip_self_fd)
{
    DIR *d = opendir(path);
    struct dirent *e;
    int n = 0, self_fd;
    char self_name[16];

    if (d == NULL)
        goto fail;
    self_fd = skip_self_fd ? dirfd(d) : -1;
    snprintf(self_name, sizeof self_name, "%d", self_fd);
    errno = 0;
    for (e = readdir(d); e != NULL; e = readdir(d)) {
        if (e->d_name[0] == '.')
            continue;
        if (self_fd >= 0 && strcmp(e->d_name, self_name) == 0)
            continue;
        n++;
    }
    if (errno != 0) {
        closedir(d);
        goto fail;
    }
    closedir(d);
    return n;
fail:
    return -1;
}

int proc_thread_count(pid_t pid)
{
    char path[64];

    snprintf(path, sizeof path, "/proc/%ld/task", (long)pid);
    return count_dir(path, 0);
}

int proc_fd_count(pid_t pid)
{
    char path[64];

    snprintf(path, sizeof path, "/proc/%ld/fd", (long)pid);
    return count_dir(path, pid == getpid());
}

/* ---- the project's own programs ----------------------------------------------------------------
 */

#define PROC_MAX_ARGS 32

double proc_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

static const char *program(const char *env, const char *fallback)
{
    const char *b = getenv(env);
    return b != NULL ? b : fallback;
}

/* argv = fixed[] then extra[]; -1 when they do not fit. */
static int join_args(char *argv[], char *const fixed[], size_t nfixed, char *const extra[])
{
    size_t n = 0;
    for (size_t i = 0; i < nfixed; i++)
        argv[n++] = fixed[i];
    for (size_t i = 0; extra != NULL && extra[i] != NULL; i++) {
        if (n + 1 >= PROC_MAX_ARGS)
            return -1;
        argv[n++] = extra[i];
    }
    argv[n] = NULL;
    return 0;
}

int proc_start_upstreams(proc *p, char *const extra[], const char *stderr_path, int ports[3])
{
    static const char *const roles[] = {"address", "inventory", "payment"};
    char *fixed[] = {(char *)program("FAKE_UPSTREAMS_BIN", "build/release/fake-upstreams"),
                     "--address-port",
                     "0",
                     "--inventory-port",
                     "0",
                     "--payment-port",
                     "0"};
    char *argv[PROC_MAX_ARGS];
    char line[256], needle[64];
    if (join_args(argv, fixed, sizeof(fixed) / sizeof(fixed[0]), extra) != 0 ||
        proc_spawn(p, argv, NULL, stderr_path) != 0)
        return -1;
    for (int i = 0; i < 3; i++) {
        snprintf(needle, sizeof(needle), "%s listening on", roles[i]);
        if (proc_wait_line(p, needle, line, sizeof(line), 10000) != 0)
            return -1;
        ports[i] = proc_port_from_line(line);
        if (ports[i] < 0)
            return -1;
    }
    return 0;
}

int proc_start_checkoutd(proc *p, const char *config, char *const extra[], char *const extra_env[],
                         const char *stderr_path)
{
    char *fixed[] = {(char *)program("CHECKOUTD_BIN", "build/release/checkoutd"), "--config",
                     (char *)config};
    char *argv[PROC_MAX_ARGS];
    char line[256], journal[100] = "";
    char *env[PROC_MAX_ARGS];
    size_t n = 0;
    int own = 1;
    static atomic_int journals;
    for (; extra_env != NULL && extra_env[n] != NULL && n + 2 < PROC_MAX_ARGS; n++) {
        env[n] = extra_env[n];
        own &= strncmp(extra_env[n], "CHECKOUTD_JOURNAL_", 18) != 0;
    }
    if (own) {
        snprintf(journal, sizeof journal, "CHECKOUTD_JOURNAL_PATH=/tmp/checkoutd-test-%d-%d.db",
                 (int)getpid(), atomic_fetch_add(&journals, 1));
        env[n++] = journal;
    }
    env[n] = NULL;
    if (join_args(argv, fixed, sizeof(fixed) / sizeof(fixed[0]), extra) != 0 ||
        proc_spawn(p, argv, env, stderr_path) != 0)
        return -1;
    if (own)
        snprintf(p->journal, sizeof p->journal, "%s", journal + strlen("CHECKOUTD_JOURNAL_PATH="));
    if (proc_wait_line(p, "listening on", line, sizeof(line), 10000) != 0)
        return -1;
    return proc_port_from_line(line);
}
