/*
 * openloop: HTTP/1.1 load at a fixed rate with independent (Poisson) arrivals, latency counted
 * from each request's scheduled time.
 *
 * wrk's think time (Lua delay()) is served by millisecond timers, so the connections of a
 * thread send together at each millisecond tick: at 15,000 requests/s a burst of 15 arrives at
 * once and the last waits behind the other 14. Relying parties asking independently arrive
 * one by one. This program draws exponential gaps between arrivals (mean 1/rate) and sends
 * each on an idle keep-alive connection at its time (a timerfd with a 1 ns timer slack); an
 * arrival with no idle connection waits in a queue, and its latency counts that wait (no
 * coordinated omission: the schedule never waits for the server). One thread, epoll.
 *
 *   openloop HOST PORT REQUEST_FILE RATE SECONDS CONNECTIONS [WARMUP_SECONDS [SEED]]
 *
 * REQUEST_FILE holds the whole request (request line, headers, body), sent as it is for every
 * arrival; the response must carry Content-Length. Prints one JSON object: counts, the rate
 * achieved, and percentiles in microseconds of the requests scheduled after the warm-up:
 * latency from the scheduled time (p50_us ...), from the write (written_p50_us ...: the
 * server and the kernel alone) and the write's delay after the scheduled time (late_p50_us
 * ...: a wait for a free connection, or this program late). Exit 1 on a usage or connection error, 2 if any answer was not a 200 or a
 * connection broke. With OPENLOOP_TRACE=FILE in the environment, FILE gets each measured
 * request's scheduled time (seconds from the start) and its latency from then and from its
 * write (microseconds), one a line.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <math.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/timerfd.h>
#include <time.h>
#include <unistd.h>

#define BUF 65536

typedef struct {
    int fd;
    int busy;
    double sched; /* when the request in flight was scheduled */
    double sent;  /* when it was written */
    size_t got;   /* bytes of the response read so far */
    char buf[BUF];
} conn_t;

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static uint64_t rng_state;
static double uniform01(void) { /* xorshift64*, (0, 1] */
    rng_state ^= rng_state >> 12;
    rng_state ^= rng_state << 25;
    rng_state ^= rng_state >> 27;
    uint64_t r = rng_state * 2685821657736338717ULL;
    return ((double)(r >> 11) + 1.0) / 9007199254740993.0;
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static void die(const char *what) {
    fprintf(stderr, "openloop: %s: %s\n", what, strerror(errno));
    exit(1);
}

static int dial(const char *host, int port) {
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    if (inet_pton(AF_INET, host, &sa.sin_addr) != 1) {
        fprintf(stderr, "openloop: %s is not an IPv4 address\n", host);
        exit(1);
    }
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) die("socket");
    if (connect(fd, (struct sockaddr *)&sa, sizeof sa) < 0) die("connect");
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    return fd;
}

/* The length of the whole response once its headers are in, 0 before; -1 if unreadable. */
static long response_length(const char *buf, size_t got, int *status) {
    const char *end = memmem(buf, got, "\r\n\r\n", 4);
    if (end == NULL) return 0;
    if (got < 12 || strncmp(buf, "HTTP/1.", 7) != 0) return -1;
    *status = atoi(buf + 9);
    long length = -1;
    for (const char *p = buf; p < end; p++) {
        if (p[0] == '\n' && strncasecmp(p + 1, "content-length:", 15) == 0) {
            length = strtol(p + 16, NULL, 10);
            break;
        }
    }
    if (length < 0) return -1;
    return (long)(end + 4 - buf) + length;
}

/* Whether a response says the server closes the connection after it (Connection: close). */
static int closing(const char *buf, size_t len) {
    const char *end = memmem(buf, len, "\r\n\r\n", 4);
    for (const char *p = buf; end != NULL && p < end; p++) {
        if (p[0] == '\n' && strncasecmp(p + 1, "connection:", 11) == 0) {
            const char *v = p + 12;
            while (*v == ' ') v++;
            return strncasecmp(v, "close", 5) == 0;
        }
    }
    return 0;
}

/* A connection the server closed (or will), opened again in place. */
static void redial(int ep, conn_t *c, uint32_t i, const char *host, int port) {
    epoll_ctl(ep, EPOLL_CTL_DEL, c->fd, NULL);
    close(c->fd);
    c->fd = dial(host, port);
    struct epoll_event ev = {.events = EPOLLIN, .data.u32 = i};
    epoll_ctl(ep, EPOLL_CTL_ADD, c->fd, &ev);
    c->got = 0;
}

int main(int argc, char **argv) {
    if (argc < 7) {
        fprintf(stderr,
                "usage: openloop HOST PORT REQUEST_FILE RATE SECONDS CONNECTIONS "
                "[WARMUP_SECONDS [SEED]]\n");
        return 1;
    }
    const char *host = argv[1];
    int port = atoi(argv[2]);
    double rate = atof(argv[4]), seconds = atof(argv[5]);
    int nconn = atoi(argv[6]);
    double warmup = argc > 7 ? atof(argv[7]) : 1.0;
    rng_state = argc > 8 ? strtoull(argv[8], NULL, 10) : 88172645463325252ULL;
    if (rng_state == 0) rng_state = 1;
    if (port <= 0 || rate <= 0 || seconds <= 0 || nconn <= 0 || warmup < 0) {
        fprintf(stderr, "openloop: PORT, RATE, SECONDS and CONNECTIONS must be positive\n");
        return 1;
    }

    FILE *f = fopen(argv[3], "rb");
    if (f == NULL) die(argv[3]);
    static char req[BUF];
    size_t reqlen = fread(req, 1, sizeof req, f);
    fclose(f);
    if (reqlen == 0 || reqlen == sizeof req) {
        fprintf(stderr, "openloop: %s is empty or too long\n", argv[3]);
        return 1;
    }

    /* OPENLOOP_TRACE=FILE: each measured request's scheduled time (s from the start), its
     * latency from then and from its write (us), one a line, in the order they completed */
    FILE *trace = getenv("OPENLOOP_TRACE") ? fopen(getenv("OPENLOOP_TRACE"), "w") : NULL;
    prctl(PR_SET_TIMERSLACK, 1UL, 0, 0, 0); /* timers fire when asked, not 50 us later */
    int ep = epoll_create1(EPOLL_CLOEXEC);
    int tfd = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC);
    if (ep < 0 || tfd < 0) die("epoll/timerfd");
    struct epoll_event ev = {.events = EPOLLIN, .data.u32 = UINT32_MAX};
    epoll_ctl(ep, EPOLL_CTL_ADD, tfd, &ev);

    conn_t *conns = calloc((size_t)nconn, sizeof *conns);
    int *idle = malloc(sizeof(int) * (size_t)nconn);
    if (conns == NULL || idle == NULL) die("calloc");
    int nidle = 0;
    for (int i = 0; i < nconn; i++) {
        conns[i].fd = dial(host, port);
        ev.events = EPOLLIN;
        ev.data.u32 = (uint32_t)i;
        epoll_ctl(ep, EPOLL_CTL_ADD, conns[i].fd, &ev);
        idle[nidle++] = i;
    }

    size_t cap = (size_t)(rate * (seconds + warmup) * 1.5) + 1024;
    double *lat = malloc(sizeof(double) * cap);    /* latencies after the warm-up, seconds */
    double *svc = malloc(sizeof(double) * cap);    /* the same from when each was written */
    double *late = malloc(sizeof(double) * cap);   /* written after its scheduled time by */
    double *queue = malloc(sizeof(double) * cap);  /* scheduled times waiting for a connection */
    if (lat == NULL || svc == NULL || late == NULL || queue == NULL) die("malloc");
    size_t nlat = 0, qhead = 0, qtail = 0, qmax = 0;
    long sent = 0, done = 0, non200 = 0, broken = 0;

    double t0 = now_s(), measure_from = t0 + warmup, end = measure_from + seconds;
    if (trace != NULL) fprintf(trace, "# start %.6f (CLOCK_MONOTONIC)\n", t0);
    double next = t0 - log(uniform01()) / rate;
    struct epoll_event evs[256];

    for (;;) {
        double now = now_s();
        while (next <= now && next < end) { /* arrivals due: queue them */
            if (qtail == cap) { /* far behind the schedule: no more arrivals */
                next = end;
                break;
            }
            queue[qtail++] = next;
            next -= log(uniform01()) / rate;
        }
        while (qhead < qtail && nidle > 0) { /* each to an idle connection, in order */
            conn_t *c = &conns[idle[--nidle]];
            c->busy = 1;
            c->sched = queue[qhead++];
            c->got = 0;
            c->sent = now_s();
            if (write(c->fd, req, reqlen) != (ssize_t)reqlen) { /* lost: a fresh connection */
                fprintf(stderr, "openloop: a request could not be written whole\n");
                broken++;
                redial(ep, c, (uint32_t)(c - conns), host, port);
                c->busy = 0;
                idle[nidle++] = (int)(c - conns);
                continue;
            }
            sent++;
        }
        if (qtail - qhead > qmax) qmax = qtail - qhead;
        int inflight = nconn - nidle;
        if (now >= end + 2.0) break; /* answers 2 s late count as none */
        if (now >= end && qhead == qtail && inflight == 0) break; /* drained */
        if (next < end) {
            struct itimerspec its = {0};
            its.it_value.tv_sec = (time_t)next;
            its.it_value.tv_nsec = (long)((next - (double)(time_t)next) * 1e9);
            if (its.it_value.tv_sec == 0 && its.it_value.tv_nsec == 0) its.it_value.tv_nsec = 1;
            timerfd_settime(tfd, TFD_TIMER_ABSTIME, &its, NULL);
        }
        int n = epoll_wait(ep, evs, 256, 100);
        if (n < 0 && errno != EINTR) die("epoll_wait");
        for (int k = 0; k < n; k++) {
            uint32_t i = evs[k].data.u32;
            if (i == UINT32_MAX) {
                uint64_t expirations;
                ssize_t r = read(tfd, &expirations, sizeof expirations);
                (void)r;
                continue;
            }
            conn_t *c = &conns[i];
            ssize_t r = read(c->fd, c->buf + c->got, BUF - c->got);
            if (r <= 0) {
                if (r < 0 && errno == EINTR) continue;
                if (c->busy) { /* a request lost: an idle connection closed is no loss */
                    fprintf(stderr, "openloop: connection %u closed with a request in flight\n", i);
                    broken++;
                }
                redial(ep, c, i, host, port);
                if (c->busy) {
                    c->busy = 0;
                    idle[nidle++] = (int)i;
                }
                continue;
            }
            if (!c->busy) continue; /* unasked bytes on an idle connection (a 408 before a close) */
            c->got += (size_t)r;
            int status = 0;
            long need = response_length(c->buf, c->got, &status);
            if (need < 0 || (size_t)need > BUF) {
                fprintf(stderr, "openloop: unreadable response on connection %u\n", i);
                return 2;
            }
            if (need == 0 || c->got < (size_t)need) continue;
            double t = now_s();
            done++;
            if (status != 200) non200++;
            if (c->sched >= measure_from && c->sched < end && nlat < cap) {
                if (trace != NULL) {
                    fprintf(trace, "%.6f %.1f %.1f\n", c->sched - t0, (t - c->sched) * 1e6,
                            (t - c->sent) * 1e6);
                }
                svc[nlat] = t - c->sent;
                late[nlat] = c->sent - c->sched;
                lat[nlat++] = t - c->sched;
            }
            if (closing(c->buf, (size_t)need)) redial(ep, c, i, host, port);
            c->busy = 0;
            c->got = 0;
            idle[nidle++] = (int)i;
        }
    }

    if (trace != NULL) fclose(trace);
    qsort(lat, nlat, sizeof *lat, cmp_double);
    qsort(svc, nlat, sizeof *svc, cmp_double);
    qsort(late, nlat, sizeof *late, cmp_double);
    printf("{\"rate\": %.1f, \"connections\": %d, \"seconds\": %.3f, \"sent\": %ld, "
           "\"done\": %ld, \"measured\": %zu, \"achieved_rps\": %.1f, \"non200\": %ld, "
           "\"broken\": %ld, \"unsent\": %zu, \"queue_max\": %zu",
           rate, nconn, seconds, sent, done, nlat, (double)nlat / seconds, non200, broken,
           qtail - qhead, qmax);
    const double ps[] = {0.50, 0.75, 0.90, 0.99, 0.999};
    const char *names[] = {"p50", "p75", "p90", "p99", "p999"};
    const double *sets[] = {lat, svc, late};
    const char *prefixes[] = {"", "written_", "late_"};
    for (int k = 0; k < 3; k++) {
        for (int j = 0; j < 5; j++) {
            double v = nlat ? sets[k][(size_t)((double)(nlat - 1) * ps[j])] * 1e6 : 0.0;
            printf(", \"%s%s_us\": %.1f", prefixes[k], names[j], v);
        }
        printf(", \"%smax_us\": %.1f", prefixes[k], nlat ? sets[k][nlat - 1] * 1e6 : 0.0);
    }
    printf("}\n");
    return (non200 || broken) ? 2 : 0;
}
