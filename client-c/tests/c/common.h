/* Helpers shared by the C test programs: checks that print where and why they failed and
 * exit non-zero. The programs include only shoal.h and the C standard library. */
#ifndef SHOAL_TEST_COMMON_H
#define SHOAL_TEST_COMMON_H

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "shoal.h"

/* The current client, whose last error a failed check prints (may be NULL). */
static shoal_client *check_client = NULL;

static inline void print_last_error(void) {
    char buf[512];
    size_t n = 0;
    if (check_client != NULL &&
        shoal_client_last_error(check_client, buf, sizeof buf, &n) == SHOAL_RESULT_OK) {
        fprintf(stderr, "  last error: %s\n", buf);
    }
}

#define CHECK(cond)                                                                   \
    do {                                                                              \
        if (!(cond)) {                                                                \
            fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, __LINE__, #cond); \
            print_last_error();                                                       \
            exit(1);                                                                  \
        }                                                                             \
    } while (0)

#define EXPECT(call, want)                                                              \
    do {                                                                                \
        shoal_result got_ = (call);                                                     \
        shoal_result want_ = (want);                                                    \
        if (got_ != want_) {                                                            \
            fprintf(stderr, "%s:%d: %s\n  returned %s (%u), expected %s (%u)\n",        \
                    __FILE__, __LINE__, #call, shoal_result_name(got_), (unsigned)got_, \
                    shoal_result_name(want_), (unsigned)want_);                         \
            print_last_error();                                                         \
            exit(1);                                                                    \
        }                                                                               \
    } while (0)

#define OK(call) EXPECT(call, SHOAL_RESULT_OK)

/* A string literal as (const uint8_t *, length) arguments, without its terminating NUL. */
#define LIT(s) ((const uint8_t *)(s)), (sizeof(s) - 1)

/* Milliseconds on a monotonic clock. */
static inline double now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1000.0 + (double)ts.tv_nsec / 1e6;
}

/* New options with `seeds`, the given deadline and short backoff. */
static inline shoal_options *test_options(const char *seeds, uint32_t deadline_ms) {
    shoal_options *opts = NULL;
    OK(shoal_options_new(&opts));
    OK(shoal_options_add_seed(opts, seeds));
    OK(shoal_options_set_connect_timeout_ms(opts, 200));
    OK(shoal_options_set_request_timeout_ms(opts, deadline_ms));
    OK(shoal_options_set_deadline_ms(opts, deadline_ms));
    OK(shoal_options_set_reconnect_backoff_ms(opts, 5, 100));
    return opts;
}

/* A new client for `seeds`. */
static inline shoal_client *test_client(const char *seeds, uint32_t deadline_ms) {
    shoal_options *opts = test_options(seeds, deadline_ms);
    shoal_client *client = NULL;
    OK(shoal_client_new(opts, &client));
    shoal_options_free(opts);
    CHECK(client != NULL);
    return client;
}

#endif
