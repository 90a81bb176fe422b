/*
 * hybridnb.daemons.dns._mmsg: batched datagram I/O for the lab's name server (Linux).
 *
 * Why this exists: the server answers most queries from pre-encoded templates in a few
 * hundred nanoseconds of Python, so what a query costs is mostly the two system calls
 * around it (recvfrom, sendto) and the Python objects they make (a sender tuple whose address
 * is formatted as text, and parsed again by sendto).  One recvmmsg(2) fetches every queued
 * query (up to the batch size) and one sendmmsg(2) sends every answer, so the fixed cost of a
 * system call, of releasing the GIL and of the loop is shared by the whole batch.  ctypes was
 * measured and rejected: building the mmsghdr arrays and the per-message buffers through
 * ctypes objects costs more per query than the system calls it saves (see notes 18-dns).
 *
 *   Batch(fd, size=64, bufsize=4096)
 *       A batch of `size` receive buffers of `bufsize` bytes for the datagram socket `fd`
 *       (the caller keeps the socket open while the batch is used).
 *   Batch.recv() -> (datas, ips)
 *       Wait (GIL released) until at least one datagram is queued, then take up to `size`
 *       without waiting (MSG_WAITFORONE).  `datas` is a list of bytes, `ips` the list of the
 *       senders' addresses as text (the same str object for consecutive datagrams from one
 *       address).  A signal interrupting the wait runs the Python signal handlers (whose
 *       exception, if any, propagates) and the wait resumes.
 *   Batch.send(replies) -> int
 *       `replies[i]` (bytes, or None for no reply) goes to the sender of datagram i of the last
 *       recv(); one sendmmsg(2) for all (more if the kernel takes fewer).  A reply the kernel
 *       refuses is skipped, as a failed sendto would be.  Returns the number sent.
 *   Batch.addr(i) -> (host, port)
 *       The sender of datagram i of the last recv(), as socket.recvfrom would give it.
 *
 * Built by `pip install` (setup.py, optional: without a compiler the server uses its portable
 * recvfrom/sendto loop).
 */
#define PY_SSIZE_T_CLEAN
#define _GNU_SOURCE
#include <Python.h>

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <string.h>
#include <sys/socket.h>

typedef struct {
    PyObject_HEAD
    int fd;
    unsigned int size;                  /* datagrams per batch at most */
    size_t bufsize;                     /* bytes per datagram at most (longer: truncated) */
    unsigned int count;                 /* datagrams in the last batch */
    char *bufs;                         /* size * bufsize */
    struct iovec *riov;                 /* receive iovecs, one per buffer */
    struct sockaddr_storage *addrs;     /* senders of the last batch */
    struct mmsghdr *rmsgs;              /* receive headers */
    struct mmsghdr *smsgs;              /* send headers */
    struct iovec *siov;                 /* send iovecs */
    PyObject **held;                    /* replies referenced while sendmmsg runs */
    struct sockaddr_storage last;       /* the last sender whose text is cached in last_ip */
    PyObject *last_ip;
} Batch;

static void Batch_free_buffers(Batch *self) {
    PyMem_Free(self->bufs);
    PyMem_Free(self->riov);
    PyMem_Free(self->addrs);
    PyMem_Free(self->rmsgs);
    PyMem_Free(self->smsgs);
    PyMem_Free(self->siov);
    PyMem_Free(self->held);
    self->bufs = NULL;
    self->riov = NULL;
    self->addrs = NULL;
    self->rmsgs = NULL;
    self->smsgs = NULL;
    self->siov = NULL;
    self->held = NULL;
}

static void Batch_dealloc(Batch *self) {
    Batch_free_buffers(self);
    Py_CLEAR(self->last_ip);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static int Batch_init(Batch *self, PyObject *args, PyObject *kwds) {
    static char *kwlist[] = {"fd", "size", "bufsize", NULL};
    int fd;
    unsigned int size = 64;
    Py_ssize_t bufsize = 4096;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "i|In", kwlist, &fd, &size, &bufsize))
        return -1;
    if (fd < 0 || size < 1 || size > 1024 || bufsize < 12 || bufsize > 65535) {
        PyErr_SetString(PyExc_ValueError, "Batch: bad fd, size (1-1024) or bufsize (12-65535)");
        return -1;
    }
    Batch_free_buffers(self);
    self->fd = fd;
    self->size = size;
    self->bufsize = (size_t)bufsize;
    self->count = 0;
    self->bufs = PyMem_Malloc((size_t)size * self->bufsize);
    self->riov = PyMem_Calloc(size, sizeof(struct iovec));
    self->addrs = PyMem_Calloc(size, sizeof(struct sockaddr_storage));
    self->rmsgs = PyMem_Calloc(size, sizeof(struct mmsghdr));
    self->smsgs = PyMem_Calloc(size, sizeof(struct mmsghdr));
    self->siov = PyMem_Calloc(size, sizeof(struct iovec));
    self->held = PyMem_Calloc(size, sizeof(PyObject *));
    if (!self->bufs || !self->riov || !self->addrs || !self->rmsgs || !self->smsgs ||
        !self->siov || !self->held) {
        Batch_free_buffers(self);
        PyErr_NoMemory();
        return -1;
    }
    for (unsigned int i = 0; i < size; i++) {
        self->riov[i].iov_base = self->bufs + (size_t)i * self->bufsize;
        self->riov[i].iov_len = self->bufsize;
        self->rmsgs[i].msg_hdr.msg_iov = &self->riov[i];
        self->rmsgs[i].msg_hdr.msg_iovlen = 1;
        self->rmsgs[i].msg_hdr.msg_name = &self->addrs[i];
        self->smsgs[i].msg_hdr.msg_iov = &self->siov[i];
        self->smsgs[i].msg_hdr.msg_iovlen = 1;
    }
    memset(&self->last, 0, sizeof(self->last));
    Py_CLEAR(self->last_ip);
    return 0;
}

/* The sender's address as text, reusing the previous object for the same address. */
static PyObject *sender_text(Batch *self, const struct sockaddr_storage *sa) {
    char text[INET6_ADDRSTRLEN];
    const void *raw;
    size_t rawlen;
    if (sa->ss_family == AF_INET) {
        raw = &((const struct sockaddr_in *)sa)->sin_addr;
        rawlen = sizeof(struct in_addr);
    } else if (sa->ss_family == AF_INET6) {
        raw = &((const struct sockaddr_in6 *)sa)->sin6_addr;
        rawlen = sizeof(struct in6_addr);
    } else {
        return PyUnicode_FromString("?");
    }
    if (self->last_ip != NULL && self->last.ss_family == sa->ss_family) {
        const void *old = sa->ss_family == AF_INET
            ? (const void *)&((const struct sockaddr_in *)&self->last)->sin_addr
            : (const void *)&((const struct sockaddr_in6 *)&self->last)->sin6_addr;
        if (memcmp(old, raw, rawlen) == 0) {
            Py_INCREF(self->last_ip);
            return self->last_ip;
        }
    }
    if (inet_ntop(sa->ss_family, raw, text, sizeof(text)) == NULL)
        return PyErr_SetFromErrno(PyExc_OSError);
    PyObject *ip = PyUnicode_FromString(text);
    if (ip == NULL)
        return NULL;
    memcpy(&self->last, sa, sizeof(self->last));
    Py_INCREF(ip);
    Py_XSETREF(self->last_ip, ip);
    return ip;
}

static PyObject *Batch_recv(Batch *self, PyObject *Py_UNUSED(ignored)) {
    int n;
    if (self->bufs == NULL) {
        PyErr_SetString(PyExc_ValueError, "Batch not initialised");
        return NULL;
    }
    for (;;) {
        for (unsigned int i = 0; i < self->size; i++) {
            self->rmsgs[i].msg_hdr.msg_namelen = sizeof(struct sockaddr_storage);
            self->rmsgs[i].msg_hdr.msg_flags = 0;
        }
        Py_BEGIN_ALLOW_THREADS
        n = recvmmsg(self->fd, self->rmsgs, self->size, MSG_WAITFORONE, NULL);
        Py_END_ALLOW_THREADS
        if (n >= 0)
            break;
        if (errno != EINTR) {
            self->count = 0;
            return PyErr_SetFromErrno(PyExc_OSError);
        }
        if (PyErr_CheckSignals() < 0) {      /* a handler raised: stop here */
            self->count = 0;
            return NULL;
        }
    }
    self->count = (unsigned int)n;
    PyObject *datas = PyList_New(n);
    PyObject *ips = PyList_New(n);
    if (datas == NULL || ips == NULL)
        goto fail;
    for (int i = 0; i < n; i++) {
        PyObject *data = PyBytes_FromStringAndSize(self->riov[i].iov_base,
                                                   (Py_ssize_t)self->rmsgs[i].msg_len);
        if (data == NULL)
            goto fail;
        PyList_SET_ITEM(datas, i, data);
        PyObject *ip = sender_text(self, &self->addrs[i]);
        if (ip == NULL)
            goto fail;
        PyList_SET_ITEM(ips, i, ip);
    }
    PyObject *out = PyTuple_Pack(2, datas, ips);
    Py_DECREF(datas);
    Py_DECREF(ips);
    return out;
fail:
    Py_XDECREF(datas);
    Py_XDECREF(ips);
    return NULL;
}

static PyObject *Batch_send(Batch *self, PyObject *replies) {
    if (!PyList_Check(replies)) {
        PyErr_SetString(PyExc_TypeError, "send() takes a list");
        return NULL;
    }
    Py_ssize_t n = PyList_GET_SIZE(replies);
    if (n > (Py_ssize_t)self->count) {
        PyErr_SetString(PyExc_ValueError, "more replies than datagrams in the last batch");
        return NULL;
    }
    unsigned int k = 0;
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *item = PyList_GET_ITEM(replies, i);
        if (item == Py_None)
            continue;
        if (!PyBytes_Check(item)) {
            for (unsigned int j = 0; j < k; j++)
                Py_DECREF(self->held[j]);
            PyErr_SetString(PyExc_TypeError, "a reply must be bytes or None");
            return NULL;
        }
        Py_INCREF(item);
        self->held[k] = item;
        self->siov[k].iov_base = PyBytes_AS_STRING(item);
        self->siov[k].iov_len = (size_t)PyBytes_GET_SIZE(item);
        self->smsgs[k].msg_hdr.msg_name = &self->addrs[i];
        self->smsgs[k].msg_hdr.msg_namelen = self->rmsgs[i].msg_hdr.msg_namelen;
        k++;
    }
    unsigned int done = 0, failed = 0;
    Py_BEGIN_ALLOW_THREADS
    while (done < k) {
        int r = sendmmsg(self->fd, self->smsgs + done, k - done, 0);
        if (r > 0) {
            done += (unsigned int)r;
        } else if (r < 0 && errno == EINTR) {
            continue;                        /* handlers run once the GIL is back */
        } else {
            done++;                          /* this reply cannot be sent: skip it */
            failed++;
        }
    }
    Py_END_ALLOW_THREADS
    for (unsigned int j = 0; j < k; j++)
        Py_DECREF(self->held[j]);
    return PyLong_FromUnsignedLong(k - failed);
}

static PyObject *Batch_addr(Batch *self, PyObject *arg) {
    Py_ssize_t i = PyLong_AsSsize_t(arg);
    if (i == -1 && PyErr_Occurred())
        return NULL;
    if (i < 0 || i >= (Py_ssize_t)self->count) {
        PyErr_SetString(PyExc_IndexError, "no such datagram in the last batch");
        return NULL;
    }
    const struct sockaddr_storage *sa = &self->addrs[i];
    char text[INET6_ADDRSTRLEN];
    if (sa->ss_family == AF_INET) {
        const struct sockaddr_in *a = (const struct sockaddr_in *)sa;
        inet_ntop(AF_INET, &a->sin_addr, text, sizeof(text));
        return Py_BuildValue("(si)", text, ntohs(a->sin_port));
    }
    if (sa->ss_family == AF_INET6) {
        const struct sockaddr_in6 *a = (const struct sockaddr_in6 *)sa;
        inet_ntop(AF_INET6, &a->sin6_addr, text, sizeof(text));
        return Py_BuildValue("(siII)", text, ntohs(a->sin6_port),
                             (unsigned int)ntohl(a->sin6_flowinfo), (unsigned int)a->sin6_scope_id);
    }
    PyErr_SetString(PyExc_OSError, "sender of an unknown address family");
    return NULL;
}

static PyMethodDef Batch_methods[] = {
    {"recv", (PyCFunction)Batch_recv, METH_NOARGS,
     "recv() -> (datas, ips): the queued datagrams (at least one) and their senders."},
    {"send", (PyCFunction)Batch_send, METH_O,
     "send(replies) -> int: replies[i] (bytes or None) to the sender of datagram i."},
    {"addr", (PyCFunction)Batch_addr, METH_O,
     "addr(i) -> (host, port): the sender of datagram i of the last recv()."},
    {NULL, NULL, 0, NULL},
};

static PyTypeObject BatchType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "hybridnb.daemons.dns._mmsg.Batch",
    .tp_doc = "recvmmsg/sendmmsg batches on a datagram socket's file descriptor",
    .tp_basicsize = sizeof(Batch),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)Batch_init,
    .tp_dealloc = (destructor)Batch_dealloc,
    .tp_methods = Batch_methods,
};

static struct PyModuleDef mmsg_module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "_mmsg",
    .m_doc = "recvmmsg/sendmmsg batches for the lab name server (see the source's header).",
    .m_size = -1,
};

PyMODINIT_FUNC PyInit__mmsg(void) {
    if (PyType_Ready(&BatchType) < 0)
        return NULL;
    PyObject *m = PyModule_Create(&mmsg_module);
    if (m == NULL)
        return NULL;
    Py_INCREF(&BatchType);
    if (PyModule_AddObject(m, "Batch", (PyObject *)&BatchType) < 0) {
        Py_DECREF(&BatchType);
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
