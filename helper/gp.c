/* gp.c - request parser, policy parser and authorization of gprocket-helper.
 * Pure functions over caller-provided buffers: no allocation, no I/O, no
 * global state, so they are fuzzed and unit tested on their own. */
#define _GNU_SOURCE
#include "gp.h"

#include <arpa/inet.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

enum { FAM_INET = 2, FAM_INET6 = 10, FAM_PACKET = 17 };
enum { TY_STREAM = 1, TY_DGRAM = 2, TY_RAW = 3, TY_SEQPACKET = 5 };
#define BAD(...) gp_fail(st, EINVAL, ST_PARSE, __VA_ARGS__)
#define DENY(...) gp_fail(st, EPERM, ST_POLICY, __VA_ARGS__)

/* Rule kinds by R_* number, for parsing and printing policy lines. */
static const char *const kinds[] = { "?", "bind", "raw", "packet", "tun", "device", "netns" };

const char gp_default_policy[] = "allow * bind any 1-1023\n";

int gp_fail(struct gp_status *st, int err, int stage, const char *fmt, ...)
{
	va_list ap;
	st->err = err;
	st->stage = stage;
	va_start(ap, fmt);
	if (vsnprintf(st->detail, sizeof st->detail, fmt, ap) < 0) st->detail[0] = '\0';
	va_end(ap);
	return err;
}

static uint16_t le16(const uint8_t *p) { return (uint16_t)(p[0] | p[1] << 8); }
static uint32_t le32(const uint8_t *p) { return le16(p) | (uint32_t)le16(p + 2) << 16; }
static void put16(uint8_t *p, uint32_t v) { p[0] = (uint8_t)v, p[1] = (uint8_t)(v >> 8); }
static void put32(uint8_t *p, uint32_t v) { put16(p, v), put16(p + 2, v >> 16); }

static int zero(const uint8_t *p, size_t n)
{
	for (size_t i = 0; i < n; i++)
		if (p[i]) return 0;
	return 1;
}

/* At most max bytes of A-Z a-z 0-9 . _ - (and / if slash), not starting with . or -. */
static int valid_str(const char *s, size_t max, int slash)
{
	static const char ok[] = "/ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._-";
	size_t n = strnlen(s, max + 1);
	return n <= max && s[0] != '.' && s[0] != '-' && strspn(s, ok + !slash) == n;
}

/* A NUL-padded name field of n bytes: a NUL inside, only NULs after it. */
static int name_field(const uint8_t *f, size_t n, int slash, char *out)
{
	size_t len = strnlen((const char *)f, n);
	memcpy(out, f, n);
	return len < n && zero(f + len, n - len) && valid_str(out, n - 1, slash);
}

static int parse_socket(const uint8_t *b, struct gp_req *r, struct gp_status *st)
{
	int t = r->type, inet = r->family == FAM_INET || r->family == FAM_INET6;
	if (!zero(b + 104, 32) || !zero(b + 136, 34)) return BAD("device/tun fields set for SOCKET");
	if (r->flags & ~0xFu) return BAD("unknown flag bits 0x%x", r->flags);
	if (t != TY_STREAM && t != TY_DGRAM && t != TY_RAW && t != TY_SEQPACKET)
		return BAD("socket type %d not allowed", t);
	if (r->backlog < 0 || r->backlog > 65535) return BAD("backlog out of range");
	if (r->backlog && t != TY_STREAM && t != TY_SEQPACKET) return BAD("backlog needs a stream");
	if (r->family == FAM_PACKET) {
		if (r->protocol < 0 || r->protocol > 65535) return BAD("ethertype out of range");
		if (t != TY_RAW && t != TY_DGRAM) return BAD("packet sockets are raw or dgram");
		if (r->port || r->flags || r->scope_id || !zero(r->addr, 16))
			return BAD("port/address/flags unused for packet");
		return 0;
	}
	if (!inet) return 0; /* refused by the policy stage with EAFNOSUPPORT */
	if (r->protocol < 0 || r->protocol > 255) return BAD("IP protocol out of range");
	if (r->family == FAM_INET && (!zero(r->addr + 4, 12) || r->scope_id || (r->flags & F_DUALSTACK)))
		return BAD("inet: address bytes 4-15/scope/dualstack set");
	if (t == TY_RAW && r->port) return BAD("raw sockets have no port");
	return 0;
}

static int parse_tun(const uint8_t *b, struct gp_req *r, struct gp_status *st)
{
	uint32_t mode = r->tun_flags & 3;
	if (!zero(b + 14, 42) || !zero(b + 104, 32)) return BAD("socket/device fields set for TUN");
	if ((mode != TF_TUN && mode != TF_TAP) || (r->tun_flags & ~(3u | TF_MULTI_QUEUE | TF_NO_PI)))
		return BAD("tun_flags 0x%x invalid", r->tun_flags);
	if (r->mtu && (r->mtu < 68 || r->mtu > 65535)) return BAD("mtu out of range");
	if (r->tun_options & ~3u) return BAD("tun_options 0x%x invalid", r->tun_options);
	if (zero(r->addr4, 4) != (r->prefix4 == 0) || r->prefix4 > 32 ||
	    zero(r->addr6, 16) != (r->prefix6 == 0) || r->prefix6 > 128)
		return BAD("tun address/prefix mismatch");
	return 0;
}

int gp_parse_request(const uint8_t *b, size_t len, struct gp_req *r, struct gp_status *st)
{
	memset(r, 0, sizeof *r);
	gp_fail(st, 0, ST_NONE, "ok");
	if (len >= 12) r->id = le32(b + 8);
	if (len != GP_REQ_SIZE)
		return gp_fail(st, EMSGSIZE, ST_PARSE, "request must be exactly 192 bytes");
	if (memcmp(b, "GPRQ", 4)) return BAD("bad magic");
	if (le16(b + 4) != 1) return gp_fail(st, EPROTO, ST_PARSE, "version %u unsupported", le16(b + 4));
	if (le16(b + 6) != GP_REQ_SIZE || !zero(b + 30, 2) || !zero(b + 170, 22))
		return BAD("bad size field or reserved bytes");
	r->op = le16(b + 12), r->flags = le16(b + 14);
	r->family = (int32_t)le32(b + 16), r->type = (int32_t)le32(b + 20);
	r->protocol = (int32_t)le32(b + 24), r->port = le16(b + 28);
	memcpy(r->addr, b + 32, 16);
	r->scope_id = le32(b + 48), r->backlog = (int32_t)le32(b + 52);
	r->tun_flags = le32(b + 136), r->mtu = le32(b + 140), r->tun_options = le32(b + 144);
	memcpy(r->addr4, b + 148, 4);
	memcpy(r->addr6, b + 152, 16);
	r->prefix4 = b[168], r->prefix6 = b[169];
	if (!name_field(b + 56, 16, 0, r->ifname) || !name_field(b + 72, 32, 0, r->netns) ||
	    !name_field(b + 104, 32, 1, r->device))
		return BAD("bad ifname/netns/device name");
	switch (r->op) {
	case OP_SOCKET: return parse_socket(b, r, st);
	case OP_TUN: return parse_tun(b, r, st);
	case OP_DEVICE:
		return !zero(b + 14, 58) || !zero(b + 136, 34) || !r->device[0]
		       ? BAD("DEVICE takes a device name and netns only") : 0;
	case OP_HELLO: return zero(b + 14, 156) ? 0 : BAD("HELLO fields must be zero");
	default: return BAD("unknown op %u", r->op);
	}
}

void gp_put_reply(uint8_t out[GP_REP_SIZE], uint32_t id, const struct gp_status *st,
                  const char *ifname)
{
	memset(out, 0, GP_REP_SIZE);
	memcpy(out + RP_MAGIC, "GPRP", 4);
	put16(out + RP_VERSION, 1);
	put16(out + RP_SIZE, GP_REP_SIZE);
	put32(out + RP_ID, id);
	put32(out + RP_ERROR, (uint32_t)st->err);
	put32(out + RP_STAGE, (uint32_t)st->stage);
	if (ifname) memcpy(out + RP_IFNAME, ifname, strnlen(ifname, RP_DETAIL - RP_IFNAME - 1));
	memcpy(out + RP_DETAIL, st->detail, strnlen(st->detail, GP_DETAIL - 1));
}

/* ---- policy ---- */

static int parse_u32(const char *s, uint32_t max, uint32_t *out)
{
	uint64_t v = 0;
	size_t n = strlen(s);
	if (n == 0 || n > 10 || strspn(s, "0123456789") != n) return -1;
	for (size_t i = 0; i < n; i++)
		v = v * 10 + (uint64_t)(s[i] - '0');
	return v > max ? -1 : (*out = (uint32_t)v, 0);
}

/* NAME's third field in a passwd/group style database; lines over 1023 bytes are skipped. */
static int db_lookup(const char *db, size_t len, const char *name, uint32_t *id)
{
	size_t nl = strlen(name);
	for (size_t pos = 0; pos < len;) {
		const char *line = db + pos, *end = memchr(line, '\n', len - pos);
		size_t ll = end ? (size_t)(end - line) : len - pos;
		char buf[1024], *f2, *f3;
		pos += ll + 1;
		if (ll > 1023 || ll <= nl || memcmp(line, name, nl) || line[nl] != ':') continue;
		memcpy(buf, line, ll);
		buf[ll] = '\0';
		if ((f2 = strchr(buf + nl + 1, ':')) && (f3 = strchr(f2 + 1, ':')))
			return *f3 = '\0', parse_u32(f2 + 1, 4294967294u, id);
	}
	return -1;
}

struct dbs {
	const char *passwd, *group;
	size_t plen, glen;
};

static int parse_subject(const char *t, const struct dbs *c, struct gp_rule *ru)
{
	const char *v = strchr(t, ':');
	if (!strcmp(t, "*")) return ru->subj = SUBJ_ANY, 0;
	if (!v || (strncmp(t, "user:", 5) && strncmp(t, "group:", 6))) return -1;
	ru->subj = t[0] == 'u' ? SUBJ_USER : SUBJ_GROUP;
	if (!parse_u32(++v, 4294967294u, &ru->id)) return 0;
	if (!*v || strlen(v) > 32 || strchr(v, ':')) return -1;
	return t[0] == 'u' ? db_lookup(c->passwd, c->plen, v, &ru->id)
	                   : db_lookup(c->group, c->glen, v, &ru->id);
}

static int parse_bind(char **t, int n, struct gp_rule *ru)
{
	uint32_t lo, hi, plen;
	char *save = NULL, *dash, *slash = NULL;
	if (n < 5 || n > 6) return -1;
	for (char *p = strtok_r(t[3], ",", &save); p; p = strtok_r(NULL, ",", &save))
		ru->protos |= !strcmp(p, "tcp") ? P_TCP : !strcmp(p, "udp") ? P_UDP
		            : !strcmp(p, "sctp") ? P_SCTP : !strcmp(p, "any") ? 7 : 0x80;
	if ((dash = strchr(t[4], '-'))) *dash = '\0';
	if (!ru->protos || (ru->protos & 0x80) || parse_u32(t[4], 65535, &lo) ||
	    parse_u32(dash ? dash + 1 : t[4], 65535, &hi) || lo < 1 || hi < lo)
		return -1;
	ru->port_lo = (uint16_t)lo, ru->port_hi = (uint16_t)hi;
	if (n == 5) return 0;
	if ((slash = strchr(t[5], '/'))) *slash = '\0';
	ru->family = inet_pton(AF_INET, t[5], ru->addr) == 1 ? 4
	           : inet_pton(AF_INET6, t[5], ru->addr) == 1 ? 6 : 0;
	plen = ru->family == 4 ? 32 : 128; /* no /LEN: one address */
	if (!ru->family || (slash && parse_u32(slash + 1, plen, &plen)))
		return -1;
	return ru->plen = (uint8_t)plen, 0;
}

static int parse_raw(char *list, struct gp_rule *ru)
{
	char *save = NULL;
	uint32_t v;
	for (char *p = strtok_r(list, ",", &save); p; p = strtok_r(NULL, ",", &save)) {
		if (!strcmp(p, "any")) memset(ru->rawmask, 0xff, sizeof ru->rawmask);
		else if (!strcmp(p, "icmp")) v = 1;
		else if (!strcmp(p, "icmpv6")) v = 58;
		else if (parse_u32(p, 255, &v)) return -1;
		if (strcmp(p, "any")) ru->rawmask[v / 8] |= (uint8_t)(1 << (v % 8));
	}
	return zero(ru->rawmask, sizeof ru->rawmask) ? -1 : 0;
}

/* One policy line; NULL when fine, else what is wrong. */
static const char *parse_line(char *line, const struct dbs *c, struct gp_policy *p)
{
	char *t[8], *save = NULL;
	int n = 0;
	size_t l;
	struct gp_rule *ru = &p->rules[p->nrules < GP_MAXRULES ? p->nrules : 0];
	line[strcspn(line, "#")] = '\0';
	for (char *tok = strtok_r(line, " \t\r", &save); tok; tok = strtok_r(NULL, " \t\r", &save)) {
		if (n == 8) return "too many fields";
		t[n++] = tok;
	}
	if (n == 0) return NULL;
	if (p->nrules >= GP_MAXRULES) return "more than 256 rules";
	memset(ru, 0, sizeof *ru);
	if (n < 3 || strcmp(t[0], "allow")) return "expected: allow SUBJECT KIND ...";
	if (parse_subject(t[1], c, ru)) return "bad or unknown subject";
	for (ru->kind = R_NETNS; ru->kind && strcmp(t[2], kinds[ru->kind]); ru->kind--)
		;
	p->nrules++; /* an error below refuses the whole policy, this rule with it */
	l = n >= 4 ? strlen(t[3]) : 0;
	switch (ru->kind) {
	case R_BIND: return parse_bind(t, n, ru) ? "expected: bind PROTOS PORTS [ADDR]" : NULL;
	case R_RAW: return n != 4 || parse_raw(t[3], ru) ? "expected: raw PROTOS" : NULL;
	case R_PACKET: return n != 3 ? "expected: packet" : NULL;
	case R_TUN:
		ru->persist = n == 5;
		if (l && t[3][l - 1] == '*') t[3][--l] = '\0', ru->prefix_match = 1;
		if (n < 4 || n > 5 || (!l && !ru->prefix_match) || !valid_str(t[3], 15, 0) ||
		    (n == 5 && strcmp(t[4], "persist")))
			return "expected: tun PATTERN [persist]";
		break;
	case R_DEVICE:
		if (n != 4 || strcmp(t[3], "net/tun")) return "device not in allowlist (net/tun)";
		break;
	case R_NETNS:
		if (n != 4 || !t[3][0] || !valid_str(t[3], 31, 0)) return "expected: netns NAME";
		break;
	default: return "unknown rule kind";
	}
	memcpy(ru->name, t[3], l + 1); /* tun, device, netns: checked above to fit */
	return NULL;
}

void gp_parse_policy(const char *text, size_t len, const char *passwd, size_t plen,
                     const char *group, size_t glen, struct gp_policy *p)
{
	const struct dbs c = { passwd, group, plen, glen };
	const char *why = len > GP_POLICY_MAX ? "larger than 64 KiB" : NULL;
	int lineno = 0;
	p->nrules = p->broken = 0;
	p->why[0] = '\0';
	for (size_t pos = 0; !why && pos < len; lineno++) {
		const char *s = text + pos, *end = memchr(s, '\n', len - pos);
		size_t ll = end ? (size_t)(end - s) : len - pos;
		char line[256];
		pos += ll + 1;
		if (ll > 255)
			why = "line longer than 255 bytes";
		else if (memchr(s, '\0', ll))
			why = "NUL byte";
		else
			memcpy(line, s, ll), line[ll] = '\0', why = parse_line(line, &c, p);
	}
	if (why) {
		p->broken = 1, p->nrules = 0;
		snprintf(p->why, sizeof p->why, "policy line %d: %.40s", lineno, why);
	}
}

/* ---- authorization ---- */

static int subj_match(const struct gp_rule *ru, const struct gp_ident *id)
{
	if (ru->subj != SUBJ_GROUP) return ru->subj == SUBJ_ANY || ru->id == id->uid;
	for (int i = 0; i < id->ngroups && i < GP_MAXGROUPS; i++)
		if (id->groups[i] == ru->id) return 1;
	return ru->id == id->gid;
}

/* The bind address lies inside the rule's prefix; the wildcard only inside a /0. */
static int addr_match(const struct gp_rule *ru, const struct gp_req *r)
{
	int bytes = ru->plen / 8, bits = ru->plen % 8;
	if (!ru->family) return 1;
	if ((ru->family == 4) != (r->family == FAM_INET)) return 0;
	if (zero(r->addr, 16)) return ru->plen == 0;
	return !memcmp(ru->addr, r->addr, (size_t)bytes) &&
	       (!bits || !((ru->addr[bytes] ^ r->addr[bytes]) & (0xff00 >> bits)));
}

/* The class a non-raw inet socket binds under; 0 = ICMP datagram (ping) socket, -1 = refused. */
static int bind_class(const struct gp_req *r)
{
	int p = r->protocol;
	if (r->type == TY_STREAM) return p == 0 || p == 6 ? P_TCP : p == 132 ? P_SCTP : -1;
	if (r->type == TY_SEQPACKET) return p == 0 || p == 132 ? P_SCTP : -1;
	if (p == 0 || p == 17) return P_UDP;
	return (r->family == FAM_INET && p == 1) || (r->family == FAM_INET6 && p == 58) ? 0 : -1;
}

static int authorize_tun(const struct gp_policy *p, const struct gp_ident *id, struct gp_req *r,
                         struct gp_status *st)
{
	int persist = !!(r->tun_options & T_PERSIST);
	for (const struct gp_rule *ru = p->rules; ru < p->rules + p->nrules; ru++) {
		size_t l = strlen(ru->name);
		if (ru->kind != R_TUN || !subj_match(ru, id) || (persist && !ru->persist)) continue;
		if (r->ifname[0] && (ru->prefix_match ? !strncmp(r->ifname, ru->name, l)
		                                      : !strcmp(r->ifname, ru->name)))
			return 0;
		if (r->ifname[0] || (ru->prefix_match && l > 13)) continue;
		/* No name: the first fitting rule names the device; a prefix pattern lets the
		 * kernel number it (PATTERN%d; tun%d or tap%d for '*'). */
		if (!ru->prefix_match)
			memcpy(r->ifname, ru->name, sizeof r->ifname);
		else
			snprintf(r->ifname, sizeof r->ifname, "%s%%d",
			         l ? ru->name : (r->tun_flags & 3) == TF_TAP ? "tap" : "tun");
		return 0;
	}
	return DENY("policy: tun %s%s not granted", r->ifname[0] ? r->ifname : "(any name)",
	            persist ? " persist" : "");
}

static int has_rule(const struct gp_policy *p, const struct gp_ident *id, int kind,
                    const struct gp_req *r)
{
	int cls = kind == R_BIND ? bind_class(r) : 0;
	for (const struct gp_rule *ru = p->rules; ru < p->rules + p->nrules; ru++)
		if (ru->kind == kind && subj_match(ru, id) &&
		    (kind == R_PACKET ||
		     (kind == R_RAW && (ru->rawmask[r->protocol / 8] >> (r->protocol % 8) & 1)) ||
		     (kind == R_NETNS && !strcmp(ru->name, r->netns)) ||
		     (kind == R_DEVICE && !strcmp(ru->name, r->device)) ||
		     (kind == R_BIND && (ru->protos & cls) && r->port >= ru->port_lo &&
		      r->port <= ru->port_hi && addr_match(ru, r))))
			return 1;
	return 0;
}

int gp_authorize(const struct gp_policy *p, const struct gp_ident *id, struct gp_req *r,
                 struct gp_status *st)
{
	int cls = bind_class(r);
	if (p->broken) return gp_fail(st, EACCES, ST_POLICY, "%s", p->why);
	if (r->netns[0] && !has_rule(p, id, R_NETNS, r))
		return DENY("policy: netns %s not granted", r->netns);
	if (r->op == OP_TUN) return authorize_tun(p, id, r, st);
	if (r->op == OP_DEVICE && strcmp(r->device, "net/tun"))
		return DENY("device not in the helper's allowlist");
	if (r->op == OP_DEVICE)
		return has_rule(p, id, R_DEVICE, r) ? 0 : DENY("policy: device %s not granted", r->device);
	if (r->op != OP_SOCKET) return 0;
	if (r->family == FAM_PACKET)
		return has_rule(p, id, R_PACKET, r) ? 0 : DENY("policy: packet sockets need an entry");
	if (r->family != FAM_INET && r->family != FAM_INET6)
		return gp_fail(st, EAFNOSUPPORT, ST_POLICY, "family %d not allowed", (int)r->family);
	if (r->type == TY_RAW)
		return has_rule(p, id, R_RAW, r) ? 0 : DENY("policy: raw protocol %d not granted", r->protocol);
	if (cls < 0)
		return gp_fail(st, EPROTONOSUPPORT, ST_POLICY, "protocol %d not allowed for type %d",
		               (int)r->protocol, (int)r->type);
	if (cls && r->port && r->port < 1024 && !has_rule(p, id, R_BIND, r))
		return DENY("policy: %s port %u not granted",
		            cls == P_TCP ? "tcp" : cls == P_UDP ? "udp" : "sctp", r->port);
	return 0;
}

int gp_authorize_netns(const struct gp_policy *p, const struct gp_ident *id, const char *name,
                       struct gp_status *st)
{
	uint8_t field[RQ_DEVICE - RQ_NETNS] = { 0 };
	struct gp_req r;
	size_t len = strnlen(name, sizeof field);
	memset(&r, 0, sizeof r);
	gp_fail(st, 0, ST_NONE, "ok");
	if (len == sizeof field) return BAD("netns name longer than 31 bytes");
	memcpy(field, name, len);
	if (!len || !name_field(field, sizeof field, 0, r.netns)) return BAD("bad netns name");
	if (p->broken) return gp_fail(st, EACCES, ST_POLICY, "%s", p->why);
	return has_rule(p, id, R_NETNS, &r) ? 0 : DENY("policy: netns %s not granted", r.netns);
}

uint64_t gp_needed_caps(const struct gp_policy *p, const struct gp_ident *id, int tun_root_only)
{
	uint64_t caps = 0;
	for (const struct gp_rule *ru = p->rules; !p->broken && ru < p->rules + p->nrules; ru++) {
		int k = ru->kind;
		if (!subj_match(ru, id)) continue;
		caps |= (uint64_t)(k == R_BIND && ru->port_lo < 1024) << GCAP_NET_BIND_SERVICE |
		        (uint64_t)(k == R_RAW || k == R_PACKET) << GCAP_NET_RAW |
		        (uint64_t)(k == R_TUN) << GCAP_NET_ADMIN | (uint64_t)(k == R_NETNS) << GCAP_SYS_ADMIN |
		        (uint64_t)((k == R_TUN || k == R_DEVICE) && tun_root_only) << GCAP_DAC_OVERRIDE;
	}
	return caps;
}

/* The rule in policy syntax with numeric ids, for --check-policy. */
int gp_format_rule(const struct gp_rule *ru, char *buf, size_t n)
{
	static const char *const protos[] = { "tcp", "udp", "sctp" };
	char arg[1100] = "", subj[24] = "*", a[INET6_ADDRSTRLEN];
	size_t o = 0; /* at most 10*2 + 90*3 + 156*4 bytes of protocol list: fits arg */
	int all = ru->kind == R_RAW, w;
	for (int i = 0; i < 32; i++)
		all &= ru->rawmask[i] == 0xff;
	for (int v = 0; v < 256 && ru->kind == R_RAW && !all; v++)
		if (ru->rawmask[v / 8] >> (v % 8) & 1)
			o += (size_t)snprintf(arg + o, sizeof arg - o, "%c%d", o ? ',' : ' ', v);
	for (int i = 0; i < 3 && ru->kind == R_BIND; i++)
		if (ru->protos >> i & 1)
			o += (size_t)snprintf(arg + o, sizeof arg - o, "%c%s", o ? ',' : ' ', protos[i]);
	if (ru->kind == R_BIND)
		o += (size_t)snprintf(arg + o, sizeof arg - o, " %u-%u", ru->port_lo, ru->port_hi);
	if (ru->kind == R_BIND && ru->family &&
	    inet_ntop(ru->family == 4 ? AF_INET : AF_INET6, ru->addr, a, sizeof a))
		snprintf(arg + o, sizeof arg - o, " %s/%u", a, ru->plen);
	if (ru->kind >= R_TUN || all) /* a name, or "any" for every raw protocol */
		snprintf(arg, sizeof arg, " %s%s%s", all ? "any" : ru->name, ru->prefix_match ? "*" : "",
		         ru->persist ? " persist" : "");
	if (ru->subj != SUBJ_ANY)
		snprintf(subj, sizeof subj, "%s:%u", ru->subj == SUBJ_USER ? "user" : "group", ru->id);
	w = snprintf(buf, n, "allow %s %s%s", subj, kinds[ru->kind % 7], arg);
	return w < 0 || (size_t)w >= n ? -1 : 0;
}
