/* gp.h - the pure half of gprocket-helper: request parsing, policy parsing and
 * authorization. No system call lives behind these functions, so the fuzzers
 * and test_parse.c link them without any privileged code. */
#ifndef GP_H
#define GP_H

#include <stddef.h>
#include <stdint.h>

enum { GP_REQ_SIZE = 192, GP_REP_SIZE = 96, GP_DETAIL = 60, GP_MAXGROUPS = 256,
       GP_MAXRULES = 256, GP_POLICY_MAX = 65536 };
enum gp_op { OP_SOCKET = 1, OP_TUN = 2, OP_DEVICE = 3, OP_HELLO = 4 };
enum gp_stage { ST_NONE, ST_PARSE, ST_POLICY, ST_OPEN, ST_BIND, ST_CONFIGURE, ST_NAMESPACE,
                ST_INTERNAL };
enum { F_DUALSTACK = 1, F_REUSEADDR = 2, F_REUSEPORT = 4, F_FREEBIND = 8, T_PERSIST = 1,
       T_UP = 2, T_ATTACH = 4, TF_TUN = 0x1, TF_TAP = 0x2, TF_MULTI_QUEUE = 0x100,
       TF_NO_PI = 0x1000 };
/* Capability numbers of linux/capability.h, so that gp.c needs no kernel header. */
enum { GCAP_DAC_OVERRIDE = 1, GCAP_SETGID = 6, GCAP_NET_BIND_SERVICE = 10, GCAP_NET_ADMIN = 12,
       GCAP_NET_RAW = 13, GCAP_SYS_ADMIN = 21 };

struct gp_req { /* a parsed request: every field range-checked, names NUL-terminated */
	uint32_t id, scope_id, tun_flags, mtu, tun_options;
	uint16_t op, flags, port;
	int32_t family, type, protocol, backlog;
	uint8_t addr[16], addr4[4], addr6[16], prefix4, prefix6;
	char ifname[16], netns[32], device[32];
};

struct gp_status { /* outcome of a stage: errno (0 = fine), stage and a short reason */
	int err, stage;
	char detail[GP_DETAIL];
};

struct gp_ident { /* the caller, as the kernel reports it */
	uint32_t uid, gid;
	int ngroups;
	uint32_t groups[GP_MAXGROUPS];
};

enum { SUBJ_ANY, SUBJ_USER, SUBJ_GROUP };
enum { R_BIND = 1, R_RAW, R_PACKET, R_TUN, R_DEVICE, R_NETNS };
enum { P_TCP = 1, P_UDP = 2, P_SCTP = 4 };

enum { GP_MAXNETS = 8 };

struct gp_net { /* an address prefix: family 4 or 6, host bits zero */
	uint8_t family, plen, addr[16];
};

struct gp_rule {
	uint8_t subj, kind, prefix_match, protos, reuse, nnets;
	uint32_t id; /* uid or gid */
	uint16_t port_lo, port_hi, mtu_lo, mtu_hi; /* mtu_hi 0: no MTU may be set */
	struct gp_net nets[GP_MAXNETS]; /* bind: at most one (none = any address); tun: addresses */
	uint8_t rawmask[32];            /* one bit per IP protocol */
	char name[32];                  /* tun pattern (without '*'), device or netns name */
};

struct gp_policy {
	int nrules, broken; /* broken: every request is refused with EACCES and why */
	char why[GP_DETAIL];
	struct gp_rule rules[GP_MAXRULES];
};

extern const char gp_default_policy[];

int gp_fail(struct gp_status *st, int err, int stage, const char *fmt, ...)
	__attribute__((format(printf, 4, 5)));
int gp_parse_request(const uint8_t *buf, size_t len, struct gp_req *r, struct gp_status *st);
void gp_parse_policy(const char *text, size_t len, const char *passwd, size_t plen,
                     const char *group, size_t glen, struct gp_policy *p);
/* 0 or an errno; an empty TUN name is replaced by the name the policy gives. */
int gp_authorize(const struct gp_policy *p, const struct gp_ident *id, struct gp_req *r,
                 struct gp_status *st);
uint64_t gp_needed_caps(const struct gp_policy *p, const struct gp_ident *id, int tun_root_only);
int gp_format_rule(const struct gp_rule *rule, char *buf, size_t n);
void gp_put_reply(uint8_t out[GP_REP_SIZE], uint32_t id, const struct gp_status *st,
                  const char *ifname);

#endif
