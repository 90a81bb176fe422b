/*
 * hnb-udp: the UDP echo server and UDP probe client of the hybridnb test VM.
 *
 * Why this exists: the test VM (hybridnb/images/testvm.py) is a busybox initramfs, and
 * Debian's busybox has no datagram tool at all - its nc has no -u and there is no UDP server
 * applet.  No small Debian package fills the gap (socat pulls in libssl and friends, which
 * would have to be copied into the initramfs with their dependencies), so the probe engine
 * could neither send UDP probes from a VM nor get an answer from one.  This program is the
 * smallest thing that closes that gap.  It is compiled statically while the image is built
 * and installed as /bin/hnb-udp.
 *
 *   hnb-udp echo PORT
 *       Bind 0.0.0.0:PORT and send every datagram back to its sender, forever (the init
 *       script starts it in the background on port 7, the probe engine's UDP port).
 *
 *   hnb-udp probe ADDR PORT COUNT TIMEOUT_MS
 *       Send COUNT datagrams to the IPv4 address ADDR, one after the other: the next goes out
 *       when the previous one is answered or after 200 ms.  Each carries a random token and
 *       its sequence number.  Replies are awaited until TIMEOUT_MS after the last send.
 *       Prints one line per datagram, in the order results become known:
 *           reply SEQ RTT_US      answered; RTT in microseconds (CLOCK_MONOTONIC)
 *           timeout SEQ           no answer in time
 *           refused SEQ           ICMP port unreachable (ECONNREFUSED)
 *           error SEQ TEXT        any other error while sending or receiving
 *       Exit status: 0 when at least one reply came back, 1 when none did, 2 on bad usage.
 *
 * Build: gcc -static -Os -s -Wall -Wextra -o hnb-udp hnb-udp.c
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define MAGIC "hnbU"
#define MAGIC_LEN 4
#define TOKEN_LEN 8
#define PROBE_LEN (MAGIC_LEN + TOKEN_LEN + 2)   /* magic, token, 16-bit sequence number */
#define MAX_COUNT 1000
#define MAX_TIMEOUT_MS 600000L
#define GAP_MS 200                             /* longest wait before the next send */

enum state { WAITING, UNSENT, DONE };

static int usage(void)
{
    fputs("usage: hnb-udp echo PORT\n"
          "       hnb-udp probe ADDR PORT COUNT TIMEOUT_MS\n", stderr);
    return 2;
}

/* A decimal number in [lo, hi], or -1. */
static long number(const char *s, long lo, long hi)
{
    char *end;
    long v;

    if (s == NULL || *s == '\0')
        return -1;
    errno = 0;
    v = strtol(s, &end, 10);
    if (errno != 0 || *end != '\0' || v < lo || v > hi)
        return -1;
    return v;
}

static int64_t now_us(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

static int echo(long port)
{
    static unsigned char buf[65536];
    struct sockaddr_in me, peer;
    socklen_t plen;
    ssize_t n;
    int fd;

    fd = socket(AF_INET, SOCK_DGRAM, 0);
    if (fd < 0) {
        perror("hnb-udp: socket");
        return 1;
    }
    memset(&me, 0, sizeof me);
    me.sin_family = AF_INET;
    me.sin_port = htons((uint16_t)port);
    me.sin_addr.s_addr = htonl(INADDR_ANY);
    if (bind(fd, (struct sockaddr *)&me, sizeof me) < 0) {
        perror("hnb-udp: bind");
        return 1;
    }
    for (;;) {
        plen = sizeof peer;
        n = recvfrom(fd, buf, sizeof buf, 0, (struct sockaddr *)&peer, &plen);
        if (n < 0) {
            if (errno == EINTR || errno == ECONNREFUSED || errno == ENOBUFS)
                continue;
            perror("hnb-udp: recvfrom");
            return 1;
        }
        /* a failed send (peer gone, no buffer) only loses that one echo */
        (void)sendto(fd, buf, (size_t)n, 0, (struct sockaddr *)&peer, plen);
    }
}

static void make_token(unsigned char *token)
{
    int64_t t;
    size_t i;

    if (getrandom(token, TOKEN_LEN, GRND_NONBLOCK) == TOKEN_LEN)
        return;
    t = now_us() ^ ((int64_t)getpid() << 40);   /* early boot: no entropy yet */
    for (i = 0; i < TOKEN_LEN; i++)
        token[i] = (unsigned char)(t >> (8 * i));
}

static int probe(const char *addr, long port, long count, long timeout_ms)
{
    static enum state state[MAX_COUNT];
    static int64_t sent_at[MAX_COUNT];
    unsigned char token[TOKEN_LEN], out[PROBE_LEN], in[512];
    struct sockaddr_in to;
    struct pollfd pfd;
    int64_t deadline = 0, next_send = 0, now, wait_ms;
    long next = 0, pending = 0, replies = 0, i, seq;
    ssize_t n;
    int fd, err;

    memset(&to, 0, sizeof to);
    to.sin_family = AF_INET;
    to.sin_port = htons((uint16_t)port);
    if (inet_pton(AF_INET, addr, &to.sin_addr) != 1) {
        fprintf(stderr, "hnb-udp: not an IPv4 address: %s\n", addr);
        return 2;
    }
    fd = socket(AF_INET, SOCK_DGRAM, 0);
    if (fd < 0 || connect(fd, (struct sockaddr *)&to, sizeof to) < 0) {
        printf("error - %s\n", strerror(errno));
        return 1;
    }
    make_token(token);
    memcpy(out, MAGIC, MAGIC_LEN);
    memcpy(out + MAGIC_LEN, token, TOKEN_LEN);
    for (i = 0; i < count; i++)
        state[i] = UNSENT;
    pfd.fd = fd;
    pfd.events = POLLIN;

    for (;;) {
        now = now_us();
        /* send the next datagram once the previous one is answered, or after GAP_MS */
        if (next < count && (pending == 0 || now >= next_send)) {
            out[PROBE_LEN - 2] = (unsigned char)(next >> 8);
            out[PROBE_LEN - 1] = (unsigned char)next;
            sent_at[next] = now;
            if (send(fd, out, sizeof out, 0) == (ssize_t)sizeof out) {
                state[next] = WAITING;
                pending++;
            } else {
                err = errno;
                state[next] = DONE;
                if (err == ECONNREFUSED)
                    printf("refused %ld\n", next);
                else
                    printf("error %ld %s\n", next, strerror(err));
            }
            next++;
            next_send = now + GAP_MS * 1000;
            deadline = now + timeout_ms * 1000;
            continue;
        }
        if (next >= count && (pending == 0 || now >= deadline))
            break;
        wait_ms = ((next < count ? next_send : deadline) - now + 999) / 1000;
        if (poll(&pfd, 1, (int)(wait_ms > 0 ? wait_ms : 0)) < 0) {
            if (errno == EINTR)
                continue;
            printf("error - %s\n", strerror(errno));
            break;
        }
        if (!(pfd.revents & (POLLIN | POLLERR)))
            continue;
        n = recv(fd, in, sizeof in, MSG_DONTWAIT);
        now = now_us();
        if (n < 0) {
            if (errno == EAGAIN || errno == EINTR)
                continue;
            /* an ICMP error on the connected socket ends every outstanding datagram */
            err = errno;
            for (i = 0; i < next; i++) {
                if (state[i] != WAITING)
                    continue;
                state[i] = DONE;
                pending--;
                if (err == ECONNREFUSED)
                    printf("refused %ld\n", i);
                else
                    printf("error %ld %s\n", i, strerror(err));
            }
            continue;
        }
        if (n != PROBE_LEN || memcmp(in, out, PROBE_LEN - 2) != 0)
            continue;                           /* not an echo of ours */
        seq = ((long)in[PROBE_LEN - 2] << 8) | in[PROBE_LEN - 1];
        if (seq >= next || state[seq] != WAITING)
            continue;                           /* unknown or duplicate */
        state[seq] = DONE;
        pending--;
        replies++;
        printf("reply %ld %lld\n", seq, (long long)(now - sent_at[seq]));
    }
    for (i = 0; i < count; i++)
        if (state[i] == WAITING)
            printf("timeout %ld\n", i);
    fflush(stdout);
    close(fd);
    return replies > 0 ? 0 : 1;
}

int main(int argc, char **argv)
{
    long port, count, timeout_ms;

    setvbuf(stdout, NULL, _IOLBF, 0);
    if (argc == 3 && strcmp(argv[1], "echo") == 0) {
        port = number(argv[2], 1, 65535);
        return port < 0 ? usage() : echo(port);
    }
    if (argc == 6 && strcmp(argv[1], "probe") == 0) {
        port = number(argv[3], 1, 65535);
        count = number(argv[4], 1, MAX_COUNT);
        timeout_ms = number(argv[5], 1, MAX_TIMEOUT_MS);
        if (port < 0 || count < 0 || timeout_ms < 0)
            return usage();
        return probe(argv[2], port, count, timeout_ms);
    }
    return usage();
}
