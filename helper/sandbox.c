/* sandbox.c - gprocket-helper's containment past the privilege drop, in the order
 * it is applied (after the drop, before the first request is read):
 *   1. resource limits as OpenSSH's rlimit sandbox sets them;
 *   2. Landlock: files only under the few paths requests use, plus scoping;
 *   3. a seccomp-bpf allowlist of the request loop's system calls (the rest kills).
 * Build switches: GP_NO_SECCOMP (the sanitizer build: ASan/UBSan need calls outside
 * the list) and GP_NO_SANDBOX (bench/acquire.py's comparison binary; never installed).
 * docs/SECURITY.md "Containment" names the test of each promise. */
#define _GNU_SOURCE
#include "sandbox.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/audit.h>
#include <linux/filter.h>
#include <linux/if_tun.h>
#include <linux/landlock.h>
#include <linux/netlink.h>
#include <linux/seccomp.h>
#include <stdio.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <unistd.h>

/* ---- Landlock: the uapi names newer than the build's headers (values are ABI) ---- */

#ifndef LANDLOCK_ACCESS_FS_REFER
#define LANDLOCK_ACCESS_FS_REFER (1ULL << 13) /* ABI 2 */
#endif
#ifndef LANDLOCK_ACCESS_FS_TRUNCATE
#define LANDLOCK_ACCESS_FS_TRUNCATE (1ULL << 14) /* ABI 3 */
#endif
#ifndef LANDLOCK_ACCESS_FS_IOCTL_DEV
#define LANDLOCK_ACCESS_FS_IOCTL_DEV (1ULL << 15) /* ABI 5 */
#endif
#ifndef LANDLOCK_SCOPE_ABSTRACT_UNIX_SOCKET
#define LANDLOCK_SCOPE_ABSTRACT_UNIX_SOCKET (1ULL << 0) /* ABI 6 */
#endif
#ifndef LANDLOCK_SCOPE_SIGNAL
#define LANDLOCK_SCOPE_SIGNAL (1ULL << 1) /* ABI 6 */
#endif

/* struct landlock_ruleset_attr as of ABI 6; the size passed says which fields exist. */
struct ll_attr {
	uint64_t handled_access_fs;
	uint64_t handled_access_net; /* ABI 4: left 0, so TCP bind/connect stay unrestricted */
	uint64_t scoped;             /* ABI 6 */
};

enum { LL_FS_V1 = (1 << 13) - 1 }; /* EXECUTE .. MAKE_SYM */

/* What each allowlisted path may do; everything else under / is refused. A rule names
 * the inode. procfs makes a new inode for a sysctl directory each time its dentry is
 * looked up afresh (after the dentry cache dropped it), so that one is pinned: it becomes
 * the working directory, which holds its dentry for the process's life (no descriptor). */
static const struct {
	const char *path;
	uint64_t access;
	int pin;
	const char *why;
} ll_paths[] = {
	{ "/dev/net/tun",
	  LANDLOCK_ACCESS_FS_READ_FILE | LANDLOCK_ACCESS_FS_WRITE_FILE | LANDLOCK_ACCESS_FS_IOCTL_DEV,
	  0, "TUN and DEVICE requests; IOCTL_DEV travels with the descriptor to the client" },
	/* /proc/sys/net shows the namespace of the opener: a --netns broker entered its own
	 * before this, so the rule is on that namespace's directory. */
	{ "/proc/sys/net/ipv6/conf", LANDLOCK_ACCESS_FS_WRITE_FILE, 1,
	  "accept_ra 0 on a device the helper made; write only, nothing there is read" },
};

static long ll_create(const struct ll_attr *a, size_t size, uint32_t flags)
{
	return syscall(SYS_landlock_create_ruleset, a, size, flags);
}

static void landlock(struct gp_sandbox *sb, int fatal)
{
	struct ll_attr attr = { 0 };
	size_t size = sizeof attr.handled_access_fs;
	long abi = ll_create(NULL, 0, LANDLOCK_CREATE_RULESET_VERSION);
	int rfd;
	if (abi < 1) {
		/* ENOSYS: built without Landlock; EOPNOTSUPP: disabled at boot. Carry on, say so. */
		sb->landlock_err = errno;
		return;
	}
	sb->landlock_abi = (int)abi;
	attr.handled_access_fs = LL_FS_V1;
	if (abi >= 2) attr.handled_access_fs |= LANDLOCK_ACCESS_FS_REFER;
	if (abi >= 3) attr.handled_access_fs |= LANDLOCK_ACCESS_FS_TRUNCATE;
	if (abi >= 4) size = 2 * sizeof(uint64_t);
	if (abi >= 5) attr.handled_access_fs |= LANDLOCK_ACCESS_FS_IOCTL_DEV;
	if (abi >= 6) {
		size = sizeof attr;
		attr.scoped = LANDLOCK_SCOPE_ABSTRACT_UNIX_SOCKET | LANDLOCK_SCOPE_SIGNAL;
	}
	rfd = (int)ll_create(&attr, size, 0);
	if (rfd < 0) _exit(fatal);
	for (size_t i = 0; i < sizeof ll_paths / sizeof ll_paths[0]; i++) {
		struct landlock_path_beneath_attr pb = { 0 };
		int fd = open(ll_paths[i].path, O_PATH | O_CLOEXEC);
		if (fd < 0 && errno == ENOENT) continue; /* no such path: nothing to allow */
		if (fd < 0) _exit(fatal);
		pb.allowed_access = ll_paths[i].access & attr.handled_access_fs;
		pb.parent_fd = fd;
		if (syscall(SYS_landlock_add_rule, rfd, LANDLOCK_RULE_PATH_BENEATH, &pb, 0)) _exit(fatal);
		if (ll_paths[i].pin && fchdir(fd)) _exit(fatal);
		close(fd);
	}
	if (syscall(SYS_landlock_restrict_self, rfd, 0)) _exit(fatal);
	close(rfd);
	sb->landlock_scope = (int)attr.scoped;
}

/* ---- seccomp-bpf ---- */

#if defined(__x86_64__)
#define GP_AUDIT_ARCH AUDIT_ARCH_X86_64
#elif defined(__aarch64__)
#define GP_AUDIT_ARCH AUDIT_ARCH_AARCH64
#else
#error "name this architecture's AUDIT_ARCH_* for the seccomp filter"
#endif

#if __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
#define ARG_LO(i) (offsetof(struct seccomp_data, args) + (i) * sizeof(uint64_t))
#else
#define ARG_LO(i) (offsetof(struct seccomp_data, args) + (i) * sizeof(uint64_t) + 4)
#endif

/* How a rule looks at the call: not at all, one argument among `vals`, or one
 * argument's bits (any of `vals[0]` set kills). The kernel reads these arguments as
 * int, so their low 32 bits are what it acts on. */
enum { ANY, ARG_IN, ARG_NONE_OF };

struct sc_rule {
	int nr, how, arg, nvals;
	const uint32_t *vals;
	const char *why;
};

/* For an ARG_IN rule: one more value of its argument, let through only when another
 * argument has exactly one value too. */
static const struct {
	int nr;
	uint32_t val;
	int arg2;
	uint32_t val2;
	const char *why;
} also_in[] = {
	{ __NR_socket, AF_NETLINK, 2, NETLINK_ROUTE,
	  "the TUN attach check's RTM_GETLINK; no other netlink protocol (audit, xfrm, ...)" },
};

static const uint32_t socket_families[] = { AF_INET, AF_INET6, AF_PACKET };
static const uint32_t ioctl_cmds[] = {
	SIOCGIFINDEX,   /* packet bind to an interface; inet6 address configuration */
	SIOCGIFFLAGS,   /* read the flags before setting IFF_UP */
	SIOCSIFFLAGS,   /* bring a new TUN device up */
	SIOCSIFADDR,    /* a new TUN device's inet or inet6 address */
	SIOCSIFNETMASK, /* its inet prefix */
	SIOCSIFMTU,     /* its MTU */
	TUNSETIFF,      /* create (or attach to) a TUN/TAP device */
	TUNSETOWNER,    /* the caller owns the device */
	TUNSETPERSIST,  /* persist when asked (the holder could set it itself: POLICY.md) */
};
static const uint32_t open_forbidden[] = { O_CREAT | O_TRUNC };
static const uint32_t stdout_only[] = { 1 };

#define N(a) (int)(sizeof(a) / sizeof((a)[0]))

/* Every system call the request loop makes, and why; anything else kills the process. */
static const struct sc_rule allowlist[] = {
	{ __NR_recvmsg, ANY, 0, 0, NULL, "read a request from the channel" },
	{ __NR_sendmsg, ANY, 0, 0, NULL, "send the reply and its descriptor" },
	{ __NR_close, ANY, 0, 0, NULL, "close the handed-out and the scratch descriptors" },
	{ __NR_socket, ARG_IN, 0, N(socket_families), socket_families,
	  "SOCKET requests and TUN configuration: inet, inet6 and packet; netlink route "
	  "for the attach check (also_in)" },
	{ __NR_setsockopt, ANY, 0, 0, NULL, "V6ONLY, REUSEADDR/PORT, FREEBIND, BINDTODEVICE" },
	{ __NR_bind, ANY, 0, 0, NULL, "bind the requested address or interface" },
	{ __NR_listen, ANY, 0, 0, NULL, "stream sockets asked for with a backlog" },
	{ __NR_ioctl, ARG_IN, 1, N(ioctl_cmds), ioctl_cmds, "interface and TUN ioctls, listed" },
	{ __NR_openat, ARG_NONE_OF, 2, 1, open_forbidden,
	  "/dev/net/tun and accept_ra (Landlock limits where); never creates or truncates" },
	{ __NR_pwrite64, ANY, 0, 0, NULL,
	  "accept_ra 0; pwrite needs a seekable file, so never a socket or pipe" },
#ifdef __NR_fstat
	{ __NR_fstat, ANY, 0, 0, NULL, "check /dev/net/tun is char 10:200 (older glibc)" },
#endif
#ifdef __NR_newfstatat
	{ __NR_newfstatat, ANY, 0, 0, NULL,
	  "/dev/net/tun is char 10:200 (glibc's fstat); is there IPv6 (stat /proc/sys/net/ipv6)" },
#endif
	{ __NR_capset, ANY, 0, 0, NULL, "raise one permitted capability around one call" },
	{ __NR_clock_gettime, ANY, 0, 0, NULL, "the broker's poll window when the vDSO is absent" },
	{ __NR_rt_sigreturn, ANY, 0, 0, NULL, "return from a signal (none is handled today)" },
	{ __NR_restart_syscall, ANY, 0, 0, NULL, "resume a call interrupted by SIGSTOP/SIGCONT" },
	{ __NR_exit_group, ANY, 0, 0, NULL, "_exit at channel EOF or on a fatal error" },
	{ __NR_exit, ANY, 0, 0, NULL, "thread exit (the helper has one thread)" },
};
static const struct sc_rule report_rule = {
	__NR_write, ARG_IN, 0, N(stdout_only), stdout_only, "--sandbox-report's output only"
};

static struct sock_filter prog[160];
static unsigned short plen;

static void emit(int fatal, unsigned short code, uint32_t k, uint8_t jt, uint8_t jf)
{
	if (plen >= sizeof prog / sizeof prog[0]) _exit(fatal);
	prog[plen].code = code;
	prog[plen].jt = jt;
	prog[plen].jf = jf;
	prog[plen].k = k;
	plen++;
}

/* One rule as a block that ends in a return, so the next rule needs no reload of nr. */
static void emit_rule(const struct sc_rule *r, int fatal)
{
	const uint16_t jeq = BPF_JMP | BPF_JEQ | BPF_K;
	const uint16_t ret = BPF_RET | BPF_K;
	const uint16_t ldarg = BPF_LD | BPF_W | BPF_ABS;
	if (r->how == ANY) {
		emit(fatal, jeq, (uint32_t)r->nr, 0, 1);
		emit(fatal, ret, SECCOMP_RET_ALLOW, 0, 0);
		return;
	}
	if (r->how == ARG_NONE_OF) {
		emit(fatal, jeq, (uint32_t)r->nr, 0, 4);
		emit(fatal, ldarg, (uint32_t)ARG_LO(r->arg), 0, 0);
		emit(fatal, BPF_JMP | BPF_JSET | BPF_K, r->vals[0], 0, 1);
		emit(fatal, ret, SECCOMP_RET_KILL_PROCESS, 0, 0);
		emit(fatal, ret, SECCOMP_RET_ALLOW, 0, 0);
		return;
	}
	/* ARG_IN: nr, load the argument, one comparison per value (to allow), then any
	 * also_in value (its second argument compared: allow or kill), kill, allow. */
	size_t a = 0;
	while (a < sizeof also_in / sizeof also_in[0] && also_in[a].nr != r->nr)
		a++;
	int also = a < sizeof also_in / sizeof also_in[0];
	int extra = also ? 3 : 0;
	emit(fatal, jeq, (uint32_t)r->nr, 0, (uint8_t)(r->nvals + 3 + extra));
	emit(fatal, ldarg, (uint32_t)ARG_LO(r->arg), 0, 0);
	for (int i = 0; i < r->nvals; i++)
		emit(fatal, jeq, r->vals[i], (uint8_t)(r->nvals - i + extra), 0);
	if (also) {
		emit(fatal, jeq, also_in[a].val, 0, 2);
		emit(fatal, ldarg, (uint32_t)ARG_LO(also_in[a].arg2), 0, 0);
		emit(fatal, jeq, also_in[a].val2, 1, 0);
	}
	emit(fatal, ret, SECCOMP_RET_KILL_PROCESS, 0, 0);
	emit(fatal, ret, SECCOMP_RET_ALLOW, 0, 0);
}

static void seccomp_filter(struct gp_sandbox *sb, int report, int fatal)
{
	struct sock_fprog fp;
	plen = 0;
	/* Another architecture's system call numbers mean other calls: kill. */
	emit(fatal, BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, arch), 0, 0);
	emit(fatal, BPF_JMP | BPF_JEQ | BPF_K, GP_AUDIT_ARCH, 1, 0);
	emit(fatal, BPF_RET | BPF_K, SECCOMP_RET_KILL_PROCESS, 0, 0);
	emit(fatal, BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr), 0, 0);
#ifdef __x86_64__
	/* The x32 ABI shares AUDIT_ARCH_X86_64: its numbers carry this bit. */
	emit(fatal, BPF_JMP | BPF_JGE | BPF_K, 0x40000000u, 0, 1);
	emit(fatal, BPF_RET | BPF_K, SECCOMP_RET_KILL_PROCESS, 0, 0);
#endif
	for (int i = 0; i < N(allowlist); i++)
		emit_rule(&allowlist[i], fatal);
	if (report) emit_rule(&report_rule, fatal);
	emit(fatal, BPF_RET | BPF_K, SECCOMP_RET_KILL_PROCESS, 0, 0);
	fp.len = plen;
	fp.filter = prog;
	/* no_new_privs is set since start-up, so an unprivileged process may install it. */
	if (syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, 0, &fp)) _exit(fatal);
	sb->seccomp = 1;
	sb->nsyscalls = N(allowlist) + !!report;
}

/* ---- resource limits ---- */

static void limits(struct gp_sandbox *sb, int fatal)
{
	static const struct {
		int what;
		rlim_t to;
	} lim[] = {
		{ RLIMIT_CORE, 0 },          /* no core file of a process that held privilege */
		{ RLIMIT_FSIZE, 0 },         /* it writes no file; a write to one is SIGXFSZ */
		{ RLIMIT_NOFILE, GP_NOFILE }, /* sandbox.h: held plus in flight to the client */
		{ RLIMIT_NPROC, 0 },         /* it never forks (seccomp would kill it anyway) */
	};
	for (size_t i = 0; i < sizeof lim / sizeof lim[0]; i++) {
		struct rlimit r;
		if (getrlimit(lim[i].what, &r)) _exit(fatal);
		/* Never above what was inherited: a hard limit cannot rise without privilege. */
		if (r.rlim_cur > lim[i].to) r.rlim_cur = lim[i].to;
		r.rlim_max = r.rlim_cur;
		if (setrlimit(lim[i].what, &r)) _exit(fatal);
		if (lim[i].what == RLIMIT_NOFILE) sb->nofile = (unsigned long)r.rlim_cur;
	}
}

/* The build switches as constants: the code of every layer is compiled (and checked)
 * in every build, and the switched-off one is simply not called. */
#ifdef GP_NO_SANDBOX
enum { WITH_SANDBOX = 0 };
#else
enum { WITH_SANDBOX = 1 };
#endif
#ifdef GP_NO_SECCOMP
enum { WITH_SECCOMP = 0 };
#else
enum { WITH_SECCOMP = 1 };
#endif

void gp_sandbox_apply(struct gp_sandbox *sb, int report, int fatal)
{
	if (!WITH_SANDBOX) return;
	limits(sb, fatal);
	landlock(sb, fatal);
	if (WITH_SECCOMP) seccomp_filter(sb, report, fatal);
}

int gp_sandbox_format(const struct gp_sandbox *sb, char *buf, size_t n)
{
	const char *why = sb->landlock_err == ENOSYS       ? "the kernel has no Landlock"
	                  : sb->landlock_err == EOPNOTSUPP ? "Landlock is disabled at boot"
	                                                   : "not applied in this build";
	char ll[200], on[64];
	int w;
	snprintf(on, sizeof on, "on kill-process syscalls=%d", sb->nsyscalls);
	if (sb->landlock_abi)
		w = snprintf(ll, sizeof ll, "on abi=%d fs=/dev/net/tun:rw,/proc/sys/net/ipv6/conf:w "
		             "scope=%s", sb->landlock_abi,
		             sb->landlock_scope ? "abstract-unix-socket,signal" : "none");
	else
		w = snprintf(ll, sizeof ll, "off (%s)", why);
	if (w < 0 || (size_t)w >= sizeof ll) return -1;
	w = snprintf(buf, n,
	             "seccomp: %s\nlandlock: %s\ncapabilities: bounding=%s securebits=0x%x\n"
	             "rlimits: core=0 fsize=0 nofile=%lu nproc=0\n",
	             sb->seccomp ? on : "off (not applied in this build)", ll,
	             sb->bounding ? "kept-only" : "unchanged", sb->securebits, sb->nofile);
	return w < 0 || (size_t)w >= n ? -1 : 0;
}
