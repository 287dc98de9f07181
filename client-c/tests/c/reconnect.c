/* A server that goes away costs at most the call in flight, and the next call reconnects.
 *
 * Usage: reconnect <host:port> <ops> <deadline_ms> <slack_ms>
 *
 * The program talks to the test that runs it through lines:
 *   stdout "EVENT <k>"  the test now stops the server (k=1 gracefully, then kills it) and
 *                       restarts it on the same port, then writes "DONE <k>" to stdin. The
 *                       program keeps calling meanwhile, so a call is in flight when it dies.
 *   stdout "DOWN?"      the program waits; the test kills the server and writes "DOWN" (the
 *                       clients may not have seen their connections close yet). Calls must
 *                       then fail with CONNECTION or TIMEOUT within deadline + slack.
 *   stdout "UP?"        the test restarts the server and writes "UP"; every call must succeed.
 *   stdout "RESULT ..." the summary; exit status 0 when every check passed.
 *
 * Checks: each failure is CONNECTION or IN_DOUBT; at most one failure per EVENT; no two
 * failures in a row; every call returns within deadline + slack. */
#include "common.h"

#include <errno.h>
#include <poll.h>
#include <unistd.h>

enum { EVENTS = 3 };

static char line_buf[256];
static size_t line_len = 0;

/* Reads one line from stdin into `out` if one is complete (waiting at most `wait_ms`, -1 for
 * ever). Returns 1 for a line, 0 for none yet; exits on EOF. */
static int read_line(char *out, size_t cap, int wait_ms) {
    for (;;) {
        char *nl = memchr(line_buf, '\n', line_len);
        if (nl != NULL) {
            size_t n = (size_t)(nl - line_buf);
            size_t copy = n < cap - 1 ? n : cap - 1;
            memcpy(out, line_buf, copy);
            out[copy] = '\0';
            memmove(line_buf, nl + 1, line_len - n - 1);
            line_len -= n + 1;
            return 1;
        }
        struct pollfd p = {.fd = 0, .events = POLLIN};
        int ready = poll(&p, 1, wait_ms);
        if (ready < 0 && errno == EINTR) continue;
        if (ready <= 0) return 0;
        ssize_t got = read(0, line_buf + line_len, sizeof line_buf - line_len - 1);
        if (got <= 0) {
            fprintf(stderr, "reconnect: stdin closed\n");
            exit(1);
        }
        line_len += (size_t)got;
        if (wait_ms >= 0) wait_ms = 100; /* the rest of a line that arrived in pieces */
    }
}

static void expect_line(const char *want) {
    char got[128];
    read_line(got, sizeof got, -1);
    if (strcmp(got, want) != 0) {
        fprintf(stderr, "reconnect: expected \"%s\" on stdin, got \"%s\"\n", want, got);
        exit(1);
    }
}

static void say(const char *text) {
    printf("%s\n", text);
    fflush(stdout);
}

/* One operation of the mix: i % 4 picks SET, GET, INCR (not idempotent), ADD (not
 * idempotent). A GET miss is a success (the restarted server is empty). */
static shoal_result one_op(shoal_client *c, long i) {
    char key[32], value[32];
    int klen = snprintf(key, sizeof key, "r%ld", i % 64);
    int vlen = snprintf(value, sizeof value, "v%ld", i);
    shoal_value *v = NULL;
    shoal_result r;
    switch (i % 4) {
    case 0:
        return shoal_client_set(c, (const uint8_t *)key, (size_t)klen, (const uint8_t *)value,
                                (size_t)vlen, 0, 0, NULL);
    case 1:
        r = shoal_client_get(c, (const uint8_t *)key, (size_t)klen, &v);
        shoal_value_free(v);
        return r == SHOAL_RESULT_NOT_FOUND ? SHOAL_RESULT_OK : r;
    case 2:
        return shoal_client_incr_or_create(c, LIT("reconnect-counter"), 1, 0, 0, NULL);
    default:
        klen = snprintf(key, sizeof key, "add-%ld", i);
        return shoal_client_add(c, (const uint8_t *)key, (size_t)klen, LIT("x"), 0, 0, NULL);
    }
}

static int fatal = 0;

static void check_time(const char *what, long i, double took, double limit) {
    if (took > limit) {
        fprintf(stderr, "reconnect: %s %ld took %.1f ms, over the %.1f ms limit\n", what, i, took,
                limit);
        fatal = 1;
    }
}

int main(int argc, char **argv) {
    if (argc != 5) {
        fprintf(stderr, "usage: %s <host:port> <ops> <deadline_ms> <slack_ms>\n", argv[0]);
        return 2;
    }
    const char *addr = argv[1];
    long ops = atol(argv[2]);
    uint32_t deadline = (uint32_t)atol(argv[3]);
    double slack = atof(argv[4]);
    const uint32_t short_deadline = 500;

    shoal_client *c = test_client(addr, deadline);
    check_client = c;
    OK(shoal_client_connect(c));

    /* Phase 1: a loop of `ops` calls while the server is stopped and restarted 3 times. */
    long event_at[EVENTS] = {ops / 5, ops / 2, ops * 4 / 5};
    int next_event = 0, pending = 0;
    long failures = 0, i = 0;
    int last_failed = 0;
    for (i = 0; i < ops || next_event < EVENTS || pending; i++) {
        if (i > ops * 100) {
            fprintf(stderr, "reconnect: the test never restarted the server\n");
            return 1;
        }
        if (!pending && next_event < EVENTS && i >= event_at[next_event]) {
            char event[32];
            snprintf(event, sizeof event, "EVENT %d", next_event + 1);
            say(event);
            pending = 1;
        }
        if (pending) {
            char got[64], want[64];
            if (read_line(got, sizeof got, 0)) {
                snprintf(want, sizeof want, "DONE %d", next_event + 1);
                if (strcmp(got, want) != 0) {
                    fprintf(stderr, "reconnect: unexpected line \"%s\"\n", got);
                    return 1;
                }
                pending = 0;
                next_event++;
            }
        }
        double start = now_ms();
        shoal_result r = one_op(c, i);
        double took = now_ms() - start;
        check_time("call", i, took, deadline + slack);
        if (r == SHOAL_RESULT_OK) {
            last_failed = 0;
            continue;
        }
        failures++;
        char detail[256];
        size_t n = 0;
        OK(shoal_client_last_error(c, detail, sizeof detail, &n));
        printf("FAIL op=%ld kind=%ld result=%s took_ms=%.1f detail=%s\n", i, i % 4,
               shoal_result_name(r), took, detail);
        fflush(stdout);
        if (r != SHOAL_RESULT_CONNECTION && r != SHOAL_RESULT_IN_DOUBT) {
            fprintf(stderr, "reconnect: op %ld failed with %s\n", i, shoal_result_name(r));
            fatal = 1;
        }
        if (last_failed) {
            fprintf(stderr, "reconnect: op %ld failed right after a failure\n", i);
            fatal = 1;
        }
        if (next_event == 0 && !pending) {
            fprintf(stderr, "reconnect: op %ld failed before any event\n", i);
            fatal = 1;
        }
        last_failed = 1;
    }
    if (failures > EVENTS) {
        fprintf(stderr, "reconnect: %ld failures for %d restarts\n", failures, EVENTS);
        fatal = 1;
    }
    long loop_ops = i;

    /* Phase 2: the server stays down longer than the deadline. */
    shoal_client *quick = test_client(addr, short_deadline);
    OK(shoal_client_ping(quick));
    say("DOWN?");
    expect_line("DOWN");
    /* Each client's first call may still go out on its dead connection, if the client has not
     * read the close yet. So that call is idempotent (SET on `quick`, GET on `c`): the client
     * resends it, the reconnect is refused, and it ends as CONNECTION. A non-idempotent one
     * would rightly end as IN_DOUBT. */
    for (long k = 0; k < 8; k++) {
        double start = now_ms();
        shoal_result r = k == 4 ? shoal_client_ping(quick) : one_op(quick, k);
        double took = now_ms() - start;
        check_time("down call", k, took, short_deadline + slack);
        if (r != SHOAL_RESULT_CONNECTION && r != SHOAL_RESULT_TIMEOUT) {
            fprintf(stderr, "reconnect: call %ld to a down server gave %s\n", k,
                    shoal_result_name(r));
            fatal = 1;
        }
        printf("DOWNCALL k=%ld result=%s took_ms=%.1f\n", k, shoal_result_name(r), took);
    }
    {
        double start = now_ms();
        shoal_result r = one_op(c, 1);
        double took = now_ms() - start;
        check_time("down call (main client)", 0, took, deadline + slack);
        if (r != SHOAL_RESULT_CONNECTION && r != SHOAL_RESULT_TIMEOUT) {
            fprintf(stderr, "reconnect: main client call to a down server gave %s\n",
                    shoal_result_name(r));
            fatal = 1;
        }
        printf("DOWNCALL main result=%s took_ms=%.1f\n", shoal_result_name(r), took);
    }

    /* Phase 3: back up; every call succeeds, on both clients. */
    say("UP?");
    expect_line("UP");
    for (long k = 0; k < 200; k++) {
        double start = now_ms();
        check_client = k % 2 ? quick : c;
        OK(one_op(k % 2 ? quick : c, k));
        check_time("call after restart", k, now_ms() - start, deadline + slack);
    }
    check_client = NULL;
    shoal_client_free(quick);
    shoal_client_free(c);
    printf("RESULT ops=%ld failures=%ld events=%d\n", loop_ops, failures, EVENTS);
    fflush(stdout);
    return fatal;
}
