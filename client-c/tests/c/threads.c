/* One client shared by several threads: calls run at the same time on the same handle and
 * every one succeeds with its own result (no reply reaches the wrong caller).
 *
 * Usage: threads <host:port>. Exits 0 when every check passed. */
#include "common.h"

#include <pthread.h>

enum { THREADS = 8, OPS = 500 };

static shoal_client *shared;

static void *worker(void *arg) {
    int t = (int)(intptr_t)arg;
    char key[32], value[64];
    for (int i = 0; i < OPS; i++) {
        int klen = snprintf(key, sizeof key, "t%d-%d", t, i % 10);
        int vlen = snprintf(value, sizeof value, "value of thread %d op %d", t, i);
        OK(shoal_client_set(shared, (const uint8_t *)key, (size_t)klen, (const uint8_t *)value,
                            (size_t)vlen, 0, (uint32_t)t, NULL));
        shoal_value *v = NULL;
        OK(shoal_client_get(shared, (const uint8_t *)key, (size_t)klen, &v));
        CHECK(shoal_value_len(v) == (size_t)vlen);
        CHECK(memcmp(shoal_value_data(v), value, (size_t)vlen) == 0);
        CHECK(shoal_value_flags(v) == (uint32_t)t);
        shoal_value_free(v);
        uint64_t n = 0;
        OK(shoal_client_incr_or_create(shared, LIT("shared-counter"), 1, 1, 0, &n));
    }
    return NULL;
}

int main(int argc, char **argv) {
    if (argc != 2) {
        fprintf(stderr, "usage: %s <host:port>\n", argv[0]);
        return 2;
    }
    shared = test_client(argv[1], 10000);
    check_client = shared;
    (void)shoal_client_delete(shared, LIT("shared-counter")); /* OK or NOT_FOUND */
    pthread_t threads[THREADS];
    for (int t = 0; t < THREADS; t++) {
        CHECK(pthread_create(&threads[t], NULL, worker, (void *)(intptr_t)t) == 0);
    }
    for (int t = 0; t < THREADS; t++) {
        CHECK(pthread_join(threads[t], NULL) == 0);
    }
    uint64_t total = 0;
    OK(shoal_client_incr(shared, LIT("shared-counter"), 0, &total));
    /* Created at 1 by the first call, +1 by each of the others. */
    CHECK(total == (uint64_t)THREADS * OPS);
    shoal_client_free(shared);
    printf("threads: all checks passed\n");
    return 0;
}
