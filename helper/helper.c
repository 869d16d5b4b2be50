/* helper.c - gprocket-helper, the privileged half: start-up hygiene, identity,
 * policy loading, entering the namespace it serves, privilege drop, containment
 * (sandbox.c), and opening the descriptor for one request at a time. Parsing and
 * authorization live in gp.c (pure, fuzzed).
 * Wire format: PROTOCOL.md; promises and their tests: ../docs/SECURITY.md. */
#define _GNU_SOURCE
#include "gp.h"
#include "sandbox.h"

#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <limits.h>
#include <linux/capability.h>
#include <linux/if_packet.h>
#include <linux/if_tun.h>
#include <linux/magic.h>
#include <linux/nsfs.h>
#include <linux/netlink.h>
#include <linux/rtnetlink.h>
#include <linux/if_link.h>
#include <linux/securebits.h>
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

/* Exit codes (docs/SECURITY.md; 6 is retired: the namespace is entered once, at start). */
enum { EX_USAGE = 2, EX_CHANNEL = 3, EX_DROP = 4, EX_IO = 5, EX_MALFORMED = 7, EX_SANDBOX = 8 };

static struct gp_policy pol;
static struct gp_ident me;
static const char *mode = "caps";
static uint64_t held; /* the narrowed permitted set */
static char netns[32];  /* the namespace this helper serves (--netns), "" = the one it started in */
static struct gp_status ns_refused; /* why --netns could not be entered: every request gets it */
static struct gp_sandbox sb;
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
	if (raised) capset3(held, 0);
	raised = 0;
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
		me.uid = r;
		me.gid = rg;
		me.ngroups = n;
		mode = e == 0 ? "setuid" : "caps";
		return;
	}
	mode = "root";
	if (!channel) return;
	if (getsockopt(0, SOL_SOCKET, SO_PEERCRED, &cr, &l) || l != sizeof cr ||
	    getsockopt(0, SOL_SOCKET, SO_PEERGROUPS, me.groups, &lg))
		_exit(EX_CHANNEL);
	me.uid = cr.uid;
	me.gid = cr.gid;
	me.ngroups = (int)(lg / sizeof(gid_t));
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
	pol.broken = 1;
	pol.nrules = 0;
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

/* The securebits locked at the drop: root is no longer special, uid changes leave
 * the capability sets alone (the drop trims them itself), and none of it can be undone. */
enum { SECURE = SECBIT_NOROOT | SECBIT_NOROOT_LOCKED | SECBIT_NO_SETUID_FIXUP |
                SECBIT_NO_SETUID_FIXUP_LOCKED | SECBIT_KEEP_CAPS_LOCKED |
                SECBIT_NO_CAP_AMBIENT_RAISE | SECBIT_NO_CAP_AMBIENT_RAISE_LOCKED };

/* With CAP_SETPCAP (root, sudo, setuid, and caps installs: FILE_CAPS has it): the
 * bounding set cut down to `keep`, the securebits locked. Needs SETPCAP effective. */
static void lock_caps(uint64_t keep)
{
	for (int c = 0; c < 64 && prctl(PR_CAPBSET_READ, c, 0, 0, 0) >= 0; c++)
		if (!(keep >> c & 1) && prctl(PR_CAPBSET_DROP, c, 0, 0, 0)) _exit(EX_DROP);
	if (prctl(PR_SET_SECUREBITS, SECURE, 0, 0, 0)) _exit(EX_DROP);
}

/* 1 when the bounding set is exactly `keep`. */
static int bounding_is(uint64_t keep)
{
	int c;
	int in;
	for (c = 0; c < 64 && (in = prctl(PR_CAPBSET_READ, c, 0, 0, 0)) >= 0; c++)
		if (in != (int)(keep >> c & 1)) return 0;
	return c > CAP_SETPCAP;
}

/* Become the caller for good: no supplementary groups, all uids/gids equal,
 * only the capabilities in `want` permitted, none effective, and where CAP_SETPCAP
 * allows it no other in the bounding set and the securebits locked; then verify. */
static void drop(uint64_t want)
{
	uint64_t other, prm = capget3(&other);
	uid_t r, e, s;
	gid_t rg, eg, sg;
	int setpcap = (int)(prm >> CAP_SETPCAP & 1);
	held = want & prm;
	if (prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0)) _exit(EX_DROP);
	capset3(prm, (1ull << GCAP_SETGID | 1ull << CAP_SETUID | 1ull << CAP_SETPCAP) & prm);
	if (setpcap)
		lock_caps(held);
	else if (geteuid() == 0 && prctl(PR_SET_KEEPCAPS, 1, 0, 0, 0))
		_exit(EX_DROP); /* an install without SETPCAP: keep-caps carries them over setresuid */
	if (((prm >> GCAP_SETGID & 1) && setgroups(0, NULL)) ||
	    setresgid(me.gid, me.gid, me.gid) || setresuid(me.uid, me.uid, me.uid) ||
	    (!setpcap && prctl(PR_SET_KEEPCAPS, 0, 0, 0, 0)))
		_exit(EX_DROP);
	capset3(held, 0);
	prm = capget3(&other);
	if (getresuid(&r, &e, &s) || getresgid(&rg, &eg, &sg) || r != me.uid || e != me.uid ||
	    s != me.uid || rg != me.gid || eg != me.gid || sg != me.gid || prm != held || other ||
	    (held && getgroups(0, NULL) != 0) || prctl(PR_GET_NO_NEW_PRIVS, 0, 0, 0, 0) != 1)
		_exit(EX_DROP);
	if (setpcap && (!bounding_is(held) || prctl(PR_GET_SECUREBITS, 0, 0, 0, 0) != SECURE))
		_exit(EX_DROP);
	sb.bounding = setpcap;
	sb.securebits = (unsigned)prctl(PR_GET_SECUREBITS, 0, 0, 0, 0);
}

/* --netns NAME: checked as the request field is and granted by a `netns` rule, then
 * entered once, before the drop: no broker holds CAP_SYS_ADMIN while it reads requests.
 * A refusal is kept and given as the answer to every request (the client reports it
 * as it would a per-request refusal). /run/netns/NAME, opened without following
 * links, must be an nsfs network namespace. */
static void enter_netns(const char *name)
{
	struct statfs sf;
	uint64_t other, prm = capget3(&other);
	int dfd, fd, e;
	if (gp_authorize_netns(&pol, &me, name, &ns_refused)) return;
	snprintf(netns, sizeof netns, "%s", name); /* checked above: at most 31 bytes */
	dfd = open("/run/netns", O_PATH | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	fd = dfd < 0 ? -1 : openat(dfd, name, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC | O_NOCTTY);
	e = errno;
	if (dfd >= 0) close(dfd);
	if (fd < 0) {
		failfd(-1, &ns_refused, e, ST_NAMESPACE, "open /run/netns entry");
		return;
	}
	if (fstatfs(fd, &sf) || sf.f_type != NSFS_MAGIC || ioctl(fd, NS_GET_NSTYPE) != CLONE_NEWNET) {
		failfd(fd, &ns_refused, EINVAL, ST_NAMESPACE, "not a network namespace");
		return;
	}
	capset3(prm, (1ull << GCAP_SYS_ADMIN) & prm);
	if (setns(fd, CLONE_NEWNET))
		failfd(fd, &ns_refused, errno, ST_NAMESPACE, "setns");
	else
		close(fd);
	capset3(prm, 0);
}

/* An AF_PACKET socket, bound to the named interface if any. */
static int bind_packet(int fd, const struct gp_req *r, struct gp_status *st)
{
	struct ifreq ifr = { 0 };
	struct sockaddr_ll sll = { .sll_family = AF_PACKET, .sll_protocol = htons((uint16_t)r->protocol) };
	if (!r->ifname[0]) return fd;
	memcpy(ifr.ifr_name, r->ifname, IFNAMSIZ);
	if (ioctl(fd, SIOCGIFINDEX, &ifr)) return failfd(fd, st, errno, ST_BIND, "bind to interface");
	sll.sll_ifindex = ifr.ifr_ifindex;
	if (bind(fd, (struct sockaddr *)&sll, sizeof sll))
		return failfd(fd, st, errno, ST_BIND, "bind to interface");
	return fd;
}

/* The socket options a request flag sets (gp_authorize has allowed them). */
static const struct {
	uint16_t flag;
	int level4, name4, level6, name6;
} flag_options[] = {
	{ F_REUSEADDR, SOL_SOCKET, SO_REUSEADDR, SOL_SOCKET, SO_REUSEADDR },
	{ F_REUSEPORT, SOL_SOCKET, SO_REUSEPORT, SOL_SOCKET, SO_REUSEPORT },
	{ F_FREEBIND, IPPROTO_IP, IP_FREEBIND, IPPROTO_IPV6, IPV6_FREEBIND },
};

/* An inet socket: options, device, bind (NET_BIND_SERVICE below 1024), listen. */
static int bind_inet(int fd, const struct gp_req *r, struct gp_status *st)
{
	static const uint8_t any[16];
	int one = 1;
	int v6only = !(r->flags & F_DUALSTACK);
	int inet = r->family == AF_INET;
	int low = r->port && r->port < 1024;
	struct sockaddr_in6 a6 = { .sin6_family = AF_INET6, .sin6_port = htons(r->port),
	                           .sin6_scope_id = r->scope_id };
	struct sockaddr_in a4 = { .sin_family = AF_INET, .sin_port = htons(r->port) };
	struct sockaddr *sa = inet ? (struct sockaddr *)&a4 : (struct sockaddr *)&a6;
	socklen_t salen = inet ? sizeof a4 : sizeof a6;
	memcpy(&a6.sin6_addr, r->addr, 16);
	memcpy(&a4.sin_addr, r->addr, 4);
	if (!inet && r->type != SOCK_RAW &&
	    setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &v6only, sizeof v6only))
		return failfd(fd, st, errno, ST_BIND, "setsockopt");
	for (size_t i = 0; i < sizeof flag_options / sizeof flag_options[0]; i++) {
		int level = inet ? flag_options[i].level4 : flag_options[i].level6;
		int name = inet ? flag_options[i].name4 : flag_options[i].name6;
		if ((r->flags & flag_options[i].flag) && setsockopt(fd, level, name, &one, sizeof one))
			return failfd(fd, st, errno, ST_BIND, "setsockopt");
	}
	/* Linux >= 5.7 lets anyone bind an unbound socket to a device; older ones need NET_RAW. */
	if (r->ifname[0] && CAPPED(GCAP_NET_RAW, setsockopt(fd, SOL_SOCKET, SO_BINDTODEVICE,
	                                                    r->ifname, (socklen_t)strlen(r->ifname))))
		return failfd(fd, st, errno, ST_BIND, "SO_BINDTODEVICE");
	if ((r->port || r->scope_id || memcmp(r->addr, any, 16)) &&
	    CAPPED(low ? GCAP_NET_BIND_SERVICE : NO_CAP, bind(fd, sa, salen)))
		return failfd(fd, st, errno, ST_BIND, "bind");
	if (r->backlog > 0 && listen(fd, r->backlog)) return failfd(fd, st, errno, ST_BIND, "listen");
	return fd;
}

static int open_socket(struct gp_req *r, struct gp_status *st)
{
	int raw = r->type == SOCK_RAW || r->family == AF_PACKET;
	int proto = r->family == AF_PACKET ? htons((uint16_t)r->protocol) : r->protocol;
	int fd = CAPPED(raw ? GCAP_NET_RAW : NO_CAP, socket(r->family, r->type | SOCK_CLOEXEC, proto));
	if (fd < 0) return failfd(-1, st, errno, ST_OPEN, "socket");
	if (r->family == AF_PACKET) return bind_packet(fd, r, st);
	return bind_inet(fd, r, st);
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

static int open_device(struct gp_req *r, struct gp_status *st)
{
	(void)r;
	return open_tun_dev(st);
}

static int admin_ioctl(int s, unsigned long req, void *arg)
{
	return CAPPED(GCAP_NET_ADMIN, ioctl(s, req, arg));
}

/* ---- configure-on-create: one step per setting, for the device just created ---- */

struct link {
	const struct gp_req *r;
	int s4, s6; /* control sockets; s6 only when an IPv6 address is asked for */
	struct ifreq ifr;
};

static int set_mtu(struct link *l)
{
	l->ifr.ifr_mtu = (int)l->r->mtu;
	return admin_ioctl(l->s4, SIOCSIFMTU, &l->ifr);
}

static void put_in4(struct ifreq *ifr, uint32_t be)
{
	struct sockaddr_in sin = { .sin_family = AF_INET };
	sin.sin_addr.s_addr = be;
	memcpy(&ifr->ifr_addr, &sin, sizeof sin);
}

static int set_addr4(struct link *l)
{
	uint32_t be;
	memcpy(&be, l->r->addr4, 4);
	put_in4(&l->ifr, be);
	return admin_ioctl(l->s4, SIOCSIFADDR, &l->ifr);
}

static int set_mask4(struct link *l)
{
	unsigned plen = l->r->prefix4;
	put_in4(&l->ifr, htonl(plen == 32 ? ~0u : ~(~0u >> plen)));
	return admin_ioctl(l->s4, SIOCSIFNETMASK, &l->ifr);
}

static int set_addr6(struct link *l)
{
	struct in6_ifreq i6 = { .ifr6_prefixlen = l->r->prefix6 };
	if (ioctl(l->s6, SIOCGIFINDEX, &l->ifr)) return -1;
	i6.ifr6_ifindex = l->ifr.ifr_ifindex;
	memcpy(&i6.ifr6_addr, l->r->addr6, 16);
	return admin_ioctl(l->s6, SIOCSIFADDR, &i6);
}

static int set_up(struct link *l)
{
	if (ioctl(l->s4, SIOCGIFFLAGS, &l->ifr)) return -1;
	l->ifr.ifr_flags |= IFF_UP;
	return admin_ioctl(l->s4, SIOCSIFFLAGS, &l->ifr);
}

/* A router advertisement the holder writes into its own device would add routes the
 * policy never granted (an on-link 2000::/3, a default route via the device): the
 * kernel processes none on a device the helper made. A kernel without IPv6 (no
 * /proc/sys/net/ipv6 where /proc/sys/net is) has nothing to turn off. */
static int no_router_ads(struct link *l)
{
	char path[80];
	struct stat sb;
	int fd;
	ssize_t n;
	snprintf(path, sizeof path, "/proc/sys/net/ipv6/conf/%.15s/accept_ra", l->r->ifname);
	fd = CAPPED(GCAP_NET_ADMIN, open(path, O_WRONLY | O_CLOEXEC | O_NOFOLLOW | O_NOCTTY));
	if (fd < 0 && errno == ENOENT && !stat("/proc/sys/net", &sb) &&
	    stat("/proc/sys/net/ipv6", &sb) && errno == ENOENT)
		return 0;
	if (fd < 0) return -1;
	/* pwrite: the seccomp filter has no write(2); sysctl checks each write too. */
	n = CAPPED(GCAP_NET_ADMIN, pwrite(fd, "0\n", 2, 0));
	close(fd);
	return n == 2 ? 0 : -1;
}

static int want_always(const struct gp_req *r)
{
	(void)r;
	return 1;
}

static int want_mtu(const struct gp_req *r) { return r->mtu != 0; }
static int want_addr4(const struct gp_req *r) { return r->prefix4 != 0; }
static int want_addr6(const struct gp_req *r) { return r->prefix6 != 0; }
static int want_up(const struct gp_req *r) { return (r->tun_options & T_UP) != 0; }

/* In this order; gp_authorize has checked the MTU and addresses against the rule. */
static const struct {
	int (*wanted)(const struct gp_req *r);
	int (*apply)(struct link *l);
	const char *what;
} configure_steps[] = {
	{ want_always, no_router_ads, "accept_ra" },
	{ want_mtu, set_mtu, "SIOCSIFMTU" },
	{ want_addr4, set_addr4, "SIOCSIFADDR" },
	{ want_addr4, set_mask4, "SIOCSIFNETMASK" },
	{ want_addr6, set_addr6, "inet6 SIOCSIFADDR" },
	{ want_up, set_up, "SIOCSIFFLAGS" },
};

static int configure(const struct gp_req *r, struct gp_status *st)
{
	struct link l = { .r = r, .s4 = -1, .s6 = -1 };
	const char *what = "socket";
	int rc = 0;
	int e = 0;
	memcpy(l.ifr.ifr_name, r->ifname, IFNAMSIZ);
	l.s4 = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	if (r->prefix6 && l.s4 >= 0) l.s6 = socket(AF_INET6, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	rc = l.s4 < 0 || (r->prefix6 && l.s6 < 0);
	for (size_t i = 0; !rc && i < sizeof configure_steps / sizeof configure_steps[0]; i++) {
		if (!configure_steps[i].wanted(r)) continue;
		what = configure_steps[i].what;
		rc = configure_steps[i].apply(&l);
	}
	e = errno;
	if (l.s6 >= 0) close(l.s6);
	if (l.s4 >= 0) close(l.s4);
	return rc ? failfd(-1, st, e, ST_CONFIGURE, what) : 0;
}

static int create_tun(struct gp_req *r, struct gp_status *st)
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
	if (configure(r, st)) {
		close(fd);
		return -1;
	}
	/* Persist last, so that any failure above leaves no device behind. The holder could
	 * set it itself (POLICY.md): it is a convenience, not a grant. */
	if ((r->tun_options & T_PERSIST) && ioctl(fd, TUNSETPERSIST, 1ul))
		return failfd(fd, st, errno, ST_CONFIGURE, "TUNSETPERSIST");
	return fd;
}

/* ---- attach: to an existing device the caller owns, checked by the kernel's word ---- */

enum { NO_ID = -1 };

/* The name, owner and group of the TUN/TAP device at ifindex, as rtnetlink reports
 * them (IFLA_LINKINFO: kind "tun", IFLA_INFO_DATA: IFLA_TUN_OWNER/GROUP, absent when
 * unset). 0 or an errno; *uid and *gid stay NO_ID when unset. */
static int tun_ids(int ifindex, char name[IFNAMSIZ], uint32_t *uid, uint32_t *gid)
{
	static char buf[32768];
	struct {
		struct nlmsghdr nh;
		struct ifinfomsg ifi;
	} q = { .nh = { .nlmsg_len = sizeof q, .nlmsg_type = RTM_GETLINK, .nlmsg_flags = NLM_F_REQUEST,
	                .nlmsg_seq = 1 },
	        .ifi = { .ifi_family = AF_UNSPEC, .ifi_index = ifindex } };
	const struct nlmsghdr *nh = (const struct nlmsghdr *)buf;
	struct iovec qv = { &q, sizeof q };
	struct iovec bv = { buf, sizeof buf };
	/* sendmsg/recvmsg, not send/recv: the seccomp filter has no sendto or recvfrom. */
	struct msghdr qm = { .msg_iov = &qv, .msg_iovlen = 1 };
	struct msghdr bm = { .msg_iov = &bv, .msg_iovlen = 1 };
	int tun = 0;
	ssize_t n = -1;
	int s = socket(AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC, NETLINK_ROUTE);
	int e;
	*uid = (uint32_t)NO_ID;
	*gid = (uint32_t)NO_ID;
	name[0] = '\0';
	if (s < 0) return errno;
	if (sendmsg(s, &qm, 0) == (ssize_t)sizeof q) n = recvmsg(s, &bm, MSG_TRUNC);
	e = errno;
	close(s);
	if (n < 0) return e;
	if ((size_t)n > sizeof buf || !NLMSG_OK(nh, (size_t)n)) return EPROTO;
	if (nh->nlmsg_type == NLMSG_ERROR && nh->nlmsg_len >= NLMSG_LENGTH(sizeof(struct nlmsgerr)))
		return -((const struct nlmsgerr *)NLMSG_DATA(nh))->error;
	if (nh->nlmsg_type != RTM_NEWLINK || nh->nlmsg_len < NLMSG_LENGTH(sizeof(struct ifinfomsg)))
		return EPROTO;
	int len = (int)IFLA_PAYLOAD(nh);
	for (const struct rtattr *a = IFLA_RTA(NLMSG_DATA(nh)); RTA_OK(a, len); a = RTA_NEXT(a, len)) {
		if (a->rta_type == IFLA_IFNAME && RTA_PAYLOAD(a) <= IFNAMSIZ) {
			memcpy(name, RTA_DATA(a), RTA_PAYLOAD(a));
			name[IFNAMSIZ - 1] = '\0';
		}
		if (a->rta_type != IFLA_LINKINFO) continue;
		int l1 = (int)RTA_PAYLOAD(a);
		for (const struct rtattr *b = RTA_DATA(a); RTA_OK(b, l1); b = RTA_NEXT(b, l1)) {
			if (b->rta_type == IFLA_INFO_KIND)
				tun = RTA_PAYLOAD(b) == 4 && !memcmp(RTA_DATA(b), "tun", 4);
			if (b->rta_type != IFLA_INFO_DATA) continue;
			int l2 = (int)RTA_PAYLOAD(b);
			for (const struct rtattr *c = RTA_DATA(b); RTA_OK(c, l2); c = RTA_NEXT(c, l2)) {
				if (RTA_PAYLOAD(c) != 4) continue;
				if (c->rta_type == IFLA_TUN_OWNER) memcpy(uid, RTA_DATA(c), 4);
				if (c->rta_type == IFLA_TUN_GROUP) memcpy(gid, RTA_DATA(c), 4);
			}
		}
	}
	return tun ? 0 : ENODEV;
}

/* The kernel's own rule (tun_not_capable) for the caller, without CAP_NET_ADMIN and
 * with the caller's groups, minus one thing: an ownerless device is nobody's. */
static int callers_device(uint32_t uid, uint32_t gid)
{
	if (uid == (uint32_t)NO_ID && gid == (uint32_t)NO_ID) return 0;
	if (uid != (uint32_t)NO_ID && uid != me.uid) return 0;
	if (gid == (uint32_t)NO_ID || gid == me.gid) return 1;
	for (int i = 0; i < me.ngroups && i < GP_MAXGROUPS; i++)
		if (me.groups[i] == gid) return 1;
	return 0;
}

/* Check the device before attaching (nothing of another's device is touched), attach
 * with NET_ADMIN (so a group device works without our dropped groups), then check the
 * device now attached again by its index: a device replaced meanwhile is refused. */
static int attach_tun(struct gp_req *r, struct gp_status *st)
{
	struct ifreq ifr = { 0 };
	char name[IFNAMSIZ];
	uint32_t uid, gid;
	int s = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	int fd, err, index;
	memcpy(ifr.ifr_name, r->ifname, IFNAMSIZ);
	if (s < 0) return failfd(-1, st, errno, ST_OPEN, "socket");
	err = ioctl(s, SIOCGIFINDEX, &ifr) ? errno : 0;
	close(s);
	if (err) return failfd(-1, st, err, ST_OPEN, "no such device");
	index = ifr.ifr_ifindex;
	err = tun_ids(index, name, &uid, &gid);
	if (err) return failfd(-1, st, err, ST_OPEN, "not a TUN/TAP device");
	if (!callers_device(uid, gid)) {
		gp_fail(st, EPERM, ST_POLICY, "policy: %s is not the caller's (owner, group)", r->ifname);
		return -1;
	}
	fd = open_tun_dev(st);
	if (fd < 0) return -1;
	ifr.ifr_flags = (short)r->tun_flags;
	if (admin_ioctl(fd, TUNSETIFF, &ifr)) return failfd(fd, st, errno, ST_OPEN, "TUNSETIFF");
	err = tun_ids(index, name, &uid, &gid);
	if (err || strncmp(name, r->ifname, IFNAMSIZ) || !callers_device(uid, gid)) {
		close(fd);
		gp_fail(st, EPERM, ST_OPEN, "device %s changed while attaching", r->ifname);
		return -1;
	}
	return fd;
}

static int open_tun(struct gp_req *r, struct gp_status *st)
{
	if (r->tun_options & T_ATTACH) return attach_tun(r, st);
	return create_tun(r, st);
}

static int hello(struct gp_req *r, struct gp_status *st)
{
	(void)r;
	gp_fail(st, 0, ST_NONE, "gprocket-helper 1 mode=%s uid=%u", mode, me.uid);
	return -1;
}

/* Every request op: whether the policy decides it, and what opens its descriptor
 * (-1 with the status filled when there is none). Anything else never gets here:
 * gp_parse_request refuses unknown ops. */
static const struct {
	uint16_t op;
	int authorized; /* goes through gp_authorize and the served-namespace check */
	int (*open)(struct gp_req *r, struct gp_status *st);
} open_table[] = {
	{ OP_SOCKET, 1, open_socket },
	{ OP_TUN, 1, open_tun },
	{ OP_DEVICE, 1, open_device },
	{ OP_HELLO, 0, hello },
};

/* One request from parsed to opened; -1 with st filled when there is no descriptor. */
static int handle(struct gp_req *r, struct gp_status *st)
{
	size_t i = 0;
	while (i < sizeof open_table / sizeof open_table[0] && open_table[i].op != r->op)
		i++;
	if (i == sizeof open_table / sizeof open_table[0]) {
		gp_fail(st, EINVAL, ST_INTERNAL, "unpermitted request %u", r->op);
		return -1;
	}
	if (!open_table[i].authorized) return open_table[i].open(r, st);
	if (gp_authorize(&pol, &me, r, st)) return -1;
	if (ns_refused.err) {
		*st = ns_refused;
		return -1;
	}
	/* One broker per namespace (--netns): it never changes namespace after start-up. */
	if (strcmp(r->netns, netns)) {
		gp_fail(st, EINVAL, ST_NAMESPACE, "netns %.20s asked, %.20s served", r->netns[0] ? r->netns : "(own)",
		        netns[0] ? netns : "(own)");
		return -1;
	}
	return open_table[i].open(r, st);
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
	c.h.cmsg_level = SOL_SOCKET;
	c.h.cmsg_type = SCM_RIGHTS;
	c.h.cmsg_len = CMSG_LEN(sizeof(int));
	memcpy(CMSG_DATA(&c.h), &fd, sizeof fd);
	while ((n = sendmsg(0, &mh, MSG_NOSIGNAL)) < 0 && errno == EINTR)
		;
	if (fd >= 0) close(fd);
	if (n != (ssize_t)sizeof out) _exit(EX_IO);
}

/* Monotonic nanoseconds, or -1 if the clock cannot be read (then no poll window). */
static long now_ns(void)
{
	struct timespec ts;
	if (clock_gettime(CLOCK_MONOTONIC, &ts)) return -1;
	return ts.tv_sec * 1000000000L + ts.tv_nsec;
}

/* Non-blocking tries for up to 50 µs; gives up early when the CPU was lost
 * (tries more than 20 µs apart): then the client is not running either.
 * Gives up with -1 and errno EAGAIN. *waited says whether a try came back
 * empty: a request queued at the first try says nothing about polling. */
static ssize_t poll_request(struct msghdr *mh, int *waited)
{
	long start = now_ns();
	long last = start;
	*waited = 0;
	for (;;) {
		ssize_t n = recvmsg(0, mh, MSG_CMSG_CLOEXEC | MSG_DONTWAIT);
		if (n >= 0 || errno != EAGAIN) return n;
		*waited = 1;
		long t = now_ns();
		if (start < 0 || t < 0 || t - last >= 20000 || t - start >= 50000) {
			errno = EAGAIN;
			return -1;
		}
		last = t;
	}
}

/* Poll for the next request while polls pay (../docs/ARCHITECTURE.md): a poll
 * that gives up skips the next 1, 2, 4 ... 1024 polls; one that finds resets. */
static ssize_t next_request(struct msghdr *mh, int may_poll)
{
	static unsigned skip;
	static unsigned backoff;
	int waited;
	ssize_t n;
	if (!may_poll || skip) {
		if (skip) skip--;
		return recvmsg(0, mh, MSG_CMSG_CLOEXEC);
	}
	n = poll_request(mh, &waited);
	if (n >= 0 && waited) backoff = 0;
	if (n >= 0 || errno != EAGAIN) return n;
	backoff = backoff ? 2 * backoff : 1;
	if (backoff > 1024) backoff = 1024;
	skip = backoff;
	return recvmsg(0, mh, MSG_CMSG_CLOEXEC);
}

/* One loop for both modes: one-shot is the broker stopped after one request. */
static void serve(int broker, int may_poll)
{
	static uint8_t in[GP_REQ_SIZE + 1];
	int malformed = 0;
	for (;;) {
		struct iovec iov = { in, sizeof in };
		struct msghdr mh = { .msg_iov = &iov, .msg_iovlen = 1 };
		struct gp_status st;
		struct gp_req r;
		int fd = -1;
		ssize_t n = next_request(&mh, may_poll);
		if (n == 0) _exit(0);
		if (n < 0 && errno == EINTR) continue;
		if (n < 0) _exit(EX_IO);
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
	if (pol.broken) {
		(void)printf("refused: %s\n", pol.why);
		(void)fflush(stdout);
		return 1;
	}
	if (printf("# %s\n", polpath[0] ? polpath : "no policy file: defaults") < 0) return 1;
	for (int i = 0; i < pol.nrules; i++)
		if (gp_format_rule(&pol.rules[i], line, sizeof line) || printf("%s\n", line) < 0)
			return 1;
	return fflush(stdout) ? 1 : 0;
}

/* --sandbox-report: this process confined as a broker would be, then what took
 * effect, one "key: value" line per layer (PROTOCOL.md; doctor shows it). */
static int sandbox_report(const char *selftest)
{
	static char out[1024];
	struct stat st;
	int fd;
	ssize_t n;
	/* RLIMIT_FSIZE 0 would stop the report at a regular file: it goes to a pipe or tty. */
	if (fstat(1, &st) || S_ISREG(st.st_mode)) {
		static const char msg[] = "gprocket-helper: --sandbox-report writes to a pipe or "
		                          "terminal only (RLIMIT_FSIZE is 0 in the sandbox)\n";
		return write(2, msg, sizeof msg - 1) < 0 ? EX_IO : EX_USAGE;
	}
	drop(0);
	gp_sandbox_apply(&sb, 1, EX_SANDBOX);
	/* snprintf and write(2) only: stdio would call fstat and allocate a buffer. */
	if (gp_sandbox_format(&sb, out, sizeof out)) return EX_IO;
	n = write(1, out, strlen(out));
	if (n != (ssize_t)strlen(out)) return EX_IO;
	if (!selftest) return 0;
#ifdef GP_SANDBOX_SELFTEST
	/* Test builds only (build/, never installed): a forbidden call, a file outside. */
	if (!strcmp(selftest, "seccomp")) {
		static const char msg[] = "selftest: execve /bin/true\n";
		char *const args[] = { "/bin/true", NULL };
		if (write(1, msg, sizeof msg - 1) < 0) return EX_IO;
		execve(args[0], args, args + 1); /* SIGSYS: the filter kills the process */
		return EX_SANDBOX;
	}
	/* Netlink for rtnetlink only: a route socket opens, a sock_diag one (open to anyone
	 * without the filter) kills. */
	if (!strcmp(selftest, "netlink")) {
		fd = socket(AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC, NETLINK_ROUTE);
		snprintf(out, sizeof out, "selftest: netlink route: %s\nselftest: netlink sock_diag\n",
		         fd < 0 ? "failed" : "ok");
		if (fd >= 0) close(fd);
		if (write(1, out, strlen(out)) < 0) return EX_IO;
		fd = socket(AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC, NETLINK_SOCK_DIAG); /* SIGSYS */
		return EX_SANDBOX;
	}
	/* Outside the allowlist; inside it, but with a right it does not grant (read). */
	static const char *const paths[] = { "/etc/passwd", "/proc/sys/net/ipv6/conf/lo/accept_ra" };
	for (size_t i = 0; i < sizeof paths / sizeof paths[0]; i++) {
		const char *name;
		fd = open(paths[i], O_RDONLY | O_CLOEXEC);
		name = fd < 0 ? strerrorname_np(errno) : "ok";
		if (fd >= 0) close(fd);
		snprintf(out, sizeof out, "selftest: open %s: %s\n", paths[i], name ? name : "?");
		if (write(1, out, strlen(out)) < 0) return EX_IO;
	}
#else
	(void)fd;
#endif
	return 0;
}

/* argv selects a mode and, for a broker or one-shot, the namespace it serves:
 *   --version | --check-policy | --sandbox-report | [--broker] [--netns NAME]
 * (test builds: --sandbox-report --selftest seccomp|netlink|landlock). Anything else: 2. */
int main(int argc, char **argv)
{
	static cpu_set_t cpus;
	int broker = 0;
	int check = argc == 2 && !strcmp(argv[1], "--check-policy");
	int report = argc >= 2 && !strcmp(argv[1], "--sandbox-report");
	int i = 1;
	const char *ns = NULL;
	const char *selftest = NULL;
	char sudo_uid[16] = "";
	struct stat ts;
	int may_poll;
	if (argc == 2 && !strcmp(argv[1], "--version"))
		return puts("gprocket-helper 1") < 0 || fflush(stdout);
	if (check || report) i = 2;
#ifdef GP_SANDBOX_SELFTEST
	if (report && argc == 4 && !strcmp(argv[2], "--selftest")) {
		selftest = argv[3];
		i = 4;
	}
#endif
	if (!check && !report && i < argc && !strcmp(argv[i], "--broker")) {
		broker = 1;
		i++;
	}
	if (!check && !report && i + 1 < argc && !strcmp(argv[i], "--netns")) {
		ns = argv[i + 1];
		i += 2;
	}
	if (i != argc || (ns && !ns[0])) return EX_USAGE;
	pid_t ppid = getppid();
	setup_fds(check || report);
	const char *su = getenv("SUDO_UID"); /* read before the environment is dropped */
	if (su && snprintf(sudo_uid, sizeof sudo_uid, "%s", su) >= (int)sizeof sudo_uid) _exit(EX_CHANNEL);
	if (clearenv() || prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) || prctl(PR_SET_DUMPABLE, 0, 0, 0, 0))
		_exit(EX_DROP);
	if (!check && !report) check_channel();
	identify(sudo_uid, !check && !report);
	if (report) return sandbox_report(selftest);
	(void)load_policy(); /* a refused policy denies every request, with its reason */
	if (ns) enter_netns(ns); /* before the drop: CAP_SYS_ADMIN ends with it */
	int tun_root_only = stat("/dev/net/tun", &ts) == 0 && (ts.st_mode & 06) != 06;
	uint64_t want = check ? 0 : gp_needed_caps(&pol, &me, tun_root_only);
	drop(want & ~(1ull << GCAP_SYS_ADMIN));
	if (check) return check_policy();
	/* After the drop: a credential change would have reset it. */
	if (prctl(PR_SET_PDEATHSIG, SIGKILL, 0, 0, 0) || getppid() != ppid) _exit(EX_CHANNEL);
	/* Read before the sandbox, which has no sched_getaffinity. One CPU: never poll,
	 * the client needs it. */
	may_poll = broker && !sched_getaffinity(0, sizeof cpus, &cpus) && CPU_COUNT(&cpus) > 1;
	/* Last before the first read: from here on only the request loop's calls work. */
	gp_sandbox_apply(&sb, 0, EX_SANDBOX);
	serve(broker, may_poll);
	return 0;
}
