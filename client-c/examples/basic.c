/* A small libshoal program: connect, store, read back, check-and-set, count, and handle the
 * results that matter (a miss, a conflict, a call whose fate is unknown).
 *
 * Build (from the repository root, after `cargo build --release -p shoal-client-c`):
 *   cc -I client-c/include client-c/examples/basic.c target/release/libshoal.a \
 *      -lpthread -ldl -lm -o basic
 * Run against a server:  ./basic 127.0.0.1:7400 */
#include <stdio.h>
#include <string.h>

#include "shoal.h"

/* Prints what went wrong: the result's name and the client's detail. */
static void report(shoal_client *client, const char *what, shoal_result r) {
    char detail[256] = "";
    size_t n = 0;
    if (client != NULL) {
        shoal_client_last_error(client, detail, sizeof detail, &n);
    }
    fprintf(stderr, "%s: %s (%s)\n", what, shoal_result_name(r), detail);
}

int main(int argc, char **argv) {
    const char *seeds = argc > 1 ? argv[1] : "127.0.0.1:7400";
    shoal_options *opts = NULL;
    shoal_client *client = NULL;
    shoal_result r;

    if (shoal_options_new(&opts) != SHOAL_RESULT_OK) return 1;
    if ((r = shoal_options_add_seed(opts, seeds)) != SHOAL_RESULT_OK) {
        report(NULL, "seed address", r);
        return 1;
    }
    shoal_options_set_deadline_ms(opts, 2000); /* every call returns within 2 s */
    r = shoal_client_new(opts, &client);
    shoal_options_free(opts); /* the client keeps a copy */
    if (r != SHOAL_RESULT_OK) {
        report(NULL, "create client", r);
        return 1;
    }
    if ((r = shoal_client_connect(client)) != SHOAL_RESULT_OK) {
        report(client, "connect", r);
        shoal_client_free(client);
        return 1;
    }

    /* Keys and values are bytes with a length: they may contain NUL. */
    const char *key = "greeting", *text = "hello, shoal";
    uint64_t hash = 0;
    r = shoal_client_set(client, (const uint8_t *)key, strlen(key), (const uint8_t *)text,
                         strlen(text), 60 /* ttl s */, 0 /* flags */, &hash);
    if (r != SHOAL_RESULT_OK) {
        report(client, "set", r);
        shoal_client_free(client);
        return 1;
    }

    shoal_value *value = NULL;
    r = shoal_client_get(client, (const uint8_t *)key, strlen(key), &value);
    if (r == SHOAL_RESULT_OK) {
        printf("%.*s\n", (int)shoal_value_len(value), (const char *)shoal_value_data(value));
        shoal_value_free(value); /* the caller owns values */
    } else if (r == SHOAL_RESULT_NOT_FOUND) {
        printf("miss\n");
    } else {
        report(client, "get", r);
    }

    /* Check-and-set with the hash of what we stored: fails with EXISTS if someone else wrote. */
    const char *update = "hello again";
    r = shoal_client_cas(client, (const uint8_t *)key, strlen(key), (const uint8_t *)update,
                         strlen(update), hash, 60, 0, NULL);
    if (r == SHOAL_RESULT_EXISTS) {
        printf("someone else changed %s first\n", key);
    } else if (r == SHOAL_RESULT_IN_DOUBT) {
        /* Sent, but the connection failed before the reply: it may or may not be applied.
         * The next call reconnects by itself. */
        printf("cas in doubt\n");
    } else if (r != SHOAL_RESULT_OK) {
        report(client, "cas", r);
    }

    uint64_t hits = 0;
    r = shoal_client_incr_or_create(client, (const uint8_t *)"hits", 4, 1, 1, 0, &hits);
    if (r == SHOAL_RESULT_OK) {
        printf("hits: %llu\n", (unsigned long long)hits);
    } else {
        report(client, "incr", r);
    }

    shoal_client_free(client); /* says GOODBYE, closes connections, stops its thread */
    return 0;
}
