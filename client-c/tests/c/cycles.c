/* Many connect / fail / reconnect cycles, for the memory checkers (valgrind, ASan): each cycle
 * creates a client whose first seed refuses connections, so its first call fails to connect
 * there and connects to the live seed; then it says GOODBYE and the next call reconnects; then
 * the client is freed. Every 100th cycle also makes a call to a server that is not there and
 * reads the error detail.
 *
 * Usage: cycles <live host:port> <dead host:port> <cycles>. Exits 0 when every check passed. */
#include "common.h"

int main(int argc, char **argv) {
    if (argc != 4) {
        fprintf(stderr, "usage: %s <live host:port> <dead host:port> <cycles>\n", argv[0]);
        return 2;
    }
    const char *live = argv[1], *dead = argv[2];
    long cycles = atol(argv[3]);
    char seeds[256];
    snprintf(seeds, sizeof seeds, "%s,%s", dead, live);
    char detail[256];
    size_t n = 0;
    for (long i = 0; i < cycles; i++) {
        shoal_options *opts = test_options(seeds, 5000);
        OK(shoal_options_set_reconnect_backoff_ms(opts, 1, 5));
        shoal_client *c = NULL;
        OK(shoal_client_new(opts, &c));
        shoal_options_free(opts);
        check_client = c;

        char key[32];
        int klen = snprintf(key, sizeof key, "cycle-%ld", i % 100);
        OK(shoal_client_set(c, (const uint8_t *)key, (size_t)klen, LIT("value"), 0, 0, NULL));
        OK(shoal_client_close(c));
        shoal_value *v = NULL;
        OK(shoal_client_get(c, (const uint8_t *)key, (size_t)klen, &v));
        CHECK(shoal_value_len(v) == 5);
        shoal_value_free(v);
        EXPECT(shoal_client_get(c, LIT("never-set"), &v), SHOAL_RESULT_NOT_FOUND);
        OK(shoal_client_last_error(c, detail, sizeof detail, &n));

        if (i % 100 == 0) {
            shoal_client *gone = test_client(dead, 20);
            shoal_result r = shoal_client_get(gone, LIT("k"), &v);
            CHECK(r == SHOAL_RESULT_CONNECTION || r == SHOAL_RESULT_TIMEOUT);
            OK(shoal_client_last_error(gone, detail, sizeof detail, &n));
            CHECK(n > 0);
            shoal_client_free(gone);
        }
        shoal_client_free(c);
        check_client = NULL;
        if ((i + 1) % 1000 == 0) {
            printf("cycles: %ld done\n", i + 1);
            fflush(stdout);
        }
    }
    printf("cycles: all %ld cycles passed\n", cycles);
    return 0;
}
