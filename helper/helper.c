/* helper.c - gprocket-helper, the privileged half: start-up hygiene, identity,
 * policy loading, privilege drop, and opening the descriptor for one request
 * at a time. Parsing and authorization live in gp.c (pure, fuzzed).
 * Wire format: PROTOCOL.md; promises and their tests: ../docs/SECURITY.md. */
#define _GNU_SOURCE
#include "gp.h"

#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <limits.h>
#include <linux/capability.h>
#include <linux/if_packet.h>
#include <linux/if_tun.h>
#include <linux/magic.h>
#include <linux/nsfs.h>
#include <net/if.h>
#include <netinet/in.h>
#include <linux/ipv6.h> /* after netinet/in.h: struct in6_ifreq */
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/syscall.h>
#include <sys/sysmacros.h>
#include <time.h>
#include <unistd.h>

/* Exit codes (docs/SECURITY.md). */
enum { EX_USAGE = 2, EX_CHANNEL = 3, EX_DROP = 4, EX_IO = 5, EX_NETNS = 6, EX_MALFORMED = 7 };

static struct gp_policy pol;
static struct gp_ident me;
static const char *mode = "caps";
static uint64_t held;    /* the narrowed permitted set */
static int orig_ns = -1; /* the helper's own network namespace, kept only if netns is possible */
static char polbuf[GP_POLICY_MAX + 1], pwbuf[1 << 18], grbuf[1 << 18], polpath[PATH_MAX + 8];

/* capset(2) with an empty inheritable set; any failure is fatal. */
static void capset3(uint64_t prm, uint64_t eff)
{
	struct __user_cap_header_struct h = { _LINUX_CAPABILITY_VERSION_3, 0 };
	struct __user_cap_data_struct d[2] = { { (uint32_t)eff, (uint32_t)prm, 0 },
	                                       { (uint32_t)(eff >> 32), (uint32_t)(prm >> 32), 0 } };
	if (syscall(SYS_capset, &h, d)) _exit(EX_DROP);
}

/* The permitted set; *other = effective | inheritable. */
static uint64_t capget3(uint64_t *other)
{
	struct __user_cap_header_struct h = { _LINUX_CAPABILITY_VERSION_3, 0 };
	struct __user_cap_data_struct d[2];
	if (syscall(SYS_capget, &h, d)) _exit(EX_DROP);
	*other = d[0].effective | d[0].inheritable | (uint64_t)(d[1].effective | d[1].inheritable) << 32;
	return d[0].permitted | (uint64_t)d[1].permitted << 32;
}

/* Raise one capability (if held; NO_CAP: none) around one system call; cap_lower
 * keeps errno and passes the call's result through. */
enum { NO_CAP = -1 };

static int raised;

static void cap_raise(int cap)
{
	if ((raised = cap != NO_CAP && (held >> cap & 1))) capset3(held, 1ull << cap);
}

static int cap_lower(int rc)
{
	int e = errno;
	if (raised) capset3(held, 0), raised = 0;
	errno = e;
	return rc;
}

/* CALL with capability CAP raised for it alone; the comma orders raise, call, lower. */
#define CAPPED(cap, call) cap_lower((cap_raise(cap), (call)))

/* Fill the status with what failed and the errno's name, close fd, return -1. */
static int failfd(int fd, struct gp_status *st, int err, int stage, const char *what)
{
	const char *name = strerrorname_np(err);
	gp_fail(st, err, stage, "%s: %s", what, name ? name : "unknown error");
	if (fd >= 0) close(fd);
	return -1;
}

/* Everything but the channel closed; /dev/null on 1 and 2 (fd 2 may be anything). */
static void setup_fds(int keep_stdio)
{
	if (close_range(keep_stdio ? 3 : 1, ~0u, 0) ||
	    (!keep_stdio && (open("/dev/null", O_RDWR) != 1 || dup2(1, 2) != 2)))
		_exit(EX_CHANNEL);
}

/* fd 0 must be one end of an anonymous AF_UNIX/SOCK_SEQPACKET socketpair. */
static void check_channel(void)
{
	int v, w, fl;
	socklen_t l = sizeof v, lw = sizeof w, la = sizeof(struct sockaddr_storage);
	struct sockaddr_storage a;
	if (getsockopt(0, SOL_SOCKET, SO_DOMAIN, &v, &l) || v != AF_UNIX ||
	    getsockopt(0, SOL_SOCKET, SO_TYPE, &w, &lw) || w != SOCK_SEQPACKET ||
	    getpeername(0, (struct sockaddr *)&a, &la) || la != sizeof(sa_family_t) ||
	    (fl = fcntl(0, F_GETFL)) < 0 || fcntl(0, F_SETFL, fl & ~O_NONBLOCK))
		_exit(EX_CHANNEL);
}

/* Who asks: the real ids, or under sudo (real uid 0) the channel's peer. */
static void identify(const char *sudo_uid, int channel)
{
	uid_t r, e, s;
	gid_t rg, eg, sg;
	struct ucred cr;
	socklen_t l = sizeof cr, lg = sizeof me.groups;
	char peer[16];
	if (getresuid(&r, &e, &s) || getresgid(&rg, &eg, &sg)) _exit(EX_DROP);
	if (r != 0) {
		int n = getgroups(GP_MAXGROUPS, me.groups);
		if (n < 0 || (e != 0 && e != r)) _exit(EX_DROP);
		me.uid = r, me.gid = rg, me.ngroups = n, mode = e == 0 ? "setuid" : "caps";
		return;
	}
	mode = "root";
	if (!channel) return;
	if (getsockopt(0, SOL_SOCKET, SO_PEERCRED, &cr, &l) || l != sizeof cr ||
	    getsockopt(0, SOL_SOCKET, SO_PEERGROUPS, me.groups, &lg))
		_exit(EX_CHANNEL);
	me.uid = cr.uid, me.gid = cr.gid, me.ngroups = (int)(lg / sizeof(gid_t));
	/* sudo names the invoking user: a channel borrowed from another user's process loses. */
	snprintf(peer, sizeof peer, "%u", me.uid);
	if (sudo_uid[0] && strcmp(sudo_uid, peer)) _exit(EX_CHANNEL);
	if (me.uid) mode = "sudo";
}

/* Read a whole file into buf; -1 if it does not fit (cap is one more than allowed). */
static ssize_t read_all(int fd, char *buf, size_t cap)
{
	size_t got = 0;
	ssize_t n;
	while (got < cap && (n = read(fd, buf + got, cap - got)) != 0) {
		if (n < 0 && errno != EINTR) return -1;
		got += n > 0 ? (size_t)n : 0;
	}
	return got < cap ? (ssize_t)got : -1;
}

static size_t read_db(const char *path, char *buf, size_t cap)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW | O_NOCTTY);
	ssize_t n = fd < 0 ? -1 : read_all(fd, buf, cap);
	if (fd >= 0) close(fd);
	return n < 0 ? 0 : (size_t)n;
}

static int refuse_policy(int fd, const char *why)
{
	if (fd >= 0) close(fd);
	pol.broken = 1, pol.nrules = 0;
	snprintf(pol.why, sizeof pol.why, "policy: %s", why);
	return -1;
}

static int unsafe(int fd, struct stat *st)
{
	return fstat(fd, st) || st->st_uid != 0 || (st->st_mode & (S_IWGRP | S_IWOTH));
}

/* The policy beside the helper; every directory from / down root-owned and not
 * group/other-writable, checked on descriptors while walking (no path races). */
static int load_policy(void)
{
	char dir[PATH_MAX], *save = NULL;
	struct stat st;
	ssize_t n = readlink("/proc/self/exe", dir, sizeof dir - 1);
	char *slash = n > 0 ? memrchr(dir, '/', (size_t)n) : NULL;
	int dfd = open("/", O_PATH | O_DIRECTORY | O_CLOEXEC), fd, e;
	if (!slash || dfd < 0 || unsafe(dfd, &st))
		return refuse_policy(dfd, "cannot check the helper's directory");
	*slash = '\0';
	snprintf(polpath, sizeof polpath, "%s/policy", dir);
	for (char *c = strtok_r(dir, "/", &save); c; c = strtok_r(NULL, "/", &save)) {
		fd = openat(dfd, c, O_PATH | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
		close(dfd);
		if ((dfd = fd) < 0 || unsafe(dfd, &st))
			return refuse_policy(dfd, "a directory above it is not root-only");
	}
	fd = openat(dfd, "policy", O_RDONLY | O_NOFOLLOW | O_CLOEXEC | O_NONBLOCK | O_NOCTTY);
	e = errno;
	close(dfd);
	if (fd < 0 && e == ENOENT) {
		polpath[0] = '\0';
		gp_parse_policy(gp_default_policy, strlen(gp_default_policy), "", 0, "", 0, &pol);
		return 0;
	}
	if (fd < 0) return refuse_policy(-1, "cannot open the policy file");
	if (unsafe(fd, &st) || !S_ISREG(st.st_mode) || st.st_size > GP_POLICY_MAX ||
	    (n = read_all(fd, polbuf, sizeof polbuf)) < 0)
		return refuse_policy(fd, "file not root-only, not regular or > 64 KiB");
	close(fd);
	gp_parse_policy(polbuf, (size_t)n, pwbuf, read_db("/etc/passwd", pwbuf, sizeof pwbuf),
	                grbuf, read_db("/etc/group", grbuf, sizeof grbuf), &pol);
	return pol.broken ? -1 : 0;
}

/* Become the caller for good: no supplementary groups, all uids/gids equal,
 * only the capabilities in `want` permitted, none effective; then verify. */
static void drop(uint64_t want)
{
	uint64_t other, prm = capget3(&other);
	uid_t r, e, s;
	gid_t rg, eg, sg;
	held = want & prm;
	if (prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0) ||
	    (geteuid() == 0 && prctl(PR_SET_KEEPCAPS, 1, 0, 0, 0)))
		_exit(EX_DROP);
	capset3(prm, (1ull << GCAP_SETGID | 1ull << CAP_SETUID) & prm);
	if (((prm >> GCAP_SETGID & 1) && setgroups(0, NULL)) ||
	    setresgid(me.gid, me.gid, me.gid) || setresuid(me.uid, me.uid, me.uid) ||
	    prctl(PR_SET_KEEPCAPS, 0, 0, 0, 0))
		_exit(EX_DROP);
	capset3(held, 0);
	prm = capget3(&other);
	if (getresuid(&r, &e, &s) || getresgid(&rg, &eg, &sg) || r != me.uid || e != me.uid ||
	    s != me.uid || rg != me.gid || eg != me.gid || sg != me.gid || prm != held || other ||
	    (held && getgroups(0, NULL) != 0) || prctl(PR_GET_NO_NEW_PRIVS, 0, 0, 0, 0) != 1)
		_exit(EX_DROP);
}

/* /run/netns/NAME, opened without following links, must be an nsfs network namespace. */
static int enter_ns(const char *name, struct gp_status *st)
{
	struct statfs sf;
	int dfd = open("/run/netns", O_PATH | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	int fd = dfd < 0 ? -1 : openat(dfd, name, O_RDONLY | O_NOFOLLOW | O_CLOEXEC | O_NOCTTY);
	int e = errno;
	if (dfd >= 0) close(dfd);
	if (fd < 0) return failfd(-1, st, e, ST_NAMESPACE, "open /run/netns entry");
	if (orig_ns < 0 || fstatfs(fd, &sf) || sf.f_type != NSFS_MAGIC ||
	    ioctl(fd, NS_GET_NSTYPE) != CLONE_NEWNET)
		return failfd(fd, st, EINVAL, ST_NAMESPACE, "not a network namespace");
	return CAPPED(GCAP_SYS_ADMIN, setns(fd, CLONE_NEWNET))
	       ? failfd(fd, st, errno, ST_NAMESPACE, "setns") : (close(fd), 0);
}

static void leave_ns(void)
{
	if (CAPPED(GCAP_SYS_ADMIN, setns(orig_ns, CLONE_NEWNET))) _exit(EX_NETNS);
}

static int open_socket(const struct gp_req *r, struct gp_status *st)
{
	static const uint8_t any[16];
	int one = 1, v6only = !(r->flags & F_DUALSTACK), fd, f = r->flags;
	int raw = r->type == SOCK_RAW || r->family == AF_PACKET, low = r->port && r->port < 1024;
	int inet = r->family == AF_INET;
	int proto = r->family == AF_PACKET ? htons((uint16_t)r->protocol) : r->protocol;
	struct ifreq ifr = { 0 };
	struct sockaddr_ll sll = { .sll_family = AF_PACKET, .sll_protocol = (uint16_t)proto };
	struct sockaddr_in6 a6 = { .sin6_family = AF_INET6, .sin6_port = htons(r->port),
	                           .sin6_scope_id = r->scope_id };
	struct sockaddr_in a4 = { .sin_family = AF_INET, .sin_port = htons(r->port) };
	memcpy(ifr.ifr_name, r->ifname, IFNAMSIZ);
	memcpy(&a6.sin6_addr, r->addr, 16);
	memcpy(&a4.sin_addr, r->addr, 4);
	fd = CAPPED(raw ? GCAP_NET_RAW : NO_CAP, socket(r->family, r->type | SOCK_CLOEXEC, proto));
	if (fd < 0) return failfd(-1, st, errno, ST_OPEN, "socket");
	if (r->family == AF_PACKET)
		return r->ifname[0] && (ioctl(fd, SIOCGIFINDEX, &ifr) ||
		                        (sll.sll_ifindex = ifr.ifr_ifindex,
		                         bind(fd, (struct sockaddr *)&sll, sizeof sll)))
		       ? failfd(fd, st, errno, ST_BIND, "bind to interface") : fd;
	if ((r->family == AF_INET6 && !raw &&
	     setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &v6only, sizeof v6only)) ||
	    ((f & F_REUSEADDR) && setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one)) ||
	    ((f & F_REUSEPORT) && setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof one)) ||
	    ((f & F_FREEBIND) && setsockopt(fd, inet ? IPPROTO_IP : IPPROTO_IPV6,
	                                    inet ? IP_FREEBIND : IPV6_FREEBIND, &one, sizeof one)))
		return failfd(fd, st, errno, ST_BIND, "setsockopt");
	/* Linux >= 5.7 lets anyone bind an unbound socket to a device; older ones need NET_RAW. */
	if (r->ifname[0] && CAPPED(GCAP_NET_RAW, setsockopt(fd, SOL_SOCKET, SO_BINDTODEVICE,
	                                                    r->ifname, (socklen_t)strlen(r->ifname))))
		return failfd(fd, st, errno, ST_BIND, "SO_BINDTODEVICE");
	if ((r->port || r->scope_id || memcmp(r->addr, any, 16)) &&
	    CAPPED(low ? GCAP_NET_BIND_SERVICE : NO_CAP,
	           inet ? bind(fd, (struct sockaddr *)&a4, sizeof a4)
	                : bind(fd, (struct sockaddr *)&a6, sizeof a6)))
		return failfd(fd, st, errno, ST_BIND, "bind");
	return r->backlog > 0 && listen(fd, r->backlog) ? failfd(fd, st, errno, ST_BIND, "listen") : fd;
}

/* /dev/net/tun, the only entry of the compiled-in device allowlist. */
static int open_tun_dev(struct gp_status *st)
{
	struct stat sb;
	int fd = CAPPED(GCAP_DAC_OVERRIDE,
	                open("/dev/net/tun", O_RDWR | O_NOFOLLOW | O_CLOEXEC | O_NOCTTY));
	if (fd < 0) return failfd(-1, st, errno, ST_OPEN, "open /dev/net/tun");
	if (fstat(fd, &sb) || !S_ISCHR(sb.st_mode) || sb.st_rdev != makedev(10, 200))
		return failfd(fd, st, ENODEV, ST_OPEN, "/dev/net/tun is not char 10:200");
	return fd;
}

static int admin_ioctl(int s, unsigned long req, void *arg)
{
	return CAPPED(GCAP_NET_ADMIN, ioctl(s, req, arg));
}

/* Configure-on-create, for the device just created and nothing else. */
static int configure(const struct gp_req *r, struct gp_status *st)
{
	struct ifreq ifr = { 0 };
	struct in6_ifreq i6 = { .ifr6_prefixlen = r->prefix6 };
	struct sockaddr_in *sin = (struct sockaddr_in *)&ifr.ifr_addr;
	int s = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0), s6 = -1, rc = s < 0, e;
	const char *what = "socket";
	memcpy(ifr.ifr_name, r->ifname, IFNAMSIZ);
	if (!rc && r->mtu)
		ifr.ifr_mtu = (int)r->mtu, what = "SIOCSIFMTU", rc = admin_ioctl(s, SIOCSIFMTU, &ifr);
	if (!rc && r->prefix4) {
		sin->sin_family = AF_INET;
		memcpy(&sin->sin_addr, r->addr4, 4);
		what = "SIOCSIFADDR", rc = admin_ioctl(s, SIOCSIFADDR, &ifr);
		sin->sin_addr.s_addr = htonl(r->prefix4 == 32 ? ~0u : ~(~0u >> r->prefix4));
		if (!rc) what = "SIOCSIFNETMASK", rc = admin_ioctl(s, SIOCSIFNETMASK, &ifr);
	}
	if (!rc && r->prefix6) {
		memcpy(&i6.ifr6_addr, r->addr6, 16);
		what = "inet6 SIOCSIFADDR";
		rc = (s6 = socket(AF_INET6, SOCK_DGRAM | SOCK_CLOEXEC, 0)) < 0 || ioctl(s6, SIOCGIFINDEX, &ifr) ||
		     (i6.ifr6_ifindex = ifr.ifr_ifindex, admin_ioctl(s6, SIOCSIFADDR, &i6));
	}
	if (!rc && (r->tun_options & T_UP))
		what = "SIOCSIFFLAGS", rc = ioctl(s, SIOCGIFFLAGS, &ifr) ||
		                            (ifr.ifr_flags |= IFF_UP, admin_ioctl(s, SIOCSIFFLAGS, &ifr));
	e = errno;
	if (s6 >= 0) close(s6);
	if (s >= 0) close(s);
	return rc ? failfd(-1, st, e, ST_CONFIGURE, what) : 0;
}

static int open_tun(struct gp_req *r, struct gp_status *st)
{
	struct ifreq ifr = { 0 };
	int fd = open_tun_dev(st);
	if (fd < 0) return -1;
	memcpy(ifr.ifr_name, r->ifname, IFNAMSIZ);
	/* IFF_TUN_EXCL: create only, never attach to an existing device. */
	ifr.ifr_flags = (short)(r->tun_flags | IFF_TUN_EXCL);
	if (admin_ioctl(fd, TUNSETIFF, &ifr)) return failfd(fd, st, errno, ST_OPEN, "TUNSETIFF");
	memcpy(r->ifname, ifr.ifr_name, IFNAMSIZ - 1);
	r->ifname[IFNAMSIZ - 1] = '\0';
	if (ioctl(fd, TUNSETOWNER, (unsigned long)me.uid))
		return failfd(fd, st, errno, ST_CONFIGURE, "TUNSETOWNER");
	if (configure(r, st)) return close(fd), -1;
	/* Persist last, so that any failure above leaves no device behind. */
	if ((r->tun_options & T_PERSIST) && ioctl(fd, TUNSETPERSIST, 1ul))
		return failfd(fd, st, errno, ST_CONFIGURE, "TUNSETPERSIST");
	return fd;
}

/* One request from parsed to opened; -1 with st filled when there is no descriptor. */
static int handle(struct gp_req *r, struct gp_status *st)
{
	if (r->op == OP_HELLO)
		return gp_fail(st, 0, ST_NONE, "gprocket-helper 1 mode=%s uid=%u", mode, me.uid), -1;
	if (gp_authorize(&pol, &me, r, st) || (r->netns[0] && enter_ns(r->netns, st))) return -1;
	int fd = r->op == OP_SOCKET ? open_socket(r, st) : r->op == OP_TUN ? open_tun(r, st)
	                                                                   : open_tun_dev(st);
	if (r->netns[0]) leave_ns();
	return fd;
}

static void reply(uint32_t id, const struct gp_status *st, int fd, const char *ifname)
{
	static uint8_t out[GP_REP_SIZE];
	union {
		struct cmsghdr h;
		char buf[CMSG_SPACE(sizeof(int))];
	} c = { 0 };
	struct iovec iov = { out, sizeof out };
	struct msghdr mh = { .msg_iov = &iov, .msg_iovlen = 1, .msg_control = fd >= 0 ? c.buf : NULL,
	                     .msg_controllen = fd >= 0 ? sizeof c.buf : 0 };
	ssize_t n;
	gp_put_reply(out, id, st, ifname);
	c.h.cmsg_level = SOL_SOCKET, c.h.cmsg_type = SCM_RIGHTS, c.h.cmsg_len = CMSG_LEN(sizeof(int));
	memcpy(CMSG_DATA(&c.h), &fd, sizeof fd);
	while ((n = sendmsg(0, &mh, MSG_NOSIGNAL)) < 0 && errno == EINTR)
		;
	if (fd >= 0) close(fd);
	if (n != (ssize_t)sizeof out) _exit(EX_IO);
}

/* Poll for the next request while polls pay (../docs/ARCHITECTURE.md): one that gives up (50 µs,
 * or the CPU lost: tries > 20 µs apart) skips 1, 2, 4 ... 1024 polls; one that finds it resets. */
#define NS(ts) ((ts).tv_sec * 1000000000L + (ts).tv_nsec)
static ssize_t next_request(struct msghdr *mh, int may_poll)
{
	static unsigned skip, backoff;
	struct timespec ts;
	long start = may_poll && !skip && !clock_gettime(CLOCK_MONOTONIC, &ts) ? NS(ts)
	                                                                       : (skip -= skip > 0, -1);
	long last = start, t = start;
	ssize_t n = -1;
	while (start >= 0 && (n = recvmsg(0, mh, MSG_CMSG_CLOEXEC | MSG_DONTWAIT)) < 0 &&
	       errno == EAGAIN && !clock_gettime(CLOCK_MONOTONIC, &ts) &&
	       (t = NS(ts)) - last < 20000 && t - start < 50000)
		last = t;
	if (t != start) skip = backoff = n >= 0 ? 0 : !backoff ? 1 : backoff < 1024 ? 2 * backoff : 1024;
	return start < 0 || (n < 0 && errno == EAGAIN) ? recvmsg(0, mh, MSG_CMSG_CLOEXEC) : n;
}

/* One loop for both modes: one-shot is the broker stopped after one request. */
static void serve(int broker)
{
	static uint8_t in[GP_REQ_SIZE + 1];
	static cpu_set_t cpus;
	int malformed = 0;
	int may_poll = broker && !sched_getaffinity(0, sizeof cpus, &cpus) && CPU_COUNT(&cpus) > 1;
	for (;;) {
		struct iovec iov = { in, sizeof in };
		struct msghdr mh = { .msg_iov = &iov, .msg_iovlen = 1 };
		struct gp_status st;
		struct gp_req r;
		int fd = -1;
		ssize_t n = next_request(&mh, may_poll);
		if (n < 0 && errno == EINTR) continue;
		if (n <= 0) _exit(n ? EX_IO : 0); /* 0: the channel's end */
		/* No control buffer: descriptors sent to us are discarded by the kernel. */
		if (!gp_parse_request(in, (mh.msg_flags & MSG_TRUNC) ? sizeof in : (size_t)n, &r, &st) &&
		    (mh.msg_flags & MSG_CTRUNC))
			gp_fail(&st, EINVAL, ST_PARSE, "ancillary data is not accepted");
		if (!st.err) fd = handle(&r, &st);
		malformed = st.stage == ST_PARSE ? malformed + 1 : 0;
		reply(r.id, &st, fd, r.op == OP_TUN && fd >= 0 ? r.ifname : NULL);
		if (malformed >= 64) _exit(EX_MALFORMED);
		if (!broker) return;
	}
}

static int check_policy(void)
{
	char line[1200];
	if (pol.broken) return printf("refused: %s\n", pol.why), fflush(stdout), 1;
	if (printf("# %s\n", polpath[0] ? polpath : "no policy file: defaults") < 0) return 1;
	for (int i = 0; i < pol.nrules; i++)
		if (gp_format_rule(&pol.rules[i], line, sizeof line) || printf("%s\n", line) < 0)
			return 1;
	return fflush(stdout) ? 1 : 0;
}

int main(int argc, char **argv)
{
	int broker = argc == 2 && !strcmp(argv[1], "--broker");
	int check = argc == 2 && !strcmp(argv[1], "--check-policy");
	char sudo_uid[16] = "";
	struct stat ts;
	if (argc == 2 && !strcmp(argv[1], "--version"))
		return puts("gprocket-helper 1") < 0 || fflush(stdout);
	if (argc > 2 || (argc == 2 && !broker && !check)) return EX_USAGE;
	pid_t ppid = getppid();
	setup_fds(check);
	const char *su = getenv("SUDO_UID"); /* read before the environment is dropped */
	if (su && snprintf(sudo_uid, sizeof sudo_uid, "%s", su) >= (int)sizeof sudo_uid) _exit(EX_CHANNEL);
	if (clearenv() || prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) || prctl(PR_SET_DUMPABLE, 0, 0, 0, 0))
		_exit(EX_DROP);
	if (!check) check_channel();
	identify(sudo_uid, !check);
	(void)load_policy(); /* a refused policy denies every request, with its reason */
	int tun_root_only = stat("/dev/net/tun", &ts) == 0 && (ts.st_mode & 06) != 06;
	uint64_t want = check ? 0 : gp_needed_caps(&pol, &me, tun_root_only);
	if ((want >> GCAP_SYS_ADMIN & 1) && (orig_ns = open("/proc/self/ns/net", O_RDONLY | O_CLOEXEC)) < 0)
		_exit(EX_NETNS);
	drop(want);
	if (check) return check_policy();
	/* After the drop: a credential change would have reset it. */
	if (prctl(PR_SET_PDEATHSIG, SIGKILL, 0, 0, 0) || getppid() != ppid) _exit(EX_CHANNEL);
	serve(broker);
	return 0;
}
