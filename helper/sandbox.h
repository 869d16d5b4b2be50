/* sandbox.h - what confines gprocket-helper after its privilege drop and before
 * it reads its first request: resource limits, Landlock, a seccomp-bpf allowlist.
 * The promises and the test of each: docs/SECURITY.md, "Containment". */
#ifndef GP_SANDBOX_H
#define GP_SANDBOX_H

#include <stddef.h>
#include <stdint.h>

/* RLIMIT_NOFILE (or the lower limit inherited). The loop itself holds 0-2 and at most
 * four more per request, but the kernel also counts every descriptor in flight in a
 * reply not yet read by the client against the sender's limit (ETOOMANYREFS past it),
 * and a client may pipeline hundreds of requests. */
enum { GP_NOFILE = 1024 };

struct gp_sandbox {
	int landlock_abi;   /* the kernel's Landlock ABI; 0 when it has none */
	int landlock_err;   /* why there is no Landlock domain (an errno), 0 when there is one */
	int landlock_scope; /* the scopes applied (LANDLOCK_SCOPE_* bits) */
	int seccomp;        /* 1 when the filter is installed; 0 only in a build without it */
	int nsyscalls;      /* system calls the filter lets through */
	unsigned long nofile; /* RLIMIT_NOFILE in force */
	int bounding;       /* filled by the drop: 1 when the bounding set was cut to what is kept */
	unsigned securebits; /* filled by the drop: the securebits in force */
};

/* Confine the calling process for good; any failure but a kernel without Landlock
 * ends it (exit status `fatal`). `report`: the filter also lets write(2) to descriptor
 * 1 through, for --sandbox-report's output. */
void gp_sandbox_apply(struct gp_sandbox *sb, int report, int fatal);

/* The --sandbox-report text (PROTOCOL.md); -1 if it does not fit. */
int gp_sandbox_format(const struct gp_sandbox *sb, char *buf, size_t n);

#endif
