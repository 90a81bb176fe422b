/*
 * hnb-probe: the resident probe helper of the hybridnb test VM.
 *
 * Why this exists: a VM's network stack is out of the probe engine's reach, so probes from a
 * VM used to be a shell script run through qemu-guest-agent (guest-exec): a busybox `ping`
 * process per pair, its RTT read in user space of a TCG guest, milliseconds of process start
 * around every probe.  This program stays resident in the guest (the init script starts it)
 * and answers probe batches over a dedicated virtio-serial port, so a VM-sourced ICMP RTT is
 * measured the way the engine measures everyone else's: all echoes of a batch sent at once
 * from one raw socket, round by round, the RTT being the kernel's receive timestamp
 * (SO_TIMESTAMPNS) minus the clock read just before the send.
 *
 *   hnb-probe serve PORTNAME   answer batches on the virtio-serial port named PORTNAME
 *                              (org.hybridnb.probe.0: the host side is a unix socket of the
 *                              libvirt domain, see hybridnb/services/probe/vmhelper.py)
 *   hnb-probe stdio            answer batches read from stdin on stdout (for tests)
 *
 * TCP connects too (`TCP INDEX ADDR PORT`): the RTT is the kernel's handshake sample
 * (TCP_INFO), the socket is reset on close (SO_LINGER 0), as the engine does.
 *
 * Wire format: text lines (LF), one request at a time.
 *   host:   HELLO NONCE
 *   helper: HELLO NONCE hnb-probe 1 icmp tcp
 *   host:   BATCH ID COUNT TIMEOUT_MS        then one line per pair, then END
 *           ICMP INDEX ADDR                  COUNT echoes
 *           TCP INDEX ADDR PORT              one connect
 *           END
 *   helper: R ID INDEX ok RTT_NS,RTT_NS,... -     one line per pair, in index order
 *           R ID INDEX fail - REASON               REASON: timeout | unreach:CODE | ttl |
 *                                                          errno:N | bad-address
 *           DONE ID
 * ID and NONCE are the host's (so it ignores lines of a batch it gave up on).  A pair's
 * result is ok when at least one of its COUNT echoes was answered (a TCP pair's when its
 * connect completed); the first error seen (an ICMP unreachable or TTL exceeded quoting our
 * echo, a send or connect errno) is its reason when none was.  All items (the echoes round
 * by round, then the connects) are paced: the next starts once the previous is answered or
 * 1 ms later.
 *
 * Build: gcc -static -Os -s -Wall -Wextra -o hnb-probe hnb-probe.c
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/ip.h>
#include <netinet/ip_icmp.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define MAX_PAIRS 4096
#define MAX_COUNT 16
#define MAX_LINE 512
#define TOKEN_LEN 8
#define ECHO_LEN (8 + TOKEN_LEN + 8)         /* ICMP header, token, sequence copy */
#define MAX_TIMEOUT_MS 600000L
#define GAP_NS 1000000L                     /* longest wait before the next echo */
#define IDLE_US 20000                       /* how often an unconnected port is looked at */
#define OUT_CAP (MAX_PAIRS * (40 + MAX_COUNT * 21) + 64)

struct pair {
    struct sockaddr_in to;
    long index;
    int tcp;                             /* a TCP connect, not ICMP echoes */
    int fd;                              /* the TCP socket in flight, or -1 */
    int64_t start;                       /* when the connect began */
    int answered;
    int nrtt;
    int64_t rtt[MAX_COUNT];
    int64_t sent_at[MAX_COUNT];          /* 0: not sent or done */
    char reason[32];
};

static struct pair pairs[MAX_PAIRS];
static char out[OUT_CAP];
static size_t outlen;
static int out_fd = 1;

static int64_t now_ns(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static void emit(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void emit(const char *fmt, ...)
{
    va_list ap;
    int n;

    if (outlen >= sizeof out)
        return;
    va_start(ap, fmt);
    n = vsnprintf(out + outlen, sizeof out - outlen, fmt, ap);
    va_end(ap);
    if (n > 0)
        outlen += (size_t)n < sizeof out - outlen ? (size_t)n : sizeof out - outlen - 1;
}

/* Write the buffered reply; a host that went away (or stays full for 2 s) loses it. */
static void flush_out(void)
{
    size_t done = 0;
    struct pollfd p;
    ssize_t n;

    while (done < outlen) {
        n = write(out_fd, out + done, outlen - done);
        if (n > 0) {
            done += (size_t)n;
            continue;
        }
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && errno == EAGAIN) {
            p.fd = out_fd;
            p.events = POLLOUT;
            if (poll(&p, 1, 2000) > 0 && !(p.revents & (POLLHUP | POLLERR)))
                continue;
        }
        break;
    }
    outlen = 0;
}

static uint16_t cksum(const unsigned char *b, size_t n)
{
    uint32_t s = 0;
    size_t i;

    for (i = 0; i + 1 < n; i += 2)
        s += (uint32_t)b[i] << 8 | b[i + 1];
    if (n & 1)
        s += (uint32_t)b[n - 1] << 8;
    while (s >> 16)
        s = (s & 0xffff) + (s >> 16);
    return (uint16_t)~s;
}

static void set_reason(struct pair *p, const char *r)
{
    if (p->reason[0] == '\0')
        snprintf(p->reason, sizeof p->reason, "%s", r);
}

/* A reply or an error quoting one of our echoes: (ident, seq) of the echo, or -1. */
static long our_seq(const unsigned char *icmp, size_t len, uint16_t ident,
                    const unsigned char *token)
{
    if (len < ECHO_LEN || (uint16_t)(icmp[4] << 8 | icmp[5]) != ident)
        return -1;
    if (memcmp(icmp + 8, token, TOKEN_LEN) != 0)
        return -1;
    return (long)(icmp[6] << 8 | icmp[7]);
}

static void on_packet(const unsigned char *buf, size_t n, int64_t ts, uint16_t ident,
                      const unsigned char *token, long npairs, long count, long *pending)
{
    const unsigned char *icmp, *inner;
    size_t ihl, iihl;
    long seq, pi, at;
    char why[32];

    if (n < 20)
        return;
    ihl = (size_t)(buf[0] & 0x0f) * 4;
    if (n < ihl + 8)
        return;
    icmp = buf + ihl;
    if (icmp[0] == ICMP_ECHOREPLY) {
        seq = our_seq(icmp, n - ihl, ident, token);
        if (seq < 0)
            return;
        pi = seq / count;
        at = seq % count;
        if (pi >= npairs || pairs[pi].sent_at[at] == 0)
            return;
        pairs[pi].rtt[pairs[pi].nrtt++] = ts - pairs[pi].sent_at[at];
        pairs[pi].sent_at[at] = 0;
        pairs[pi].answered = 1;
        (*pending)--;
        return;
    }
    if (icmp[0] != ICMP_DEST_UNREACH && icmp[0] != ICMP_TIME_EXCEEDED)
        return;
    inner = icmp + 8;
    if (n < ihl + 8 + 20)
        return;
    iihl = (size_t)(inner[0] & 0x0f) * 4;
    /* the quoted echo: at least its 8-byte header, often our token too */
    if (n < ihl + 8 + iihl + 8 || inner[iihl] != ICMP_ECHO ||
        inner[iihl + 4] != (ident >> 8) || inner[iihl + 5] != (ident & 0xff))
        return;
    seq = (long)(inner[iihl + 6] << 8 | inner[iihl + 7]);
    pi = seq / count;
    at = seq % count;
    if (pi >= npairs || pairs[pi].sent_at[at] == 0)
        return;
    pairs[pi].sent_at[at] = 0;
    (*pending)--;
    if (icmp[0] == ICMP_TIME_EXCEEDED)
        set_reason(&pairs[pi], "ttl");
    else {
        snprintf(why, sizeof why, "unreach:%d", icmp[1]);
        set_reason(&pairs[pi], why);
    }
}

/* Read every datagram waiting on the socket. */
static void drain(int fd, uint16_t ident, const unsigned char *token, long npairs, long count,
                  long *pending)
{
    unsigned char buf[1500];
    char ctl[256];
    struct iovec iov = { buf, sizeof buf };
    struct msghdr msg;
    struct cmsghdr *c;
    struct timespec *tsp;
    int64_t ts;
    ssize_t n;

    for (;;) {
        memset(&msg, 0, sizeof msg);
        msg.msg_iov = &iov;
        msg.msg_iovlen = 1;
        msg.msg_control = ctl;
        msg.msg_controllen = sizeof ctl;
        n = recvmsg(fd, &msg, MSG_DONTWAIT);
        if (n < 0)
            return;
        ts = 0;
        for (c = CMSG_FIRSTHDR(&msg); c; c = CMSG_NXTHDR(&msg, c))
            if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SO_TIMESTAMPNS) {
                tsp = (struct timespec *)CMSG_DATA(c);
                ts = (int64_t)tsp->tv_sec * 1000000000 + tsp->tv_nsec;
            }
        on_packet(buf, (size_t)n, ts ? ts : now_ns(), ident, token, npairs, count, pending);
    }
}

static void report(const char *id, long npairs)
{
    long i;
    int k;

    for (i = 0; i < npairs; i++) {
        struct pair *p = &pairs[i];

        if (p->answered) {
            emit("R %s %ld ok ", id, p->index);
            for (k = 0; k < p->nrtt; k++)
                emit("%s%lld", k ? "," : "", (long long)(p->rtt[k] > 0 ? p->rtt[k] : 0));
            emit(" -\n");
        } else {
            emit("R %s %ld fail - %s\n", id, p->index, p->reason[0] ? p->reason : "timeout");
        }
    }
    emit("DONE %s\n", id);
}

/* Send echo `at` of pair `p` (sequence number `seq`); 0 when it went out. */
static int send_echo(int fd, struct pair *p, long at, long seq, uint16_t ident,
                     const unsigned char *token)
{
    unsigned char pkt[ECHO_LEN];
    uint16_t c;
    char why[32];

    memset(pkt, 0, sizeof pkt);
    pkt[0] = ICMP_ECHO;
    pkt[4] = (unsigned char)(ident >> 8);
    pkt[5] = (unsigned char)ident;
    pkt[6] = (unsigned char)(seq >> 8);
    pkt[7] = (unsigned char)seq;
    memcpy(pkt + 8, token, TOKEN_LEN);
    memcpy(pkt + 8 + TOKEN_LEN, &seq, sizeof seq < 8 ? sizeof seq : 8);
    c = cksum(pkt, sizeof pkt);
    pkt[2] = (unsigned char)(c >> 8);
    pkt[3] = (unsigned char)c;
    p->sent_at[at] = now_ns();
    if (sendto(fd, pkt, sizeof pkt, 0, (struct sockaddr *)&p->to, sizeof p->to) < 0) {
        p->sent_at[at] = 0;
        snprintf(why, sizeof why, "errno:%d", errno);
        set_reason(p, why);
        return -1;
    }
    return 0;
}

/* Start pair p's TCP connect; 0 when it is in flight. */
static int tcp_start(struct pair *p)
{
    char why[32];

    p->start = now_ns();
    p->fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (p->fd >= 0 && (connect(p->fd, (struct sockaddr *)&p->to, sizeof p->to) == 0 ||
                       errno == EINPROGRESS))
        return 0;
    snprintf(why, sizeof why, "errno:%d", errno);
    set_reason(p, why);
    if (p->fd >= 0)
        close(p->fd);
    p->fd = -1;
    return -1;
}

/* Pair p's connect completed (or failed): its RTT is the kernel's handshake sample. */
static void tcp_finish(struct pair *p, int64_t now)
{
    struct linger lg = { 1, 0 };
    struct tcp_info ti;
    socklen_t len;
    int err = 0;
    char why[32];

    len = sizeof err;
    if (getsockopt(p->fd, SOL_SOCKET, SO_ERROR, &err, &len) < 0)
        err = errno;
    if (err) {
        snprintf(why, sizeof why, "errno:%d", err);
        set_reason(p, why);
    } else {
        len = sizeof ti;
        memset(&ti, 0, sizeof ti);
        if (getsockopt(p->fd, IPPROTO_TCP, TCP_INFO, &ti, &len) == 0 && ti.tcpi_rtt > 0)
            p->rtt[0] = (int64_t)ti.tcpi_rtt * 1000;
        else
            p->rtt[0] = now - p->start;
        p->nrtt = 1;
        p->answered = 1;
        setsockopt(p->fd, SOL_SOCKET, SO_LINGER, &lg, sizeof lg);     /* RST, no TIME_WAIT */
    }
    close(p->fd);
    p->fd = -1;
}

/* Whether item k (an echo, or past npairs * count a TCP connect) has its answer. */
static int item_done(long k, long npairs, long count)
{
    long at, i;

    if (k < 0)
        return 1;
    if (k >= npairs * count)
        return pairs[k - npairs * count].fd < 0;
    at = k / npairs;
    i = k % npairs;
    return pairs[i].sent_at[at] == 0;
}

/* Start item k; 1 when something went out. */
static int item_start(long k, long npairs, long count, int fd, uint16_t ident,
                      const unsigned char *token)
{
    struct pair *p;
    long at;

    if (k >= npairs * count) {
        p = &pairs[k - npairs * count];
        return p->tcp && p->reason[0] == '\0' && tcp_start(p) == 0;
    }
    at = k / npairs;
    p = &pairs[k % npairs];
    if (p->tcp || strcmp(p->reason, "bad-address") == 0)
        return 0;
    return send_echo(fd, p, at, (k % npairs) * count + at, ident, token) == 0;
}

static void run_batch(const char *id, long npairs, long count, long timeout_ms)
{
    unsigned char token[TOKEN_LEN];
    uint16_t ident;
    static struct pollfd pfd[MAX_PAIRS + 1];
    static long who[MAX_PAIRS + 1];
    long i, j, k, total, prev = -1, pending = 0, nfd;
    int64_t now, next_at = 0, deadline = 0, wait, timeout_ns = (int64_t)timeout_ms * 1000000;
    int fd, one = 1, big = 1 << 20;
    char why[32];

    fd = socket(AF_INET, SOCK_RAW | SOCK_CLOEXEC, IPPROTO_ICMP);
    if (fd < 0) {                            /* the echoes fail, the connects still run */
        snprintf(why, sizeof why, "errno:%d", errno);
        for (i = 0; i < npairs; i++)
            if (!pairs[i].tcp)
                set_reason(&pairs[i], why);
    }
    setsockopt(fd, SOL_SOCKET, SO_TIMESTAMPNS, &one, sizeof one);
    setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &big, sizeof big);
    if (getrandom(token, sizeof token, GRND_NONBLOCK) != (ssize_t)sizeof token) {
        int64_t t = now_ns() ^ ((int64_t)getpid() << 40);   /* early boot: no entropy yet */
        memcpy(token, &t, sizeof token);
    }
    ident = (uint16_t)(token[0] << 8 | token[1]);
    /* Round by round (attempt 0 to every target, then attempt 1 ...), as the engine does,
     * but paced: the next echo goes out once the previous one is answered or GAP_NS after
     * it.  A guest has one emulated CPU: a burst of echoes would queue their replies behind
     * its own sends and inflate every RTT but the last. */
    total = npairs * count + npairs;          /* the echoes, then the TCP connects */
    for (k = 0; k < total || pending > 0; ) {
        now = now_ns();
        for (i = 0; i < npairs; i++)           /* TCP connects past their deadline */
            if (pairs[i].fd >= 0 && now >= pairs[i].start + timeout_ns) {
                close(pairs[i].fd);
                pairs[i].fd = -1;
                pending--;
            }
        if (k < total && (item_done(prev, npairs, count) || now >= next_at)) {
            if (item_start(k, npairs, count, fd, ident, token)) {
                pending++;
                prev = k;
                next_at = now + GAP_NS;
                deadline = now + timeout_ns;
            }
            k++;
            continue;
        }
        if (k >= total && now >= deadline)
            break;
        wait = (k < total && next_at < deadline ? next_at : deadline) - now;
        nfd = 0;
        pfd[nfd].fd = fd;
        pfd[nfd++].events = POLLIN;
        for (i = 0; i < npairs; i++)
            if (pairs[i].fd >= 0) {
                who[nfd] = i;
                pfd[nfd].fd = pairs[i].fd;
                pfd[nfd++].events = POLLOUT;
            }
        if (poll(pfd, (nfds_t)nfd, wait > 0 ? (int)((wait + 999999) / 1000000) : 0) <= 0)
            continue;
        if (pfd[0].revents)
            drain(fd, ident, token, npairs, count, &pending);
        now = now_ns();
        for (j = 1; j < nfd; j++)
            if (pfd[j].revents) {
                tcp_finish(&pairs[who[j]], now);
                pending--;
            }
    }
    if (fd >= 0)
        close(fd);
    report(id, npairs);
}

/* A request line split into at most 5 words; returns how many. */
static int words(char *line, char **w, int max)
{
    int n = 0;
    char *save = NULL, *t;

    for (t = strtok_r(line, " \t\r", &save); t && n < max; t = strtok_r(NULL, " \t\r", &save))
        w[n++] = t;
    return n;
}

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

/* The state of the request being read. */
static char batch_id[40];
static long batch_count, batch_timeout, batch_n = -1;

static void on_line(char *line)
{
    char *w[6];
    int n = words(line, w, 6);
    struct pair *p;

    if (n == 0)
        return;
    if (strcmp(w[0], "HELLO") == 0 && n == 2) {
        emit("HELLO %.32s hnb-probe 1 icmp tcp\n", w[1]);
        flush_out();
    } else if (strcmp(w[0], "BATCH") == 0 && n == 4) {
        snprintf(batch_id, sizeof batch_id, "%s", w[1]);
        batch_count = number(w[2], 1, MAX_COUNT);
        batch_timeout = number(w[3], 1, MAX_TIMEOUT_MS);
        batch_n = (batch_count > 0 && batch_timeout > 0) ? 0 : -1;
        if (batch_n < 0) {
            emit("ERROR %s bad batch header\n", batch_id);
            flush_out();
        }
    } else if (((strcmp(w[0], "ICMP") == 0 && n == 3) || (strcmp(w[0], "TCP") == 0 && n == 4))
               && batch_n >= 0 && batch_n < MAX_PAIRS) {
        p = &pairs[batch_n++];
        memset(p, 0, sizeof *p);
        p->fd = -1;
        p->tcp = w[0][0] == 'T';
        p->index = number(w[1], 0, 1L << 30);
        p->to.sin_family = AF_INET;
        if (inet_pton(AF_INET, w[2], &p->to.sin_addr) != 1 ||
            (p->tcp && number(w[3], 1, 65535) < 0))
            set_reason(p, "bad-address");
        else if (p->tcp)
            p->to.sin_port = htons((uint16_t)number(w[3], 1, 65535));
    } else if (strcmp(w[0], "END") == 0 && batch_n >= 0) {
        run_batch(batch_id, batch_n, batch_count, batch_timeout);
        flush_out();
        batch_n = -1;
    } else if (batch_n >= 0) {
        emit("ERROR %s unknown or excess line\n", batch_id);
        flush_out();
        batch_n = -1;
    }
}

/* Read requests from in_fd forever (serve) or until EOF (stdio). */
static int loop(int in_fd, int stop_at_eof)
{
    static char buf[MAX_LINE * 8];
    size_t have = 0;
    struct pollfd p;
    char *nl;
    ssize_t n;

    for (;;) {
        p.fd = in_fd;
        p.events = POLLIN;
        p.revents = 0;
        if (poll(&p, 1, -1) < 0 && errno != EINTR)
            return 1;
        n = (p.revents & POLLIN) ? read(in_fd, buf + have, sizeof buf - have - 1) : 0;
        if (n < 0 && (errno == EAGAIN || errno == EINTR))
            continue;
        if (n <= 0) {
            if (stop_at_eof)
                return 0;
            /* no host on the port: virtio-serial polls HUP until one connects */
            usleep(IDLE_US);
            continue;
        }
        have += (size_t)n;
        buf[have] = '\0';
        while ((nl = memchr(buf, '\n', have)) != NULL) {
            *nl = '\0';
            on_line(buf);
            have -= (size_t)(nl + 1 - buf);
            memmove(buf, nl + 1, have);
        }
        if (have >= sizeof buf - 1)
            have = 0;                              /* an overlong line: drop it */
    }
}

/* /dev/vportNpM of the virtio-serial port named `name` (devtmpfs has no udev symlinks). */
static int open_port(const char *name)
{
    char path[300], got[128], dev[300];
    struct dirent *e;
    DIR *d;
    FILE *f;
    int tries, fd;

    for (tries = 0; tries < 100; tries++) {
        d = opendir("/sys/class/virtio-ports");
        while (d && (e = readdir(d)) != NULL) {
            if (e->d_name[0] == '.')
                continue;
            snprintf(path, sizeof path, "/sys/class/virtio-ports/%s/name", e->d_name);
            f = fopen(path, "r");
            if (f == NULL)
                continue;
            got[0] = '\0';
            if (fgets(got, sizeof got, f) != NULL)
                got[strcspn(got, "\n")] = '\0';
            fclose(f);
            if (strcmp(got, name) == 0) {
                snprintf(dev, sizeof dev, "/dev/%s", e->d_name);
                closedir(d);
                fd = open(dev, O_RDWR | O_NONBLOCK | O_CLOEXEC);
                if (fd < 0)
                    perror("hnb-probe: open");
                return fd;
            }
        }
        if (d)
            closedir(d);
        usleep(50000);
    }
    fprintf(stderr, "hnb-probe: no virtio-serial port named %s\n", name);
    return -1;
}

int main(int argc, char **argv)
{
    int fd;

    if (argc == 3 && strcmp(argv[1], "serve") == 0) {
        fd = open_port(argv[2]);
        if (fd < 0)
            return 1;
        out_fd = fd;
        return loop(fd, 0);
    }
    if (argc == 2 && strcmp(argv[1], "stdio") == 0) {
        out_fd = 1;
        return loop(0, 1);
    }
    fputs("usage: hnb-probe serve PORTNAME | hnb-probe stdio\n", stderr);
    return 2;
}
