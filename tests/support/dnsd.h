/* dnsd — a small DNS server for tests: UDP and TCP on 127.0.0.1, one free port for both, served
 * by a thread of its own in the test process.
 *
 * It answers A and AAAA questions from a table that the test changes at run time (dnsd_set);
 * every other type gets an empty answer, a name not in the table NXDOMAIN. Per name it can
 * instead delay its answers (others are answered meanwhile), drop the questions, answer SERVFAIL
 * or NXDOMAIN (dnsd_behave). It counts the questions per name. TTLs are 1 s. All functions are
 * thread-safe. */
#ifndef CHECKOUTD_TEST_DNSD_H
#define CHECKOUTD_TEST_DNSD_H

typedef struct dnsd dnsd;

typedef enum dnsd_mode {
    DNSD_ANSWER = 0, /* the table's addresses (after delay_ms) */
    DNSD_DROP,       /* no answer at all */
    DNSD_SERVFAIL,
    DNSD_NXDOMAIN,
} dnsd_mode;

/* Starts the server. NULL on failure. */
dnsd *dnsd_start(void);
int dnsd_port(const dnsd *d);
/* Stops the thread, closes the sockets, frees d. NULL is fine. */
void dnsd_stop(dnsd *d);
/* name's addresses: "127.0.0.2,127.0.0.3,::1" (IPv4 and IPv6 mixed; "" none). Case ignored. */
int dnsd_set(dnsd *d, const char *name, const char *addrs);
/* How questions for name are answered from now on; delay_ms applies to DNSD_ANSWER. */
void dnsd_behave(dnsd *d, const char *name, dnsd_mode mode, long delay_ms);
/* Questions seen for name (every type), since the start. */
unsigned dnsd_queries(dnsd *d, const char *name);

#endif
