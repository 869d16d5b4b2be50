/* The broker channel's compiled receive and check (gprocket._channel._fdpass_speed).
 *
 * Built by fdpass_build.py (cffi, API mode) with -std=c11 -Wall -Wextra
 * -Werror; its interface is _fdpass_speed.h. Neither call trusts the peer:
 * gpf_receive hands back what came without judging it (gprocket._channel.fdpass does,
 * for both paths), and its control-message walk, gpf_parse_control, reads
 * only inside the buffer whatever it holds (fuzzed by helper/fuzz/fuzz_reply.c).
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE /* MSG_CMSG_CLOEXEC, SO_DOMAIN, SO_PROTOCOL */
#endif
#include "_fdpass_speed.h"

#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sched.h>
#include <time.h>
#include <sys/socket.h>
#include <netinet/in.h>
#include <net/if.h>

/* A longer gap between two tries of a poll: this thread lost its CPU meanwhile. */
#define GPF_GAP_NS 20000

static int64_t now_ns(void)
{
    struct timespec t;
    if (clock_gettime(CLOCK_MONOTONIC, &t))
        return 0;
    return (int64_t)t.tv_sec * 1000000000 + t.tv_nsec;
}

/* The descriptors and the other messages in a control buffer as recvmsg left
   it (len bytes): fds gets the SCM_RIGHTS descriptors in order, at most
   GPF_MAXFDS, meta[0] their count; meta[2] is 1 when a message is not
   SCM_RIGHTS or is malformed (shorter than its header, or running past the
   buffer: the walk stops there and takes nothing from it). Reads nothing
   outside control[0, len) and makes no system call. */
void gpf_parse_control(const uint8_t *control, size_t len, int *fds, int *meta)
{
    size_t off = 0;
    meta[0] = 0;
    meta[2] = 0;
    while (len - off >= sizeof(struct cmsghdr)) {
        struct cmsghdr c;
        memcpy(&c, control + off, sizeof c);
        if (c.cmsg_len < CMSG_LEN(0) || c.cmsg_len > len - off) {
            meta[2] = 1;
            return;
        }
        if (c.cmsg_level != SOL_SOCKET || c.cmsg_type != SCM_RIGHTS) {
            meta[2] = 1;
        } else {
            size_t count = (c.cmsg_len - CMSG_LEN(0)) / sizeof(int);
            for (size_t i = 0; i < count && meta[0] < GPF_MAXFDS; i++) {
                memcpy(&fds[meta[0]], control + off + CMSG_LEN(0) + i * sizeof(int),
                       sizeof(int));
                meta[0]++;
            }
        }
        /* The next message starts at the aligned end of this one, if it is inside. */
        if (CMSG_ALIGN(c.cmsg_len) >= len - off)
            return;
        off += CMSG_ALIGN(c.cmsg_len);
    }
}

/* One message, its length or -errno (-EAGAIN: none within spin_ns). meta gets
   [descriptor count, msg_flags, 1 if a control message other than
   SCM_RIGHTS (or a malformed one) came, how the poll went: GPF_AT_ONCE (found
   at the first try), GPF_POLLED (found while polling), or with -EAGAIN
   GPF_LOST_CPU (this thread lost its CPU on the way: a gap between two tries
   of more than GPF_GAP_NS) or GPF_EXPIRED (the window passed)]. fds has room for GPF_MAXFDS. */
int gpf_receive(int fd, uint8_t *buf, int cap, int64_t spin_ns, int *fds, int *meta)
{
    union {
        struct cmsghdr align;
        uint8_t bytes[CMSG_SPACE(sizeof(int) * GPF_MAXFDS)];
    } control;
    struct iovec iov = { buf, (size_t)cap };
    struct msghdr mh;
    int64_t deadline = 0;
    int64_t last = 0;
    int64_t now;
    ssize_t n;
    meta[3] = GPF_AT_ONCE;
    for (;;) {
        memset(&mh, 0, sizeof mh);
        mh.msg_iov = &iov;
        mh.msg_iovlen = 1;
        mh.msg_control = control.bytes;
        mh.msg_controllen = sizeof control.bytes;
        n = recvmsg(fd, &mh, MSG_DONTWAIT | MSG_CMSG_CLOEXEC);
        if (n >= 0)
            break;
        if (errno == EINTR)
            continue;
        if (errno != EAGAIN)
            return -errno;
        if (!spin_ns)
            return -EAGAIN;
        now = now_ns();
        if (!deadline) {
            deadline = now + spin_ns;
            meta[3] = GPF_POLLED;
        } else if (now - last > GPF_GAP_NS) {
            meta[3] = GPF_LOST_CPU;
            return -EAGAIN;
        } else if (now >= deadline) {
            meta[3] = GPF_EXPIRED;
            return -EAGAIN;
        }
        last = now;
    }
    meta[1] = mh.msg_flags;
    gpf_parse_control(control.bytes, mh.msg_controllen, fds, meta);
    return (int)n;
}

/* The CPU this thread runs on (-1 if unknown): no system call with rseq or the vDSO. */
int gpf_cpu(void)
{
    return sched_getcpu();
}

static int option(int fd, int level, int name, int want)
{
    int value;
    socklen_t len = sizeof value;
    return getsockopt(fd, level, name, &value, &len) == 0 && len == sizeof value && value == want;
}

/* 1 when fd is close-on-exec and a socket of this family, type and protocol,
   bound to addr (4 or 16 bytes; NULL: not bound) and port (0: no port to
   check), with IPV6_V6ONLY equal to v6only (-1: not checked), bound to the
   device ifname (NULL: none asked) and listening when asked; else 0. */
int gpf_check_inet(int fd, int family, int type, int protocol, const char *addr,
                   int port, int v6only, const char *ifname, int listening)
{
    struct sockaddr_storage ss;
    socklen_t len = sizeof ss;
    char device[IFNAMSIZ + 1] = { 0 };
    socklen_t dlen = IFNAMSIZ;
    int flags = fcntl(fd, F_GETFD);
    /* A bound socket's family is the one getsockname reports below: no SO_DOMAIN then. */
    if (flags < 0 || !(flags & FD_CLOEXEC) || (family != AF_INET && family != AF_INET6) ||
        (!addr && !option(fd, SOL_SOCKET, SO_DOMAIN, family)) ||
        !option(fd, SOL_SOCKET, SO_TYPE, type) || !option(fd, SOL_SOCKET, SO_PROTOCOL, protocol))
        return 0;
    if (addr) {
        if (getsockname(fd, (struct sockaddr *)&ss, &len) || ss.ss_family != family)
            return 0;
        if (family == AF_INET) {
            const struct sockaddr_in *a = (const struct sockaddr_in *)&ss;
            if (len < sizeof *a || memcmp(&a->sin_addr, addr, 4) ||
                (port && ntohs(a->sin_port) != port))
                return 0;
        } else {
            const struct sockaddr_in6 *a = (const struct sockaddr_in6 *)&ss;
            if (len < sizeof *a || memcmp(&a->sin6_addr, addr, 16) ||
                (port && ntohs(a->sin6_port) != port))
                return 0;
        }
    }
    if (v6only >= 0 && !option(fd, IPPROTO_IPV6, IPV6_V6ONLY, v6only))
        return 0;
    if (ifname && (getsockopt(fd, SOL_SOCKET, SO_BINDTODEVICE, device, &dlen) ||
                   strcmp(device, ifname)))
        return 0;
    return !listening || option(fd, SOL_SOCKET, SO_ACCEPTCONN, 1);
}
