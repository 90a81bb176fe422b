/*
 * hybridnb.services.probe._fast: the probe engine's socket work at wire speed (Linux).
 *
 * Why this exists: a full matrix of 200 endpoints is 40,000 pairs per check.  The kernel
 * does an ICMP echo between two namespaces in ~10 us and a TCP handshake in ~25 us, all in
 * the context of the sending thread; the portable engine (engine.py + clients.py) spends
 * 30-60 us of Python per probe around that (objects, selectors, handlers), on one core, so
 * every check of a 200-endpoint lab took 15 s where the kernel's share is about 2 s.  Here the
 * whole run of a plan -- sockets opened inside the namespaces, sends, the event loop, the
 * responders, the file-descriptor window, the deadlines -- runs in C threads with the GIL
 * released, and Python only plans before and builds the results after.
 *
 *   run(plan..., out...) -> (notes, responders_up, batches, dropped_retries, peak_fds)
 *
 * `plan` is a tuple of plain values built by fast.py from a ProbePlan (see there: the unit
 * columns of plan.UnitTable, the endpoints' addresses, the namespaces...).  `out` is a tuple
 * of writable buffers, one slot per pair: sent (int32), received (int32), error (int32),
 * HTTP status (int32) and the RTTs (int64 ns, `count` per pair, in arrival order).  Errors
 * are an errno (positive) or one of the E_* codes below.  `notes` lists (pair, bytes) for the
 * rare outcomes Python must read itself (a DNS reply that does not hold the expected address).
 *
 * Semantics (the portable engine's, see engine.py and schedule.py):
 * - units go out in plan order while their descriptors fit `limit` (shared by every lane);
 *   a responder is opened with the first unit that probes it and closed after the last;
 * - a pair's deadline is its first attempt's send time + timeout; a retry admitted after
 *   its pair's deadline is not sent;
 * - DNS queries all go to the lab's one name server: each lane keeps at most `dns_window` (512) of
 *   them in flight (sending the next as answers come back; a window unanswered for
 *   DNS_STALE_NS is forgiven), so a 200-endpoint matrix does not overflow the server's socket
 *   buffer; a DNS unit's deadline is its last query's + timeout;
 * - pacing (schedule.Pacer): each lane keeps at most `packet_cap` packets sent in the last
 *   STALE_MS and unanswered (ICMP echoes and DNS queries go as the window allows, UDP and
 *   stream units are admitted while it has room), so a burst never overflows a CPU's receive
 *   backlog (a veth hands every packet to it; a packet dropped there costs a timeout); probes
 *   towards slow targets (VMs) go one at a time per target, from every lane together (an
 *   atomic turn per target, passed on when answered or after `slow_gap`), so an emulated
 *   guest's queue never inflates another pair's RTT;
 * - a unit past its deadline is given up only once its lane has read everything that
 *   arrived (an epoll_wait found nothing waiting: a responder of the lane may still have
 *   answered during the last batch of events), or GRACE later;
 * - RTTs: ICMP, UDP and DNS from the kernel's receive timestamp (SO_TIMESTAMPNS) minus the
 *   time taken just before the send; UDP minus the time our responder held the datagram; TCP
 *   from the kernel's handshake sample (TCP_INFO); HTTP wall time to the status line.
 * Work is split over `lanes` threads: stream and UDP units by target (a target's responders
 * live in one lane), ICMP and DNS units by source.  A lane enters a namespace with setns(2)
 * to create a socket there (a socket keeps its namespace for life).
 *
 * Built by `pip install` (setup.py, optional: without a compiler the portable engine runs).
 */
#define PY_SSIZE_T_CLEAN
#define _GNU_SOURCE
#include <Python.h>

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <signal.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#ifndef SO_TIMESTAMPNS
#define SO_TIMESTAMPNS 35
#endif
#define SOL_RAW_ 255
#define ICMP_FILTER_ 1

/* error codes beyond errno (kept in step with fast.py) */
#define E_ICMP 0x10000       /* | type << 8 | code */
#define E_HTTP 0x20000       /* | status */
#define E_CLOSED 0x30001     /* connection closed without a response */
#define E_NOTHTTP 0x30002    /* not an HTTP response */
#define E_DNSNOTE 0x30003    /* a DNS reply without the expected address: see the notes */
#define E_TOOMANY 0x30004    /* too many ICMP/DNS probes from one source */
#define E_NOSOCK 0x40000     /* | errno: cannot open a socket in the source's namespace */
#define E_NONS 0x50000       /* | errno: cannot enter the source's namespace */
#define NS_ERR 0x10000       /* socket_in: the namespace, not the socket, failed */

enum { K_ICMP = 0, K_DNS = 1, K_UDP = 2, K_STREAM = 3 };
enum { H_UNIT = 1, H_LISTENER, H_CONN, H_UDPRESP, H_HOLD };
enum { R_CLOSED = 0, R_OPEN, R_ASIDE };

#define MAXEV 256
/* DNS queries one lane keeps in flight: the lab's one name server must not get a burst of
 * 40,000 (its socket buffer holds a few thousand; the rest would be dropped as timeouts) */
#define DNS_WINDOW_DEFAULT 512
/* a full window unanswered for this long is forgiven: those queries are lost (a dead source,
 * a dropped datagram) or late, and no longer load the server; so a dead source holds the
 * lane's DNS queries back for milliseconds, not for a timeout */
#define DNS_STALE_NS (20 * 1000000LL)
/* a packet counts in its lane's packet window for at most this long after it was sent: by then
 * it has left every backlog (answered, dropped, or waiting at a dead end), so a dead endpoint's
 * packets hold the window for milliseconds, not for a timeout (schedule.STALE) */
#define STALE_MS 10
/* ep_slow bits (fast.py): ICMP echoes towards the endpoint paced; UDP/stream units too */
#define SLOW_ECHOES 1
#define SLOW_UNITS 2
#define AGE_SLOTS 64
#define ADMIT_ROUND 64
#define UDP_PROBE_LEN 14
#define HTTP_BUF 4096        /* an HTTP response's head: longer, its connection is not reused */
#define REQ_MAX 8192
#define NS_PER_S 1000000000LL

static const char UDP_MAGIC[4] = {'h', 'n', 'b', 'P'};
/* a request that does not keep its connection (HTTP/1.0, `Connection: close`) */
static const char HTTP_RESPONSE[] =
    "HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 9\r\n"
    "Connection: close\r\n\r\nhybridnb\n";
/* one that does (HTTP/1.1, or `Connection: keep-alive`): the connection stays open */
static const char HTTP_RESPONSE_KEEP[] =
    "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 9\r\n\r\nhybridnb\n";

/* ---------------------------------------------------------------------------------- data */

typedef struct Handle { int type; } Handle;

struct Conn;

typedef struct {
    Handle h;        /* H_LISTENER or H_UDPRESP while open */
    int kind;        /* K_STREAM or K_UDP */
    int ns;          /* namespace index, -1: the caller's */
    int target;      /* endpoint index: its lane is target % lanes, as its units' */
    int held;        /* open from the start until the hold fd is signalled */
    uint32_t ip;     /* network order */
    int port;
    int http;
    int users;       /* units that probe it and are not finished */
    int state;
    int ever_open;
    int fd;
    struct Conn *conns;
} Responder;

typedef struct Conn {
    Handle h;
    int fd;
    Responder *owner;
    struct Conn *prev, *next;
    int len;
    char buf[REQ_MAX];
} Conn;

typedef struct Live {
    Handle h;
    int unit;
    int fd;
    int kind;
    int http;             /* stream: sends GET / */
    int finished;
    int in_heap;
    int outstanding;
    int64_t deadline;     /* monotonic */
    int64_t t0;           /* stream: monotonic start of the connect */
    int64_t t_req;        /* http: monotonic time the current request was sent */
    int state;            /* stream: 0 connecting, 1 reading the response head, 2 its body */
    int req;              /* http: the request under way (0 .. count-1) */
    int answered;         /* http: the current request's status line was judged */
    long body_left;       /* http: body bytes still to skip before the next request */
    uint16_t ident, qbase;
    int n;                /* icmp/dns: pairs in the group */
    int64_t *sent_at;     /* icmp/dns/udp: realtime ns per probe, 0: not outstanding */
    char *buf;            /* http response */
    int blen;
    int next, total;      /* dns: the next query to send, and how many there are */
    struct Live *wprev, *wnext;   /* icmp/dns: in the lane's queue of units with packets to send */
    int waiting;
    int64_t pk_t;         /* stream: when its connection was counted in the window (0: not) */
    int *slowq;           /* icmp: echoes (send order) towards slow targets, not sent yet */
    int nslow;
    int64_t *tok;         /* icmp: per echo (seq), the slow target's turn it took (0: none) */
    struct Live *sprev, *snext;   /* icmp: in the lane's list of units with slow echoes */
    int slowlisted;
    int64_t slow_tok;     /* udp/stream towards a slow target: the turn it took */
} Live;

typedef struct { int64_t deadline; Live *live; } HeapItem;

typedef struct Engine Engine;

typedef struct {
    Engine *e;
    int id;
    int ep;
    int *queue;
    int nq, qpos;
    HeapItem *heap;
    int nheap, capheap;
    int active;
    int home;         /* this lane's original namespace */
    int cur;          /* namespace the lane is in now (-1 home, -2 unknown) */
    int batches;
    int dropped;
    int blocked;      /* the last admission stopped for lack of descriptors */
    int holding;      /* held responders of this lane wait for the hold fd */
    Handle hold;
    int err;          /* a fatal error (ENOMEM...) */
    int dns_inflight; /* DNS queries sent and not answered (nor given up, nor forgiven) */
    int64_t dns_full_since;   /* when the window filled up (0: it is not full) */
    Live *dns_head, *dns_tail;   /* ICMP and DNS units with packets still to send, in order */
    int inflight;     /* packets sent in the last STALE_MS and not answered: the window */
    int age[AGE_SLOTS];       /* of those, per millisecond of sending (a ring) */
    int64_t age_head;         /* the oldest millisecond still counted */
    int pblocked;     /* the last admission stopped for a full packet window */
    Live *slow_head;  /* ICMP units with echoes towards slow targets still to send */
    int *sq;          /* UDP/stream units towards slow targets, waiting for their turn */
    int nsq;
    int64_t next_tok; /* the turn taken for the unit being started (start_unit) */
    /* notes collected without the GIL */
    int *note_pair;
    char **note_data;
    int *note_len;
    int64_t *note_rtt;
    int nnotes, capnotes;
    void **grave;
    int ngrave, capgrave;
} Lane;

struct Engine {
    /* units (columns of plan.UnitTable) */
    int nunits;
    const int8_t *u_kind;
    const int32_t *u_ns, *u_first, *u_size, *u_attempt, *u_resp, *u_target, *u_port;
    const int8_t *u_fds, *u_http;
    const int32_t *group, *group_target;
    /* endpoints */
    int nendpoints;
    uint32_t *ep_ip;
    char **ep_qname;     /* DNS question name, wire format */
    int *ep_qlen;
    char **ep_req;       /* HTTP request */
    int *ep_reqlen;
    /* namespaces */
    int nns;
    char **ns_path;
    int *ns_fd;          /* cached fds, -1: open on use */
    uint16_t *ns_ident;  /* the ICMP identifier of a source namespace's echoes (icmp_ident) */
    /* responders */
    int nresp;
    Responder *resp;
    int hold_fd;         /* readable once the script sources are done (-1: no hold) */
    int ready_fd;        /* written once every lane's held responders listen (-1: none) */
    atomic_int lanes_holding;   /* lanes that have not opened their held responders yet */
    /* run */
    int count;
    int64_t timeout, grace;
    uint32_t dns_ip;
    int dns_port;
    int dns_window;      /* DNS queries a lane keeps in flight */
    int pkt_cap;         /* packets a lane keeps unanswered (schedule.packet_cap) */
    int64_t slow_gap;    /* a slow target's turn lasts until answered or this long */
    uint8_t *ep_slow;    /* per endpoint: SLOW_ECHOES | SLOW_UNITS (a VM): one at a time */
    _Atomic int64_t *slow_until;  /* per endpoint: its turn is taken until then (monotonic) */
    char token[8];
    atomic_int ident;
    atomic_long budget;
    atomic_long in_use;
    atomic_long peak;
    int nlanes;
    Lane *lanes;
    /* outputs */
    int npairs;
    int32_t *o_sent, *o_recv, *o_err, *o_status;
    int64_t *o_rtt;
    int64_t *p_deadline;  /* per pair: first attempt + timeout (monotonic), 0: not yet */
};

/* ---------------------------------------------------------------------------------- time */

static inline int64_t mono_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * NS_PER_S + ts.tv_nsec;
}

static inline int64_t real_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * NS_PER_S + ts.tv_nsec;
}

static int64_t cmsg_ts(struct msghdr *msg) {
    for (struct cmsghdr *c = CMSG_FIRSTHDR(msg); c; c = CMSG_NXTHDR(msg, c)) {
        if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SO_TIMESTAMPNS) {
            struct timespec ts;
            memcpy(&ts, CMSG_DATA(c), sizeof ts);
            return (int64_t)ts.tv_sec * NS_PER_S + ts.tv_nsec;
        }
    }
    return real_ns();
}

static inline int is_ws_(char c) {
    return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\v' || c == '\f';
}

/* ------------------------------------------------------------------------------- budget */

static int reserve(Engine *e, long n) {
    long cur = atomic_load(&e->budget);
    while (cur >= n) {
        if (atomic_compare_exchange_weak(&e->budget, &cur, cur - n)) {
            long used = atomic_fetch_add(&e->in_use, n) + n;
            long peak = atomic_load(&e->peak);
            while (used > peak && !atomic_compare_exchange_weak(&e->peak, &peak, used)) {}
            return 1;
        }
    }
    return 0;
}

static void give_back(Engine *e, long n) {
    atomic_fetch_add(&e->budget, n);
    atomic_fetch_sub(&e->in_use, n);
}

/* ------------------------------------------------------------------------------ pacing */

/* The lane's packet window (schedule.Pacer): packets sent in the last STALE_MS and not yet
 * answered; at most pkt_cap, so a burst never overflows a CPU's receive backlog.  Counted per
 * millisecond of sending (realtime, the clock of sent_at) so that old packets drop out. */
static void pk_age(Lane *L, int64_t now_ms) {
    int64_t first = now_ms - STALE_MS + 1;              /* the oldest millisecond counted */
    if (first - L->age_head > AGE_SLOTS) {              /* idle for long: nothing counts */
        memset(L->age, 0, sizeof L->age);
        L->inflight = 0;
        L->age_head = first;
        return;
    }
    while (L->age_head < first) {
        int *slot = &L->age[L->age_head % AGE_SLOTS];
        L->inflight -= *slot;
        *slot = 0;
        L->age_head++;
    }
}

static inline void pk_add(Lane *L, int64_t t) {
    int64_t ms = t / 1000000;
    pk_age(L, ms);
    if (ms < L->age_head) return;
    L->age[ms % AGE_SLOTS]++;
    L->inflight++;
}

/* the packet sent at t (realtime ns) is answered or given up: out of the window, if it still
 * counts there */
static inline void pk_sub(Lane *L, int64_t t) {
    int64_t ms = t / 1000000;
    if (ms < L->age_head || ms >= L->age_head + AGE_SLOTS) return;
    int *slot = &L->age[ms % AGE_SLOTS];
    if (*slot > 0) {
        (*slot)--;
        L->inflight--;
    }
}

/* packets that may go now */
static int pk_room(Lane *L) {
    pk_age(L, real_ns() / 1000000);
    return L->e->pkt_cap - L->inflight;
}

/* take slow target t's turn (shared by the lanes); 1 and the stamp, or 0: it is taken */
static int slow_take(Engine *e, int t, int64_t now, int64_t *stamp) {
    int64_t cur = atomic_load(&e->slow_until[t]);
    while (cur <= now) {
        int64_t want = now + e->slow_gap;
        if (atomic_compare_exchange_weak(&e->slow_until[t], &cur, want)) {
            *stamp = want;
            return 1;
        }
    }
    return 0;
}

/* the probe that took `stamp` is answered: the next may go now (unless the turn passed on) */
static void slow_done(Engine *e, int t, int64_t stamp) {
    int64_t cur = stamp;
    if (stamp) atomic_compare_exchange_strong(&e->slow_until[t], &cur, 0);
}

/* ---------------------------------------------------------------------------- outcomes */

static inline void pair_fail(Engine *e, int pair, int code) {
    if (e->o_err[pair] == 0) e->o_err[pair] = code;
}

static inline void pair_rtt(Engine *e, int pair, int64_t rtt) {
    int k = e->o_recv[pair];
    if (k < e->count) e->o_rtt[(int64_t)pair * e->count + k] = rtt > 0 ? rtt : 0;
    e->o_recv[pair] = k + 1;
}

static void add_note(Lane *L, int pair, const char *data, int len, int64_t rtt) {
    if (L->nnotes == L->capnotes) {
        int cap = L->capnotes ? L->capnotes * 2 : 16;
        int *np = realloc(L->note_pair, cap * sizeof(int));
        if (np) L->note_pair = np;
        char **nd = realloc(L->note_data, cap * sizeof(char *));
        if (nd) L->note_data = nd;
        int *nl = realloc(L->note_len, cap * sizeof(int));
        if (nl) L->note_len = nl;
        int64_t *nr = realloc(L->note_rtt, cap * sizeof(int64_t));
        if (nr) L->note_rtt = nr;
        if (!np || !nd || !nl || !nr) return;
        L->capnotes = cap;
    }
    char *copy = malloc(len > 0 ? len : 1);
    if (!copy) return;
    memcpy(copy, data, len);
    L->note_pair[L->nnotes] = pair;
    L->note_data[L->nnotes] = copy;
    L->note_len[L->nnotes] = len;
    L->note_rtt[L->nnotes] = rtt;
    L->nnotes++;
}

/* --------------------------------------------------------------------------- namespaces */

static int enter(Lane *L, int ns) {
    Engine *e = L->e;
    if (ns == L->cur) return 0;
    int fd, opened = 0;
    if (ns < 0) {
        fd = L->home;
    } else if (e->ns_fd[ns] >= 0) {
        fd = e->ns_fd[ns];
    } else {
        fd = open(e->ns_path[ns], O_RDONLY | O_CLOEXEC);
        if (fd < 0) return errno;
        opened = 1;
    }
    int rc = setns(fd, CLONE_NEWNET);
    int err = errno;
    if (opened) close(fd);
    if (rc < 0) {
        L->cur = -2;
        return err ? err : EINVAL;
    }
    L->cur = ns;
    return 0;
}

/* a socket in namespace `ns` (-1: the lane's own); returns the fd, -errno when socket()
 * failed or -(NS_ERR | errno) when the namespace could not be entered */
static int socket_in(Lane *L, int ns, int type, int proto) {
    int err = enter(L, ns);
    if (err) return -(NS_ERR | err);
    int fd = socket(AF_INET, type | SOCK_NONBLOCK | SOCK_CLOEXEC, proto);
    return fd < 0 ? -errno : fd;
}

/* -------------------------------------------------------------------------------- heap */

static int heap_push(Lane *L, Live *live) {
    if (L->nheap == L->capheap) {
        int cap = L->capheap ? L->capheap * 2 : 1024;
        HeapItem *h = realloc(L->heap, cap * sizeof(HeapItem));
        if (!h) return -1;
        L->heap = h;
        L->capheap = cap;
    }
    int i = L->nheap++;
    while (i > 0) {
        int p = (i - 1) / 2;
        if (L->heap[p].deadline <= live->deadline) break;
        L->heap[i] = L->heap[p];
        i = p;
    }
    L->heap[i].deadline = live->deadline;
    L->heap[i].live = live;
    return 0;
}

static Live *heap_pop(Lane *L) {
    Live *top = L->heap[0].live;
    HeapItem last = L->heap[--L->nheap];
    int i = 0;
    for (;;) {
        int c = 2 * i + 1;
        if (c >= L->nheap) break;
        if (c + 1 < L->nheap && L->heap[c + 1].deadline < L->heap[c].deadline) c++;
        if (last.deadline <= L->heap[c].deadline) break;
        L->heap[i] = L->heap[c];
        i = c;
    }
    if (L->nheap > 0) L->heap[i] = last;
    return top;
}

/* ------------------------------------------------------------------------- freeing later */

/* Conns and units closed while handling one batch of events are freed after the batch: a
 * later event of the same batch may still point at them (they are then marked closed). */
static int bury(Lane *L, void *p) {
    if (L->ngrave == L->capgrave) {
        int cap = L->capgrave ? L->capgrave * 2 : 256;
        void **g = realloc(L->grave, cap * sizeof(void *));
        if (!g) {
            L->err = ENOMEM;
            return -1;
        }
        L->grave = g;
        L->capgrave = cap;
    }
    L->grave[L->ngrave++] = p;
    return 0;
}

static void empty_grave(Lane *L) {
    for (int i = 0; i < L->ngrave; i++) free(L->grave[i]);
    L->ngrave = 0;
}

/* --------------------------------------------------------------------------- responders */

static void conn_close(Lane *L, Conn *c) {
    Responder *r = c->owner;
    if (c->prev) c->prev->next = c->next; else r->conns = c->next;
    if (c->next) c->next->prev = c->prev;
    close(c->fd);
    c->fd = -1;
    if (bury(L, c) < 0) {}      /* leaked on ENOMEM, never used again */
}

static void responder_close(Lane *L, Responder *r) {
    if (r->state == R_OPEN) {
        while (r->conns) conn_close(L, r->conns);
        close(r->fd);
        r->fd = -1;
        give_back(L->e, 1);
    }
    r->state = R_CLOSED;
}

/* open a responder; its descriptor was reserved by the caller */
static void responder_open(Lane *L, Responder *r) {
    Engine *e = L->e;
    r->state = R_ASIDE;          /* unless it binds: then whatever listens answers */
    int fd = socket_in(L, r->ns, r->kind == K_UDP ? SOCK_DGRAM : SOCK_STREAM, 0);
    if (fd < 0) {
        give_back(e, 1);
        return;
    }
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons(r->port)};
    sa.sin_addr.s_addr = r->ip;
    /* a stand-in stream listener hands over only connections that send something (a request,
     * a FIN): a TCP probe's connect completes in the kernel (SYN, SYN-ACK, ACK) and its reset
     * removes the embryonic connection, with no socket, accept or close on this side */
    if (r->kind != K_UDP) setsockopt(fd, IPPROTO_TCP, TCP_DEFER_ACCEPT, &one, sizeof one);
    if (bind(fd, (struct sockaddr *)&sa, sizeof sa) < 0 ||
        (r->kind != K_UDP && listen(fd, 4096) < 0)) {
        close(fd);
        give_back(e, 1);
        return;
    }
    if (r->kind == K_UDP) {
        setsockopt(fd, SOL_SOCKET, SO_TIMESTAMPNS, &one, sizeof one);
        int big = 4 << 20;
        if (setsockopt(fd, SOL_SOCKET, SO_RCVBUFFORCE, &big, sizeof big) < 0)
            setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &big, sizeof big);
    }
    r->h.type = r->kind == K_UDP ? H_UDPRESP : H_LISTENER;
    struct epoll_event ev = {.events = EPOLLIN, .data.ptr = r};
    epoll_ctl(L->ep, EPOLL_CTL_ADD, fd, &ev);
    r->fd = fd;
    r->state = R_OPEN;
    r->conns = NULL;
    r->ever_open = 1;
}

/* where an HTTP head (request or response) ends: just past its blank line, or -1 */
static int head_end(const char *buf, int len) {
    for (int i = 1; i < len; i++) {
        if (buf[i] != '\n') continue;
        if (buf[i - 1] == '\n') return i + 1;
        if (i >= 3 && buf[i - 1] == '\r' && buf[i - 2] == '\n' && buf[i - 3] == '\r') return i + 1;
    }
    return -1;
}

static int ci_eq(const char *a, int alen, const char *word) {
    int n = (int)strlen(word);
    if (alen != n) return 0;
    for (int i = 0; i < n; i++)
        if ((a[i] | 0x20) != word[i]) return 0;
    return 1;
}

static int ci_has(const char *a, int alen, const char *word) {
    int n = (int)strlen(word);
    for (int i = 0; i + n <= alen; i++)
        if (ci_eq(a + i, n, word)) return 1;
    return 0;
}

/* an HTTP head's first line and headers (as clients.head_fields): whether the first line
 * ends in (request) or starts with (response) HTTP/1.1, its `Connection` header's verdict
 * (-1 close, 1 keep-alive, 0 none), whether it has `Transfer-Encoding`, its
 * `Content-Length` (-1: none or not a number) */
typedef struct { int v11, conn, chunked; long length; } Head;

static Head head_fields(const char *b, int head, int response) {
    Head h = {0, 0, 0, -1};
    const char *nl = memchr(b, '\n', head);
    int end = nl ? (int)(nl - b) : head, e = end;
    while (e > 0 && is_ws_(b[e - 1])) e--;
    h.v11 = response ? (end >= 8 && memcmp(b, "HTTP/1.1", 8) == 0)
                     : (e >= 8 && memcmp(b + e - 8, "HTTP/1.1", 8) == 0);
    for (int p = end + 1; p < head;) {
        const char *n2 = memchr(b + p, '\n', head - p);
        int le = n2 ? (int)(n2 - b) : head;
        const char *colon = memchr(b + p, ':', le - p);
        if (colon) {
            int nlen = (int)(colon - (b + p)), vs = (int)(colon - b) + 1, vlen = le - vs;
            if (ci_eq(b + p, nlen, "connection")) {
                if (ci_has(b + vs, vlen, "close")) h.conn = -1;
                else if (ci_has(b + vs, vlen, "keep-alive") && h.conn == 0) h.conn = 1;
            } else if (ci_eq(b + p, nlen, "transfer-encoding")) {
                h.chunked = 1;
            } else if (ci_eq(b + p, nlen, "content-length")) {
                int q = vs, ve = le;
                while (q < ve && is_ws_(b[q])) q++;
                while (ve > q && is_ws_(b[ve - 1])) ve--;
                long v = q < ve ? 0 : -1;
                for (int k = q; k < ve && v >= 0; k++)
                    v = (b[k] >= '0' && b[k] <= '9' && v < 100000000) ? v * 10 + (b[k] - '0') : -1;
                h.length = v;
            }
        }
        p = le + 1;
    }
    return h;
}

/* whether a connection carries another request after this head's message */
static int head_keeps(Head h) {
    return h.conn == 1 || (h.v11 && h.conn == 0);
}

/* read what the connection has; answer each whole request (keeping the connection when the
 * request asks for it, as HTTP/1.1 does by default); close when the peer closed or failed,
 * or after answering a request that does not keep it */
static void conn_read(Lane *L, Conn *c, int registered) {
    for (;;) {
        int room = REQ_MAX - c->len;
        ssize_t n = recv(c->fd, c->buf + c->len, room, MSG_DONTWAIT);
        if (n < 0 && (errno == EAGAIN || errno == EINTR)) {
            if (!registered) {
                struct epoll_event ev = {.events = EPOLLIN, .data.ptr = c};
                epoll_ctl(L->ep, EPOLL_CTL_ADD, c->fd, &ev);
            }
            return;
        }
        if (n <= 0) {
            conn_close(L, c);
            return;
        }
        c->len += (int)n;
        for (;;) {
            int end = head_end(c->buf, c->len);
            if (end < 0) {
                if (c->len < REQ_MAX) break;
                end = c->len;
            }
            int keep = head_keeps(head_fields(c->buf, end, 0));
            const char *resp = keep ? HTTP_RESPONSE_KEEP : HTTP_RESPONSE;
            int rlen = keep ? (int)sizeof HTTP_RESPONSE_KEEP - 1 : (int)sizeof HTTP_RESPONSE - 1;
            if (send(c->fd, resp, rlen, MSG_NOSIGNAL | MSG_DONTWAIT) < 0 || !keep) {
                conn_close(L, c);
                return;
            }
            memmove(c->buf, c->buf + end, c->len - end);
            c->len -= end;
        }
        if (n < room) {         /* all there was: epoll (level-triggered) tells when more comes */
            if (!registered) {
                struct epoll_event ev = {.events = EPOLLIN, .data.ptr = c};
                epoll_ctl(L->ep, EPOLL_CTL_ADD, c->fd, &ev);
            }
            return;
        }
    }
}

static void on_listener(Lane *L, Responder *r) {
    for (;;) {
        int fd = accept4(r->fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) return;
        if (!r->http) {
            close(fd);
            continue;
        }
        Conn *c = malloc(sizeof *c);
        if (!c) {
            close(fd);
            continue;
        }
        c->h.type = H_CONN;
        c->fd = fd;
        c->owner = r;
        c->len = 0;
        c->prev = NULL;
        c->next = r->conns;
        if (r->conns) r->conns->prev = c;
        r->conns = c;
        conn_read(L, c, 0);
    }
}

static void on_udp_responder(Responder *r) {
    unsigned char buf[2048];
    char cbuf[128];
    for (;;) {
        struct sockaddr_in from;
        struct iovec iov = {buf, sizeof buf - 16};
        struct msghdr msg = {.msg_name = &from, .msg_namelen = sizeof from, .msg_iov = &iov,
                             .msg_iovlen = 1, .msg_control = cbuf,
                             .msg_controllen = sizeof cbuf};
        ssize_t n = recvmsg(r->fd, &msg, MSG_DONTWAIT);
        if (n < 0) {
            if (errno == EINTR) continue;
            return;
        }
        if (n == UDP_PROBE_LEN && memcmp(buf, UDP_MAGIC, 4) == 0) {
            uint64_t rx = (uint64_t)cmsg_ts(&msg), tx = (uint64_t)real_ns();
            for (int i = 0; i < 8; i++) {
                buf[n + i] = (unsigned char)(rx >> (56 - 8 * i));
                buf[n + 8 + i] = (unsigned char)(tx >> (56 - 8 * i));
            }
            n += 16;
        }
        sendto(r->fd, buf, n, MSG_DONTWAIT, (struct sockaddr *)&from, msg.msg_namelen);
    }
}

/* ------------------------------------------------------------------------------- units */

static inline int unit_pair(Engine *e, int u, int k) {
    return e->u_size[u] ? e->group[e->u_first[u] + k] : e->u_first[u];
}

static void fail_unit(Engine *e, int u, int code) {
    int n = e->u_size[u] ? e->u_size[u] : 1;
    for (int k = 0; k < n; k++) pair_fail(e, unit_pair(e, u, k), code);
}

static inline void pair_started(Engine *e, int pair, int64_t now) {
    if (e->p_deadline[pair] == 0) e->p_deadline[pair] = now + e->timeout;
}

static void dns_unqueue(Lane *L, Live *live);
static void slow_unlist(Lane *L, Live *live);

/* nothing left to send or to wait for */
static inline int unit_idle(Live *live) {
    return live->outstanding == 0 && live->next >= live->total && live->nslow == 0;
}

static void responder_unused(Lane *L, int ri) {
    if (ri < 0) return;
    Responder *r = &L->e->resp[ri];
    if (--r->users == 0) responder_close(L, r);
}

/* done with a unit: its socket closed, its descriptors given back; freed once it is out of
 * the deadline heap (and after the current batch of events) */
static void unit_finish(Lane *L, Live *live) {
    Engine *e = L->e;
    if (live->finished) return;
    live->finished = 1;
    if (live->fd >= 0) {
        close(live->fd);
        live->fd = -1;
    }
    give_back(e, e->u_fds[live->unit]);
    L->active--;
    responder_unused(L, e->u_resp[live->unit]);
    if (live->kind == K_DNS) L->dns_inflight -= live->outstanding;   /* given up: free */
    dns_unqueue(L, live);
    slow_unlist(L, live);
    if (live->sent_at) {                                /* what is still counted */
        int np = live->kind == K_UDP ? e->count : live->n * e->count;
        for (int i = 0; i < np && live->outstanding > 0; i++)
            if (live->sent_at[i]) pk_sub(L, live->sent_at[i]);
    }
    if (live->pk_t) pk_sub(L, live->pk_t);
    live->pk_t = 0;
    if (live->slow_tok) slow_done(e, e->u_target[live->unit], live->slow_tok);
    free(live->sent_at);
    live->sent_at = NULL;
    free(live->slowq);
    live->slowq = NULL;
    live->nslow = 0;
    free(live->tok);
    live->tok = NULL;
    free(live->buf);
    live->buf = NULL;
    if (!live->in_heap) bury(L, live);
}

static uint16_t checksum(const unsigned char *p, int len) {
    uint32_t s = 0;
    for (int i = 0; i + 1 < len; i += 2) {
        uint16_t w;
        memcpy(&w, p + i, 2);
        s += w;
    }
    if (len & 1) s += p[len - 1];
    s = (s >> 16) + (s & 0xFFFF);
    s += s >> 16;
    return (uint16_t)~s;
}

/* an ICMP or DNS unit's socket: kernel receive timestamps, room for a source's replies */
static void group_socket(int fd) {
    int one = 1, big = 1 << 20;
    setsockopt(fd, SOL_SOCKET, SO_TIMESTAMPNS, &one, sizeof one);
    if (setsockopt(fd, SOL_SOCKET, SO_RCVBUFFORCE, &big, sizeof big) < 0)
        setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &big, sizeof big);
}

static void pump_queue(Lane *L, Live *live);

/* send echo `idx` of an ICMP unit (send order, round by round: idx = attempt * n + k) */
static void icmp_send(Lane *L, Live *live, int idx, int64_t stamp) {
    Engine *e = L->e;
    int u = live->unit, n = live->n, c = e->count, k = idx % n, a = idx / n;
    int pair = e->group[e->u_first[u] + k], seq = k * c + a;
    unsigned char pkt[24];
    struct sockaddr_in sa = {.sin_family = AF_INET};
    memset(pkt, 0, sizeof pkt);
    pkt[0] = 8;
    pkt[4] = live->ident >> 8;
    pkt[5] = live->ident & 0xFF;
    pkt[6] = seq >> 8;
    pkt[7] = seq & 0xFF;
    memcpy(pkt + 8, e->token, 8);
    pkt[22] = seq >> 8;
    pkt[23] = seq & 0xFF;
    uint16_t ck = checksum(pkt, sizeof pkt);
    memcpy(pkt + 2, &ck, 2);
    sa.sin_addr.s_addr = e->ep_ip[e->group_target[e->u_first[u] + k]];
    e->o_sent[pair]++;
    int64_t now = mono_ns();
    pair_started(e, pair, now);
    live->deadline = now + e->timeout;                  /* the last echo sent + timeout */
    int64_t t = real_ns();
    if (sendto(live->fd, pkt, sizeof pkt, 0, (struct sockaddr *)&sa, sizeof sa) < 0) {
        pair_fail(e, pair, errno);
        slow_done(e, e->group_target[e->u_first[u] + k], stamp);
    } else {
        live->sent_at[seq] = t;
        live->outstanding++;
        pk_add(L, t);
        if (live->tok) live->tok[seq] = stamp;
    }
}

/* an ICMP unit: its echoes are queued (pump() sends them as the lane's window allows, those
 * towards slow targets one at a time per target: slow_pump()) */
static int64_t start_icmp(Lane *L, Live *live, int fd) {
    Engine *e = L->e;
    int u = live->unit, n = e->u_size[u], c = e->count;
    if ((long)n * c > 0xFFFF) {
        fail_unit(e, u, E_TOOMANY);
        return 0;
    }
    group_socket(fd);
    uint32_t allowed = (1u << 0) | (1u << 3) | (1u << 11), filter = ~allowed;
    setsockopt(fd, SOL_RAW_, ICMP_FILTER_, &filter, sizeof filter);
    live->n = n;
    live->ident = e->ns_ident[e->u_ns[u]];
    live->sent_at = calloc((size_t)n * c, sizeof(int64_t));
    int slow = 0;
    for (int k = 0; k < n && !slow; k++)
        slow = e->ep_slow[e->group_target[e->u_first[u] + k]] & SLOW_ECHOES;
    if (slow) {
        live->tok = calloc((size_t)n * c, sizeof(int64_t));
        live->slowq = malloc((size_t)n * c * sizeof(int));
    }
    if (!live->sent_at || (slow && (!live->tok || !live->slowq))) {
        L->err = ENOMEM;
        return 0;
    }
    struct epoll_event ev = {.events = EPOLLIN, .data.ptr = live};
    epoll_ctl(L->ep, EPOLL_CTL_ADD, fd, &ev);
    live->total = n * c;
    live->next = 0;
    live->deadline = mono_ns() + e->timeout;
    pump_queue(L, live);
    return live->deadline;
}

/* echo `seq` is answered: the slow target's turn it took (if any) ends */
static void icmp_turn_done(Engine *e, Live *live, int seq) {
    if (!live->tok || !live->tok[seq]) return;
    slow_done(e, e->group_target[e->u_first[live->unit] + seq / e->count], live->tok[seq]);
    live->tok[seq] = 0;
}

static void icmp_dgram(Lane *L, Live *live, const unsigned char *d, ssize_t len, int64_t ts) {
    Engine *e = L->e;
    int ihl = (d[0] & 0x0F) * 4, c = e->count;
    if (len < ihl + 8) return;
    if (d[ihl] == 0) {
        if (len < ihl + 16) return;
        int rid = (d[ihl + 4] << 8) | d[ihl + 5], seq = (d[ihl + 6] << 8) | d[ihl + 7];
        if (rid != live->ident || memcmp(d + ihl + 8, e->token, 8) != 0) return;
        if (seq >= live->n * c || live->sent_at[seq] == 0) return;
        int pair = e->group[e->u_first[live->unit] + seq / c];
        pair_rtt(e, pair, ts - live->sent_at[seq]);
        pk_sub(L, live->sent_at[seq]);
        live->sent_at[seq] = 0;
        live->outstanding--;
        icmp_turn_done(e, live, seq);
    } else if (d[ihl] == 3 || d[ihl] == 11) {
        int type = d[ihl], code = d[ihl + 1], inner = ihl + 8;
        if (len < inner + 20) return;
        int iihl = (d[inner] & 0x0F) * 4;
        if (len < inner + iihl + 8 || d[inner + iihl] != 8) return;
        int rid = (d[inner + iihl + 4] << 8) | d[inner + iihl + 5];
        int seq = (d[inner + iihl + 6] << 8) | d[inner + iihl + 7];
        if (rid != live->ident || seq >= live->n * c || live->sent_at[seq] == 0) return;
        uint32_t qdst;                                  /* the quoted echo's destination */
        memcpy(&qdst, d + inner + 16, 4);
        if (qdst != e->ep_ip[e->group_target[e->u_first[live->unit] + seq / c]]) return;
        pk_sub(L, live->sent_at[seq]);
        live->sent_at[seq] = 0;
        live->outstanding--;
        icmp_turn_done(e, live, seq);
        pair_fail(e, e->group[e->u_first[live->unit] + seq / c], E_ICMP | (type << 8) | code);
    }
}

/* DNS: does the reply hold `want` (network order) as an A record?  1 yes, 0 no, -1 bad */
static int dns_has(const unsigned char *d, ssize_t len, uint32_t want) {
    if (len < 12) return -1;
    if ((d[3] & 0x0F) != 0) return 0;
    int qd = (d[4] << 8) | d[5], an = (d[6] << 8) | d[7];
    ssize_t p = 12;
    for (int i = 0; i < qd + an; i++) {
        for (;;) {                                      /* a name: labels, or a pointer */
            if (p >= len) return -1;
            unsigned char l = d[p];
            if (l == 0) { p += 1; break; }
            if ((l & 0xC0) == 0xC0) { p += 2; break; }
            p += 1 + l;
        }
        if (i < qd) {
            p += 4;
            continue;
        }
        if (p + 10 > len) return -1;
        int type = (d[p] << 8) | d[p + 1], rdlen = (d[p + 8] << 8) | d[p + 9];
        p += 10;
        if (p + rdlen > len) return -1;
        if (type == 1 && rdlen == 4 && memcmp(d + p, &want, 4) == 0) return 1;
        p += rdlen;
    }
    return 0;
}

static void dns_dgram(Lane *L, Live *live, const unsigned char *d, ssize_t len, int64_t ts) {
    Engine *e = L->e;
    if (len < 2) return;
    int qid = (d[0] << 8) | d[1];
    int idx = (qid - live->qbase) & 0xFFFF;
    if (idx >= live->n * e->count || live->sent_at[idx] == 0) return;
    int k = idx % live->n;
    int pair = e->group[e->u_first[live->unit] + k];
    int target = e->group_target[e->u_first[live->unit] + k];
    int64_t rtt = ts - live->sent_at[idx];
    pk_sub(L, live->sent_at[idx]);
    live->sent_at[idx] = 0;
    live->outstanding--;
    L->dns_inflight--;
    if (dns_has(d, len, e->ep_ip[target]) == 1) {
        pair_rtt(e, pair, rtt);
        return;
    }
    if (e->o_err[pair] == 0) add_note(L, pair, (const char *)d, (int)len, rtt);
    pair_fail(e, pair, E_DNSNOTE);
}

static void dns_unqueue(Lane *L, Live *live) {
    if (!live->waiting) return;
    if (live->wprev) live->wprev->wnext = live->wnext; else L->dns_head = live->wnext;
    if (live->wnext) live->wnext->wprev = live->wprev; else L->dns_tail = live->wprev;
    live->wprev = live->wnext = NULL;
    live->waiting = 0;
}

/* send query `idx` of a DNS unit (round by round: idx = attempt * n + k, like ICMP) */
static void dns_send(Lane *L, Live *live, int idx) {
    Engine *e = L->e;
    int u = live->unit, n = live->n, k = idx % n;
    int pair = e->group[e->u_first[u] + k];
    int target = e->group_target[e->u_first[u] + k];
    int qid = (live->qbase + idx) & 0xFFFF, ql = e->ep_qlen[target];
    unsigned char q[16 + 256];
    memset(q, 0, 12);
    q[0] = qid >> 8;
    q[1] = qid & 0xFF;
    q[2] = 0x01;                                        /* RD */
    q[5] = 1;                                           /* one question */
    memcpy(q + 12, e->ep_qname[target], ql);
    q[12 + ql] = 0; q[13 + ql] = 1;                     /* A */
    q[14 + ql] = 0; q[15 + ql] = 1;                     /* IN */
    e->o_sent[pair]++;
    int64_t now = mono_ns();
    pair_started(e, pair, now);
    live->deadline = now + e->timeout;                  /* the last query sent + timeout */
    int64_t t = real_ns();
    if (send(live->fd, q, 16 + ql, 0) < 0) {
        pair_fail(e, pair, errno);
    } else {
        live->sent_at[idx] = t;
        live->outstanding++;
        L->dns_inflight++;
        pk_add(L, t);
    }
}

static void pump_queue(Lane *L, Live *live) {
    live->waiting = 1;
    live->wprev = L->dns_tail;
    live->wnext = NULL;
    if (L->dns_tail) L->dns_tail->wnext = live; else L->dns_head = live;
    L->dns_tail = live;
}

static void slow_unlist(Lane *L, Live *live) {
    if (!live->slowlisted) return;
    if (live->sprev) live->sprev->snext = live->snext; else L->slow_head = live->snext;
    if (live->snext) live->snext->sprev = live->sprev;
    live->sprev = live->snext = NULL;
    live->slowlisted = 0;
}

static void slow_list(Lane *L, Live *live) {
    if (live->slowlisted) return;
    live->sprev = NULL;
    live->snext = L->slow_head;
    if (L->slow_head) L->slow_head->sprev = live;
    L->slow_head = live;
    live->slowlisted = 1;
}

/* echoes towards slow targets: each goes when its target's turn is free (one probe at a
 * time per slow target, from every lane together) and the lane's window has room */
static void slow_pump(Lane *L, int64_t now) {
    Engine *e = L->e;
    for (Live *live = L->slow_head, *next; live; live = next) {
        next = live->snext;
        int kept = 0;
        for (int i = 0; i < live->nslow; i++) {
            int idx = live->slowq[i];
            int t = e->group_target[e->u_first[live->unit] + idx % live->n];
            int64_t stamp;
            if (L->inflight < e->pkt_cap && slow_take(e, t, now, &stamp))
                icmp_send(L, live, idx, stamp);
            else
                live->slowq[kept++] = idx;
        }
        live->nslow = kept;
        if (kept) continue;
        slow_unlist(L, live);
        if (unit_idle(live)) unit_finish(L, live);
    }
}

/* send queued ICMP echoes and DNS queries while the lane's packet window (and, for DNS, its
 * DNS window) has room; echoes towards slow targets are set aside for slow_pump; a unit with
 * everything sent and nothing outstanding is finished */
static void pump(Lane *L) {
    Engine *e = L->e;
    int64_t now = mono_ns();
    if (L->dns_inflight < 0) L->dns_inflight = 0;       /* answers to forgiven queries */
    if (L->dns_head && L->dns_head->kind == K_DNS && L->dns_inflight >= e->dns_window) {
        if (!L->dns_full_since) L->dns_full_since = now;
        else if (now - L->dns_full_since >= DNS_STALE_NS) L->dns_inflight = 0;
    }
    if (L->dns_inflight < e->dns_window) L->dns_full_since = 0;
    int room = pk_room(L);
    while (L->dns_head && room > 0) {
        Live *live = L->dns_head;
        if (live->kind == K_DNS) {
            if (L->dns_inflight >= e->dns_window) break;
            dns_send(L, live, live->next++);
            room--;
        } else {
            int idx = live->next++;
            int t = e->group_target[e->u_first[live->unit] + idx % live->n];
            if (e->ep_slow[t] & SLOW_ECHOES) {
                live->slowq[live->nslow++] = idx;
                slow_list(L, live);
            } else {
                icmp_send(L, live, idx, 0);
                room--;
            }
        }
        if (live->next < live->total) continue;
        dns_unqueue(L, live);
        if (unit_idle(live)) unit_finish(L, live);
    }
    if (L->slow_head) slow_pump(L, now);
}

static int64_t start_dns(Lane *L, Live *live, int fd) {
    Engine *e = L->e;
    int u = live->unit, n = e->u_size[u], c = e->count;
    live->n = n;
    if ((long)n * c > 0x10000) {
        fail_unit(e, u, E_TOOMANY);
        return 0;
    }
    group_socket(fd);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons(e->dns_port)};
    sa.sin_addr.s_addr = e->dns_ip;
    if (connect(fd, (struct sockaddr *)&sa, sizeof sa) < 0) {
        fail_unit(e, u, errno);
        return 0;
    }
    live->sent_at = calloc((size_t)n * c, sizeof(int64_t));
    if (!live->sent_at) {
        L->err = ENOMEM;
        return 0;
    }
    live->qbase = (uint16_t)((unsigned)atomic_fetch_add(&e->ident, 1) * 40503u);
    struct epoll_event ev = {.events = EPOLLIN, .data.ptr = live};
    epoll_ctl(L->ep, EPOLL_CTL_ADD, fd, &ev);
    /* queued: pump() sends its queries as the lane's windows allow (the caller pumps) */
    live->total = n * c;
    live->next = 0;
    live->deadline = mono_ns() + e->timeout;
    pump_queue(L, live);
    return live->deadline;
}

static void udp_dgram(Lane *L, Live *live, const unsigned char *d, ssize_t len, int64_t ts) {
    Engine *e = L->e;
    if (len < UDP_PROBE_LEN || memcmp(d + 4, e->token, 8) != 0) return;
    int key = (d[12] << 8) | d[13];
    if (key >= e->count || live->sent_at[key] == 0) return;
    int64_t held = 0;
    if (len == UDP_PROBE_LEN + 16) {                    /* our responder: its own delay */
        uint64_t rx = 0, tx = 0;
        for (int i = 0; i < 8; i++) {
            rx = (rx << 8) | d[UDP_PROBE_LEN + i];
            tx = (tx << 8) | d[UDP_PROBE_LEN + 8 + i];
        }
        held = tx > rx ? (int64_t)(tx - rx) : 0;
    }
    pair_rtt(e, e->u_first[live->unit], ts - live->sent_at[key] - held);
    pk_sub(L, live->sent_at[key]);
    live->sent_at[key] = 0;
    live->outstanding--;
}

static int64_t start_udp(Lane *L, Live *live, int fd) {
    Engine *e = L->e;
    int u = live->unit, pair = e->u_first[u], c = e->count;
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_TIMESTAMPNS, &one, sizeof one);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons(e->u_port[u])};
    sa.sin_addr.s_addr = e->ep_ip[e->u_target[u]];
    if (connect(fd, (struct sockaddr *)&sa, sizeof sa) < 0) {
        pair_fail(e, pair, errno);
        return 0;
    }
    live->sent_at = calloc(c, sizeof(int64_t));
    if (!live->sent_at) {
        L->err = ENOMEM;
        return 0;
    }
    struct epoll_event ev = {.events = EPOLLIN, .data.ptr = live};
    epoll_ctl(L->ep, EPOLL_CTL_ADD, fd, &ev);
    unsigned char msg[UDP_PROBE_LEN];
    memcpy(msg, UDP_MAGIC, 4);
    memcpy(msg + 4, e->token, 8);
    for (int k = 0; k < c; k++) {
        msg[12] = k >> 8;
        msg[13] = k & 0xFF;
        e->o_sent[pair]++;
        pair_started(e, pair, mono_ns());
        int64_t t = real_ns();
        if (send(fd, msg, sizeof msg, 0) < 0) {
            pair_fail(e, pair, errno);
        } else {
            live->sent_at[k] = t;
            live->outstanding++;
            pk_add(L, t);
        }
    }
    return e->p_deadline[pair];
}

/* an error reported on a datagram socket (ICMP port unreachable...): fails what is
 * outstanding */
static void dgram_error(Lane *L, Live *live, int err) {
    Engine *e = L->e;
    int n = live->kind == K_UDP ? e->count : live->n * e->count;
    for (int i = 0; i < n && live->outstanding > 0; i++) {
        if (live->sent_at[i] == 0) continue;
        pk_sub(L, live->sent_at[i]);
        live->sent_at[i] = 0;
        live->outstanding--;
        if (live->kind == K_DNS) L->dns_inflight--;
        int pair = live->kind == K_UDP ? e->u_first[live->unit]
                                       : e->group[e->u_first[live->unit] + i % live->n];
        pair_fail(e, pair, err);
    }
}

typedef void (*DgramFn)(Lane *, Live *, const unsigned char *, ssize_t, int64_t);

#define RBATCH 32

/* hand every datagram queued on a unit's socket to fn; 0, or the socket's pending error */
static int drain(Lane *L, Live *live, DgramFn fn) {
    static __thread unsigned char bufs[RBATCH][2048];
    static __thread char cbufs[RBATCH][64];
    struct mmsghdr msgs[RBATCH];
    struct iovec iov[RBATCH];
    for (;;) {
        memset(msgs, 0, sizeof msgs);
        for (int i = 0; i < RBATCH; i++) {
            iov[i].iov_base = bufs[i];
            iov[i].iov_len = sizeof bufs[i];
            msgs[i].msg_hdr.msg_iov = &iov[i];
            msgs[i].msg_hdr.msg_iovlen = 1;
            msgs[i].msg_hdr.msg_control = cbufs[i];
            msgs[i].msg_hdr.msg_controllen = sizeof cbufs[i];
        }
        int n = recvmmsg(live->fd, msgs, RBATCH, MSG_DONTWAIT, NULL);
        if (n < 0) return (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR) ? 0 : errno;
        for (int i = 0; i < n && live->sent_at; i++)
            fn(L, live, bufs[i], msgs[i].msg_len, cmsg_ts(&msgs[i].msg_hdr));
        if (n < RBATCH) return 0;
    }
}

/* ------------------------------------------------------------------------------ streams */

static int tcp_state(int fd, int64_t *rtt) {
    struct tcp_info ti;
    socklen_t len = sizeof ti;
    memset(&ti, 0, sizeof ti);
    *rtt = -1;
    if (getsockopt(fd, IPPROTO_TCP, TCP_INFO, &ti, &len) < 0) return -1;
    if (ti.tcpi_rtt) *rtt = (int64_t)ti.tcpi_rtt * 1000;
    return ti.tcpi_state;
}

/* the handshake completed: established, or already closed by the other side (CLOSE_WAIT: a
 * server on another thread or machine that accepts and closes at once, e.g. another host's
 * responder, can send its FIN before this lane looks; counting only ESTABLISHED, such a
 * socket stayed writable and never "connected" and spun its lane until the grace ran out) */
static int tcp_up(int state) {
    return state == TCP_ESTABLISHED || state == TCP_CLOSE_WAIT;
}

/* close a stream socket with RST: no FIN exchange, no TIME_WAIT */
static void stream_reset(Live *live) {
    if (live->fd < 0) return;
    struct linger lg = {1, 0};
    setsockopt(live->fd, SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
    close(live->fd);
    live->fd = -1;
}

static void stream_end(Lane *L, Live *live) {
    stream_reset(live);
    live->outstanding = 0;
    unit_finish(L, live);
}

static void stream_done(Lane *L, Live *live, int64_t rtt, int code) {
    Engine *e = L->e;
    int pair = e->u_first[live->unit];
    if (code) pair_fail(e, pair, code);
    else pair_rtt(e, pair, rtt);
    stream_end(L, live);
}

static void tcp_connected(Lane *L, Live *live) {
    int64_t rtt;
    tcp_state(live->fd, &rtt);
    stream_done(L, live, rtt >= 0 ? rtt : mono_ns() - live->t0, 0);
}

static void http_next(Lane *L, Live *live, int keep);

/* HTTP: send the current request on the connection (it is up); 0, or -1 (failure recorded) */
static int http_request(Lane *L, Live *live) {
    Engine *e = L->e;
    int t = e->u_target[live->unit], pair = e->u_first[live->unit];
    if (!live->buf && !(live->buf = malloc(HTTP_BUF))) {
        L->err = ENOMEM;
        pair_fail(e, pair, ENOMEM);
        return -1;
    }
    live->blen = 0;
    live->answered = 0;
    live->state = 1;
    live->t_req = mono_ns();
    if (send(live->fd, e->ep_req[t], e->ep_reqlen[t], MSG_NOSIGNAL) < 0) {
        pair_fail(e, pair, errno);
        return -1;
    }
    return 0;
}

/* connect the unit's socket to its target (TCP: done once connected; HTTP: then the request);
 * 1: the unit finished, 0: under way, -1: failed (recorded) */
static int stream_connect(Lane *L, Live *live) {
    Engine *e = L->e;
    int u = live->unit, pair = e->u_first[u];
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons(e->u_port[u])};
    sa.sin_addr.s_addr = e->ep_ip[e->u_target[u]];
    live->state = 0;
    live->t0 = mono_ns();
    if (connect(live->fd, (struct sockaddr *)&sa, sizeof sa) < 0 && errno != EINPROGRESS) {
        pair_fail(e, pair, errno);
        return -1;
    }
    /* on a veth the handshake usually completes inside connect(): no event needed */
    int64_t rtt;
    if (tcp_up(tcp_state(live->fd, &rtt))) {
        if (!live->http) {
            tcp_connected(L, live);
            return 1;
        }
        if (http_request(L, live) < 0) return -1;
    } else {
        int err = 0;
        socklen_t len = sizeof err;
        getsockopt(live->fd, SOL_SOCKET, SO_ERROR, &err, &len);
        if (err) {
            pair_fail(e, pair, err);
            return -1;
        }
    }
    struct epoll_event ev = {.events = live->state ? EPOLLIN : EPOLLOUT, .data.ptr = live};
    epoll_ctl(L->ep, EPOLL_CTL_ADD, live->fd, &ev);
    return 0;
}

static int64_t start_stream(Lane *L, Live *live, int fd) {
    Engine *e = L->e;
    int pair = e->u_first[live->unit];
    (void)fd;
    e->o_sent[pair]++;
    pair_started(e, pair, mono_ns());
    live->outstanding = 1;
    int rc = stream_connect(L, live);
    if (rc == 1) return 0;
    if (rc < 0) {
        if (live->http) http_next(L, live, 0);
        else stream_end(L, live);
    }
    if (!live->finished) pk_add(L, live->pk_t = real_ns());   /* its connection's packet */
    return e->p_deadline[pair];
}

/* HTTP: the current request is answered (or failed).  The next of the pair's `count` requests
 * goes on the same connection when the response keeps it (HTTP/1.1 or keep-alive, a
 * Content-Length, no Transfer-Encoding, no `Connection: close`), else on a new connection;
 * none is started past the pair's deadline. */
static void http_next(Lane *L, Live *live, int keep) {
    Engine *e = L->e;
    int u = live->unit, pair = e->u_first[u];
    if (++live->req >= e->count || mono_ns() >= e->p_deadline[pair]) {
        stream_end(L, live);
        return;
    }
    e->o_sent[pair]++;
    if (keep && live->fd >= 0) {
        if (http_request(L, live) == 0) return;
        http_next(L, live, 0);
        return;
    }
    stream_reset(live);
    int fd = socket_in(L, e->u_ns[u], SOCK_STREAM, 0);
    if (fd < 0) {
        pair_fail(e, pair, (-fd & NS_ERR) ? E_NONS | (-fd & 0xFFFF) : E_NOSOCK | -fd);
        stream_end(L, live);
        return;
    }
    live->fd = fd;
    if (stream_connect(L, live) < 0) http_next(L, live, 0);
}

/* the status line decides, as clients._http_verdict: the request's RTT (sent to status line)
 * or its failure */
static void http_verdict(Lane *L, Live *live) {
    Engine *e = L->e;
    int pair = e->u_first[live->unit];
    int64_t rtt = mono_ns() - live->t_req;
    const char *b = live->buf;
    const char *nl = memchr(b, '\n', live->blen);
    int end = nl ? (int)(nl - b) : live->blen, s = 0;
    live->answered = 1;
    while (s < end && is_ws_(b[s])) s++;
    while (end > s && is_ws_(b[end - 1])) end--;
    if (s >= end) {
        pair_fail(e, pair, E_CLOSED);
        return;
    }
    int p = s;
    while (p < end && !is_ws_(b[p])) p++;
    if (p - s >= 5 && memcmp(b + s, "HTTP/", 5) == 0) {
        while (p < end && is_ws_(b[p])) p++;
        int q = p;
        long status = 0;
        while (q < end && b[q] >= '0' && b[q] <= '9') {
            if (status < 100000000) status = status * 10 + (b[q] - '0');
            q++;
        }
        if (q > p && (q == end || is_ws_(b[q]))) {
            e->o_status[pair] = (int32_t)status;
            if (status < 400) pair_rtt(e, pair, rtt);
            else pair_fail(e, pair, E_HTTP | (int)(status & 0xFFFF));
            return;
        }
    }
    pair_fail(e, pair, E_NOTHTTP);
}

/* HTTP: skip the rest of the response's body, then the next request */
static void http_body(Lane *L, Live *live) {
    char scratch[4096];
    while (live->body_left > 0) {
        size_t want = live->body_left < (long)sizeof scratch ? (size_t)live->body_left
                                                             : sizeof scratch;
        ssize_t n = recv(live->fd, scratch, want, MSG_DONTWAIT);
        if (n < 0 && (errno == EAGAIN || errno == EINTR)) return;
        if (n <= 0) {
            http_next(L, live, 0);
            return;
        }
        live->body_left -= n;
    }
    http_next(L, live, 1);
}

/* HTTP: read the response's head; its status line decides the request, its headers whether
 * the connection carries the next one */
static void http_head(Lane *L, Live *live) {
    Engine *e = L->e;
    for (;;) {
        ssize_t n = recv(live->fd, live->buf + live->blen, HTTP_BUF - live->blen, MSG_DONTWAIT);
        if (n < 0) {
            if (errno == EAGAIN || errno == EINTR) return;
            if (!live->answered) pair_fail(e, e->u_first[live->unit], errno);
            http_next(L, live, 0);
            return;
        }
        live->blen += (int)n;
        if (!live->answered) {
            if (n > 0 && !memchr(live->buf, '\n', live->blen) && live->blen < HTTP_BUF) continue;
            http_verdict(L, live);
        }
        int end = head_end(live->buf, live->blen);
        if (n == 0 || (end < 0 && live->blen >= HTTP_BUF)) {
            http_next(L, live, 0);
            return;
        }
        if (end < 0) continue;
        Head h = head_fields(live->buf, end, 1);
        long left = h.length - (live->blen - end);
        if (!head_keeps(h) || h.chunked || h.length < 0 || left < 0) {
            http_next(L, live, 0);
            return;
        }
        live->body_left = left;
        live->state = 2;
        http_body(L, live);
        return;
    }
}

static void on_stream(Lane *L, Live *live) {
    if (live->state == 0) {
        int err = 0;
        socklen_t len = sizeof err;
        getsockopt(live->fd, SOL_SOCKET, SO_ERROR, &err, &len);
        if (err) {
            pair_fail(L->e, L->e->u_first[live->unit], err);
            if (live->http) http_next(L, live, 0);
            else stream_end(L, live);
            return;
        }
        int64_t rtt;
        if (!tcp_up(tcp_state(live->fd, &rtt))) return;  /* not up yet (an older event) */
        if (!live->http) {
            tcp_connected(L, live);
            return;
        }
        if (http_request(L, live) < 0) {
            http_next(L, live, 0);
            return;
        }
        struct epoll_event ev = {.events = EPOLLIN, .data.ptr = live};
        epoll_ctl(L->ep, EPOLL_CTL_MOD, live->fd, &ev);
        return;
    }
    if (live->state == 1) http_head(L, live);
    else http_body(L, live);
}

/* ---------------------------------------------------------------------------- the lanes */

static void start_unit(Lane *L, int u) {
    Engine *e = L->e;
    static const int types[] = {SOCK_RAW, SOCK_DGRAM, SOCK_DGRAM, SOCK_STREAM};
    static const int protos[] = {IPPROTO_ICMP, 0, 0, 0};
    int kind = e->u_kind[u];
    Live *live = calloc(1, sizeof *live);
    if (!live) {
        L->err = ENOMEM;
        give_back(e, e->u_fds[u]);
        responder_unused(L, e->u_resp[u]);
        return;
    }
    live->h.type = H_UNIT;
    live->unit = u;
    live->kind = kind;
    live->http = e->u_http[u];
    live->fd = -1;
    live->slow_tok = L->next_tok;
    L->next_tok = 0;
    L->active++;
    int fd = socket_in(L, e->u_ns[u], types[kind], protos[kind]);
    if (fd < 0) {
        fail_unit(e, u, (-fd & NS_ERR) ? E_NONS | (-fd & 0xFFFF) : E_NOSOCK | -fd);
        unit_finish(L, live);
        return;
    }
    live->fd = fd;
    int64_t deadline = 0;
    switch (kind) {
    case K_ICMP: deadline = start_icmp(L, live, fd); break;
    case K_DNS: deadline = start_dns(L, live, fd); break;
    case K_UDP: deadline = start_udp(L, live, fd); break;
    default: deadline = start_stream(L, live, fd); break;
    }
    if (live->finished) return;
    if (unit_idle(live)) {
        unit_finish(L, live);
        return;
    }
    live->deadline = deadline;
    if (heap_push(L, live) < 0) {
        L->err = ENOMEM;
        unit_finish(L, live);
        return;
    }
    live->in_heap = 1;
}

/* start unit u if its descriptors fit: 1 started, 0 dropped (a retry past its pair's
 * deadline), -1 no descriptors now */
static int try_start(Lane *L, int u, int64_t now) {
    Engine *e = L->e;
    if (e->u_attempt[u] > 0) {                          /* a retry past its pair's deadline */
        int64_t d = e->p_deadline[e->u_first[u]];
        if (d && d <= now + 1000000) {
            L->dropped++;
            responder_unused(L, e->u_resp[u]);
            return 0;
        }
    }
    int ri = e->u_resp[u];
    Responder *r = ri >= 0 ? &e->resp[ri] : NULL;
    int opening = r && r->state == R_CLOSED;
    if (!reserve(e, e->u_fds[u] + opening)) {
        L->blocked = 1;
        return -1;
    }
    if (L->blocked || L->batches == 0) {
        L->batches++;
        L->blocked = 0;
    }
    if (opening) responder_open(L, r);
    start_unit(L, u);
    return 1;
}

/* UDP and stream units towards slow targets, set aside by admit(): each starts once its
 * target's turn is free (one at a time per slow target) and the lane's window has room */
static int slow_units(Lane *L, int64_t now) {
    Engine *e = L->e;
    int kept = 0, started = 0;
    for (int i = 0; i < L->nsq; i++) {
        int u = L->sq[i], t = e->u_target[u];
        int64_t stamp = 0;
        if (pk_room(L) <= 0 || !slow_take(e, t, now, &stamp)) {
            L->sq[kept++] = u;
            continue;
        }
        L->next_tok = stamp;
        int rc = try_start(L, u, now);
        L->next_tok = 0;
        if (rc < 0) {
            slow_done(e, t, stamp);
            L->sq[kept++] = u;
        }
        started += rc > 0;
    }
    L->nsq = kept;
    return started;
}

/* admit the lane's next units while their descriptors fit and (UDP, stream) the lane's packet
 * window has room; those towards slow targets wait for their turn (slow_units); returns how
 * many started */
static int admit(Lane *L, int64_t now) {
    Engine *e = L->e;
    int started = 0;
    L->pblocked = 0;
    if (L->nsq) started += slow_units(L, now);
    while (L->qpos < L->nq && started < ADMIT_ROUND) {
        int u = L->queue[L->qpos];
        int kind = e->u_kind[u];
        if (kind == K_UDP || kind == K_STREAM) {
            if (e->ep_slow[e->u_target[u]] & SLOW_UNITS) {
                L->sq[L->nsq++] = u;
                L->qpos++;
                continue;
            }
            if (pk_room(L) <= 0) {
                L->pblocked = 1;
                break;
            }
        }
        int rc = try_start(L, u, now);
        if (rc < 0) break;
        L->qpos++;
        started += rc;
    }
    if (L->nsq) started += slow_units(L, now);          /* set aside just now */
    pump(L);
    return started;
}

/* every probe a unit sent is older than the timeout: no longer in flight */
static void give_up_sent(Lane *L, Live *live) {
    for (int i = 0; i < live->total && live->outstanding > 0; i++) {
        if (live->sent_at[i] == 0) continue;
        pk_sub(L, live->sent_at[i]);
        live->sent_at[i] = 0;
        live->outstanding--;
        if (live->kind == K_DNS) L->dns_inflight--;
    }
}

static void expire(Lane *L, int64_t now, int caught_up) {
    int64_t grace = caught_up ? 0 : L->e->grace;
    while (L->nheap > 0 && L->heap[0].deadline + grace <= now) {
        int64_t due = L->heap[0].deadline;
        Live *live = heap_pop(L);
        live->in_heap = 0;
        if (live->finished) {
            bury(L, live);
        } else if (live->next < live->total || live->nslow || live->deadline > due) {
            /* an ICMP/DNS unit still sending, or it sent since: its deadline is its last
             * probe's */
            if (live->deadline <= due) give_up_sent(L, live);
            if (live->next < live->total || live->nslow) live->deadline = now + L->e->timeout;
            if (heap_push(L, live) < 0) {
                L->err = ENOMEM;
                unit_finish(L, live);
            } else {
                live->in_heap = 1;
            }
        } else {
            unit_finish(L, live);                       /* buries it */
        }
    }
}


static void release_held(Lane *L);

static void dispatch(Lane *L, struct epoll_event *ev) {
    Handle *h = ev->data.ptr;
    if (h->type == H_HOLD) {
        if (L->holding) release_held(L);
    } else if (h->type == H_UNIT) {
        Live *live = (Live *)h;
        if (live->finished) return;
        if (live->kind == K_STREAM) {
            on_stream(L, live);
            return;
        }
        DgramFn fn = live->kind == K_ICMP ? icmp_dgram : live->kind == K_DNS ? dns_dgram
                                                                             : udp_dgram;
        int err = drain(L, live, fn);
        if (err && live->kind != K_ICMP) dgram_error(L, live, err);
        if (unit_idle(live)) unit_finish(L, live);
    } else if (h->type == H_LISTENER) {
        Responder *r = (Responder *)h;
        if (r->state == R_OPEN) on_listener(L, r);
    } else if (h->type == H_UDPRESP) {
        Responder *r = (Responder *)h;
        if (r->state == R_OPEN) on_udp_responder(r);
    } else if (h->type == H_CONN) {
        Conn *c = (Conn *)h;
        if (c->fd >= 0) conn_read(L, c, 1);
    }
}

static int wait_ms(Lane *L, int64_t now, int started) {
    if (L->qpos < L->nq && !L->blocked && !L->pblocked && started) return 0;
    int64_t wait = 250 * 1000000LL;
    if (L->nheap > 0) {
        int64_t d = L->heap[0].deadline - now;
        if (d < wait) wait = d;
    }
    if (L->qpos < L->nq && L->blocked && wait > 1000000) wait = 1000000;
    if (L->dns_head && L->dns_inflight >= L->e->dns_window && wait > DNS_STALE_NS / 4)
        wait = DNS_STALE_NS / 4;
    if ((L->pblocked || (L->dns_head && L->inflight >= L->e->pkt_cap)) && wait > 2000000)
        wait = 2000000;                                 /* old packets leave the window */
    if ((L->slow_head || L->nsq) && wait > L->e->slow_gap)
        wait = L->e->slow_gap;                          /* a slow target's turn may end */
    if (wait <= 0) return 0;
    return (int)((wait + 999999) / 1000000);
}


/* responders script sources probe: open now, until the hold fd says the scripts are done */
static void hold_responders(Lane *L) {
    Engine *e = L->e;
    for (int i = 0; i < e->nresp; i++) {
        Responder *r = &e->resp[i];
        if (!r->held || r->target % e->nlanes != L->id) continue;
        r->users++;
        if (r->state == R_CLOSED && reserve(e, 1)) responder_open(L, r);
        L->holding = 1;
    }
    if (!L->holding) return;
    L->hold.type = H_HOLD;
    struct epoll_event ev = {.events = EPOLLIN, .data.ptr = &L->hold};
    if (e->hold_fd < 0 || epoll_ctl(L->ep, EPOLL_CTL_ADD, e->hold_fd, &ev) < 0) L->holding = 0;
    if (!L->holding) release_held(L);
}

static void release_held(Lane *L) {
    Engine *e = L->e;
    for (int i = 0; i < e->nresp; i++)
        if (e->resp[i].held && e->resp[i].target % e->nlanes == L->id) responder_unused(L, i);
    if (L->holding) epoll_ctl(L->ep, EPOLL_CTL_DEL, e->hold_fd, NULL);
    L->holding = 0;
}

static void *lane_main(void *arg) {
    Lane *L = arg;
    struct epoll_event evs[MAXEV];
    hold_responders(L);
    if (atomic_fetch_sub(&L->e->lanes_holding, 1) == 1 && L->e->ready_fd >= 0) {
        uint64_t one = 1;           /* the script sources may start: their responders listen */
        if (write(L->e->ready_fd, &one, sizeof one) < 0) { /* the caller times out instead */ }
    }
    while (!L->err) {
        int64_t now = mono_ns();
        int started = admit(L, now);
        if (L->qpos >= L->nq && L->active == 0 && !L->holding && L->nsq == 0) break;
        int n = epoll_wait(L->ep, evs, MAXEV, wait_ms(L, mono_ns(), started));
        if (n < 0) {
            if (errno == EINTR) continue;
            L->err = errno;
            break;
        }
        for (int i = 0; i < n; i++) dispatch(L, &evs[i]);
        empty_grave(L);
        expire(L, mono_ns(), n == 0);     /* caught up: nothing was waiting */
        pump(L);
        empty_grave(L);
    }
    return NULL;
}

/* ------------------------------------------------------------------------- Python glue */

typedef struct {
    Py_buffer b[24];
    int n;
} Buffers;

static int get_buf(Buffers *bs, PyObject *obj, Py_ssize_t itemsize, Py_ssize_t count,
                   int writable, const char *what, void **out) {
    if (bs->n >= (int)(sizeof bs->b / sizeof bs->b[0])) {
        PyErr_SetString(PyExc_RuntimeError, "too many buffers");
        return -1;
    }
    Py_buffer *b = &bs->b[bs->n];
    if (PyObject_GetBuffer(obj, b, writable ? PyBUF_WRITABLE : PyBUF_SIMPLE) < 0) return -1;
    bs->n++;
    if (b->len != itemsize * count) {
        PyErr_Format(PyExc_ValueError, "%s: %zd bytes, expected %zd", what, b->len,
                     itemsize * count);
        return -1;
    }
    *out = b->buf;
    return 0;
}

static void release_bufs(Buffers *bs) {
    for (int i = 0; i < bs->n; i++) PyBuffer_Release(&bs->b[i]);
    bs->n = 0;
}

static void engine_free(Engine *e) {
    if (e->ns_fd)
        for (int i = 0; i < e->nns; i++)
            if (e->ns_fd[i] >= 0) close(e->ns_fd[i]);
    free(e->ns_fd);
    free(e->ns_ident);
    if (e->ns_path)
        for (int i = 0; i < e->nns; i++) free(e->ns_path[i]);
    free(e->ns_path);
    free(e->ep_ip);
    if (e->ep_qname)
        for (int i = 0; i < e->nendpoints; i++) free(e->ep_qname[i]);
    free(e->ep_qname);
    free(e->ep_qlen);
    if (e->ep_req)
        for (int i = 0; i < e->nendpoints; i++) free(e->ep_req[i]);
    free(e->ep_req);
    free(e->ep_reqlen);
    free(e->resp);
    free(e->p_deadline);
    free(e->ep_slow);
    free((void *)e->slow_until);
}

static char *copy_bytes(PyObject *o, int *len) {
    char *data;
    Py_ssize_t n;
    if (PyBytes_AsStringAndSize(o, &data, &n) < 0) return NULL;
    char *out = malloc(n > 0 ? n : 1);
    if (!out) {
        PyErr_NoMemory();
        return NULL;
    }
    memcpy(out, data, n);
    *len = (int)n;
    return out;
}

/* endpoints: (ips: bytes of 4 per endpoint, qnames: list[bytes], requests: list[bytes]) */
static int parse_endpoints(Engine *e, PyObject *eps) {
    PyObject *ips, *qnames, *reqs;
    if (!PyArg_ParseTuple(eps, "SOO", &ips, &qnames, &reqs)) return -1;
    Py_ssize_t n = PyBytes_GET_SIZE(ips) / 4;
    if (PyBytes_GET_SIZE(ips) != n * 4 || PyList_Size(qnames) != n || PyList_Size(reqs) != n) {
        PyErr_SetString(PyExc_ValueError, "endpoints: inconsistent lengths");
        return -1;
    }
    e->nendpoints = (int)n;
    e->ep_ip = malloc((n + 1) * 4);
    e->ep_qname = calloc(n + 1, sizeof(char *));
    e->ep_qlen = calloc(n + 1, sizeof(int));
    e->ep_req = calloc(n + 1, sizeof(char *));
    e->ep_reqlen = calloc(n + 1, sizeof(int));
    if (!e->ep_ip || !e->ep_qname || !e->ep_qlen || !e->ep_req || !e->ep_reqlen) {
        PyErr_NoMemory();
        return -1;
    }
    memcpy(e->ep_ip, PyBytes_AS_STRING(ips), n * 4);
    for (Py_ssize_t i = 0; i < n; i++) {
        e->ep_qname[i] = copy_bytes(PyList_GET_ITEM(qnames, i), &e->ep_qlen[i]);
        e->ep_req[i] = copy_bytes(PyList_GET_ITEM(reqs, i), &e->ep_reqlen[i]);
        if (!e->ep_qname[i] || !e->ep_req[i]) return -1;
        if (e->ep_qlen[i] > 255) {
            PyErr_SetString(PyExc_ValueError, "a DNS name is longer than 255 bytes");
            return -1;
        }
    }
    return 0;
}

/* A source namespace's ICMP identifier: the same in every run (clients.icmp_ident), so
 * repeated runs refresh the lab's connection-tracking entries for their echoes instead of
 * adding new ones (a 200-endpoint matrix is 39,800 ICMP entries, kept 30 s); replies are
 * told apart by the run's token, errors by the quoted destination. FNV-1a, folded. */
static uint16_t icmp_ident(const char *path) {
    uint32_t h = 2166136261u;
    for (const unsigned char *p = (const unsigned char *)path; *p; p++) h = (h ^ *p) * 16777619u;
    return (uint16_t)((h ^ (h >> 16)) & 0xFFFF);
}

/* namespaces: list[str]; cache: open them all now (else on every use) */
static int parse_namespaces(Engine *e, PyObject *nss, int cache) {
    Py_ssize_t n = PyList_Size(nss);
    if (n < 0) return -1;
    e->nns = (int)n;
    e->ns_path = calloc(n + 1, sizeof(char *));
    e->ns_fd = malloc((n + 1) * sizeof(int));
    e->ns_ident = calloc(n + 1, sizeof(uint16_t));
    if (!e->ns_path || !e->ns_fd || !e->ns_ident) {
        PyErr_NoMemory();
        return -1;
    }
    for (Py_ssize_t i = 0; i < n; i++) {
        e->ns_fd[i] = -1;
        const char *path = PyUnicode_AsUTF8(PyList_GET_ITEM(nss, i));
        if (!path) return -1;
        e->ns_path[i] = strdup(path);
        e->ns_ident[i] = icmp_ident(path);
        if (!e->ns_path[i]) {
            PyErr_NoMemory();
            return -1;
        }
        if (cache) e->ns_fd[i] = open(path, O_RDONLY | O_CLOEXEC);   /* -1: on use */
    }
    return 0;
}

/* responders: list of (kind, ns, ip bytes, port, http) */
static int parse_responders(Engine *e, PyObject *rs) {
    Py_ssize_t n = PyList_Size(rs);
    if (n < 0) return -1;
    e->nresp = (int)n;
    e->resp = calloc(n + 1, sizeof(Responder));
    if (!e->resp) {
        PyErr_NoMemory();
        return -1;
    }
    for (Py_ssize_t i = 0; i < n; i++) {
        Responder *r = &e->resp[i];
        const char *ip;
        Py_ssize_t iplen;
        if (!PyArg_ParseTuple(PyList_GET_ITEM(rs, i), "iiy#ipip", &r->kind, &r->ns, &ip, &iplen,
                              &r->port, &r->http, &r->target, &r->held))
            return -1;
        if (iplen != 4) {
            PyErr_SetString(PyExc_ValueError, "responder address: 4 bytes");
            return -1;
        }
        memcpy(&r->ip, ip, 4);
        if (r->ns >= e->nns || r->target < 0 || (r->kind != K_UDP && r->kind != K_STREAM)) {
            PyErr_SetString(PyExc_ValueError, "bad responder");
            return -1;
        }
        r->fd = -1;
        r->state = R_CLOSED;
    }
    return 0;
}

static PyObject *fast_run(PyObject *self, PyObject *args) {
    PyObject *units, *group, *group_target, *eps, *nss, *rs, *out;
    int count, limit, lanes, dns_port, cache, ident, hold_fd, dns_window = DNS_WINDOW_DEFAULT;
    int ready_fd = -1, pkt_cap = 1 << 30;
    long long timeout, grace, slow_gap = 1000000;
    const char *token, *dns_ip, *slow = NULL;
    Py_ssize_t token_len, dns_len, slow_len = 0;
    if (!PyArg_ParseTuple(args, "OOOOOOOiLLiiy#y#iipi|iiiy#L", &units, &group, &group_target,
                          &eps, &nss, &rs, &out, &count, &timeout, &grace, &limit, &lanes,
                          &token, &token_len, &dns_ip, &dns_len, &dns_port, &ident, &cache,
                          &hold_fd, &dns_window, &ready_fd, &pkt_cap, &slow, &slow_len,
                          &slow_gap))
        return NULL;
    if (token_len != 8 || (dns_len != 0 && dns_len != 4) || count < 1 || lanes < 1 ||
        !PyTuple_Check(units) || PyTuple_GET_SIZE(units) != 11 || !PyTuple_Check(out) ||
        PyTuple_GET_SIZE(out) != 5) {
        PyErr_SetString(PyExc_ValueError, "bad arguments");
        return NULL;
    }
    Engine e;
    memset(&e, 0, sizeof e);
    Buffers bs;
    bs.n = 0;
    PyObject *result = NULL;
    Lane *ls = NULL;
    e.count = count;
    e.timeout = timeout;
    e.grace = grace;
    memcpy(e.token, token, 8);
    if (dns_len == 4) memcpy(&e.dns_ip, dns_ip, 4);
    e.dns_port = dns_port;
    e.dns_window = dns_window > 0 ? dns_window : 1;
    e.pkt_cap = pkt_cap > 0 ? pkt_cap : 1;
    e.slow_gap = slow_gap > 0 ? slow_gap : 0;
    e.hold_fd = hold_fd;
    e.ready_fd = ready_fd;
    atomic_init(&e.lanes_holding, lanes < 64 ? lanes : 64);   /* the lanes that run */
    atomic_init(&e.ident, ident);
    atomic_init(&e.budget, limit);
    atomic_init(&e.in_use, 0);
    atomic_init(&e.peak, 0);
    /* unit columns: kind, ns, first, size, attempt, fds, responder, http, target, port */
    Py_ssize_t nu;
    {
        Py_buffer probe;
        if (PyObject_GetBuffer(PyTuple_GET_ITEM(units, 0), &probe, PyBUF_SIMPLE) < 0)
            return NULL;
        nu = probe.len;
        PyBuffer_Release(&probe);
    }
    e.nunits = (int)nu;
    if (get_buf(&bs, PyTuple_GET_ITEM(units, 0), 1, nu, 0, "kind", (void **)&e.u_kind) ||
        get_buf(&bs, PyTuple_GET_ITEM(units, 1), 4, nu, 0, "ns", (void **)&e.u_ns) ||
        get_buf(&bs, PyTuple_GET_ITEM(units, 2), 4, nu, 0, "first", (void **)&e.u_first) ||
        get_buf(&bs, PyTuple_GET_ITEM(units, 3), 4, nu, 0, "size", (void **)&e.u_size) ||
        get_buf(&bs, PyTuple_GET_ITEM(units, 4), 4, nu, 0, "attempt", (void **)&e.u_attempt) ||
        get_buf(&bs, PyTuple_GET_ITEM(units, 5), 1, nu, 0, "fds", (void **)&e.u_fds) ||
        get_buf(&bs, PyTuple_GET_ITEM(units, 6), 4, nu, 0, "responder", (void **)&e.u_resp) ||
        get_buf(&bs, PyTuple_GET_ITEM(units, 7), 1, nu, 0, "http", (void **)&e.u_http) ||
        get_buf(&bs, PyTuple_GET_ITEM(units, 8), 4, nu, 0, "target", (void **)&e.u_target) ||
        get_buf(&bs, PyTuple_GET_ITEM(units, 9), 4, nu, 0, "port", (void **)&e.u_port))
        goto done;
    Py_ssize_t npairs = PyLong_AsSsize_t(PyTuple_GET_ITEM(units, 10));
    if (npairs < 0) goto done;
    e.npairs = (int)npairs;
    {
        Py_buffer probe;
        if (PyObject_GetBuffer(group, &probe, PyBUF_SIMPLE) < 0) goto done;
        Py_ssize_t ng = probe.len / 4;
        PyBuffer_Release(&probe);
        if (get_buf(&bs, group, 4, ng, 0, "group", (void **)&e.group) ||
            get_buf(&bs, group_target, 4, ng, 0, "group_target", (void **)&e.group_target))
            goto done;
    }
    if (get_buf(&bs, PyTuple_GET_ITEM(out, 0), 4, npairs, 1, "sent", (void **)&e.o_sent) ||
        get_buf(&bs, PyTuple_GET_ITEM(out, 1), 4, npairs, 1, "received", (void **)&e.o_recv) ||
        get_buf(&bs, PyTuple_GET_ITEM(out, 2), 4, npairs, 1, "error", (void **)&e.o_err) ||
        get_buf(&bs, PyTuple_GET_ITEM(out, 3), 4, npairs, 1, "status", (void **)&e.o_status) ||
        get_buf(&bs, PyTuple_GET_ITEM(out, 4), 8, npairs * count, 1, "rtt",
                (void **)&e.o_rtt))
        goto done;
    if (parse_endpoints(&e, eps) < 0 || parse_namespaces(&e, nss, cache) < 0 ||
        parse_responders(&e, rs) < 0)
        goto done;
    if (slow && slow_len != 0 && slow_len != e.nendpoints) {
        PyErr_SetString(PyExc_ValueError, "slow: one byte per endpoint");
        goto done;
    }
    e.ep_slow = calloc(e.nendpoints + 1, 1);
    e.slow_until = calloc(e.nendpoints + 1, sizeof(int64_t));
    if (!e.ep_slow || !e.slow_until) {
        PyErr_NoMemory();
        goto done;
    }
    if (slow && slow_len) memcpy(e.ep_slow, slow, slow_len);
    e.p_deadline = calloc(npairs + 1, sizeof(int64_t));
    ls = calloc(lanes, sizeof(Lane));
    if (!e.p_deadline || !ls) {
        PyErr_NoMemory();
        goto done;
    }
    e.nlanes = lanes;
    e.lanes = ls;
    /* queues: stream/udp units by target, icmp/dns units by source namespace */
    for (int i = 0; i < lanes; i++) {
        ls[i].e = &e;
        ls[i].id = i;
        ls[i].cur = -1;
        ls[i].home = -1;
        ls[i].ep = -1;
        ls[i].queue = malloc((nu + 1) * sizeof(int));
        ls[i].sq = malloc((nu + 1) * sizeof(int));
        if (!ls[i].queue || !ls[i].sq) {
            PyErr_NoMemory();
            goto done;
        }
    }
    for (Py_ssize_t u = 0; u < nu; u++) {
        int kind = e.u_kind[u];
        int key = (kind == K_ICMP || kind == K_DNS) ? e.u_ns[u] : e.u_target[u];
        Lane *L = &ls[(key < 0 ? 0 : key) % lanes];
        L->queue[L->nq++] = (int)u;
        int ri = e.u_resp[u];
        if (ri >= e.nresp || e.u_ns[u] >= e.nns ||
            (kind != K_ICMP && kind != K_DNS && (e.u_target[u] < 0 ||
                                                 e.u_target[u] >= e.nendpoints)) ||
            kind < 0 || kind > K_STREAM) {
            PyErr_SetString(PyExc_ValueError, "a unit refers to something that is not there");
            goto done;
        }
        if (ri >= 0) e.resp[ri].users++;
    }
    int failed = 0;
    Py_BEGIN_ALLOW_THREADS
    pthread_t threads[64];
    int nthreads = 0;
    sigset_t all, old;                  /* the lanes take no signals: Python's thread does */
    sigfillset(&all);
    pthread_sigmask(SIG_BLOCK, &all, &old);
    for (int i = 0; i < lanes && i < 64; i++) {
        ls[i].ep = epoll_create1(EPOLL_CLOEXEC);
        ls[i].home = open("/proc/thread-self/ns/net", O_RDONLY | O_CLOEXEC);
        if (ls[i].ep < 0 || ls[i].home < 0) {
            failed = errno ? errno : EMFILE;
            break;
        }
        if (i == 0) continue;                            /* lane 0 runs on this thread */
        if (pthread_create(&threads[nthreads], NULL, lane_main, &ls[i]) != 0) {
            failed = EAGAIN;
            break;
        }
        nthreads++;
    }
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (!failed) lane_main(&ls[0]);
    else ls[0].err = failed;
    for (int i = 0; i < nthreads; i++) pthread_join(threads[i], NULL);
    /* lane 0 ran on the caller's thread: back to the caller's namespace */
    if (ls[0].home >= 0 && ls[0].cur != -1) setns(ls[0].home, CLONE_NEWNET);
    Py_END_ALLOW_THREADS
    int err = 0, batches = 0, dropped = 0, up = 0;
    for (int i = 0; i < lanes; i++) {
        if (ls[i].err && !err) err = ls[i].err;
        batches += ls[i].batches;
        dropped += ls[i].dropped;
    }
    for (int i = 0; i < e.nresp; i++) up += e.resp[i].ever_open;
    if (err) {
        errno = err;
        PyErr_SetFromErrno(PyExc_OSError);
        goto done;
    }
    PyObject *notes = PyList_New(0);
    if (!notes) goto done;
    for (int i = 0; i < lanes; i++) {
        for (int k = 0; k < ls[i].nnotes; k++) {
            PyObject *t = Py_BuildValue("(iy#L)", ls[i].note_pair[k], ls[i].note_data[k],
                                        (Py_ssize_t)ls[i].note_len[k],
                                        (long long)ls[i].note_rtt[k]);
            if (!t || PyList_Append(notes, t) < 0) {
                Py_XDECREF(t);
                Py_DECREF(notes);
                goto done;
            }
            Py_DECREF(t);
        }
    }
    result = Py_BuildValue("(Niiil)", notes, up, batches, dropped, atomic_load(&e.peak));
done:
    if (ls) {
        for (int i = 0; i < lanes; i++) {
            Lane *L = &ls[i];
            for (int k = 0; k < L->nheap; k++) {
                Live *live = L->heap[k].live;
                if (!live->finished && live->fd >= 0) close(live->fd);
                free(live->sent_at);
                free(live->buf);
                free(live->slowq);
                free(live->tok);
                free(live);
            }
            free(L->heap);
            empty_grave(L);
            free(L->grave);
            for (int k = 0; k < L->nnotes; k++) free(L->note_data[k]);
            free(L->note_pair);
            free(L->note_data);
            free(L->note_len);
            free(L->note_rtt);
            free(L->queue);
            free(L->sq);
            if (L->ep >= 0) close(L->ep);
            if (L->home >= 0) close(L->home);
        }
        free(ls);
    }
    if (e.resp)
        for (int i = 0; i < e.nresp; i++)
            if (e.resp[i].state == R_OPEN) {
                while (e.resp[i].conns) {
                    Conn *c = e.resp[i].conns;
                    e.resp[i].conns = c->next;
                    close(c->fd);
                    free(c);
                }
                close(e.resp[i].fd);
            }
    engine_free(&e);
    release_bufs(&bs);
    return result;
}

static PyMethodDef fast_methods[] = {
    {"run", fast_run, METH_VARARGS,
     "run(units, group, group_target, endpoints, namespaces, responders, out, count, "
     "timeout_ns, grace_ns, limit, lanes, token, dns_ip, dns_port, ident, cache_ns, hold_fd"
     "[, dns_window, ready_fd, packet_cap, slow, slow_gap_ns]) -> "
     "(notes, responders_up, batches, dropped, peak_fds): run a probe plan (see fast.py)."},
    {NULL, NULL, 0, NULL}};

static struct PyModuleDef fast_module = {
    PyModuleDef_HEAD_INIT, "hybridnb.services.probe._fast",
    "The probe engine's socket work in C threads (see fast.py).", -1, fast_methods};

PyMODINIT_FUNC PyInit__fast(void) {
    PyObject *m = PyModule_Create(&fast_module);
    if (!m) return NULL;
    if (PyModule_AddIntConstant(m, "E_ICMP", E_ICMP) < 0 ||
        PyModule_AddIntConstant(m, "E_HTTP", E_HTTP) < 0 ||
        PyModule_AddIntConstant(m, "E_CLOSED", E_CLOSED) < 0 ||
        PyModule_AddIntConstant(m, "E_NOTHTTP", E_NOTHTTP) < 0 ||
        PyModule_AddIntConstant(m, "E_DNSNOTE", E_DNSNOTE) < 0 ||
        PyModule_AddIntConstant(m, "E_TOOMANY", E_TOOMANY) < 0 ||
        PyModule_AddIntConstant(m, "E_NOSOCK", E_NOSOCK) < 0 ||
        PyModule_AddIntConstant(m, "E_NONS", E_NONS) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
