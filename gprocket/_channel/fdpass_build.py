"""cffi API-mode build of the broker channel's hot path (``gprocket._channel._fdpass_speed``).

setup.py lists this builder (CFFI_MODULES).
In a development tree, build in place with::

    python -m gprocket._channel.fdpass_build    # in a checkout, for tests run from the tree

Without the compiled module ``gprocket._channel.fdpass`` does the same in Python
(same checks, same results, slower).

Two calls, both non-blocking and neither trusting the peer:

- ``gpf_receive`` reads one reply, polling for up to ``spin_ns`` first (and
  giving up early when it loses its CPU meanwhile), and hands back its
  bytes, every descriptor it carried (close-on-exec from the first instant),
  the flags that say whether anything was cut, and how the poll went. It
  does not judge: ``fdpass`` applies the same rules to both paths.
- ``gpf_check_inet`` answers "is this exactly the IPv4/IPv6 socket that was
  asked for?" with one call instead of six Python ones. It only ever says
  yes or no; on no, ``fdpass`` runs its Python checks, which name what
  differs.
"""

from __future__ import annotations

import cffi

CDEF = """
#define GPF_MAXFDS 16
int gpf_receive(int fd, uint8_t *buf, int cap, int64_t spin_ns, int *fds, int *meta);
int gpf_check_inet(int fd, int family, int type, int protocol, const char *addr,
                   int port, int v6only, const char *ifname, int listening);
"""

SOURCE = r"""
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <string.h>
#include <time.h>
#include <sys/socket.h>
#include <netinet/in.h>
#include <net/if.h>

#define GPF_MAXFDS 16
#define GPF_GAP_NS 20000
enum { GPF_AT_ONCE, GPF_POLLED, GPF_GAVE_UP };

static int64_t now_ns(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (int64_t)t.tv_sec * 1000000000 + t.tv_nsec;
}

/* One message, its length or -errno (-EAGAIN: none within spin_ns). meta gets
   [descriptor count, msg_flags, 1 if a control message other than
   SCM_RIGHTS came, how the poll went: GPF_AT_ONCE (found at the first try),
   GPF_POLLED (found while polling) or GPF_GAVE_UP (with -EAGAIN: the window
   passed, or this thread lost its CPU on the way, a gap between two tries
   of more than GPF_GAP_NS)]. Room for GPF_MAXFDS descriptors: more than the
   protocol allows, so extras are seen (and closed by the caller). */
int gpf_receive(int fd, uint8_t *buf, int cap, int64_t spin_ns, int *fds, int *meta)
{
    union {
        struct cmsghdr align;
        char bytes[CMSG_SPACE(sizeof(int) * GPF_MAXFDS)];
    } control;
    struct iovec iov = { buf, (size_t)cap };
    struct msghdr mh;
    struct cmsghdr *c;
    int64_t deadline = 0, last = 0, now;
    ssize_t n;
    meta[3] = GPF_AT_ONCE;
    for (;;) {
        memset(&mh, 0, sizeof mh);
        mh.msg_iov = &iov, mh.msg_iovlen = 1;
        mh.msg_control = control.bytes, mh.msg_controllen = sizeof control.bytes;
        n = recvmsg(fd, &mh, MSG_DONTWAIT | MSG_CMSG_CLOEXEC);
        if (n >= 0) break;
        if (errno == EINTR) continue;
        if (errno != EAGAIN) return -errno;
        if (!spin_ns) return -EAGAIN;
        now = now_ns();
        if (!deadline) {
            deadline = now + spin_ns;
            meta[3] = GPF_POLLED;
        } else if (now >= deadline || now - last > GPF_GAP_NS) {
            meta[3] = GPF_GAVE_UP;
            return -EAGAIN;
        }
        last = now;
    }
    meta[0] = 0, meta[1] = mh.msg_flags, meta[2] = 0;
    for (c = CMSG_FIRSTHDR(&mh); c; c = CMSG_NXTHDR(&mh, c)) {
        if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS) {
            meta[2] = 1;
            continue;
        }
        size_t count = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
        for (size_t i = 0; i < count && meta[0] < GPF_MAXFDS; i++)
            memcpy(&fds[meta[0]++], CMSG_DATA(c) + i * sizeof(int), sizeof(int));
    }
    return (int)n;
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
    if (flags < 0 || !(flags & FD_CLOEXEC) || (family != AF_INET && family != AF_INET6) ||
        !option(fd, SOL_SOCKET, SO_DOMAIN, family) || !option(fd, SOL_SOCKET, SO_TYPE, type) ||
        !option(fd, SOL_SOCKET, SO_PROTOCOL, protocol))
        return 0;
    if (addr) {
        if (getsockname(fd, (struct sockaddr *)&ss, &len) || ss.ss_family != family) return 0;
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
    if (v6only >= 0 && !option(fd, IPPROTO_IPV6, IPV6_V6ONLY, v6only)) return 0;
    if (ifname && (getsockopt(fd, SOL_SOCKET, SO_BINDTODEVICE, device, &dlen) ||
                   strcmp(device, ifname)))
        return 0;
    return !listening || option(fd, SOL_SOCKET, SO_ACCEPTCONN, 1);
}
"""

ffibuilder = cffi.FFI()
ffibuilder.cdef(CDEF)
ffibuilder.set_source("gprocket._channel._fdpass_speed", SOURCE, extra_compile_args=["-O2"])


if __name__ == "__main__":
    from gprocket._cffi_build import build_in_place

    print(build_in_place(ffibuilder))
