/* gp.c - request parser, policy parser and authorization of gprocket-helper.
 * Pure functions over caller-provided buffers: no allocation, no I/O, no
 * global state, so they are fuzzed and unit tested on their own. Each stage
 * dispatches through a table (request op, rule kind), as OpenSSH's monitor does:
 * what is not in a table is refused. */
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
#define COUNT(a) (sizeof(a) / sizeof((a)[0]))

const char gp_default_policy[] = "allow * bind any 1-1023\n";

int gp_fail(struct gp_status *st, int err, int stage, const char *fmt, ...)
{
	va_list ap;
	st->err = err;
	st->stage = stage;
	va_start(ap, fmt);
	if (vsnprintf(st->detail, sizeof st->detail, fmt, ap) < 0)
		st->detail[0] = '\0';
	va_end(ap);
	return err;
}

static uint16_t le16(const uint8_t *p) { return (uint16_t)(p[0] | p[1] << 8); }
static uint32_t le32(const uint8_t *p) { return le16(p) | (uint32_t)le16(p + 2) << 16; }

static void put16(uint8_t *p, uint32_t v)
{
	p[0] = (uint8_t)v;
	p[1] = (uint8_t)(v >> 8);
}

static void put32(uint8_t *p, uint32_t v)
{
	put16(p, v);
	put16(p + 2, v >> 16);
}

static int zero(const uint8_t *p, size_t n)
{
	for (size_t i = 0; i < n; i++)
		if (p[i]) return 0;
	return 1;
}

/* The request's bytes from wire offset `from` up to `to` (RQ_*) are all zero. */
static int zero_span(const uint8_t *b, enum gp_wire_req from, enum gp_wire_req to)
{
	return zero(b + from, (size_t)(to - from));
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

/* The first plen bits of a and b are equal. */
static int same_prefix(const uint8_t *a, const uint8_t *b, unsigned plen)
{
	unsigned bytes = plen / 8;
	unsigned bits = plen % 8;
	if (memcmp(a, b, bytes)) return 0;
	return !bits || !((a[bytes] ^ b[bytes]) & (0xff00 >> bits));
}

/* ---- request parsing: one function per op ---- */

static int req_socket(const uint8_t *b, struct gp_req *r, struct gp_status *st)
{
	int t = r->type;
	int inet = r->family == FAM_INET || r->family == FAM_INET6;
	if (!zero_span(b, RQ_DEVICE, RQ_TUN_FLAGS) || !zero_span(b, RQ_TUN_FLAGS, RQ_RESERVED1))
		return BAD("device/tun fields set for SOCKET");
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

static int req_tun(const uint8_t *b, struct gp_req *r, struct gp_status *st)
{
	uint32_t mode = r->tun_flags & 3;
	if (!zero_span(b, RQ_FLAGS, RQ_IFNAME) || !zero_span(b, RQ_DEVICE, RQ_TUN_FLAGS))
		return BAD("socket/device fields set for TUN");
	if ((mode != TF_TUN && mode != TF_TAP) || (r->tun_flags & ~(3u | TF_MULTI_QUEUE | TF_NO_PI)))
		return BAD("tun_flags 0x%x invalid", r->tun_flags);
	if (r->mtu && (r->mtu < 68 || r->mtu > 65535)) return BAD("mtu out of range");
	if (r->tun_options & ~(uint32_t)(T_PERSIST | T_UP | T_ATTACH))
		return BAD("tun_options 0x%x invalid", r->tun_options);
	if (zero(r->addr4, 4) != (r->prefix4 == 0) || r->prefix4 > 32 ||
	    zero(r->addr6, 16) != (r->prefix6 == 0) || r->prefix6 > 128)
		return BAD("tun address/prefix mismatch");
	/* Attaching configures nothing: the device is the owner's as it stands. */
	if ((r->tun_options & T_ATTACH) &&
	    (!r->ifname[0] || r->tun_options != T_ATTACH || r->mtu || r->prefix4 || r->prefix6))
		return BAD("ATTACH takes a name and tun_flags only");
	return 0;
}

static int req_device(const uint8_t *b, struct gp_req *r, struct gp_status *st)
{
	if (!zero_span(b, RQ_FLAGS, RQ_NETNS) || !zero_span(b, RQ_TUN_FLAGS, RQ_RESERVED1) || !r->device[0])
		return BAD("DEVICE takes a device name and netns only");
	return 0;
}

static int req_hello(const uint8_t *b, struct gp_req *r, struct gp_status *st)
{
	(void)r;
	return zero_span(b, RQ_FLAGS, RQ_RESERVED1) ? 0 : BAD("HELLO fields must be zero");
}

static const struct {
	uint16_t op;
	int (*parse)(const uint8_t *b, struct gp_req *r, struct gp_status *st);
} parse_table[] = {
	{ OP_SOCKET, req_socket },
	{ OP_TUN, req_tun },
	{ OP_DEVICE, req_device },
	{ OP_HELLO, req_hello },
};

int gp_parse_request(const uint8_t *b, size_t len, struct gp_req *r, struct gp_status *st)
{
	memset(r, 0, sizeof *r);
	gp_fail(st, 0, ST_NONE, "ok");
	if (len >= RQ_OP) r->id = le32(b + RQ_ID);
	if (len != GP_REQ_SIZE)
		return gp_fail(st, EMSGSIZE, ST_PARSE, "request must be exactly 192 bytes");
	if (memcmp(b + RQ_MAGIC, "GPRQ", 4)) return BAD("bad magic");
	if (le16(b + RQ_VERSION) != 1)
		return gp_fail(st, EPROTO, ST_PARSE, "version %u unsupported", le16(b + RQ_VERSION));
	if (le16(b + RQ_SIZE) != GP_REQ_SIZE || !zero_span(b, RQ_RESERVED0, RQ_ADDR) ||
	    !zero_span(b, RQ_RESERVED1, RQ_END))
		return BAD("bad size field or reserved bytes");
	r->op = le16(b + RQ_OP);
	r->flags = le16(b + RQ_FLAGS);
	r->family = (int32_t)le32(b + RQ_FAMILY);
	r->type = (int32_t)le32(b + RQ_TYPE);
	r->protocol = (int32_t)le32(b + RQ_PROTOCOL);
	r->port = le16(b + RQ_PORT);
	memcpy(r->addr, b + RQ_ADDR, sizeof r->addr);
	r->scope_id = le32(b + RQ_SCOPE_ID);
	r->backlog = (int32_t)le32(b + RQ_BACKLOG);
	r->tun_flags = le32(b + RQ_TUN_FLAGS);
	r->mtu = le32(b + RQ_MTU);
	r->tun_options = le32(b + RQ_TUN_OPTIONS);
	memcpy(r->addr4, b + RQ_TUN_ADDR4, sizeof r->addr4);
	memcpy(r->addr6, b + RQ_TUN_ADDR6, sizeof r->addr6);
	r->prefix4 = b[RQ_TUN_PREFIX4];
	r->prefix6 = b[RQ_TUN_PREFIX6];
	if (!name_field(b + RQ_IFNAME, sizeof r->ifname, 0, r->ifname) ||
	    !name_field(b + RQ_NETNS, sizeof r->netns, 0, r->netns) ||
	    !name_field(b + RQ_DEVICE, sizeof r->device, 1, r->device))
		return BAD("bad ifname/netns/device name");
	for (size_t i = 0; i < COUNT(parse_table); i++)
		if (parse_table[i].op == r->op) return parse_table[i].parse(b, r, st);
	return BAD("unknown op %u", r->op);
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

/* ---- policy parsing: one function per rule kind ---- */

static int parse_u32(const char *s, uint32_t max, uint32_t *out)
{
	uint64_t v = 0;
	size_t n = strlen(s);
	if (n == 0 || n > 10 || strspn(s, "0123456789") != n) return -1;
	for (size_t i = 0; i < n; i++)
		v = v * 10 + (uint64_t)(s[i] - '0');
	if (v > max) return -1;
	*out = (uint32_t)v;
	return 0;
}

/* N or N-M inside lo..hi. */
static int parse_range(char *s, uint32_t lo, uint32_t hi, uint16_t *first, uint16_t *last)
{
	uint32_t a, b;
	char *dash = strchr(s, '-');
	if (dash) *dash = '\0';
	if (parse_u32(s, hi, &a) || parse_u32(dash ? dash + 1 : s, hi, &b) || a < lo || b < a)
		return -1;
	*first = (uint16_t)a;
	*last = (uint16_t)b;
	return 0;
}

/* ADDR[/LEN]; without /LEN the whole address (one host). strict: /LEN required and
 * the host bits zero, so the rule reads as the network it grants. */
static int parse_net(char *s, int strict, struct gp_net *net)
{
	uint32_t plen;
	char *slash = strchr(s, '/');
	uint8_t masked[16] = { 0 };
	if (slash) *slash = '\0';
	if (inet_pton(AF_INET, s, net->addr) == 1)
		net->family = 4;
	else if (inet_pton(AF_INET6, s, net->addr) == 1)
		net->family = 6;
	else
		return -1;
	plen = net->family == 4 ? 32 : 128;
	if ((strict && !slash) || (slash && parse_u32(slash + 1, plen, &plen))) return -1;
	net->plen = (uint8_t)plen;
	memcpy(masked, net->addr, plen / 8);
	if (plen % 8) masked[plen / 8] = net->addr[plen / 8] & (uint8_t)(0xff00 >> (plen % 8));
	return strict && memcmp(masked, net->addr, 16) ? -1 : 0;
}

/* NAME's third field in a passwd/group style database; lines over 1023 bytes are skipped. */
static int db_lookup(const char *db, size_t len, const char *name, uint32_t *id)
{
	size_t nl = strlen(name);
	for (size_t pos = 0; pos < len;) {
		const char *line = db + pos;
		const char *end = memchr(line, '\n', len - pos);
		size_t ll = end ? (size_t)(end - line) : len - pos;
		char buf[1024], *f2, *f3;
		pos += ll + 1;
		if (ll > 1023 || ll <= nl || memcmp(line, name, nl) || line[nl] != ':') continue;
		memcpy(buf, line, ll);
		buf[ll] = '\0';
		f2 = strchr(buf + nl + 1, ':');
		f3 = f2 ? strchr(f2 + 1, ':') : NULL;
		if (!f3) continue;
		*f3 = '\0';
		return parse_u32(f2 + 1, 4294967294u, id);
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
	int user = !strncmp(t, "user:", 5);
	ru->subj = SUBJ_ANY;
	if (!strcmp(t, "*")) return 0;
	if (!v || (!user && strncmp(t, "group:", 6))) return -1;
	ru->subj = user ? SUBJ_USER : SUBJ_GROUP;
	v++;
	if (!parse_u32(v, 4294967294u, &ru->id)) return 0;
	if (!*v || strlen(v) > 32 || strchr(v, ':')) return -1;
	if (user) return db_lookup(c->passwd, c->plen, v, &ru->id);
	return db_lookup(c->group, c->glen, v, &ru->id);
}

static const struct {
	const char *name;
	uint8_t bits;
} bind_protos[] = { { "tcp", P_TCP }, { "udp", P_UDP }, { "sctp", P_SCTP }, { "any", 7 } };

static const char *parse_bind(char **a, int n, struct gp_rule *ru)
{
	static const char usage[] = "expected: bind PROTOS PORTS [ADDR] [reuse]";
	char *save = NULL;
	if (n > 0 && !strcmp(a[n - 1], "reuse")) {
		ru->reuse = 1;
		n--;
	}
	if (n < 2 || n > 3) return usage;
	for (char *p = strtok_r(a[0], ",", &save); p; p = strtok_r(NULL, ",", &save)) {
		size_t i = 0;
		while (i < COUNT(bind_protos) && strcmp(p, bind_protos[i].name))
			i++;
		if (i == COUNT(bind_protos)) return usage;
		ru->protos |= bind_protos[i].bits;
	}
	if (!ru->protos || parse_range(a[1], 1, 65535, &ru->port_lo, &ru->port_hi)) return usage;
	ru->nnets = n == 3;
	return n == 3 && parse_net(a[2], 0, &ru->nets[0]) ? usage : NULL;
}

static const char *parse_raw(char **a, int n, struct gp_rule *ru)
{
	static const char usage[] = "expected: raw PROTOS";
	char *save = NULL;
	uint32_t v;
	if (n != 1) return usage;
	for (char *p = strtok_r(a[0], ",", &save); p; p = strtok_r(NULL, ",", &save)) {
		if (!strcmp(p, "any")) {
			memset(ru->rawmask, 0xff, sizeof ru->rawmask);
			continue;
		}
		if (!strcmp(p, "icmp"))
			v = 1;
		else if (!strcmp(p, "icmpv6"))
			v = 58;
		else if (parse_u32(p, 255, &v))
			return usage;
		ru->rawmask[v / 8] |= (uint8_t)(1 << (v % 8));
	}
	return zero(ru->rawmask, sizeof ru->rawmask) ? usage : NULL;
}

static const char *parse_packet(char **a, int n, struct gp_rule *ru)
{
	(void)a;
	(void)ru;
	return n ? "expected: packet" : NULL;
}

/* NET[,NET...]: at most GP_MAXNETS networks, each with its prefix length. */
static int parse_nets(char *list, struct gp_rule *ru)
{
	char *save = NULL;
	for (char *p = strtok_r(list, ",", &save); p; p = strtok_r(NULL, ",", &save)) {
		if (ru->nnets == GP_MAXNETS || parse_net(p, 1, &ru->nets[ru->nnets])) return -1;
		ru->nnets++;
	}
	return ru->nnets ? 0 : -1;
}

static const char *parse_tun(char **a, int n, struct gp_rule *ru)
{
	static const char usage[] = "expected: tun PATTERN [net NETS] [mtu N-M]";
	size_t l = n ? strlen(a[0]) : 0;
	if (n < 1 || n % 2 == 0) {
		for (int i = 1; i < n; i++)
			if (!strcmp(a[i], "persist")) return "persist removed (any holder can persist)";
		return usage;
	}
	if (l && a[0][l - 1] == '*') {
		a[0][--l] = '\0';
		ru->prefix_match = 1;
	}
	if ((!l && !ru->prefix_match) || !valid_str(a[0], 15, 0)) return usage;
	memcpy(ru->name, a[0], l + 1);
	for (int i = 1; i + 1 < n; i += 2) {
		if (!strcmp(a[i], "net") && !ru->nnets) {
			if (parse_nets(a[i + 1], ru)) return "expected: net ADDR/LEN[,ADDR/LEN] (max 8)";
		} else if (!strcmp(a[i], "mtu") && !ru->mtu_hi) {
			if (parse_range(a[i + 1], 68, 65535, &ru->mtu_lo, &ru->mtu_hi))
				return "expected: mtu N or N-M within 68-65535";
		} else {
			return usage;
		}
	}
	return NULL;
}

static const char *parse_device(char **a, int n, struct gp_rule *ru)
{
	if (n != 1 || strcmp(a[0], "net/tun")) return "device not in allowlist (net/tun)";
	memcpy(ru->name, a[0], strlen(a[0]) + 1);
	return NULL;
}

static const char *parse_netns(char **a, int n, struct gp_rule *ru)
{
	if (n != 1 || !a[0][0] || !valid_str(a[0], 31, 0)) return "expected: netns NAME";
	memcpy(ru->name, a[0], strlen(a[0]) + 1);
	return NULL;
}

/* ---- printing rules back (--check-policy): one function per rule kind ---- */

struct out {
	char *buf;
	size_t n, o;
	int over;
};

static void emit(struct out *w, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void emit(struct out *w, const char *fmt, ...)
{
	va_list ap;
	int k;
	if (w->over) return;
	va_start(ap, fmt);
	k = vsnprintf(w->buf + w->o, w->n - w->o, fmt, ap);
	va_end(ap);
	if (k < 0 || (size_t)k >= w->n - w->o) {
		w->over = 1;
		return;
	}
	w->o += (size_t)k;
}

static void emit_nets(struct out *w, const struct gp_rule *ru)
{
	char a[INET6_ADDRSTRLEN];
	for (int i = 0; i < ru->nnets; i++) {
		const struct gp_net *net = &ru->nets[i];
		if (!inet_ntop(net->family == 4 ? AF_INET : AF_INET6, net->addr, a, sizeof a)) {
			w->over = 1;
			return;
		}
		emit(w, "%c%s/%u", i ? ',' : ' ', a, net->plen);
	}
}

static void format_bind(struct out *w, const struct gp_rule *ru)
{
	char sep = ' ';
	for (size_t i = 0; i < COUNT(bind_protos) - 1; i++) {
		if (!(ru->protos & bind_protos[i].bits)) continue;
		emit(w, "%c%s", sep, bind_protos[i].name);
		sep = ',';
	}
	emit(w, " %u-%u", ru->port_lo, ru->port_hi);
	emit_nets(w, ru);
	if (ru->reuse) emit(w, " reuse");
}

static void format_raw(struct out *w, const struct gp_rule *ru)
{
	char sep = ' ';
	int all = 1;
	for (size_t i = 0; i < sizeof ru->rawmask; i++)
		all &= ru->rawmask[i] == 0xff;
	if (all) {
		emit(w, " any");
		return;
	}
	for (int v = 0; v < 256; v++) {
		if (!(ru->rawmask[v / 8] >> (v % 8) & 1)) continue;
		emit(w, "%c%d", sep, v);
		sep = ',';
	}
}

static void format_packet(struct out *w, const struct gp_rule *ru)
{
	(void)w;
	(void)ru;
}

static void format_tun(struct out *w, const struct gp_rule *ru)
{
	emit(w, " %s%s", ru->name, ru->prefix_match ? "*" : "");
	if (ru->nnets) emit(w, " net");
	emit_nets(w, ru);
	if (ru->mtu_hi) emit(w, " mtu %u-%u", ru->mtu_lo, ru->mtu_hi);
}

static void format_name(struct out *w, const struct gp_rule *ru)
{
	emit(w, " %s", ru->name);
}

/* ---- authorization: what each rule kind matches ---- */

static int subj_match(const struct gp_rule *ru, const struct gp_ident *id)
{
	if (ru->subj == SUBJ_ANY) return 1;
	if (ru->subj == SUBJ_USER) return ru->id == id->uid;
	for (int i = 0; i < id->ngroups && i < GP_MAXGROUPS; i++)
		if (id->groups[i] == ru->id) return 1;
	return ru->id == id->gid;
}

/* The class a non-raw inet socket binds under; 0 = ICMP datagram (ping) socket, -1 = refused. */
static int bind_class(const struct gp_req *r)
{
	static const struct {
		int family, type, protocol, cls;
	} classes[] = {
		{ 0, TY_STREAM, 0, P_TCP },    { 0, TY_STREAM, 6, P_TCP },
		{ 0, TY_STREAM, 132, P_SCTP }, { 0, TY_SEQPACKET, 0, P_SCTP },
		{ 0, TY_SEQPACKET, 132, P_SCTP }, { 0, TY_DGRAM, 0, P_UDP },
		{ 0, TY_DGRAM, 17, P_UDP },    { FAM_INET, TY_DGRAM, 1, 0 },
		{ FAM_INET6, TY_DGRAM, 58, 0 },
	};
	for (size_t i = 0; i < COUNT(classes); i++)
		if ((!classes[i].family || classes[i].family == r->family) &&
		    classes[i].type == r->type && classes[i].protocol == r->protocol)
			return classes[i].cls;
	return -1;
}

static const char *class_name(int cls)
{
	for (size_t i = 0; i < COUNT(bind_protos) - 1; i++)
		if (bind_protos[i].bits == cls) return bind_protos[i].name;
	return "this";
}

/* The bind address lies inside the rule's network; the wildcard only inside a /0. */
static int match_bind(const struct gp_rule *ru, const struct gp_req *r)
{
	const struct gp_net *net = &ru->nets[0];
	int cls = bind_class(r);
	if (cls <= 0 || !(ru->protos & cls) || r->port < ru->port_lo || r->port > ru->port_hi)
		return 0;
	if (!ru->nnets) return 1;
	if ((net->family == 4) != (r->family == FAM_INET)) return 0;
	if (zero(r->addr, 16)) return net->plen == 0;
	return same_prefix(net->addr, r->addr, net->plen);
}

static int match_reuse(const struct gp_rule *ru, const struct gp_req *r)
{
	return ru->reuse && match_bind(ru, r);
}

static int match_raw(const struct gp_rule *ru, const struct gp_req *r)
{
	return ru->rawmask[r->protocol / 8] >> (r->protocol % 8) & 1;
}

static int match_any(const struct gp_rule *ru, const struct gp_req *r)
{
	(void)ru;
	(void)r;
	return 1;
}

static int match_device(const struct gp_rule *ru, const struct gp_req *r)
{
	return !strcmp(ru->name, r->device);
}

static int match_netns(const struct gp_rule *ru, const struct gp_req *r)
{
	return !strcmp(ru->name, r->netns);
}

/* The device name fits the pattern; an empty name fits when a name can be made from it. */
static int match_tun_name(const struct gp_rule *ru, const struct gp_req *r)
{
	size_t l = strlen(ru->name);
	if (!r->ifname[0]) return !ru->prefix_match || l <= 13;
	if (ru->prefix_match) return !strncmp(r->ifname, ru->name, l);
	return !strcmp(r->ifname, ru->name);
}

/* ---- capabilities each rule kind needs ---- */

static uint64_t caps_bind(const struct gp_rule *ru, int tun_root_only)
{
	(void)tun_root_only;
	return ru->port_lo < 1024 ? 1ull << GCAP_NET_BIND_SERVICE : 0;
}

static uint64_t caps_raw(const struct gp_rule *ru, int tun_root_only)
{
	(void)ru;
	(void)tun_root_only;
	return 1ull << GCAP_NET_RAW;
}

static uint64_t caps_tun(const struct gp_rule *ru, int tun_root_only)
{
	(void)ru;
	return 1ull << GCAP_NET_ADMIN | (uint64_t)!!tun_root_only << GCAP_DAC_OVERRIDE;
}

static uint64_t caps_device(const struct gp_rule *ru, int tun_root_only)
{
	(void)ru;
	return (uint64_t)!!tun_root_only << GCAP_DAC_OVERRIDE;
}

static uint64_t caps_netns(const struct gp_rule *ru, int tun_root_only)
{
	(void)ru;
	(void)tun_root_only;
	return 1ull << GCAP_SYS_ADMIN;
}

/* Every rule kind, by R_* number: its keyword, parser, printer, matcher and capabilities. */
static const struct kind {
	const char *name;
	const char *(*parse)(char **args, int n, struct gp_rule *ru);
	void (*format)(struct out *w, const struct gp_rule *ru);
	int (*match)(const struct gp_rule *ru, const struct gp_req *r);
	uint64_t (*caps)(const struct gp_rule *ru, int tun_root_only);
} kinds[] = {
	[R_BIND] = { "bind", parse_bind, format_bind, match_bind, caps_bind },
	[R_RAW] = { "raw", parse_raw, format_raw, match_raw, caps_raw },
	[R_PACKET] = { "packet", parse_packet, format_packet, match_any, caps_raw },
	[R_TUN] = { "tun", parse_tun, format_tun, match_tun_name, caps_tun },
	[R_DEVICE] = { "device", parse_device, format_name, match_device, caps_device },
	[R_NETNS] = { "netns", parse_netns, format_name, match_netns, caps_netns },
};

/* One policy line; NULL when fine, else what is wrong. */
static const char *parse_line(char *line, const struct dbs *c, struct gp_policy *p)
{
	char *t[8], *save = NULL;
	int n = 0;
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
	p->nrules++; /* an error below refuses the whole policy, this rule with it */
	for (uint8_t k = R_BIND; k < COUNT(kinds); k++) {
		if (strcmp(t[2], kinds[k].name)) continue;
		ru->kind = k;
		return kinds[k].parse(t + 3, n - 3, ru);
	}
	return "unknown rule kind";
}

void gp_parse_policy(const char *text, size_t len, const char *passwd, size_t plen,
                     const char *group, size_t glen, struct gp_policy *p)
{
	const struct dbs c = { passwd, group, plen, glen };
	const char *why = len > GP_POLICY_MAX ? "larger than 64 KiB" : NULL;
	int lineno = 0;
	p->nrules = 0;
	p->broken = 0;
	p->why[0] = '\0';
	for (size_t pos = 0; !why && pos < len; lineno++) {
		const char *s = text + pos;
		const char *end = memchr(s, '\n', len - pos);
		size_t ll = end ? (size_t)(end - s) : len - pos;
		char line[256];
		pos += ll + 1;
		if (ll > 255) {
			why = "line longer than 255 bytes";
		} else if (memchr(s, '\0', ll)) {
			why = "NUL byte";
		} else {
			memcpy(line, s, ll);
			line[ll] = '\0';
			why = parse_line(line, &c, p);
		}
	}
	if (why) {
		p->broken = 1;
		p->nrules = 0;
		snprintf(p->why, sizeof p->why, "policy line %u: %.40s", (unsigned)lineno % 100000u, why);
	}
}

/* ---- authorization: one function per op ---- */

static int has_rule(const struct gp_policy *p, const struct gp_ident *id, int kind,
                    int (*match)(const struct gp_rule *ru, const struct gp_req *r),
                    const struct gp_req *r)
{
	for (const struct gp_rule *ru = p->rules; ru < p->rules + p->nrules; ru++)
		if (ru->kind == kind && subj_match(ru, id) && match(ru, r)) return 1;
	return 0;
}

/* The rule grants a network of this family that holds addr/plen whole: the
 * address inside it and the prefix no wider, so the connected route stays inside. */
static int net_grants(const struct gp_rule *ru, int family, const uint8_t *addr, unsigned plen)
{
	for (int i = 0; i < ru->nnets; i++)
		if (ru->nets[i].family == family && ru->nets[i].plen <= plen &&
		    same_prefix(ru->nets[i].addr, addr, ru->nets[i].plen))
			return 1;
	return 0;
}

/* What of the requested configuration the rule does not grant; NULL when all of it. */
static const char *tun_misfit(const struct gp_rule *ru, const struct gp_req *r, char *buf, size_t n)
{
	char a[INET6_ADDRSTRLEN] = "?";
	if (r->mtu && (r->mtu < ru->mtu_lo || r->mtu > ru->mtu_hi)) {
		snprintf(buf, n, "mtu %u", r->mtu);
		return buf;
	}
	if (r->prefix4 && !net_grants(ru, 4, r->addr4, r->prefix4)) {
		inet_ntop(AF_INET, r->addr4, a, sizeof a);
		snprintf(buf, n, "address %s/%u", a, r->prefix4);
		return buf;
	}
	if (r->prefix6 && !net_grants(ru, 6, r->addr6, r->prefix6)) {
		inet_ntop(AF_INET6, r->addr6, a, sizeof a);
		snprintf(buf, n, "address %s/%u", a, r->prefix6);
		return buf;
	}
	return NULL;
}

/* No name: the rule names the device; a prefix pattern lets the kernel number it
 * (PATTERN%d; tun%d or tap%d for '*'). */
static void name_tun(const struct gp_rule *ru, struct gp_req *r)
{
	const char *stem = ru->name;
	if (!ru->prefix_match) {
		memcpy(r->ifname, ru->name, sizeof r->ifname);
		return;
	}
	if (!stem[0]) stem = (r->tun_flags & 3) == TF_TAP ? "tap" : "tun";
	snprintf(r->ifname, sizeof r->ifname, "%.13s%%d", stem); /* the stem fits: match_tun_name */
}

static int authorize_tun(const struct gp_policy *p, const struct gp_ident *id, struct gp_req *r,
                         struct gp_status *st)
{
	char what[64];
	const char *misfit = NULL;
	const char *name = r->ifname[0] ? r->ifname : "(any name)";
	for (const struct gp_rule *ru = p->rules; ru < p->rules + p->nrules; ru++) {
		if (ru->kind != R_TUN || !subj_match(ru, id) || !match_tun_name(ru, r)) continue;
		misfit = tun_misfit(ru, r, what, sizeof what);
		if (misfit) continue;
		if (!r->ifname[0]) name_tun(ru, r);
		return 0;
	}
	if (misfit) return DENY("policy: tun %s %s not granted", name, misfit);
	return DENY("policy: tun %s not granted", name);
}

static int authorize_socket(const struct gp_policy *p, const struct gp_ident *id,
                            struct gp_req *r, struct gp_status *st)
{
	int cls = bind_class(r);
	int reuse = r->flags & (F_REUSEADDR | F_REUSEPORT);
	if (r->family == FAM_PACKET) {
		if (has_rule(p, id, R_PACKET, match_any, r)) return 0;
		return DENY("policy: packet sockets need an entry");
	}
	if (r->family != FAM_INET && r->family != FAM_INET6)
		return gp_fail(st, EAFNOSUPPORT, ST_POLICY, "family %d not allowed", (int)r->family);
	/* A datagram socket bound with SO_REUSEADDR shares the port with another user's
	 * socket that has it too, and takes the datagrams sent to its own address. */
	if (reuse && r->type != TY_STREAM && r->type != TY_SEQPACKET &&
	    !has_rule(p, id, R_BIND, match_reuse, r))
		return DENY("policy: reuse on %s port %u not granted", class_name(cls), r->port);
	if (r->type == TY_RAW) {
		if (has_rule(p, id, R_RAW, match_raw, r)) return 0;
		return DENY("policy: raw protocol %d not granted", r->protocol);
	}
	if (cls < 0)
		return gp_fail(st, EPROTONOSUPPORT, ST_POLICY, "protocol %d not allowed for type %d",
		               (int)r->protocol, (int)r->type);
	if (cls && r->port && r->port < 1024 && !has_rule(p, id, R_BIND, match_bind, r))
		return DENY("policy: %s port %u not granted", class_name(cls), r->port);
	return 0;
}

static int authorize_device(const struct gp_policy *p, const struct gp_ident *id,
                            struct gp_req *r, struct gp_status *st)
{
	if (strcmp(r->device, "net/tun")) return DENY("device not in the helper's allowlist");
	if (has_rule(p, id, R_DEVICE, match_device, r)) return 0;
	return DENY("policy: device %s not granted", r->device);
}

static int authorize_hello(const struct gp_policy *p, const struct gp_ident *id,
                           struct gp_req *r, struct gp_status *st)
{
	(void)p;
	(void)id;
	(void)r;
	(void)st;
	return 0;
}

static const struct {
	uint16_t op;
	int (*authorize)(const struct gp_policy *p, const struct gp_ident *id, struct gp_req *r,
	                 struct gp_status *st);
} authorize_table[] = {
	{ OP_SOCKET, authorize_socket },
	{ OP_TUN, authorize_tun },
	{ OP_DEVICE, authorize_device },
	{ OP_HELLO, authorize_hello },
};

int gp_authorize(const struct gp_policy *p, const struct gp_ident *id, struct gp_req *r,
                 struct gp_status *st)
{
	if (p->broken) return gp_fail(st, EACCES, ST_POLICY, "%s", p->why);
	if (r->netns[0] && !has_rule(p, id, R_NETNS, match_netns, r))
		return DENY("policy: netns %s not granted", r->netns);
	for (size_t i = 0; i < COUNT(authorize_table); i++)
		if (authorize_table[i].op == r->op) return authorize_table[i].authorize(p, id, r, st);
	return gp_fail(st, EINVAL, ST_POLICY, "unknown op %u", r->op);
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
	return has_rule(p, id, R_NETNS, match_netns, &r) ? 0 : DENY("policy: netns %s not granted", r.netns);
}

uint64_t gp_needed_caps(const struct gp_policy *p, const struct gp_ident *id, int tun_root_only)
{
	uint64_t caps = 0;
	if (p->broken) return 0;
	for (const struct gp_rule *ru = p->rules; ru < p->rules + p->nrules; ru++)
		if (subj_match(ru, id) && ru->kind >= R_BIND && ru->kind < COUNT(kinds))
			caps |= kinds[ru->kind].caps(ru, tun_root_only);
	return caps;
}

/* The rule in policy syntax with numeric ids, for --check-policy. */
int gp_format_rule(const struct gp_rule *ru, char *buf, size_t n)
{
	struct out w = { buf, n, 0, n == 0 };
	if (ru->kind < R_BIND || ru->kind >= COUNT(kinds)) return -1;
	emit(&w, "allow ");
	if (ru->subj == SUBJ_ANY)
		emit(&w, "*");
	else
		emit(&w, "%s:%u", ru->subj == SUBJ_USER ? "user" : "group", ru->id);
	emit(&w, " %s", kinds[ru->kind].name);
	kinds[ru->kind].format(&w, ru);
	return w.over ? -1 : 0;
}
