/* multiping's compiled send/receive/match loop (gprocket.icmp._speed).
 *
 * Built by _build.py (cffi API mode) with -std=c11 -Wall -Wextra -Werror;
 * tests/privileged/test_icmp_sanitized.py builds it again under ASan/UBSan and
 * pings through it. The docstring of _build.py says what it promises.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE  /* recvmmsg */
#endif
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <netinet/in.h>
#include <linux/errqueue.h>

#include "_loop.h"

#define ST_WAIT 0
#define ST_DONE 1      /* answered, errored, expired or failed */
#define F_REPLIED 1
#define F_INWIN 2

/* Probe slots form a ring: probe p lives in slot p % cap. */
#define PI(p) ((size_t)((p) % c->cap))
#define EV_CAP 4096
#define RBATCH 32
#define RECV_MAX 1024  /* packets read in one step: keeps each call short */
#define ANC 512

static int64_t mono_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

static int64_t wall_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

void gpi_free(gpi_ctx *c) {
    if (!c) return;
    free(c->ev_kind); free(c->ev_target); free(c->ev_seq); free(c->ev_ttl);
    free(c->ev_type); free(c->ev_code); free(c->ev_family); free(c->ev_scope);
    free(c->ev_value); free(c->ev_addr); free(c->addrs); free(c->scopes);
    free(c->tsent); free(c->tpending); free(c->ptarget); free(c->psent_ns);
    free(c->psent_mono); free(c->pstate); free(c->pflags); free(c->pcookie);
    free(c->qtarget); free(c->qdue); free(c->rbuf); free(c->packet); free(c->fill);
    free(c);
}

gpi_ctx *gpi_new(int fd, int family, int raw, int ident, int size, int count,
                 int64_t interval_ns, int64_t timeout_ns, int n, const uint8_t *addrs,
                 const uint32_t *scopes, int seq0, int ring)
{
    gpi_ctx *c = calloc(1, sizeof(*c));
    int alen = family == AF_INET6 ? 16 : 4, i;
    if (!c) return NULL;
    c->fd = fd; c->v6 = family == AF_INET6; c->raw = raw; c->ident = ident;
    c->size = size; c->count = count; c->interval_ns = interval_ns;
    c->timeout_ns = timeout_ns; c->n = n; c->seq0 = seq0;
    c->cookie_len = size < 8 ? size : 8;
    /* Room for every probe, or for as many as can be live (sent, not yet
       forgotten) at once; sending waits when the ring is full. */
    c->cap = n * count < ring ? n * count : ring;
    c->remaining = n;
    c->cookie_used = sizeof(c->cookies);
    c->window = c->batch = 1;
    c->rsize = size + 8 + 60 + 1024 > 2048 ? size + 8 + 60 + 1024 : 2048;
    c->ev_kind = malloc(EV_CAP * 4); c->ev_target = malloc(EV_CAP * 4);
    c->ev_seq = malloc(EV_CAP * 4); c->ev_ttl = malloc(EV_CAP * 4);
    c->ev_type = malloc(EV_CAP * 4); c->ev_code = malloc(EV_CAP * 4);
    c->ev_family = malloc(EV_CAP * 4); c->ev_scope = malloc(EV_CAP * 4);
    c->ev_value = malloc(EV_CAP * 8); c->ev_addr = malloc(EV_CAP * 16);
    c->addrs = malloc((size_t)n * alen + 1);
    c->scopes = calloc((size_t)n + 1, 4);
    c->tsent = calloc((size_t)n + 1, 4); c->tpending = calloc((size_t)n + 1, 4);
    c->ptarget = malloc((size_t)c->cap * 4 + 4);
    c->psent_ns = malloc((size_t)c->cap * 8 + 8);
    c->psent_mono = malloc((size_t)c->cap * 8 + 8);
    c->pstate = calloc((size_t)c->cap + 1, 1); c->pflags = calloc((size_t)c->cap + 1, 1);
    c->pcookie = malloc((size_t)c->cap * 8 + 8);
    c->qtarget = malloc((size_t)n * 4 + 4); c->qdue = malloc((size_t)n * 8 + 8);
    c->rbuf = malloc((size_t)RBATCH * (c->rsize + ANC));
    c->packet = malloc((size_t)size + 8);
    c->fill = malloc((size_t)size + 8);
    if (!c->ev_kind || !c->ev_target || !c->ev_seq || !c->ev_ttl || !c->ev_type ||
        !c->ev_code || !c->ev_family || !c->ev_scope || !c->ev_value || !c->ev_addr ||
        !c->addrs || !c->scopes || !c->tsent || !c->tpending || !c->ptarget ||
        !c->psent_ns || !c->psent_mono || !c->pstate || !c->pflags || !c->pcookie ||
        !c->qtarget || !c->qdue || !c->rbuf || !c->packet || !c->fill) {
        gpi_free(c);
        return NULL;
    }
    memcpy(c->addrs, addrs, (size_t)n * alen);
    if (scopes) memcpy(c->scopes, scopes, (size_t)n * 4);
    for (i = 0; i < size; i++) c->fill[i] = (uint8_t)(i & 0xFF);  /* iputils' pattern */
    return c;
}

int gpi_seq(gpi_ctx *c) { return (c->seq0 + c->nprobes) & 0xFFFF; }

static inline int pseq(gpi_ctx *c, int p) { return (c->seq0 + p + 1) & 0xFFFF; }

static uint16_t csum(const uint8_t *d, size_t len) {
    uint32_t s = 0;
    size_t i;
    for (i = 0; i + 1 < len; i += 2) s += (uint32_t)(d[i] << 8 | d[i + 1]);
    if (len & 1) s += (uint32_t)d[len - 1] << 8;
    while (s >> 16) s = (s & 0xFFFF) + (s >> 16);
    return (uint16_t)~s;
}

static int event(gpi_ctx *c, int kind, int target, int seq, int ttl, int64_t value) {
    int e = c->nev++;
    c->ev_kind[e] = kind; c->ev_target[e] = target; c->ev_seq[e] = seq;
    c->ev_ttl[e] = ttl; c->ev_value[e] = value; c->ev_family[e] = 0;
    return e;
}

/* Probe p is over. If that completes its target, say so: by marking event e
   (the reply, error or failure that ended it; it has then sent `count`), or
   with an EV_DONE event of its own. */
static void finish(gpi_ctx *c, int p, int e) {
    int t = c->ptarget[PI(p)];
    c->pstate[PI(p)] = ST_DONE;
    if (c->pflags[PI(p)] & F_INWIN) {
        c->pflags[PI(p)] &= ~F_INWIN;
        c->outstanding--;
    }
    if (--c->tpending[t] == 0 && c->tsent[t] >= c->count) {
        c->remaining--;
        if (e >= 0) c->ev_kind[e] |= EV_FINAL;
        else event(c, EV_DONE, t, 0, -1, c->tsent[t]);
    }
}

static inline int same_addr(gpi_ctx *c, int t, const uint8_t *addr, uint32_t scope) {
    if (!c->v6) return memcmp(c->addrs + (size_t)t * 4, addr, 4) == 0;
    return memcmp(c->addrs + (size_t)t * 16, addr, 16) == 0 && c->scopes[t] == scope;
}

/* The newest live probe sent to (addr, seq), or -1: as the Python engine's
   table keyed by (address, sequence). */
static int lookup(gpi_ctx *c, int seq, const uint8_t *addr, uint32_t scope) {
    int p, first;
    if (c->ret_head >= c->nprobes) return -1;
    first = c->ret_head + ((seq - pseq(c, c->ret_head)) & 0xFFFF);
    if (first >= c->nprobes) return -1;
    p = first + ((c->nprobes - 1 - first) / 65536) * 65536;
    for (; p >= first; p -= 65536)
        if (same_addr(c, c->ptarget[PI(p)], addr, scope)) return p;
    return -1;
}

static int payload_ok(gpi_ctx *c, int p, const uint8_t *pl, size_t len) {
    int cl = c->cookie_len;
    if (len != (size_t)c->size) return 0;
    if (memcmp(pl, c->pcookie + PI(p) * 8, (size_t)cl) != 0) return 0;
    return memcmp(pl + cl, c->fill + cl, (size_t)(c->size - cl)) == 0;
}

static void echo_reply(gpi_ctx *c, int ident, int seq, const uint8_t *addr, uint32_t scope,
                       const uint8_t *pl, size_t len, int ttl, int64_t stamp) {
    int p, t;
    int64_t rtt;
    if (ident != c->ident) { c->foreign++; return; }
    p = lookup(c, seq, addr, scope);
    if (p < 0 || !payload_ok(c, p, pl, len)) { c->mismatched++; return; }
    t = c->ptarget[PI(p)];
    rtt = stamp - c->psent_ns[PI(p)];
    if (rtt < 0) rtt = 0;  /* the wall clock stepped back between send and receive */
    if (c->pstate[PI(p)] == ST_WAIT) {
        if (rtt > c->max_rtt_ns) c->max_rtt_ns = rtt;
        c->pflags[PI(p)] |= F_REPLIED;
        finish(c, p, event(c, EV_REPLY, t, seq, ttl, rtt));
    } else if (c->pflags[PI(p)] & F_REPLIED) {
        event(c, EV_DUP, t, seq, ttl, rtt);
    } else {
        c->late++;  /* after its timeout: neither a reply nor a duplicate */
    }
}

static void icmp_error(gpi_ctx *c, const uint8_t *target, uint32_t tscope, int seq,
                       const uint8_t *pl, size_t len, int rfamily, const uint8_t *reporter,
                       uint32_t rscope, int type, int code, int64_t stamp) {
    int p, e;
    size_t q;
    int64_t rtt;
    p = lookup(c, seq, target, tscope);
    if (p < 0 || c->pstate[PI(p)] != ST_WAIT) { c->mismatched++; return; }
    /* Routers may quote only part of the payload: compare what they quoted. */
    q = len < 8 ? len : 8;
    if (q > (size_t)c->cookie_len) {
        if (memcmp(pl, c->pcookie + PI(p) * 8, (size_t)c->cookie_len) != 0 ||
            memcmp(pl + c->cookie_len, c->fill + c->cookie_len, q - c->cookie_len) != 0) {
            c->mismatched++;
            return;
        }
    } else if (memcmp(pl, c->pcookie + PI(p) * 8, q) != 0) {
        c->mismatched++;
        return;
    }
    rtt = stamp - c->psent_ns[PI(p)];
    if (rtt < 0) rtt = 0;
    e = event(c, EV_ERROR, c->ptarget[PI(p)], seq, -1, rtt);
    c->ev_type[e] = type; c->ev_code[e] = code; c->ev_family[e] = rfamily;
    c->ev_scope[e] = rscope;
    if (rfamily) memcpy(c->ev_addr + (size_t)e * 16, reporter, rfamily == AF_INET6 ? 16 : 4);
    finish(c, p, e);
}

static void reject(gpi_ctx *c, int reason) { c->rejected++; c->reasons[reason]++; }

static int is_error4(int t) { return t == 3 || t == 4 || t == 11 || t == 12; }
static int is_error6(int t) { return t >= 1 && t <= 4; }

/* One ICMP message (no IP header) from `src`. */
static void icmp4(gpi_ctx *c, const uint8_t *m, size_t len, const uint8_t *src, int ttl,
                  int64_t stamp, int verify) {
    if (len < 8) { reject(c, R_TRUNC); return; }
    if (verify && csum(m, len) != 0) { reject(c, R_SUM); return; }
    if (m[0] == 0 || m[0] == 8) {
        if (m[1] != 0) { reject(c, R_CODE); return; }
        if (m[0] == 8) { c->own_requests++; return; }
        echo_reply(c, m[4] << 8 | m[5], m[6] << 8 | m[7], src, 0, m + 8, len - 8, ttl, stamp);
        return;
    }
    if (is_error4(m[0])) {
        const uint8_t *in = m + 8;
        size_t il = len - 8, ihl;
        if (il < 20 || in[0] >> 4 != 4) { reject(c, R_QUOTE); return; }
        ihl = (size_t)(in[0] & 0x0F) * 4;
        if (ihl < 20 || il < ihl + 8 || in[9] != IPPROTO_ICMP || in[ihl] != 8) {
            reject(c, R_QUOTE);
            return;
        }
        if ((in[ihl + 4] << 8 | in[ihl + 5]) != c->ident) { c->foreign++; return; }
        icmp_error(c, in + 16, 0, in[ihl + 6] << 8 | in[ihl + 7], in + ihl + 8,
                   il - ihl - 8, AF_INET, src, 0, m[0], m[1], stamp);
        return;
    }
    reject(c, R_UNKNOWN);
}

static void icmp6(gpi_ctx *c, const uint8_t *m, size_t len, const uint8_t *src,
                  uint32_t scope, int hops, int64_t stamp) {
    if (len < 8) { reject(c, R_TRUNC); return; }
    if (m[0] == 128 || m[0] == 129) {
        if (m[1] != 0) { reject(c, R_CODE); return; }
        if (m[0] == 128) { c->own_requests++; return; }
        echo_reply(c, m[4] << 8 | m[5], m[6] << 8 | m[7], src, scope, m + 8, len - 8, hops,
                   stamp);
        return;
    }
    if (is_error6(m[0])) {
        const uint8_t *in = m + 8;
        size_t il = len - 8, off = 40;
        int next;
        uint32_t tscope = 0;
        if (il < 40 || in[0] >> 4 != 6) { reject(c, R_QUOTE); return; }
        next = in[6];
        /* Walk the extension headers a router may quote before the ICMPv6 header. */
        while (next == 0 || next == 43 || next == 60 || next == 44) {
            size_t hl;
            if (il < off + 8) { reject(c, R_QUOTE); return; }
            hl = next == 44 ? 8 : ((size_t)in[off + 1] + 1) * 8;
            next = in[off];
            off += hl;
        }
        if (next != IPPROTO_ICMPV6 || il < off + 8 || in[off] != 128) {
            reject(c, R_QUOTE);
            return;
        }
        if ((in[off + 4] << 8 | in[off + 5]) != c->ident) { c->foreign++; return; }
        /* The quoted header carries no scope: a link-local target shares the
           interface the error arrived on. */
        if (in[24] == 0xFE && (in[25] & 0xC0) == 0x80) tscope = scope;
        icmp_error(c, in + 24, tscope, in[off + 6] << 8 | in[off + 7], in + off + 8,
                   il - off - 8, AF_INET6, src, scope, m[0], m[1], stamp);
        return;
    }
    reject(c, R_UNKNOWN);
}

static void packet(gpi_ctx *c, struct msghdr *h, size_t len) {
    const uint8_t *d = h->msg_iov[0].iov_base;
    struct cmsghdr *cm;
    int64_t stamp = 0;
    int ttl = -1;
    for (cm = CMSG_FIRSTHDR(h); cm; cm = CMSG_NXTHDR(h, cm)) {
        if (cm->cmsg_level == SOL_SOCKET && cm->cmsg_type == SO_TIMESTAMPNS) {
            struct timespec ts;
            memcpy(&ts, CMSG_DATA(cm), sizeof(ts));
            stamp = (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
        } else if ((cm->cmsg_level == IPPROTO_IP && cm->cmsg_type == IP_TTL) ||
                   (cm->cmsg_level == IPPROTO_IPV6 && cm->cmsg_type == IPV6_HOPLIMIT)) {
            int v;
            memcpy(&v, CMSG_DATA(cm), sizeof(v));
            ttl = v;
        }
    }
    if (!stamp) stamp = wall_ns();
    if (h->msg_flags & MSG_TRUNC) { reject(c, R_BIG); return; }
    if (c->v6) {
        const struct sockaddr_in6 *a = h->msg_name;
        icmp6(c, d, len, a->sin6_addr.s6_addr, a->sin6_scope_id, ttl, stamp);
    } else if (!c->raw) {
        const struct sockaddr_in *a = h->msg_name;
        icmp4(c, d, len, (const uint8_t *)&a->sin_addr, ttl, stamp, 0);
    } else {
        size_t ihl;
        if (len < 20 || d[0] >> 4 != 4 || (d[0] & 0x0F) < 5 || len < (size_t)(d[0] & 0x0F) * 4) {
            reject(c, R_BADIP);
            return;
        }
        ihl = (size_t)(d[0] & 0x0F) * 4;
        if (d[9] != IPPROTO_ICMP) { reject(c, R_NOTICMP); return; }
        if ((size_t)(d[2] << 8 | d[3]) != len) { reject(c, R_BADIP); return; }
        icmp4(c, d + ihl, len - ihl, d + 12, d[8], stamp, 1);
    }
}

/* Datagram sockets queue ICMP errors about our requests on the error queue. */
static void drain_errors(gpi_ctx *c) {
    uint8_t *data = c->rbuf, anc[ANC];
    struct sockaddr_in6 name;
    struct iovec iov;
    struct msghdr h;
    while (c->nev + 4 < EV_CAP) {
        struct cmsghdr *cm;
        struct sock_extended_err *ee = NULL;
        size_t eelen = 0;
        int64_t stamp = 0;
        ssize_t len;
        memset(&h, 0, sizeof(h));
        iov.iov_base = data; iov.iov_len = (size_t)c->rsize;
        h.msg_name = &name; h.msg_namelen = sizeof(name);
        h.msg_iov = &iov; h.msg_iovlen = 1;
        h.msg_control = anc; h.msg_controllen = sizeof(anc);
        len = recvmsg(c->fd, &h, MSG_ERRQUEUE | MSG_DONTWAIT);
        if (len < 0) {
            if (errno == EINTR) continue;
            break;  /* EAGAIN: the error queue is empty */
        }
        for (cm = CMSG_FIRSTHDR(&h); cm; cm = CMSG_NXTHDR(&h, cm)) {
            if (cm->cmsg_level == SOL_SOCKET && cm->cmsg_type == SO_TIMESTAMPNS) {
                struct timespec ts;
                memcpy(&ts, CMSG_DATA(cm), sizeof(ts));
                stamp = (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
            }
        }
        if (!stamp) stamp = wall_ns();
        for (cm = CMSG_FIRSTHDR(&h); cm; cm = CMSG_NXTHDR(&h, cm)) {
            const uint8_t *target;
            uint32_t tscope = 0;
            const struct sockaddr *off;
            int rfam = 0;
            const uint8_t *rep = NULL;
            if (!((cm->cmsg_level == IPPROTO_IP && cm->cmsg_type == IP_RECVERR && !c->v6) ||
                  (cm->cmsg_level == IPPROTO_IPV6 && cm->cmsg_type == IPV6_RECVERR && c->v6)))
                continue;
            eelen = cm->cmsg_len - CMSG_LEN(0);
            if (eelen < sizeof(*ee)) { c->rejected++; continue; }
            ee = (struct sock_extended_err *)CMSG_DATA(cm);
            if (ee->ee_origin != SO_EE_ORIGIN_ICMP && ee->ee_origin != SO_EE_ORIGIN_ICMP6)
                continue;
            if (len < 8 || (data[0] != 8 && data[0] != 128)) { c->rejected++; continue; }
            if ((data[4] << 8 | data[5]) != c->ident) { c->foreign++; continue; }
            off = (const struct sockaddr *)(ee + 1);
            if (eelen >= sizeof(*ee) + 8 && off->sa_family == AF_INET) {
                rfam = AF_INET;
                rep = (const uint8_t *)&((const struct sockaddr_in *)off)->sin_addr;
            } else if (eelen >= sizeof(*ee) + 24 && off->sa_family == AF_INET6) {
                rfam = AF_INET6;
                rep = ((const struct sockaddr_in6 *)off)->sin6_addr.s6_addr;
            }
            if (c->v6) {
                target = name.sin6_addr.s6_addr;
                tscope = name.sin6_scope_id;
            } else {
                target = (const uint8_t *)&((struct sockaddr_in *)&name)->sin_addr;
            }
            icmp_error(c, target, tscope, data[6] << 8 | data[7], data + 8, (size_t)len - 8,
                       rfam, rep, 0, ee->ee_type, ee->ee_code, stamp);
        }
    }
}

/* Read what is queued, without blocking; returns 1 if the slice ran out. */
static int drain(gpi_ctx *c) {
    struct mmsghdr msgs[RBATCH];
    struct iovec iov[RBATCH];
    struct sockaddr_in6 names[RBATCH];
    int got = 0, i, k;
    while (got < RECV_MAX) {
        if (c->nev + 2 * RBATCH + 4 >= EV_CAP) return 1;
        memset(msgs, 0, sizeof(msgs));
        for (i = 0; i < RBATCH; i++) {
            uint8_t *slot = c->rbuf + (size_t)i * (c->rsize + ANC);
            iov[i].iov_base = slot; iov[i].iov_len = (size_t)c->rsize;
            msgs[i].msg_hdr.msg_name = &names[i];
            msgs[i].msg_hdr.msg_namelen = sizeof(names[i]);
            msgs[i].msg_hdr.msg_iov = &iov[i]; msgs[i].msg_hdr.msg_iovlen = 1;
            msgs[i].msg_hdr.msg_control = slot + c->rsize;
            msgs[i].msg_hdr.msg_controllen = ANC;
        }
        k = recvmmsg(c->fd, msgs, RBATCH, MSG_DONTWAIT, NULL);
        if (k < 0) {
            if (errno == EINTR) continue;
            break;  /* EAGAIN, or a datagram socket announcing a queued ICMP error */
        }
        for (i = 0; i < k; i++) packet(c, &msgs[i].msg_hdr, msgs[i].msg_len);
        got += k;
        if (k < RBATCH) break;
    }
    if (!c->raw) drain_errors(c);
    return got >= RECV_MAX || c->nev + 2 * RBATCH + 4 >= EV_CAP;
}

/* Send one request to target t; 1 sent (or failed for good), 0 send buffer full. */
static int send_one(gpi_ctx *c, int t, int64_t now) {
    int p = c->nprobes, seq = pseq(c, p), len = 8 + c->size, tries, old;
    uint8_t *m = c->packet;
    struct sockaddr_in6 a6;
    struct sockaddr_in a4;
    const struct sockaddr *to;
    socklen_t tolen;
    int64_t stamp = 0;
    ssize_t r = -1;
    int err = 0;
    const uint8_t *to_addr;
    if (c->cookie_used + 8 > (int)sizeof(c->cookies)) {
        if (getrandom(c->cookies, sizeof(c->cookies), 0) != (ssize_t)sizeof(c->cookies))
            return -1;
        c->cookie_used = 0;
    }
    m[0] = c->v6 ? 128 : 8; m[1] = 0; m[2] = m[3] = 0;
    m[4] = (uint8_t)(c->ident >> 8); m[5] = (uint8_t)c->ident;
    m[6] = (uint8_t)(seq >> 8); m[7] = (uint8_t)seq;
    memcpy(m + 8, c->cookies + c->cookie_used, (size_t)c->cookie_len);
    memcpy(m + 8 + c->cookie_len, c->fill + c->cookie_len, (size_t)(c->size - c->cookie_len));
    /* The kernel fills in the checksum for ICMPv6 and for ping datagram sockets. */
    if (c->raw && !c->v6) {
        uint16_t s = csum(m, (size_t)len);
        m[2] = (uint8_t)(s >> 8); m[3] = (uint8_t)s;
    }
    if (c->v6) {
        memset(&a6, 0, sizeof(a6));
        a6.sin6_family = AF_INET6;
        memcpy(a6.sin6_addr.s6_addr, c->addrs + (size_t)t * 16, 16);
        a6.sin6_scope_id = c->scopes[t];
        to = (const struct sockaddr *)&a6; tolen = sizeof(a6);
    } else {
        memset(&a4, 0, sizeof(a4));
        a4.sin_family = AF_INET;
        memcpy(&a4.sin_addr, c->addrs + (size_t)t * 4, 4);
        to = (const struct sockaddr *)&a4; tolen = sizeof(a4);
    }
    /* A datagram socket reports an earlier request's ICMP error (already on
       the error queue) on this send, which then did not go out: send again. */
    for (tries = 0; tries < 2; tries++) {
        stamp = wall_ns();
        r = sendto(c->fd, m, (size_t)len, MSG_DONTWAIT, to, tolen);
        err = r < 0 ? errno : 0;
        if (r >= 0 || err == EAGAIN || err == EWOULDBLOCK || c->raw) break;
    }
    if (r < 0 && (err == EAGAIN || err == EWOULDBLOCK)) return 0;
    to_addr = c->addrs + (size_t)t * (c->v6 ? 16 : 4);
    /* The sequence wrapped onto a request to the same target still waiting: retire it. */
    for (old = p - 65536; old >= c->ret_head; old -= 65536)
        if (c->pstate[PI(old)] == ST_WAIT &&
            same_addr(c, c->ptarget[PI(old)], to_addr, c->v6 ? c->scopes[t] : 0))
            finish(c, old, -1);
    c->nprobes++;
    c->pstate[PI(p)] = ST_WAIT;
    c->ptarget[PI(p)] = t;
    c->psent_ns[PI(p)] = stamp;
    c->psent_mono[PI(p)] = now;
    memcpy(c->pcookie + PI(p) * 8, c->cookies + c->cookie_used, 8);
    c->cookie_used += 8;
    c->tsent[t]++;
    c->tpending[t]++;
    if (r < 0) {
        c->pflags[PI(p)] = 0;
        finish(c, p, event(c, EV_SENDFAIL, t, seq, -1, err));
    } else {
        c->pflags[PI(p)] = F_INWIN;
        c->outstanding++;
    }
    if (c->tsent[t] < c->count) {
        c->qtarget[c->qtail % c->n] = t;
        c->qdue[c->qtail % c->n] = now + c->interval_ns;
        c->qtail++;
    }
    return 1;
}

int gpi_step(gpi_ctx *c) {
    int64_t now = mono_ns(), hold, wake;
    int room = c->window - c->outstanding, sent = 0, blocked = 0, more;
    c->nev = 0;
    if (room > c->batch) room = c->batch;
    while (sent < room && c->nev + 8 < EV_CAP) {
        int t, r;
        int from_queue = 0;
        if (c->nprobes - c->ret_head >= c->cap) break;  /* the ring is full */
        if (c->fresh < c->n) t = c->fresh;
        else if (c->qhead < c->qtail && c->qdue[c->qhead % c->n] <= now) {
            t = c->qtarget[c->qhead % c->n];
            from_queue = 1;
        } else break;
        r = send_one(c, t, now);
        if (r < 0) return -1;
        if (r == 0) { blocked = 1; break; }
        if (from_queue) c->qhead++; else c->fresh++;
        sent++;
    }
    more = drain(c);
    now = mono_ns();
    /* A request unanswered for `hold` stops reserving reply room: its reply
       is no longer expected in the next burst. */
    hold = 4 * c->max_rtt_ns;
    if (hold < 50000000LL) hold = 50000000LL;
    if (hold > c->timeout_ns) hold = c->timeout_ns;
    while (c->win_head < c->nprobes &&
           (!(c->pflags[PI(c->win_head)] & F_INWIN) ||
            now - c->psent_mono[PI(c->win_head)] >= hold)) {
        if (c->pflags[PI(c->win_head)] & F_INWIN) {
            c->pflags[PI(c->win_head)] &= ~F_INWIN;
            c->outstanding--;
        }
        c->win_head++;
    }
    while (c->exp_head < c->nprobes &&
           c->psent_mono[PI(c->exp_head)] + c->timeout_ns <= now && c->nev + 2 < EV_CAP) {
        if (c->pstate[PI(c->exp_head)] == ST_WAIT) finish(c, c->exp_head, -1);
        c->exp_head++;
    }
    /* Forget a request one more timeout later: until then a repeat of its
       reply is still recognised as a duplicate (or as late). */
    while (c->ret_head < c->exp_head &&
           c->psent_mono[PI(c->ret_head)] + 2 * c->timeout_ns <= now)
        c->ret_head++;
    if (!c->remaining) { c->status = GPI_DONE; return c->nev; }
    if (more || c->nev + 4 >= EV_CAP) { c->status = GPI_AGAIN; return c->nev; }
    if (blocked) { c->status = GPI_WRITE; return c->nev; }
    if (sent) { c->status = GPI_AGAIN; return c->nev; }
    wake = INT64_MAX;
    if (c->outstanding < c->window && c->nprobes - c->ret_head < c->cap) {
        if (c->fresh < c->n) wake = now;
        else if (c->qhead < c->qtail && c->qdue[c->qhead % c->n] < wake)
            wake = c->qdue[c->qhead % c->n];
    }
    if (c->nprobes - c->ret_head >= c->cap &&
        c->psent_mono[PI(c->ret_head)] + 2 * c->timeout_ns < wake)
        wake = c->psent_mono[PI(c->ret_head)] + 2 * c->timeout_ns;
    if (c->exp_head < c->nprobes && c->psent_mono[PI(c->exp_head)] + c->timeout_ns < wake)
        wake = c->psent_mono[PI(c->exp_head)] + c->timeout_ns;
    if (c->win_head < c->nprobes && c->psent_mono[PI(c->win_head)] + hold < wake)
        wake = c->psent_mono[PI(c->win_head)] + hold;
    c->wake_ns = wake;
    c->status = wake <= now ? GPI_AGAIN : GPI_READ;
    return c->nev;
}
