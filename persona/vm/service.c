/* vmkv: the VM host's service, compiled statically into the guest image (persona/vm/image.py).
 *
 * A small HTTP/1.1 key-value API with the endpoints the Behavioural Validation Suite replays
 * (persona/validate/corpus.py): /healthz, /introspect (version, config, pool size), /item/<k>,
 * 404s, plus / (the greeting). Its state lives only in this process's memory: the item values
 * are drawn from /dev/urandom at start and one item is rewritten every mutate_ms (a drifting
 * dataset, like the demo host's worker). A warm restore (the guest's CRIU) keeps the values; a
 * cold start draws new ones, which the suite's state check sees.
 *
 * Usage: vmkv ADDRESS PORT CONFIG    (CONFIG: key=value lines, see persona/vm/host.py)
 * One thread, poll(), keep-alive, Content-Length bodies, TCP_NODELAY.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define VERSION "vmkv/1.0"
#define MAX_CLIENTS 256
#define BUF 4096
#define MAX_ITEMS 100000
#define MAX_VALUE 256

struct cfg {
    char greeting[256];
    long items, value_bytes, work_rounds, mutate_ms, checksum;
};

struct client {
    int fd;
    size_t len;
    char buf[BUF];
};

static struct cfg C = {"hello", 2000, 32, 200, 500, 1};
static const char *config_path;
static unsigned char *values;
static uint32_t *revs;
static uint64_t rng_state, requests, mutations;
static struct client clients[MAX_CLIENTS];
static struct pollfd pfd[MAX_CLIENTS + 1];

static uint64_t next_rand(void) { /* xorshift64* */
    rng_state ^= rng_state >> 12;
    rng_state ^= rng_state << 25;
    rng_state ^= rng_state >> 27;
    return rng_state * 2685821657736338717ULL;
}

static void fill(long i) {
    unsigned char *v = values + i * C.value_bytes;
    for (long b = 0; b < C.value_bytes; b++) v[b] = (unsigned char)(next_rand() >> 56);
}

static void die(const char *what) {
    fprintf(stderr, "vmkv: %s: %s\n", what, strerror(errno));
    exit(1);
}

static void read_config(void) {
    FILE *f = fopen(config_path, "r");
    if (!f) die(config_path);
    char line[512];
    while (fgets(line, sizeof line, f)) {
        char *eq = strchr(line, '=');
        if (!eq) continue;
        *eq = 0;
        char *v = eq + 1;
        v[strcspn(v, "\r\n")] = 0;
        if (!strcmp(line, "greeting")) snprintf(C.greeting, sizeof C.greeting, "%s", v);
        else if (!strcmp(line, "items")) C.items = atol(v);
        else if (!strcmp(line, "value_bytes")) C.value_bytes = atol(v);
        else if (!strcmp(line, "work_rounds")) C.work_rounds = atol(v);
        else if (!strcmp(line, "mutate_ms")) C.mutate_ms = atol(v);
        else if (!strcmp(line, "checksum_responses")) C.checksum = atol(v);
    }
    fclose(f);
    if (C.items < 1 || C.items > MAX_ITEMS || C.value_bytes < 1 || C.value_bytes > MAX_VALUE) {
        fprintf(stderr, "vmkv: %s: items must be 1-%d and value_bytes 1-%d\n", config_path,
                MAX_ITEMS, MAX_VALUE);
        exit(1);
    }
}

static uint64_t digest(long i) { /* CPU work per request: latency follows the CPU share */
    uint64_t h = 1469598103934665603ULL;
    const unsigned char *v = values + i * C.value_bytes;
    for (long r = 0; r <= C.work_rounds; r++)
        for (long b = 0; b < C.value_bytes; b++) h = (h ^ (v[b] + (uint64_t)r)) * 1099511628211ULL;
    return h;
}

static int send_all(int fd, const char *p, size_t n) {
    while (n) {
        ssize_t w = send(fd, p, n, MSG_NOSIGNAL);
        if (w < 0 && (errno == EAGAIN || errno == EINTR)) {
            struct pollfd o = {fd, POLLOUT, 0};
            if (poll(&o, 1, 2000) <= 0) return -1;
            continue;
        }
        if (w <= 0) return -1;
        p += w;
        n -= (size_t)w;
    }
    return 0;
}

static int reply(int fd, int code, const char *type, const char *body) {
    char head[256];
    const char *reason = code == 200 ? "OK" : code == 404 ? "Not Found" : "Bad Request";
    size_t n = strlen(body);
    int h = snprintf(head, sizeof head,
                     "HTTP/1.1 %d %s\r\nContent-Type: %s\r\nContent-Length: %zu\r\n\r\n", code,
                     reason, type, n);
    if (send_all(fd, head, (size_t)h) < 0) return -1;
    return send_all(fd, body, n);
}

static int handle(int fd, const char *path) {
    char body[1024];
    requests++;
    if (!strcmp(path, "/healthz")) return reply(fd, 200, "application/json", "{\"ok\": true}");
    if (!strcmp(path, "/")) {
        snprintf(body, sizeof body, "%s\n", C.greeting);
        return reply(fd, 200, "text/plain", body);
    }
    if (!strcmp(path, "/introspect")) {
        snprintf(body, sizeof body,
                 "{\"version\": \"%s\", \"pid\": %d, \"config_path\": \"%s\", \"config\": "
                 "{\"checksum_responses\": %ld, \"items\": %ld, \"mutate_ms\": %ld, "
                 "\"value_bytes\": %ld, \"work_rounds\": %ld}, \"pool\": {\"size\": %d}, "
                 "\"requests\": %llu, \"mutations\": %llu}",
                 VERSION, getpid(), config_path, C.checksum, C.items, C.mutate_ms, C.value_bytes,
                 C.work_rounds, MAX_CLIENTS, (unsigned long long)requests,
                 (unsigned long long)mutations);
        return reply(fd, 200, "application/json", body);
    }
    if (!strncmp(path, "/item/", 6)) {
        const char *k = path + 6;
        char *end;
        errno = 0;
        long i = strtol(k, &end, 10);
        if (*k && !*end && !errno && i >= 0 && i < C.items) {
            int n = snprintf(body, sizeof body, "{\"key\": \"%ld\", \"len\": %ld, \"rev\": %u",
                             i, C.value_bytes, revs[i]);
            if (C.checksum)
                n += snprintf(body + n, sizeof body - (size_t)n, ", \"sha\": \"%016llx\"",
                              (unsigned long long)digest(i));
            snprintf(body + n, sizeof body - (size_t)n, "}");
            return reply(fd, 200, "application/json", body);
        }
        snprintf(body, sizeof body, "{\"error\": \"no item %.200s\"}", k);
        return reply(fd, 404, "application/json", body);
    }
    return reply(fd, 404, "application/json", "{\"error\": \"unknown path\"}");
}

/* Serve every complete request in the client's buffer; -1: close the connection. */
static int serve(struct client *c) {
    for (;;) {
        char *end = memmem(c->buf, c->len, "\r\n\r\n", 4);
        if (!end) return c->len >= BUF ? -1 : 0;
        size_t used = (size_t)(end - c->buf) + 4;
        char path[512] = "";
        char method[8] = "";
        *end = 0;
        if (sscanf(c->buf, "%7s %511s", method, path) != 2) return -1;
        int rc = strcmp(method, "GET") ? reply(c->fd, 400, "application/json",
                                               "{\"error\": \"GET only\"}")
                                       : handle(c->fd, path);
        if (rc < 0) return -1;
        memmove(c->buf, c->buf + used, c->len - used);
        c->len -= used;
    }
}

static long long now_ms(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (long long)t.tv_sec * 1000 + t.tv_nsec / 1000000;
}

int main(int argc, char **argv) {
    if (argc != 4) {
        fprintf(stderr, "usage: vmkv ADDRESS PORT CONFIG\n");
        return 2;
    }
    config_path = argv[3];
    read_config();
    signal(SIGPIPE, SIG_IGN);
    int r = open("/dev/urandom", O_RDONLY);
    if (r < 0 || read(r, &rng_state, sizeof rng_state) != sizeof rng_state) die("/dev/urandom");
    close(r);
    rng_state |= 1;
    values = malloc((size_t)(C.items * C.value_bytes));
    revs = calloc((size_t)C.items, sizeof *revs);
    if (!values || !revs) die("malloc");
    for (long i = 0; i < C.items; i++) fill(i);

    int ls = socket(AF_INET, SOCK_STREAM, 0);
    int one = 1;
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)atoi(argv[2]))};
    if (ls < 0 || inet_pton(AF_INET, argv[1], &a.sin_addr) != 1) die("address");
    setsockopt(ls, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (bind(ls, (struct sockaddr *)&a, sizeof a) < 0) die("bind");
    if (listen(ls, 128) < 0) die("listen");
    fcntl(ls, F_SETFL, O_NONBLOCK);
    for (int i = 0; i < MAX_CLIENTS; i++) clients[i].fd = -1;

    long long next = now_ms() + C.mutate_ms;
    for (;;) {
        int n = 0;
        pfd[n++] = (struct pollfd){ls, POLLIN, 0};
        for (int i = 0; i < MAX_CLIENTS; i++)
            if (clients[i].fd >= 0) pfd[n++] = (struct pollfd){clients[i].fd, POLLIN, 0};
        long long t = now_ms();
        if (C.mutate_ms > 0 && (t >= next || next - t > C.mutate_ms)) {
            /* one item rewritten per interval; a clock jump (restored on another guest)
               re-arms the timer instead of stalling it */
            long i = (long)(next_rand() % (uint64_t)C.items);
            fill(i);
            revs[i]++;
            mutations++;
            next = t + C.mutate_ms;
        }
        int wait = C.mutate_ms > 0 ? (int)(next - now_ms()) : -1;
        if (poll(pfd, (nfds_t)n, wait < 0 && C.mutate_ms > 0 ? 0 : wait) < 0) {
            if (errno == EINTR) continue;
            die("poll");
        }
        if (pfd[0].revents & POLLIN) {
            int fd;
            while ((fd = accept(ls, NULL, NULL)) >= 0) {
                int slot = -1;
                for (int i = 0; i < MAX_CLIENTS; i++)
                    if (clients[i].fd < 0) { slot = i; break; }
                if (slot < 0) { close(fd); continue; }
                fcntl(fd, F_SETFL, O_NONBLOCK);
                setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
                clients[slot].fd = fd;
                clients[slot].len = 0;
            }
        }
        for (int k = 1; k < n; k++) {
            if (!pfd[k].revents) continue;
            struct client *c = NULL;
            for (int i = 0; i < MAX_CLIENTS; i++)
                if (clients[i].fd == pfd[k].fd) { c = &clients[i]; break; }
            if (!c) continue;
            ssize_t got = recv(c->fd, c->buf + c->len, BUF - c->len, 0);
            if ((got < 0 && errno != EAGAIN && errno != EINTR) || got == 0 ||
                (got > 0 && (c->len += (size_t)got, serve(c) < 0))) {
                close(c->fd);
                c->fd = -1;
            }
        }
    }
}
