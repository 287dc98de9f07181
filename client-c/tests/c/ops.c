/* Every operation of libshoal against a real shoald: results, outputs written only on
 * success, binary keys and values (NUL bytes), empty and maximum-size values, the size limits,
 * NULL arguments, _free(NULL), result descriptions and the last-error detail.
 *
 * Usage: ops <host:port>. Exits 0 when every check passed. */
#include "common.h"

#include <unistd.h>

/* A pointer value that no call may write; checks that outputs are untouched on failure. */
#define SENTINEL ((shoal_value *)(uintptr_t)0x5a5a5a5a)

static void check_value(shoal_value *v, const uint8_t *data, size_t len, uint32_t flags) {
    CHECK(v != NULL);
    CHECK(shoal_value_len(v) == len);
    CHECK(shoal_value_data(v) != NULL);
    if (len > 0) {
        CHECK(memcmp(shoal_value_data(v), data, len) == 0);
    }
    CHECK(shoal_value_flags(v) == flags);
}

static void test_versions_and_results(void) {
    char expected[64];
    snprintf(expected, sizeof expected, "%d.%d.%d", SHOAL_VERSION_MAJOR, SHOAL_VERSION_MINOR,
             SHOAL_VERSION_PATCH);
    CHECK(strcmp(shoal_version(), expected) == 0);
    CHECK(strcmp(SHOAL_VERSION, expected) == 0);

    /* Stable numbers. */
    CHECK(SHOAL_RESULT_OK == 0);
    CHECK(SHOAL_RESULT_NOT_FOUND == 1);
    CHECK(SHOAL_RESULT_IN_DOUBT == 7);
    CHECK(SHOAL_RESULT_NULL_PARAMETER == 100);
    CHECK(SHOAL_RESULT_PANIC == 101);

    CHECK(strcmp(shoal_result_name(SHOAL_RESULT_IN_DOUBT), "SHOAL_RESULT_IN_DOUBT") == 0);
    CHECK(strcmp(shoal_result_name(424242), "SHOAL_RESULT_UNKNOWN") == 0);

    char buf[128];
    size_t n = 12345;
    OK(shoal_result_message(SHOAL_RESULT_IN_DOUBT, buf, sizeof buf, &n));
    CHECK(n == strlen(buf) && n > 0);
    CHECK(strstr(buf, "in doubt") != NULL);
    OK(shoal_result_message(999, buf, sizeof buf, &n));
    CHECK(strcmp(buf, "unknown result code") == 0);

    /* Cut to fit, always NUL-terminated. */
    char small[5];
    OK(shoal_result_message(SHOAL_RESULT_CONNECTION, small, sizeof small, &n));
    CHECK(n == 4 && small[4] == '\0');

    /* Nothing written on error. */
    n = 777;
    EXPECT(shoal_result_message(SHOAL_RESULT_OK, buf, 0, &n), SHOAL_RESULT_INVALID_ARGUMENT);
    EXPECT(shoal_result_message(SHOAL_RESULT_OK, NULL, 10, &n), SHOAL_RESULT_NULL_PARAMETER);
    EXPECT(shoal_result_message(SHOAL_RESULT_OK, buf, sizeof buf, NULL),
           SHOAL_RESULT_NULL_PARAMETER);
    CHECK(n == 777);
}

static void test_option_setters(void) {
    shoal_options *opts = NULL;
    EXPECT(shoal_options_new(NULL), SHOAL_RESULT_NULL_PARAMETER);
    OK(shoal_options_new(&opts));
    CHECK(opts != NULL);

    /* No seed yet: a client cannot be made. */
    shoal_client *client = NULL;
    EXPECT(shoal_client_new(opts, &client), SHOAL_RESULT_INVALID_ARGUMENT);
    CHECK(client == NULL);

    EXPECT(shoal_options_add_seed(opts, NULL), SHOAL_RESULT_NULL_PARAMETER);
    EXPECT(shoal_options_add_seed(NULL, "a:1"), SHOAL_RESULT_NULL_PARAMETER);
    EXPECT(shoal_options_add_seed(opts, ""), SHOAL_RESULT_INVALID_ARGUMENT);
    EXPECT(shoal_options_add_seed(opts, "no-port"), SHOAL_RESULT_INVALID_ARGUMENT);
    EXPECT(shoal_options_add_seed(opts, "a:1,,b:2"), SHOAL_RESULT_INVALID_ARGUMENT);
    EXPECT(shoal_options_add_seed(opts, "\xff\xfe:1"), SHOAL_RESULT_INVALID_ARGUMENT);
    EXPECT(shoal_options_set_connect_timeout_ms(opts, 0), SHOAL_RESULT_INVALID_ARGUMENT);
    EXPECT(shoal_options_set_request_timeout_ms(opts, 0), SHOAL_RESULT_INVALID_ARGUMENT);
    EXPECT(shoal_options_set_deadline_ms(opts, 0), SHOAL_RESULT_INVALID_ARGUMENT);
    EXPECT(shoal_options_set_keepalive_ms(opts, 0), SHOAL_RESULT_INVALID_ARGUMENT);
    EXPECT(shoal_options_set_reconnect_backoff_ms(opts, 0, 10), SHOAL_RESULT_INVALID_ARGUMENT);
    EXPECT(shoal_options_set_reconnect_backoff_ms(opts, 20, 10), SHOAL_RESULT_INVALID_ARGUMENT);
    EXPECT(shoal_options_set_client_name(opts, NULL), SHOAL_RESULT_NULL_PARAMETER);
    EXPECT(shoal_options_set_connect_timeout_ms(NULL, 5), SHOAL_RESULT_NULL_PARAMETER);
    EXPECT(shoal_options_set_request_timeout_ms(NULL, 5), SHOAL_RESULT_NULL_PARAMETER);
    EXPECT(shoal_options_set_deadline_ms(NULL, 5), SHOAL_RESULT_NULL_PARAMETER);
    EXPECT(shoal_options_set_keepalive_ms(NULL, 5), SHOAL_RESULT_NULL_PARAMETER);
    EXPECT(shoal_options_set_reconnect_backoff_ms(NULL, 1, 5), SHOAL_RESULT_NULL_PARAMETER);
    EXPECT(shoal_options_set_max_value_size(NULL, 5), SHOAL_RESULT_NULL_PARAMETER);
    EXPECT(shoal_options_set_client_name(NULL, "x"), SHOAL_RESULT_NULL_PARAMETER);
    EXPECT(shoal_options_set_connections_per_server(opts, 0), SHOAL_RESULT_INVALID_ARGUMENT);
    EXPECT(shoal_options_set_connections_per_server(NULL, 1), SHOAL_RESULT_NULL_PARAMETER);
    OK(shoal_options_set_connections_per_server(opts, 2));
    OK(shoal_options_set_client_name(opts, "c-test"));
    OK(shoal_options_set_keepalive_ms(opts, 1000));
    OK(shoal_options_add_seed(opts, "127.0.0.1:1, localhost:2"));

    EXPECT(shoal_client_new(NULL, &client), SHOAL_RESULT_NULL_PARAMETER);
    EXPECT(shoal_client_new(opts, NULL), SHOAL_RESULT_NULL_PARAMETER);
    OK(shoal_client_new(opts, &client));
    CHECK(client != NULL);
    shoal_options_free(opts); /* the client keeps its own copy */
    shoal_client_free(client);
}

static void test_reads_and_writes(shoal_client *c) {
    uint64_t hash = 0, hash2 = 0;
    shoal_value *v = NULL;

    OK(shoal_client_connect(c));
    OK(shoal_client_ping(c));

    /* Routing counters: written on OK, each out-pointer optional; one node never redirects. */
    uint64_t redirects = UINT64_MAX, fetches = UINT64_MAX;
    EXPECT(shoal_client_routing_stats(NULL, &redirects, &fetches), SHOAL_RESULT_NULL_PARAMETER);
    CHECK(redirects == UINT64_MAX && fetches == UINT64_MAX);
    OK(shoal_client_routing_stats(c, NULL, NULL));
    OK(shoal_client_routing_stats(c, &redirects, &fetches));
    CHECK(redirects == 0 && fetches != UINT64_MAX);

    /* set / get, flags, hash. */
    OK(shoal_client_set(c, LIT("greeting"), LIT("hello"), 0, 42, &hash));
    CHECK(hash != 0);
    OK(shoal_client_get(c, LIT("greeting"), &v));
    check_value(v, (const uint8_t *)"hello", 5, 42);
    CHECK(shoal_value_hash(v) == hash);
    shoal_value_free(v);
    OK(shoal_client_set(c, LIT("greeting"), LIT("hello"), 0, 42, NULL)); /* hash optional */

    /* Miss: NOT_FOUND, output untouched. */
    v = SENTINEL;
    EXPECT(shoal_client_get(c, LIT("missing"), &v), SHOAL_RESULT_NOT_FOUND);
    CHECK(v == SENTINEL);
    char detail[256];
    size_t n = 0;
    OK(shoal_client_last_error(c, detail, sizeof detail, &n));
    CHECK(n > 0 && strstr(detail, "not found") != NULL);

    /* Binary key and value: every byte value, NUL included. */
    uint8_t key[40], value[256];
    for (size_t i = 0; i < sizeof key; i++) key[i] = (uint8_t)(i * 7); /* key[0] == 0 */
    for (size_t i = 0; i < sizeof value; i++) value[i] = (uint8_t)i;
    OK(shoal_client_set(c, key, sizeof key, value, sizeof value, 0, 7, NULL));
    OK(shoal_client_get(c, key, sizeof key, &v));
    check_value(v, value, sizeof value, 7);
    shoal_value_free(v);
    /* A key that differs only after a NUL is another key. */
    key[39] ^= 1;
    EXPECT(shoal_client_get(c, key, sizeof key, &v), SHOAL_RESULT_NOT_FOUND);
    key[39] ^= 1;

    /* Empty values, as (NULL, 0) and (ptr, 0). */
    OK(shoal_client_set(c, LIT("empty1"), NULL, 0, 0, 1, NULL));
    OK(shoal_client_set(c, LIT("empty2"), value, 0, 0, 2, NULL));
    OK(shoal_client_get(c, LIT("empty1"), &v));
    check_value(v, NULL, 0, 1);
    shoal_value_free(v);
    OK(shoal_client_get(c, LIT("empty2"), &v));
    check_value(v, NULL, 0, 2);
    shoal_value_free(v);

    /* The largest value, and one byte more (refused before sending). */
    size_t max = SHOAL_DEFAULT_MAX_VALUE_SIZE;
    uint8_t *big = malloc(max + 1);
    CHECK(big != NULL);
    for (size_t i = 0; i < max + 1; i++) big[i] = (uint8_t)(i * 31 + (i >> 8));
    OK(shoal_client_set(c, LIT("big"), big, max, 0, 9, NULL));
    OK(shoal_client_get(c, LIT("big"), &v));
    check_value(v, big, max, 9);
    shoal_value_free(v);
    EXPECT(shoal_client_set(c, LIT("big"), big, max + 1, 0, 9, NULL), SHOAL_RESULT_TOO_LARGE);
    free(big);

    /* Key limits: 250 bytes fit, 251 do not, empty is invalid. */
    uint8_t long_key[251];
    memset(long_key, 'k', sizeof long_key);
    OK(shoal_client_set(c, long_key, 250, LIT("x"), 0, 0, NULL));
    EXPECT(shoal_client_set(c, long_key, 251, LIT("x"), 0, 0, NULL), SHOAL_RESULT_TOO_LARGE);
    EXPECT(shoal_client_get(c, long_key, 251, &v), SHOAL_RESULT_TOO_LARGE);
    EXPECT(shoal_client_set(c, long_key, 0, LIT("x"), 0, 0, NULL), SHOAL_RESULT_INVALID_ARGUMENT);

    /* add / replace. */
    EXPECT(shoal_client_add(c, LIT("greeting"), LIT("again"), 0, 0, NULL), SHOAL_RESULT_NOT_STORED);
    OK(shoal_client_add(c, LIT("fresh"), LIT("new"), 0, 3, &hash));
    CHECK(hash != 0);
    EXPECT(shoal_client_replace(c, LIT("nobody"), LIT("x"), 0, 0, NULL), SHOAL_RESULT_NOT_STORED);
    OK(shoal_client_replace(c, LIT("fresh"), LIT("newer"), 0, 4, NULL));
    OK(shoal_client_get(c, LIT("fresh"), &v));
    check_value(v, (const uint8_t *)"newer", 5, 4);
    hash = shoal_value_hash(v);
    shoal_value_free(v);

    /* check-and-set. */
    hash2 = 0;
    OK(shoal_client_cas(c, LIT("fresh"), LIT("cas1"), hash, 0, 5, &hash2));
    CHECK(hash2 != 0 && hash2 != hash);
    uint64_t untouched = 99;
    EXPECT(shoal_client_cas(c, LIT("fresh"), LIT("cas2"), hash, 0, 5, &untouched),
           SHOAL_RESULT_EXISTS);
    CHECK(untouched == 99);
    EXPECT(shoal_client_cas(c, LIT("nobody"), LIT("x"), hash, 0, 0, NULL), SHOAL_RESULT_NOT_FOUND);

    /* append / prepend. */
    OK(shoal_client_set(c, LIT("text"), LIT("mid"), 0, 6, NULL));
    OK(shoal_client_append(c, LIT("text"), LIT("\0end"), &hash));
    OK(shoal_client_prepend(c, LIT("text"), LIT("start-"), NULL));
    OK(shoal_client_get(c, LIT("text"), &v));
    check_value(v, (const uint8_t *)"start-mid\0end", 13, 6);
    shoal_value_free(v);
    EXPECT(shoal_client_append(c, LIT("nobody"), LIT("x"), NULL), SHOAL_RESULT_NOT_STORED);
    EXPECT(shoal_client_prepend(c, LIT("nobody"), LIT("x"), NULL), SHOAL_RESULT_NOT_STORED);

    /* delete, delete-if-hash. */
    OK(shoal_client_delete(c, LIT("text")));
    EXPECT(shoal_client_delete(c, LIT("text")), SHOAL_RESULT_NOT_FOUND);
    OK(shoal_client_set(c, LIT("cond"), LIT("v1"), 0, 0, &hash));
    EXPECT(shoal_client_delete_if(c, LIT("cond"), hash + 1), SHOAL_RESULT_EXISTS);
    OK(shoal_client_delete_if(c, LIT("cond"), hash));
    EXPECT(shoal_client_delete_if(c, LIT("cond"), hash), SHOAL_RESULT_NOT_FOUND);

    /* touch, get-and-touch, expiry. */
    OK(shoal_client_set(c, LIT("ttl"), LIT("soon"), 0, 0, NULL));
    OK(shoal_client_touch(c, LIT("ttl"), 1));
    EXPECT(shoal_client_touch(c, LIT("nobody"), 1), SHOAL_RESULT_NOT_FOUND);
    OK(shoal_client_set(c, LIT("ttl2"), LIT("later"), 0, 0, NULL));
    OK(shoal_client_get_and_touch(c, LIT("ttl2"), 1, &v));
    check_value(v, (const uint8_t *)"later", 5, 0);
    shoal_value_free(v);
    EXPECT(shoal_client_get_and_touch(c, LIT("nobody"), 1, &v), SHOAL_RESULT_NOT_FOUND);
    OK(shoal_client_set(c, LIT("ttl3"), LIT("short"), 1, 0, NULL));
    usleep(2100 * 1000);
    EXPECT(shoal_client_get(c, LIT("ttl"), &v), SHOAL_RESULT_NOT_FOUND);
    EXPECT(shoal_client_get(c, LIT("ttl2"), &v), SHOAL_RESULT_NOT_FOUND);
    EXPECT(shoal_client_get(c, LIT("ttl3"), &v), SHOAL_RESULT_NOT_FOUND);

    /* Counters. */
    uint64_t counter = 12345;
    EXPECT(shoal_client_incr(c, LIT("hits"), 1, &counter), SHOAL_RESULT_NOT_FOUND);
    EXPECT(shoal_client_decr(c, LIT("hits"), 1, &counter), SHOAL_RESULT_NOT_FOUND);
    CHECK(counter == 12345);
    OK(shoal_client_incr_or_create(c, LIT("hits"), 5, 100, 0, &counter));
    CHECK(counter == 100); /* created holding `initial`, delta not applied */
    OK(shoal_client_incr(c, LIT("hits"), 5, &counter));
    CHECK(counter == 105);
    OK(shoal_client_decr(c, LIT("hits"), 1000, &counter));
    CHECK(counter == 0); /* stops at 0 */
    OK(shoal_client_incr(c, LIT("hits"), 1, NULL)); /* result optional */
    OK(shoal_client_decr_or_create(c, LIT("down"), 1, 10, 0, &counter));
    CHECK(counter == 10);
    OK(shoal_client_decr_or_create(c, LIT("down"), 3, 10, 0, &counter));
    CHECK(counter == 7);
    OK(shoal_client_set(c, LIT("hits"), LIT("18446744073709551615"), 0, 0, NULL));
    OK(shoal_client_incr(c, LIT("hits"), 2, &counter));
    CHECK(counter == 1); /* wraps at 2^64 */
    OK(shoal_client_set(c, LIT("word"), LIT("abc"), 0, 0, NULL));
    EXPECT(shoal_client_incr(c, LIT("word"), 1, &counter), SHOAL_RESULT_NON_NUMERIC);
    EXPECT(shoal_client_decr(c, LIT("word"), 1, &counter), SHOAL_RESULT_NON_NUMERIC);
}

static void test_get_many(shoal_client *c) {
    OK(shoal_client_set(c, LIT("m1"), LIT("one"), 0, 1, NULL));
    OK(shoal_client_set(c, LIT("m\0003"), LIT("th\0ree"), 0, 3, NULL));
    const uint8_t *keys[4] = {(const uint8_t *)"m1", (const uint8_t *)"m2",
                              (const uint8_t *)"m\0003", (const uint8_t *)"m1"};
    size_t lens[4] = {2, 2, 3, 2};
    shoal_value *out[4] = {SENTINEL, SENTINEL, SENTINEL, SENTINEL};
    OK(shoal_client_get_many(c, keys, lens, 4, out));
    check_value(out[0], (const uint8_t *)"one", 3, 1);
    CHECK(out[1] == NULL);
    check_value(out[2], (const uint8_t *)"th\0ree", 6, 3);
    check_value(out[3], (const uint8_t *)"one", 3, 1);
    for (int i = 0; i < 4; i++) shoal_value_free(out[i]);

    /* Nothing written on error. */
    out[0] = out[1] = SENTINEL;
    const uint8_t *with_null[2] = {(const uint8_t *)"m1", NULL};
    EXPECT(shoal_client_get_many(c, with_null, lens, 2, out), SHOAL_RESULT_NULL_PARAMETER);
    CHECK(out[0] == SENTINEL && out[1] == SENTINEL);
    size_t bad_lens[2] = {2, 0};
    const uint8_t *empty_key[2] = {(const uint8_t *)"m1", (const uint8_t *)""};
    EXPECT(shoal_client_get_many(c, empty_key, bad_lens, 2, out), SHOAL_RESULT_INVALID_ARGUMENT);
    CHECK(out[0] == SENTINEL);
    EXPECT(shoal_client_get_many(c, NULL, lens, 1, out), SHOAL_RESULT_NULL_PARAMETER);
    EXPECT(shoal_client_get_many(c, keys, NULL, 1, out), SHOAL_RESULT_NULL_PARAMETER);
    EXPECT(shoal_client_get_many(c, keys, lens, 1, NULL), SHOAL_RESULT_NULL_PARAMETER);
    OK(shoal_client_get_many(c, keys, lens, 0, out));
    CHECK(out[0] == SENTINEL);

    /* A large batch (split into several requests inside the client). */
    enum { N = 2500 };
    static char names[N][16];
    static const uint8_t *many[N];
    static size_t many_lens[N];
    static shoal_value *many_out[N];
    for (int i = 0; i < N; i++) {
        int len = snprintf(names[i], sizeof names[i], "batch-%d", i);
        many[i] = (const uint8_t *)names[i];
        many_lens[i] = (size_t)len;
        if (i % 2 == 0) {
            OK(shoal_client_set(c, many[i], many_lens[i], many[i], many_lens[i], 0, (uint32_t)i,
                                NULL));
        }
    }
    OK(shoal_client_get_many(c, many, many_lens, N, many_out));
    for (int i = 0; i < N; i++) {
        if (i % 2 == 0) {
            check_value(many_out[i], many[i], many_lens[i], (uint32_t)i);
        } else {
            CHECK(many_out[i] == NULL);
        }
        shoal_value_free(many_out[i]);
    }
}

static void test_stats(shoal_client *c) {
    shoal_stats *stats = NULL;
    OK(shoal_client_stats(c, NULL, &stats));
    size_t count = shoal_stats_count(stats);
    CHECK(count > 0);
    for (size_t i = 0; i < count; i++) {
        CHECK(shoal_stats_name(stats, i) != NULL);
        CHECK(shoal_stats_value(stats, i) != NULL);
    }
    CHECK(shoal_stats_name(stats, count) == NULL);
    CHECK(shoal_stats_value(stats, count) == NULL);
    const char *first = shoal_stats_name(stats, 0);
    CHECK(shoal_stats_find(stats, first) == shoal_stats_value(stats, 0));
    CHECK(shoal_stats_find(stats, "no such counter") == NULL);
    CHECK(shoal_stats_find(stats, NULL) == NULL);
    shoal_stats_free(stats);
    stats = NULL;
    OK(shoal_client_stats(c, "", &stats));
    shoal_stats_free(stats);
    EXPECT(shoal_client_stats(c, NULL, NULL), SHOAL_RESULT_NULL_PARAMETER);
    EXPECT(shoal_client_stats(c, "\xff", &stats), SHOAL_RESULT_INVALID_ARGUMENT);
}

/* Every function given NULL where a pointer is required. */
static void test_null_arguments(shoal_client *c) {
    shoal_value *v = SENTINEL;
    uint64_t u = 0;
    char buf[8];
    size_t n = 0;
    const shoal_result NP = SHOAL_RESULT_NULL_PARAMETER;
    shoal_stats *stats = NULL;
    const uint8_t *keys[1] = {(const uint8_t *)"k"};
    size_t lens[1] = {1};

    EXPECT(shoal_client_connect(NULL), NP);
    EXPECT(shoal_client_ping(NULL), NP);
    EXPECT(shoal_client_close(NULL), NP);
    EXPECT(shoal_client_get(NULL, LIT("k"), &v), NP);
    EXPECT(shoal_client_get(c, NULL, 1, &v), NP);
    EXPECT(shoal_client_get(c, LIT("k"), NULL), NP);
    EXPECT(shoal_client_get_and_touch(NULL, LIT("k"), 1, &v), NP);
    EXPECT(shoal_client_get_and_touch(c, NULL, 1, 1, &v), NP);
    EXPECT(shoal_client_get_and_touch(c, LIT("k"), 1, NULL), NP);
    EXPECT(shoal_client_get_many(NULL, keys, lens, 1, &v), NP);
    EXPECT(shoal_client_set(NULL, LIT("k"), LIT("v"), 0, 0, &u), NP);
    EXPECT(shoal_client_set(c, NULL, 1, LIT("v"), 0, 0, &u), NP);
    EXPECT(shoal_client_set(c, LIT("k"), NULL, 1, 0, 0, &u), NP);
    EXPECT(shoal_client_add(NULL, LIT("k"), LIT("v"), 0, 0, &u), NP);
    EXPECT(shoal_client_add(c, NULL, 1, LIT("v"), 0, 0, &u), NP);
    EXPECT(shoal_client_add(c, LIT("k"), NULL, 1, 0, 0, &u), NP);
    EXPECT(shoal_client_replace(NULL, LIT("k"), LIT("v"), 0, 0, &u), NP);
    EXPECT(shoal_client_replace(c, NULL, 1, LIT("v"), 0, 0, &u), NP);
    EXPECT(shoal_client_cas(NULL, LIT("k"), LIT("v"), 1, 0, 0, &u), NP);
    EXPECT(shoal_client_cas(c, NULL, 1, LIT("v"), 1, 0, 0, &u), NP);
    EXPECT(shoal_client_cas(c, LIT("k"), NULL, 1, 1, 0, 0, &u), NP);
    EXPECT(shoal_client_append(NULL, LIT("k"), LIT("v"), &u), NP);
    EXPECT(shoal_client_append(c, NULL, 1, LIT("v"), &u), NP);
    EXPECT(shoal_client_append(c, LIT("k"), NULL, 1, &u), NP);
    EXPECT(shoal_client_prepend(NULL, LIT("k"), LIT("v"), &u), NP);
    EXPECT(shoal_client_prepend(c, NULL, 1, LIT("v"), &u), NP);
    EXPECT(shoal_client_delete(NULL, LIT("k")), NP);
    EXPECT(shoal_client_delete(c, NULL, 1), NP);
    EXPECT(shoal_client_delete_if(NULL, LIT("k"), 1), NP);
    EXPECT(shoal_client_delete_if(c, NULL, 1, 1), NP);
    EXPECT(shoal_client_touch(NULL, LIT("k"), 1), NP);
    EXPECT(shoal_client_touch(c, NULL, 1, 1), NP);
    EXPECT(shoal_client_incr(NULL, LIT("k"), 1, &u), NP);
    EXPECT(shoal_client_incr(c, NULL, 1, 1, &u), NP);
    EXPECT(shoal_client_decr(NULL, LIT("k"), 1, &u), NP);
    EXPECT(shoal_client_decr(c, NULL, 1, 1, &u), NP);
    EXPECT(shoal_client_incr_or_create(NULL, LIT("k"), 1, 1, 0, &u), NP);
    EXPECT(shoal_client_incr_or_create(c, NULL, 1, 1, 1, 0, &u), NP);
    EXPECT(shoal_client_decr_or_create(NULL, LIT("k"), 1, 1, 0, &u), NP);
    EXPECT(shoal_client_decr_or_create(c, NULL, 1, 1, 1, 0, &u), NP);
    EXPECT(shoal_client_stats(NULL, NULL, &stats), NP);
    EXPECT(shoal_client_last_error(NULL, buf, sizeof buf, &n), NP);
    EXPECT(shoal_client_last_error(c, NULL, sizeof buf, &n), NP);
    EXPECT(shoal_client_last_error(c, buf, sizeof buf, NULL), NP);
    EXPECT(shoal_client_last_error(c, buf, 0, &n), SHOAL_RESULT_INVALID_ARGUMENT);
    CHECK(v == SENTINEL);

    /* The last error names the NULL argument. */
    EXPECT(shoal_client_get(c, NULL, 1, &v), NP);
    char detail[128];
    OK(shoal_client_last_error(c, detail, sizeof detail, &n));
    CHECK(strstr(detail, "key") != NULL);

    /* Accessors on NULL: 0 or NULL. */
    CHECK(shoal_value_data(NULL) == NULL);
    CHECK(shoal_value_len(NULL) == 0);
    CHECK(shoal_value_flags(NULL) == 0);
    CHECK(shoal_value_hash(NULL) == 0);
    CHECK(shoal_stats_count(NULL) == 0);
    CHECK(shoal_stats_name(NULL, 0) == NULL);
    CHECK(shoal_stats_value(NULL, 0) == NULL);
    CHECK(shoal_stats_find(NULL, "x") == NULL);

    /* Every _free accepts NULL. */
    shoal_client_free(NULL);
    shoal_options_free(NULL);
    shoal_value_free(NULL);
    shoal_stats_free(NULL);
}

/* GOODBYE, then the client reconnects by itself. */
static void test_close_and_reuse(shoal_client *c) {
    OK(shoal_client_set(c, LIT("persist"), LIT("yes"), 0, 0, NULL));
    OK(shoal_client_close(c));
    shoal_value *v = NULL;
    OK(shoal_client_get(c, LIT("persist"), &v));
    check_value(v, (const uint8_t *)"yes", 3, 0);
    shoal_value_free(v);
    OK(shoal_client_close(c));
    OK(shoal_client_close(c));
    OK(shoal_client_ping(c));
}

/* A value outlives the client that read it. */
static void test_value_outlives_client(const char *addr) {
    shoal_client *c = test_client(addr, 2000);
    check_client = c;
    OK(shoal_client_set(c, LIT("outlive"), LIT("still here"), 0, 0, NULL));
    shoal_value *v = NULL;
    OK(shoal_client_get(c, LIT("outlive"), &v));
    shoal_client_free(c);
    check_client = NULL;
    check_value(v, (const uint8_t *)"still here", 10, 0);
    shoal_value_free(v);
}

/* A server that is not there: CONNECTION or TIMEOUT within the deadline, with detail. */
static void test_unreachable(void) {
    shoal_client *c = test_client("127.0.0.1:1", 300);
    check_client = c;
    double start = now_ms();
    shoal_result r = shoal_client_connect(c);
    double took = now_ms() - start;
    CHECK(r == SHOAL_RESULT_CONNECTION || r == SHOAL_RESULT_TIMEOUT);
    CHECK(took < 300 + 1000); /* generous: valgrind runs slowly */
    char detail[256];
    size_t n = 0;
    OK(shoal_client_last_error(c, detail, sizeof detail, &n));
    CHECK(n > 0);
    shoal_client_free(c);
    check_client = NULL;
}

int main(int argc, char **argv) {
    if (argc != 2) {
        fprintf(stderr, "usage: %s <host:port>\n", argv[0]);
        return 2;
    }
    test_versions_and_results();
    test_option_setters();
    shoal_client *c = test_client(argv[1], 5000);
    check_client = c;
    test_reads_and_writes(c);
    test_get_many(c);
    test_stats(c);
    test_null_arguments(c);
    test_close_and_reuse(c);
    shoal_client_free(c);
    check_client = NULL;
    test_value_outlives_client(argv[1]);
    test_unreachable();
    printf("ops: all checks passed\n");
    return 0;
}
