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
/* The --netns argument: checked as the request's netns field is, granted by a netns rule. */
int gp_authorize_netns(const struct gp_policy *p, const struct gp_ident *id, const char *name,
                       struct gp_status *st);
int gp_format_rule(const struct gp_rule *rule, char *buf, size_t n);
void gp_put_reply(uint8_t out[GP_REP_SIZE], uint32_t id, const struct gp_status *st,
                  const char *ifname);

/* ---- Wire layout (PROTOCOL.md), kept apart from the parser's own declarations ----
 * Every field's offset in a request (RQ_*) and a reply (RP_*); the asserts below pin
 * their order, that each field ends where the next begins, and the totals. */
enum gp_wire_req {
	RQ_MAGIC = 0, RQ_VERSION = 4, RQ_SIZE = 6, RQ_ID = 8, RQ_OP = 12, RQ_FLAGS = 14,
	RQ_FAMILY = 16, RQ_TYPE = 20, RQ_PROTOCOL = 24, RQ_PORT = 28, RQ_RESERVED0 = 30,
	RQ_ADDR = 32, RQ_SCOPE_ID = 48, RQ_BACKLOG = 52, RQ_IFNAME = 56, RQ_NETNS = 72,
	RQ_DEVICE = 104, RQ_TUN_FLAGS = 136, RQ_MTU = 140, RQ_TUN_OPTIONS = 144,
	RQ_TUN_ADDR4 = 148, RQ_TUN_ADDR6 = 152, RQ_TUN_PREFIX4 = 168, RQ_TUN_PREFIX6 = 169,
	RQ_RESERVED1 = 170, RQ_END = 192
};
enum gp_wire_rep {
	RP_MAGIC = 0, RP_VERSION = 4, RP_SIZE = 6, RP_ID = 8, RP_ERROR = 12, RP_STAGE = 16,
	RP_IFNAME = 20, RP_DETAIL = 36, RP_END = 96
};

#define GP_FIELD(s, f) sizeof(((struct s *)0)->f)
_Static_assert((int)RQ_END == (int)GP_REQ_SIZE && (int)RP_END == (int)GP_REP_SIZE, "message sizes");
_Static_assert(RQ_VERSION - RQ_MAGIC == 4 && RQ_SIZE - RQ_VERSION == 2 && RQ_ID - RQ_SIZE == 2 &&
               RQ_OP - RQ_ID == 4 && RQ_FLAGS - RQ_OP == 2 && RQ_FAMILY - RQ_FLAGS == 2,
               "request header: magic u8[4], version u16, size u16, id u32, op u16, flags u16");
_Static_assert(RQ_TYPE - RQ_FAMILY == 4 && RQ_PROTOCOL - RQ_TYPE == 4 &&
               RQ_PORT - RQ_PROTOCOL == 4 && RQ_RESERVED0 - RQ_PORT == 2 &&
               RQ_ADDR - RQ_RESERVED0 == 2, "family, type, protocol i32; port, reserved0 u16");
_Static_assert(RQ_SCOPE_ID - RQ_ADDR == GP_FIELD(gp_req, addr) &&
               RQ_BACKLOG - RQ_SCOPE_ID == 4 && RQ_IFNAME - RQ_BACKLOG == 4,
               "address u8[16], scope_id u32, backlog i32");
_Static_assert(RQ_NETNS - RQ_IFNAME == GP_FIELD(gp_req, ifname) &&
               RQ_DEVICE - RQ_NETNS == GP_FIELD(gp_req, netns) &&
               RQ_TUN_FLAGS - RQ_DEVICE == GP_FIELD(gp_req, device),
               "name fields are as long as the parsed request's buffers");
_Static_assert(RQ_MTU - RQ_TUN_FLAGS == 4 && RQ_TUN_OPTIONS - RQ_MTU == 4 &&
               RQ_TUN_ADDR4 - RQ_TUN_OPTIONS == 4 &&
               RQ_TUN_ADDR6 - RQ_TUN_ADDR4 == GP_FIELD(gp_req, addr4) &&
               RQ_TUN_PREFIX4 - RQ_TUN_ADDR6 == GP_FIELD(gp_req, addr6) &&
               RQ_TUN_PREFIX6 - RQ_TUN_PREFIX4 == 1 && RQ_RESERVED1 - RQ_TUN_PREFIX6 == 1 &&
               RQ_RESERVED1 < RQ_END, "TUN fields, then reserved1 up to the end");
_Static_assert(RP_VERSION - RP_MAGIC == 4 && RP_SIZE - RP_VERSION == 2 && RP_ID - RP_SIZE == 2 &&
               RP_ERROR - RP_ID == 4 && RP_STAGE - RP_ERROR == 4 && RP_IFNAME - RP_STAGE == 4 &&
               RP_DETAIL - RP_IFNAME == GP_FIELD(gp_req, ifname) &&
               (int)RP_END - RP_DETAIL == (int)GP_DETAIL && GP_FIELD(gp_status, detail) == GP_DETAIL,
               "reply: header, error, stage, ifname, detail to the end");
#undef GP_FIELD

#endif
