/* Reads back, byte for byte, keys a Rust test wrote to a cluster: the C program is given the
 * seeds (any number, comma-separated; one is enough) and the key count, and changes nothing
 * else to use a cluster. Half of the keys are read one at a time, the other half with
 * shoal_client_get_many in batches that span every owner.
 *
 * Key i is "route-<i>"; its value is value_len(i) bytes, byte j = (i * 31 + j * 7) & 0xff
 * (NUL bytes included), flags i. tests/c_api.rs writes the same through shoal-client.
 * At the end, shoal_client_routing_stats must show at least one table fetched.
 *
 * usage: routing <seeds> <count> */
#include "common.h"

#define BATCH 100

static size_t value_len(uint32_t i) { return 1 + (size_t)(i * 7u) % 300; }

static uint8_t value_byte(uint32_t i, size_t j) { return (uint8_t)((i * 31u + (uint32_t)j * 7u) & 0xffu); }

static void check_value(uint32_t i, const shoal_value *v) {
    if (v == NULL) {
        fprintf(stderr, "route-%u: missing\n", (unsigned)i);
        exit(1);
    }
    size_t len = shoal_value_len(v);
    const uint8_t *data = shoal_value_data(v);
    if (len != value_len(i) || shoal_value_flags(v) != i) {
        fprintf(stderr, "route-%u: %zu bytes flags %u, expected %zu bytes flags %u\n", (unsigned)i,
                len, (unsigned)shoal_value_flags(v), value_len(i), (unsigned)i);
        exit(1);
    }
    for (size_t j = 0; j < len; j++) {
        if (data[j] != value_byte(i, j)) {
            fprintf(stderr, "route-%u: byte %zu differs\n", (unsigned)i, j);
            exit(1);
        }
    }
}

int main(int argc, char **argv) {
    if (argc != 3) {
        fprintf(stderr, "usage: %s <seeds> <count>\n", argv[0]);
        return 2;
    }
    uint32_t count = (uint32_t)strtoul(argv[2], NULL, 10);
    shoal_client *client = test_client(argv[1], 5000);
    check_client = client;

    char key[32];
    uint32_t half = count / 2;
    for (uint32_t i = 0; i < half; i++) {
        int n = snprintf(key, sizeof key, "route-%u", (unsigned)i);
        shoal_value *v = NULL;
        OK(shoal_client_get(client, (const uint8_t *)key, (size_t)n, &v));
        check_value(i, v);
        shoal_value_free(v);
    }

    char names[BATCH][32];
    const uint8_t *keys[BATCH];
    size_t lens[BATCH];
    shoal_value *values[BATCH];
    for (uint32_t start = half; start < count; start += BATCH) {
        uint32_t n = count - start < BATCH ? count - start : BATCH;
        for (uint32_t k = 0; k < n; k++) {
            lens[k] = (size_t)snprintf(names[k], sizeof names[k], "route-%u", (unsigned)(start + k));
            keys[k] = (const uint8_t *)names[k];
        }
        OK(shoal_client_get_many(client, keys, lens, n, values));
        for (uint32_t k = 0; k < n; k++) {
            check_value(start + k, values[k]);
            shoal_value_free(values[k]);
        }
    }

    /* The client fetched the cluster's table (the first calls may have been redirected). */
    uint64_t redirects = 0, fetches = 0;
    OK(shoal_client_routing_stats(client, &redirects, &fetches));
    CHECK(fetches >= 1);
    printf("routing: %llu redirects, %llu tables fetched\n", (unsigned long long)redirects,
           (unsigned long long)fetches);

    shoal_client_free(client);
    printf("routing: %u keys verified\n", (unsigned)count);
    return 0;
}
