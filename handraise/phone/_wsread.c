/* The media listener's reading half: WebSocket frames of many sockets, read once per tick.
 *
 * handraise.phone.fastmedia does each stream's HTTP upgrade in Python, then gives the socket
 * to a Reader here. Reader.poll() (called once per 20 ms detection tick, or every N ticks)
 * asks poll(2) which sockets have bytes, reads each one with one recv(2), takes the
 * WebSocket frames out of it (RFC 6455: client frames masked, fragments joined, ping
 * answered, close and protocol errors reported) and sorts each message:
 *
 *  - an inbound media message of the usual shape of its stream (the same shape as
 *    frames.StreamReader.media_text: one fixed head, the payload, one of the stream's two
 *    tails) has its base64 payload decoded (strictly) and appended to the socket's audio of
 *    this poll: no Python object per message;
 *  - anything else (connected, start, stop, mark, dtmf, a malformed or unusual message, or
 *    any message after one of those in the same poll, so that order is kept) is returned
 *    whole as bytes, for frames.StreamReader.feed to parse or refuse.
 *
 * The fast path is off for a socket until Python names its stream's tails (Reader.fast),
 * which it does once the stream's start is parsed. Python owns the file descriptors: it
 * writes (the close frame) and closes them; this module only reads (and answers a ping).
 * Per poll, poll() returns one tuple per socket that had something:
 *     (handle, audio bytes or None, media messages in it, other messages list or None, end)
 * where end is None while the socket is open, the peer's close code (1005 when it gave
 * none) for a close frame, 0 for end of file or a reset, and -1002 / -1007 for a protocol
 * error (the caller answers with a close of that code): -1002 for a frame RFC 6455 does
 * not allow, or a close code a peer may not send; -1007 for a close reason not in UTF-8.
 * An end, once seen, stands for the poll: a close frame's code is not replaced by the
 * end of file, a reset or bytes after it.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <errno.h>
#include <poll.h>
#include <stdint.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/types.h>

#ifndef MSG_NOSIGNAL
#define MSG_NOSIGNAL 0
#endif

#define READ_CHUNK 16384
#define MAX_FRAME_BYTES 1600 /* frames.MAX_FRAME_BYTES */
#define B64_MAX ((MAX_FRAME_BYTES + 2) / 3 * 4)
#define END_NONE (-1)
#define FRAME 160 /* frames.FRAME_BYTES */

typedef struct {
    int fd;
    int used;
    int closing;             /* messages are no longer wanted; only the end is */
    int done;                /* ended: no more reading */
    unsigned char *buf;      /* bytes read, not yet a whole frame */
    size_t len, cap;
    unsigned char *msg;      /* fragments of a message in progress */
    size_t msg_len, msg_cap;
    int in_msg;              /* a fragmented message is in progress */
    int msg_skip;            /* ... and it is over the limit: its fragments are dropped */
    unsigned long long discard; /* payload bytes of an oversized frame still to drop */
    int discard_fin;
    unsigned char *tail[2];  /* fast path: what follows the payload (compact, spaced) */
    size_t tail_len[2];
    int fast;
    Py_ssize_t slot;         /* fast path: row of the keypad bank's queues, or -1 */
    /* this poll's results */
    unsigned char *audio;
    size_t audio_len, audio_cap;
    Py_ssize_t media;        /* media messages in audio */
    PyObject *messages;      /* list or NULL */
    int blocked;             /* a message went to Python: the rest of this poll does too */
    long end;
    int reported;            /* has results this poll */
} Conn;

/* The keypad bank's queues (keypad.KeypadBank), for one poll: audio[slot] holds fill[slot]
 * bytes of mu-law waiting; frames and dropped count media messages per slot. */
typedef struct {
    unsigned char *audio;
    Py_ssize_t rows, row_bytes;
    int64_t *fill, *frames, *dropped;
} Queues;

typedef struct {
    PyObject_HEAD
    Conn *conns;
    Py_ssize_t n, cap;       /* slots in use (n counts used), allocated */
    Py_ssize_t open;
    struct pollfd *pfds;
    Py_ssize_t *pidx;
    size_t max_message;
} Reader;

/* --- helpers ------------------------------------------------------------------------ */

static int grow(unsigned char **p, size_t *cap, size_t need) {
    if (need <= *cap)
        return 0;
    size_t c = *cap ? *cap : 512;
    while (c < need)
        c *= 2;
    unsigned char *q = PyMem_Realloc(*p, c);
    if (q == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    *p = q;
    *cap = c;
    return 0;
}

static signed char B64[256];

static void init_b64(void) {
    const char *alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    memset(B64, -1, sizeof B64);
    for (int i = 0; i < 64; i++)
        B64[(unsigned char)alphabet[i]] = (signed char)i;
}

/* Strict base64 (the alphabet, padding only at the end) into out; decoded size or -1. */
static Py_ssize_t b64_decode(const unsigned char *s, size_t n, unsigned char *out) {
    if (n == 0 || n % 4)
        return -1;
    size_t pad = 0;
    if (s[n - 1] == '=') {
        pad = 1;
        if (s[n - 2] == '=')
            pad = 2;
    }
    size_t full = n - (pad ? 4 : 0);
    unsigned char *o = out;
    for (size_t i = 0; i < full; i += 4) {
        int a = B64[s[i]], b = B64[s[i + 1]], c = B64[s[i + 2]], d = B64[s[i + 3]];
        if ((a | b | c | d) < 0)
            return -1;
        uint32_t v = ((uint32_t)a << 18) | ((uint32_t)b << 12) | ((uint32_t)c << 6) | (uint32_t)d;
        *o++ = (unsigned char)(v >> 16);
        *o++ = (unsigned char)(v >> 8);
        *o++ = (unsigned char)v;
    }
    if (pad) {
        const unsigned char *t = s + full;
        int a = B64[t[0]], b = B64[t[1]];
        if ((a | b) < 0)
            return -1;
        if (pad == 1) {
            int c = B64[t[2]];
            if (c < 0)
                return -1;
            uint32_t v = ((uint32_t)a << 18) | ((uint32_t)b << 12) | ((uint32_t)c << 6);
            *o++ = (unsigned char)(v >> 16);
            *o++ = (unsigned char)(v >> 8);
        } else {
            uint32_t v = ((uint32_t)a << 18) | ((uint32_t)b << 12);
            *o++ = (unsigned char)(v >> 16);
        }
    }
    return o - out;
}

/* The usual media message up to its payload: in the pattern, a space stands for an
 * optional space and '#' for a count ("1" to 18 digits, quoted), as frames._HEAD reads it. */
static const char HEAD[] =
    "{\"event\": \"media\", \"sequenceNumber\": #, \"media\": {\"track\": \"inbound\", "
    "\"chunk\": #, \"timestamp\": #, \"payload\": \"";

/* Offset of the payload in m if m has the usual head, else -1. */
static Py_ssize_t match_head(const unsigned char *m, size_t n) {
    size_t i = 0;
    for (const char *p = HEAD; *p; p++) {
        if (*p == ' ') {
            if (i < n && m[i] == ' ')
                i++;
        } else if (*p == '#') {
            if (i >= n || m[i] != '"')
                return -1;
            i++;
            size_t digits = 0;
            while (i < n && m[i] >= '0' && m[i] <= '9' && digits < 19) {
                i++;
                digits++;
            }
            if (digits < 1 || digits > 18 || i >= n || m[i] != '"')
                return -1;
            i++;
        } else {
            if (i >= n || m[i] != (unsigned char)*p)
                return -1;
            i++;
        }
    }
    return (Py_ssize_t)i;
}

static Queues *queues; /* set for the length of a poll */

/* Append n decoded bytes to slot's queue; beyond its size, the oldest whole frames go. */
static void enqueue(Queues *q, Py_ssize_t slot, const unsigned char *data, size_t n) {
    unsigned char *row = q->audio + slot * q->row_bytes;
    size_t cap = (size_t)q->row_bytes, fill = (size_t)q->fill[slot];
    if (fill + n > cap) {
        size_t over = fill + n - cap;
        size_t drop = (over + FRAME - 1) / FRAME * FRAME;
        if (drop > fill)
            drop = fill;
        memmove(row, row + drop, fill - drop);
        fill -= drop;
        q->dropped[slot] += (int64_t)(drop / FRAME);
        if (fill + n > cap) { /* longer than the whole queue: keep its end */
            data += fill + n - cap;
            n = cap - fill;
        }
    }
    memcpy(row + fill, data, n);
    q->fill[slot] = (int64_t)(fill + n);
    q->frames[slot] += 1;
}

/* One whole message of conn c: its audio, or a bytes for Python. */
static int deliver(Conn *c, const unsigned char *m, size_t n) {
    if (c->closing)
        return 0;
    if (c->fast && !c->blocked) {
        Py_ssize_t begin = match_head(m, n);
        if (begin >= 0) {
            const unsigned char *q = memchr(m + begin, '"', n - (size_t)begin);
            if (q != NULL) {
                size_t b64 = (size_t)(q - (m + begin)), rest = n - (size_t)(q - m);
                int tail_ok = 0;
                for (int k = 0; k < 2; k++)
                    if (c->tail[k] && rest == c->tail_len[k] && memcmp(q, c->tail[k], rest) == 0)
                        tail_ok = 1;
                if (tail_ok && b64 > 0 && b64 <= B64_MAX && c->slot >= 0 && queues != NULL
                    && c->slot < queues->rows) {
                    unsigned char one[MAX_FRAME_BYTES + 3];
                    Py_ssize_t got = b64_decode(m + begin, b64, one);
                    if (got > 0 && got <= MAX_FRAME_BYTES) {
                        enqueue(queues, c->slot, one, (size_t)got);
                        return 0;
                    }
                } else if (tail_ok && b64 > 0 && b64 <= B64_MAX) {
                    if (grow(&c->audio, &c->audio_cap, c->audio_len + b64 / 4 * 3) < 0)
                        return -1;
                    Py_ssize_t got = b64_decode(m + begin, b64, c->audio + c->audio_len);
                    if (got > 0 && got <= MAX_FRAME_BYTES) {
                        c->audio_len += (size_t)got;
                        c->media++;
                        c->reported = 1;
                        return 0;
                    }
                }
            }
        }
    }
    c->blocked = 1;
    if (c->messages == NULL && (c->messages = PyList_New(0)) == NULL)
        return -1;
    PyObject *b = PyBytes_FromStringAndSize((const char *)m, (Py_ssize_t)n);
    if (b == NULL)
        return -1;
    int r = PyList_Append(c->messages, b);
    Py_DECREF(b);
    c->reported = 1;
    return r;
}

/* The socket's end. The first one stands: a close frame's code is still reported when
 * the end of file (or a reset, or bytes after the close) follows in the same poll. */
static void finish(Conn *c, long end) {
    if (c->end == END_NONE)
        c->end = end;
    c->reported = 1;
    if (end <= 0)
        c->done = 1;
    c->closing = 1;
}

static void pong(Conn *c, const unsigned char *payload, size_t n) {
    unsigned char frame[2 + 125];
    frame[0] = 0x8A;
    frame[1] = (unsigned char)n;
    memcpy(frame + 2, payload, n);
    /* best effort: a peer that does not read its pongs loses them (nothing is sent when
     * the send buffer is full); half a pong would break every frame after it, so then the
     * socket is ended */
    ssize_t sent = send(c->fd, frame, 2 + n, MSG_DONTWAIT | MSG_NOSIGNAL);
    if (sent >= 0 && (size_t)sent < 2 + n)
        finish(c, 0);
}

/* RFC 6455 7.4: the codes a peer may send (1005, 1006 and 1015 must never be sent). */
static int valid_close_code(long code) {
    return (code >= 1000 && code <= 1003) || (code >= 1007 && code <= 1014)
        || (code >= 3000 && code <= 4999);
}

/* Whether s[0:n] is UTF-8 (RFC 3629: no overlong forms, no surrogates, at most U+10FFFF). */
static int valid_utf8(const unsigned char *s, size_t n) {
    size_t i = 0;
    while (i < n) {
        unsigned char b = s[i];
        size_t more;
        uint32_t cp;
        if (b < 0x80) {
            i++;
            continue;
        } else if (b >= 0xC2 && b <= 0xDF) {
            more = 1, cp = b & 0x1F;
        } else if (b >= 0xE0 && b <= 0xEF) {
            more = 2, cp = b & 0x0F;
        } else if (b >= 0xF0 && b <= 0xF4) {
            more = 3, cp = b & 0x07;
        } else {
            return 0;
        }
        if (n - i <= more)
            return 0;
        for (size_t k = 1; k <= more; k++) {
            if ((s[i + k] & 0xC0) != 0x80)
                return 0;
            cp = (cp << 6) | (s[i + k] & 0x3F);
        }
        if ((more == 2 && (cp < 0x800 || (cp >= 0xD800 && cp <= 0xDFFF)))
            || (more == 3 && (cp < 0x10000 || cp > 0x10FFFF)))
            return 0;
        i += more + 1;
    }
    return 1;
}

/* Take the whole frames out of c->buf. 0, or -1 with a Python error set (what was taken
 * is gone from the buffer either way, so nothing is unmasked or delivered twice). */
static int parse(Conn *c, size_t max_message) {
    size_t p = 0;
    int rc = 0;
    while (!c->done) {
        unsigned char *b = c->buf + p;
        size_t avail = c->len - p;
        if (c->discard) {
            size_t drop = avail < c->discard ? avail : (size_t)c->discard;
            c->discard -= drop;
            p += drop;
            if (c->discard)
                break;
            if (c->discard_fin)
                c->in_msg = c->msg_skip = 0;
            continue;
        }
        if (avail < 2)
            break;
        int fin = b[0] & 0x80, op = b[0] & 0x0F, masked = b[1] & 0x80;
        unsigned long long plen = b[1] & 0x7F;
        size_t hl = 2;
        if ((b[0] & 0x70) || !masked || (op > 2 && op < 8) || op > 10) {
            finish(c, -1002);
            break;
        }
        if (plen == 126) {
            if (avail < 4)
                break;
            plen = ((unsigned)b[2] << 8) | b[3];
            hl = 4;
        } else if (plen == 127) {
            if (avail < 10)
                break;
            plen = 0;
            for (int k = 2; k < 10; k++)
                plen = (plen << 8) | b[k];
            hl = 10;
            if (plen >> 63) {
                finish(c, -1002);
                break;
            }
        }
        if (op >= 8 && (plen > 125 || !fin)) {
            finish(c, -1002);
            break;
        }
        if (op == 0 && !c->in_msg) {
            finish(c, -1002);
            break;
        }
        if ((op == 1 || op == 2) && c->in_msg) {
            finish(c, -1002);
            break;
        }
        if (avail < hl + 4)
            break;
        const unsigned char *mask = b + hl;
        hl += 4;
        if (op < 8 && (c->msg_skip || (op ? 0 : c->msg_len) + plen > max_message)) {
            /* over the limit: the message is dropped and Python hears of it as an empty
             * message (counted and logged as a skipped frame) */
            if (!c->msg_skip) {
                c->blocked = 1;
                if (deliver(c, (const unsigned char *)"", 0) < 0) {
                    rc = -1;
                    break;
                }
            }
            c->in_msg = 1;
            c->msg_skip = 1;
            c->msg_len = 0;
            c->discard = plen;
            c->discard_fin = fin != 0;
            p += hl;
            if (!plen && fin)
                c->in_msg = c->msg_skip = 0;
            continue;
        }
        if (avail < hl + plen)
            break;
        unsigned char *data = b + hl;
        uint32_t m32;
        memcpy(&m32, mask, 4);
        uint64_t m64 = ((uint64_t)m32 << 32) | m32;
        size_t k = 0;
        for (; k + 8 <= plen; k += 8) {
            uint64_t v;
            memcpy(&v, data + k, 8);
            v ^= m64;
            memcpy(data + k, &v, 8);
        }
        for (; k < plen; k++)
            data[k] ^= mask[k & 3];
        p += hl + (size_t)plen;
        if (op == 8) {
            long code = plen >= 2 ? (long)(((unsigned)data[0] << 8) | data[1]) : 1005;
            if (plen == 1 || (plen >= 2 && !valid_close_code(code)))
                finish(c, -1002);
            else if (plen > 2 && !valid_utf8(data + 2, (size_t)plen - 2))
                finish(c, -1007);
            else
                finish(c, code);
            c->discard = 0;
            p = c->len; /* nothing after a close counts */
            break;
        }
        if (op == 9) {
            if (!c->closing)
                pong(c, data, (size_t)plen);
            continue;
        }
        if (op == 10)
            continue;
        if (fin && op) {
            if (deliver(c, data, (size_t)plen) < 0) {
                rc = -1;
                break;
            }
            continue;
        }
        if (grow(&c->msg, &c->msg_cap, (op ? 0 : c->msg_len) + (size_t)plen) < 0) {
            rc = -1;
            break;
        }
        if (op)
            c->msg_len = 0;
        memcpy(c->msg + c->msg_len, data, (size_t)plen);
        c->msg_len += (size_t)plen;
        c->in_msg = 1;
        if (fin) {
            size_t whole = c->msg_len;
            c->in_msg = 0;
            c->msg_len = 0;
            if (deliver(c, c->msg, whole) < 0) {
                rc = -1;
                break;
            }
        }
    }
    if (p >= c->len) {
        c->len = 0;
    } else if (p) {
        memmove(c->buf, c->buf + p, c->len - p);
        c->len -= p;
    }
    return rc;
}

/* Read what conn c has (one recv, a second if the first filled the buffer). */
static int read_conn(Conn *c, size_t max_message) {
    /* stops at a close frame too: what a second recv holds after it does not count */
    for (int round = 0; round < 4 && !c->done && c->end == END_NONE; round++) {
        if (grow(&c->buf, &c->cap, c->len + READ_CHUNK) < 0)
            return -1;
        size_t room = c->cap - c->len;
        ssize_t got = recv(c->fd, c->buf + c->len, room, MSG_DONTWAIT);
        if (got > 0) {
            c->len += (size_t)got;
            if (parse(c, max_message) < 0)
                return -1;
            if ((size_t)got < room)
                break;
            continue;
        }
        if (got == 0) {
            finish(c, 0);
            break;
        }
        if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)
            break;
        finish(c, 0);
        break;
    }
    return 0;
}

static void clear_conn(Conn *c) {
    PyMem_Free(c->buf);
    PyMem_Free(c->msg);
    PyMem_Free(c->audio);
    PyMem_Free(c->tail[0]);
    PyMem_Free(c->tail[1]);
    Py_CLEAR(c->messages);
    memset(c, 0, sizeof *c);
    c->fd = -1;
    c->end = END_NONE;
    c->slot = -1;
}

/* --- the Reader type ---------------------------------------------------------------- */

static int Reader_init(Reader *self, PyObject *args, PyObject *kw) {
    static char *names[] = {"max_message", NULL};
    Py_ssize_t max_message = 65536;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "|n", names, &max_message))
        return -1;
    if (max_message < 1) {
        PyErr_SetString(PyExc_ValueError, "max_message must be positive");
        return -1;
    }
    self->max_message = (size_t)max_message;
    return 0;
}

static void Reader_dealloc(Reader *self) {
    for (Py_ssize_t i = 0; i < self->cap; i++)
        clear_conn(&self->conns[i]);
    PyMem_Free(self->conns);
    PyMem_Free(self->pfds);
    PyMem_Free(self->pidx);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static Conn *get_conn(Reader *self, Py_ssize_t h) {
    if (h < 0 || h >= self->cap || !self->conns[h].used) {
        PyErr_Format(PyExc_KeyError, "no socket %zd in this reader", h);
        return NULL;
    }
    return &self->conns[h];
}

static PyObject *Reader_add(Reader *self, PyObject *arg) {
    int fd = PyObject_AsFileDescriptor(arg);
    if (fd < 0)
        return NULL;
    Py_ssize_t h = 0;
    while (h < self->cap && self->conns[h].used)
        h++;
    if (h == self->cap) {
        Py_ssize_t cap = self->cap ? self->cap * 2 : 64;
        Conn *conns = PyMem_Realloc(self->conns, (size_t)cap * sizeof(Conn));
        struct pollfd *pfds = PyMem_Realloc(self->pfds, (size_t)cap * sizeof(struct pollfd));
        if (conns)
            self->conns = conns;
        if (pfds)
            self->pfds = pfds;
        Py_ssize_t *pidx = PyMem_Realloc(self->pidx, (size_t)cap * sizeof(Py_ssize_t));
        if (pidx)
            self->pidx = pidx;
        if (!conns || !pfds || !pidx)
            return PyErr_NoMemory();
        for (Py_ssize_t i = self->cap; i < cap; i++) {
            memset(&self->conns[i], 0, sizeof(Conn));
            self->conns[i].fd = -1;
            self->conns[i].end = END_NONE;
            self->conns[i].slot = -1;
        }
        self->cap = cap;
    }
    Conn *c = &self->conns[h];
    clear_conn(c);
    c->fd = fd;
    c->used = 1;
    self->open++;
    return PyLong_FromSsize_t(h);
}

static PyObject *Reader_fast(Reader *self, PyObject *args) {
    Py_ssize_t h, slot = -1;
    PyObject *tails;
    if (!PyArg_ParseTuple(args, "nO!|n", &h, &PyTuple_Type, &tails, &slot))
        return NULL;
    Conn *c = get_conn(self, h);
    if (c == NULL)
        return NULL;
    if (PyTuple_GET_SIZE(tails) > 2) {
        PyErr_SetString(PyExc_ValueError, "at most two tails");
        return NULL;
    }
    for (int k = 0; k < 2; k++) {
        PyMem_Free(c->tail[k]);
        c->tail[k] = NULL;
        c->tail_len[k] = 0;
    }
    c->fast = 0;
    c->slot = slot < 0 ? -1 : slot;
    for (Py_ssize_t k = 0; k < PyTuple_GET_SIZE(tails); k++) {
        char *s;
        Py_ssize_t n;
        if (PyBytes_AsStringAndSize(PyTuple_GET_ITEM(tails, k), &s, &n) < 0)
            return NULL;
        c->tail[k] = PyMem_Malloc(n ? (size_t)n : 1);
        if (c->tail[k] == NULL)
            return PyErr_NoMemory();
        memcpy(c->tail[k], s, (size_t)n);
        c->tail_len[k] = (size_t)n;
        c->fast = 1;
    }
    Py_RETURN_NONE;
}

/* The socket a handle argument names, or NULL with an error set. */
static Conn *conn_arg(Reader *self, PyObject *arg) {
    Py_ssize_t h = PyLong_AsSsize_t(arg);
    if (h == -1 && PyErr_Occurred())
        return NULL;
    return get_conn(self, h);
}

static PyObject *Reader_closing(Reader *self, PyObject *arg) {
    Conn *c = conn_arg(self, arg);
    if (c == NULL)
        return NULL;
    c->closing = 1;
    Py_RETURN_NONE;
}

static PyObject *Reader_remove(Reader *self, PyObject *arg) {
    Conn *c = conn_arg(self, arg);
    if (c == NULL)
        return NULL;
    clear_conn(c);
    self->open--;
    Py_RETURN_NONE;
}

static PyObject *poll_all(Reader *self);

/* poll([audio, fill, frames, dropped]): the keypad bank's queues, written directly for the
 * sockets given a slot (audio: uint8 C-contiguous (rows, row_bytes); the others int64 (rows,)). */
static PyObject *Reader_poll(Reader *self, PyObject *args) {
    PyObject *objs[4] = {NULL, NULL, NULL, NULL};
    if (!PyArg_ParseTuple(args, "|OOOO", &objs[0], &objs[1], &objs[2], &objs[3]))
        return NULL;
    if (objs[0] == NULL)
        return poll_all(self);
    if (objs[3] == NULL) {
        PyErr_SetString(PyExc_TypeError, "poll takes no queues or all four");
        return NULL;
    }
    Py_buffer views[4];
    int got = 0;
    PyObject *out = NULL;
    for (; got < 4; got++)
        if (PyObject_GetBuffer(objs[got], &views[got], PyBUF_WRITABLE | PyBUF_C_CONTIGUOUS
                               | PyBUF_FORMAT | PyBUF_ND) < 0)
            goto done;
    if (views[0].ndim != 2 || views[0].itemsize != 1) {
        PyErr_SetString(PyExc_ValueError, "audio must be a 2-d array of bytes");
        goto done;
    }
    Queues q = {.audio = views[0].buf, .rows = views[0].shape[0], .row_bytes = views[0].shape[1]};
    int64_t **counts[3] = {&q.fill, &q.frames, &q.dropped};
    for (int k = 1; k < 4; k++) {
        if (views[k].ndim != 1 || views[k].itemsize != 8 || views[k].shape[0] < q.rows
            || (views[k].format[0] != 'l' && views[k].format[0] != 'q')) {
            PyErr_SetString(PyExc_ValueError, "fill, frames and dropped must be int64 arrays of a row each");
            goto done;
        }
        *counts[k - 1] = views[k].buf;
    }
    queues = &q;
    out = poll_all(self);
    queues = NULL;
done:
    for (int k = 0; k < got; k++)
        PyBuffer_Release(&views[k]);
    return out;
}

static PyObject *poll_all(Reader *self) {
    Py_ssize_t n = 0;
    for (Py_ssize_t h = 0; h < self->cap; h++) {
        Conn *c = &self->conns[h];
        if (!c->used || c->done)
            continue;
        self->pfds[n].fd = c->fd;
        self->pfds[n].events = POLLIN;
        self->pfds[n].revents = 0;
        self->pidx[n++] = h;
    }
    PyObject *out = PyList_New(0);
    if (out == NULL || n == 0)
        return out;
    int ready = poll(self->pfds, (nfds_t)n, 0);
    if (ready < 0) {
        if (errno == EINTR)
            return out;
        Py_DECREF(out);
        return PyErr_SetFromErrno(PyExc_OSError);
    }
    for (Py_ssize_t i = 0; i < n && ready > 0; i++) {
        if (!self->pfds[i].revents)
            continue;
        ready--;
        Conn *c = &self->conns[self->pidx[i]];
        if (self->pfds[i].revents & POLLNVAL) {
            finish(c, 0);
        } else if (read_conn(c, self->max_message) < 0) {
            Py_DECREF(out);
            return NULL;
        }
        if (!c->reported)
            continue;
        PyObject *audio = Py_None, *messages = c->messages ? c->messages : Py_None, *end = Py_None;
        int own_audio = 0, own_end = 0;
        if (c->audio_len) {
            audio = PyBytes_FromStringAndSize((const char *)c->audio, (Py_ssize_t)c->audio_len);
            if (audio == NULL)
                goto fail;
            own_audio = 1;
        }
        if (c->end != END_NONE) {
            end = PyLong_FromLong(c->end);
            if (end == NULL) {
                if (own_audio)
                    Py_DECREF(audio);
                goto fail;
            }
            own_end = 1;
        }
        PyObject *item = Py_BuildValue("(nOnOO)", self->pidx[i], audio, c->media, messages, end);
        if (own_audio)
            Py_DECREF(audio);
        if (own_end)
            Py_DECREF(end);
        if (item == NULL)
            goto fail;
        int r = PyList_Append(out, item);
        Py_DECREF(item);
        if (r < 0)
            goto fail;
        Py_CLEAR(c->messages);
        c->audio_len = 0;
        c->media = 0;
        c->blocked = 0;
        c->reported = 0;
        if (c->end > 0)
            c->end = END_NONE; /* reported once; the end of file comes later */
        continue;
    fail:
        Py_DECREF(out);
        return NULL;
    }
    return out;
}

static Py_ssize_t Reader_len(Reader *self) { return self->open; }

static PyMethodDef Reader_methods[] = {
    {"add", (PyCFunction)Reader_add, METH_O,
     "add(sock) -> handle: read this socket (non-blocking, after its upgrade) from now on."},
    {"fast", (PyCFunction)Reader_fast, METH_VARARGS,
     "fast(handle, tails[, slot]): take media messages ending in one of these tails as audio "
     "(into the queues' row slot, if given, else returned); () turns it off."},
    {"closing", (PyCFunction)Reader_closing, METH_O,
     "closing(handle): drop its messages from now on; report only its end."},
    {"remove", (PyCFunction)Reader_remove, METH_O,
     "remove(handle): stop reading it (before the socket is closed)."},
    {"poll", (PyCFunction)Reader_poll, METH_VARARGS,
     "poll([audio, fill, frames, dropped]) -> [(handle, audio, media, messages, end)]: read "
     "every socket that has bytes; the audio of sockets given a slot goes to these queues."},
    {NULL, NULL, 0, NULL},
};

static PySequenceMethods Reader_seq = {.sq_length = (lenfunc)Reader_len};

static PyTypeObject ReaderType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "handraise.phone._wsread.Reader",
    .tp_basicsize = sizeof(Reader),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "The WebSocket frames of many sockets, read together once per tick.",
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)Reader_init,
    .tp_dealloc = (destructor)Reader_dealloc,
    .tp_methods = Reader_methods,
    .tp_as_sequence = &Reader_seq,
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "_wsread",
    .m_doc = "Reading the media streams' WebSocket frames in C (see handraise/phone/fastmedia.py).",
    .m_size = -1,
};

PyMODINIT_FUNC PyInit__wsread(void) {
    init_b64();
    if (PyType_Ready(&ReaderType) < 0)
        return NULL;
    PyObject *m = PyModule_Create(&module);
    if (m == NULL)
        return NULL;
    Py_INCREF(&ReaderType);
    if (PyModule_AddObject(m, "Reader", (PyObject *)&ReaderType) < 0) {
        Py_DECREF(&ReaderType);
        Py_DECREF(m);
        return NULL;
    }
    PyModule_AddIntConstant(m, "MAX_FRAME_BYTES", MAX_FRAME_BYTES);
    return m;
}
