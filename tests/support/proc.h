/* proc — start and stop child processes for integration tests (checkoutd, fake-upstreams).
 *
 * proc_spawn forks and execs argv (PATH searched) with the current environment plus extra_env;
 * the child's stdout is a pipe read only by proc_wait_line (a child that writes more than a pipe's
 * worth, 64 KiB, that nobody reads will block), its stderr is appended to a file or inherited. The
 * child gets SIGKILL if the thread that spawned it dies (PR_SET_PDEATHSIG), so a crashed test
 * leaves no daemons behind. Only the PID we started is ever signalled or reaped; grandchildren
 * are not tracked, so wrap shell commands as `sh -c '...; exec prog'`.
 * A zeroed proc ({0}) is "not started": proc_stop on it is a no-op.
 * Not thread-safe per proc; distinct procs may be used from distinct threads. */
#ifndef CHECKOUTD_TEST_PROC_H
#define CHECKOUTD_TEST_PROC_H

#include <stddef.h>
#include <sys/types.h>

#define PROC_BUF_BYTES 8192 /* longest stdout line delivered whole; longer ones come in pieces */

typedef struct proc {
    pid_t pid;         /* 0 when not started */
    int out_fd;        /* read end of the child's stdout; valid only while out_open */
    int out_open;      /* 1 while out_fd is ours to read and close */
    int reaped;        /* 1 once waitpid collected the child; pid is then never signalled again */
    int exit_status;   /* after reaping: exit code, or 128 + signal number; -1 before */
    size_t buf_len;    /* stdout bytes read but not yet returned by proc_wait_line */
    char journal[128]; /* proc_start_checkoutd's own journal file (removed by proc_stop), or "" */
    char buf[PROC_BUF_BYTES];
} proc;

/* Starts argv[0] (argv NULL-terminated). extra_env: NULL or NULL-terminated "K=V" entries that add
 * to or replace the current environment. stderr_path: NULL inherits our stderr, else the file is
 * created if needed and appended to. 0 on success (the exec succeeded), -1 with p left "not
 * started" and errno set (ENOENT: no such program). Overwrites p: stop a previous child first. */
int proc_spawn(proc *p, char *const argv[], char *const extra_env[], const char *stderr_path);

/* Reads stdout lines until one contains needle ("" matches any line); copies it, without the
 * newline, NUL-terminated and truncated to linecap, into line. Bytes after that line stay buffered
 * for the next call. 0 found, -1 on timeout, EOF or error. */
int proc_wait_line(proc *p, const char *needle, char *line, size_t linecap, int timeout_ms);

/* The port of "... listening on HOST:PORT" (HOST may be [v6]), 1..65535, or -1. */
int proc_port_from_line(const char *line);

/* kill(pid, sig) while the child is not yet reaped. 0 / -1. */
int proc_signal(proc *p, int sig);

/* Waits up to timeout_ms for the child to exit and reaps it; *exit_status (may be NULL) gets the
 * exit code or 128 + signal. 0, or -1 on timeout (the child keeps running) or error. */
int proc_wait_exit(proc *p, int timeout_ms, int *exit_status);

/* SIGTERM, up to 5 s grace, then SIGKILL; reaps, closes the pipe. p->exit_status tells how it
 * ended. Idempotent; safe on a "not started" proc. */
void proc_stop(proc *p);

/* Entries in /proc/PID/task (threads), or -1. */
int proc_thread_count(pid_t pid);

/* Open file descriptors of PID (for ourselves, not counting the one used to count), or -1. */
int proc_fd_count(pid_t pid);

/* ---- the project's own programs, as every integration test starts them ---------------------- */

/* Monotonic milliseconds, for time bounds in tests. */
double proc_now_ms(void);

/* Starts fake-upstreams ($FAKE_UPSTREAMS_BIN, else build/release/fake-upstreams) with its three
 * roles on free ports, plus extra arguments (NULL-terminated, or NULL); ports gets the address,
 * inventory and payment ports from its "<role> listening on" lines. 0, or -1. */
int proc_start_upstreams(proc *p, char *const extra[], const char *stderr_path, int ports[3]);

/* Starts checkoutd ($CHECKOUTD_BIN, else build/release/checkoutd) with --config config plus extra
 * arguments (or NULL) and extra_env (or NULL). Returns the port from its "listening on" line, or
 * -1. */
/* (v1.3) Unless extra_env sets a CHECKOUTD_JOURNAL_* variable, the daemon gets a journal file of
 * its own (CHECKOUTD_JOURNAL_PATH=/tmp/checkoutd-test-<pid>-<n>.db, removed by proc_stop), so
 * that a config with compensate never writes /var/lib and no test recovers another's records. */
int proc_start_checkoutd(proc *p, const char *config, char *const extra[], char *const extra_env[],
                         const char *stderr_path);

#endif
