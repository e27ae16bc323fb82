/* 1,000 concurrent checkouts against upstreams that each take 1 s: all succeed in about 1 s of wall
 * time (bound here: 30 s, against 1,000 s if checkouts were served one at a time, or 1000/threads
 * s — 250 s with its 4 threads — with a blocking thread per checkout; TSan on a loaded 2-core
 * machine took 11–16 s, over the former 10 s bound), and checkoutd's thread count does not change.
 * The numbers are printed for the record; speed itself is measured by `make bench`, not asserted.
 */
#include "support/proc.h"

#include <curl/curl.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#define CHECKOUTS 1000

static const char order[] =
    "{\"address\": {\"postal_code\": \"12345\", \"country\": \"US\"}, \"items\": [{\"sku\": "
    "\"SKU-1\", \"quantity\": 1}], \"payment\": {\"token\": \"tok_visa\", \"amount\": 100}}";

static size_t discard(char *data, size_t size, size_t nmemb, void *user)
{
    (void)data;
    (void)user;
    return size * nmemb;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static void test_thousand_concurrent_checkouts(void **state)
{
    (void)state;
    struct rlimit rl;
    getrlimit(RLIMIT_NOFILE, &rl);
    rl.rlim_cur = rl.rlim_max;
    setrlimit(RLIMIT_NOFILE, &rl);

    proc up = {0}, co = {0};
    int ports[3];
    char *slow[] = {"--latency-ms", "1000", NULL};
    assert_int_equal(proc_start_upstreams(&up, slow, NULL, ports), 0);

    char cfg_path[64], env_listen[] = "CHECKOUTD_LISTEN=127.0.0.1:0";
    snprintf(cfg_path, sizeof(cfg_path), "/tmp/checkoutd-conc-%d.json", (int)getpid());
    FILE *f = fopen(cfg_path, "w");
    assert_non_null(f);
    fprintf(f,
            "{\"deadline_ms\": 20000, \"validations\": ["
            "{\"name\": \"address\", \"field\": \"address\", \"url\": \"http://127.0.0.1:%d/a\", "
            "\"timeout_ms\": 15000},"
            "{\"name\": \"inventory\", \"field\": \"items\", \"url\": \"http://127.0.0.1:%d/i\", "
            "\"timeout_ms\": 15000},"
            "{\"name\": \"payment\", \"field\": \"payment\", \"url\": \"http://127.0.0.1:%d/p\", "
            "\"timeout_ms\": 15000}]}\n",
            ports[0], ports[1], ports[2]);
    fclose(f);
    char *co_env[] = {env_listen, NULL};
    int port = proc_start_checkoutd(&co, cfg_path, NULL, co_env, "/dev/null");
    assert_true(port > 0);
    int threads_before = proc_thread_count(co.pid);

    char url[64];
    snprintf(url, sizeof(url), "http://127.0.0.1:%d/checkout", port);
    struct curl_slist *headers = curl_slist_append(NULL, "Content-Type: application/json");
    curl_global_init(CURL_GLOBAL_DEFAULT);
    CURLM *multi = curl_multi_init();
    CURL *easy[CHECKOUTS];
    for (int i = 0; i < CHECKOUTS; i++) {
        easy[i] = curl_easy_init();
        curl_easy_setopt(easy[i], CURLOPT_URL, url);
        curl_easy_setopt(easy[i], CURLOPT_POSTFIELDS, order);
        curl_easy_setopt(easy[i], CURLOPT_HTTPHEADER, headers);
        curl_easy_setopt(easy[i], CURLOPT_WRITEFUNCTION, discard);
        curl_easy_setopt(easy[i], CURLOPT_TIMEOUT_MS, 30000L);
        curl_easy_setopt(easy[i], CURLOPT_NOSIGNAL, 1L);
        curl_multi_add_handle(multi, easy[i]);
    }
    double t0 = proc_now_ms();
    int running = 1, threads_max = threads_before;
    while (running > 0) {
        curl_multi_perform(multi, &running);
        if (running > 0)
            curl_multi_poll(multi, NULL, 0, 100, NULL);
        int t = proc_thread_count(co.pid);
        threads_max = t > threads_max ? t : threads_max;
    }
    double wall = proc_now_ms() - t0;

    int ok = 0;
    double lat[CHECKOUTS];
    for (int i = 0; i < CHECKOUTS; i++) {
        long status = 0;
        curl_easy_getinfo(easy[i], CURLINFO_RESPONSE_CODE, &status);
        curl_easy_getinfo(easy[i], CURLINFO_TOTAL_TIME, &lat[i]);
        ok += status == 200;
        curl_multi_remove_handle(multi, easy[i]);
        curl_easy_cleanup(easy[i]);
    }
    curl_multi_cleanup(multi);
    curl_slist_free_all(headers);
    qsort(lat, CHECKOUTS, sizeof(lat[0]), cmp_double);
    int threads_after = proc_thread_count(co.pid);
    printf("# %d concurrent checkouts, upstreams 1000 ms each: %d x 200 in %.0f ms wall; "
           "latency p50 %.0f ms, p99 %.0f ms, max %.0f ms; checkoutd threads %d before, %d max "
           "during, %d after\n",
           CHECKOUTS, ok, wall, lat[CHECKOUTS / 2] * 1e3, lat[CHECKOUTS * 99 / 100] * 1e3,
           lat[CHECKOUTS - 1] * 1e3, threads_before, threads_max, threads_after);

    proc_stop(&co);
    proc_stop(&up);
    unlink(cfg_path);
    assert_int_equal(ok, CHECKOUTS);
    assert_true(wall < 30000);
    assert_true(threads_before > 0); /* measured (-1: /proc unreadable would equal -1 below) */
    assert_int_equal(threads_max, threads_before);
    assert_int_equal(threads_after, threads_before);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_thousand_concurrent_checkouts),
    };
    return cmocka_run_group_tests_name("concurrency", tests, NULL, NULL);
}
