/* test_parse.c - unit tests of the pure half (gp.c): every line of vectors.txt
 * through the request parser and the default policy, then the policy parser
 * and authorization over a table. Built plain and with ASan/UBSan.
 * Usage: test_parse vectors.txt   (exit 0 = all passed) */
#define _GNU_SOURCE
#include "gp.h"

#include <arpa/inet.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int failures, checks;

#define CHECK(cond, ...)                                          \
	do {                                                      \
		checks++;                                         \
		if (!(cond)) {                                    \
			failures++;                               \
			fprintf(stderr, "FAIL %s:%d: ", __FILE__, __LINE__); \
			fprintf(stderr, __VA_ARGS__);             \
			fputc('\n', stderr);                      \
		}                                                 \
	} while (0)

static const struct { const char *name; int err; } errnos[] = {
	{ "OK", 0 }, { "EINVAL", EINVAL }, { "EPROTO", EPROTO }, { "EMSGSIZE", EMSGSIZE },
	{ "EPERM", EPERM }, { "EACCES", EACCES }, { "EAFNOSUPPORT", EAFNOSUPPORT },
	{ "EPROTONOSUPPORT", EPROTONOSUPPORT }, { "ENOENT", ENOENT }, { "EBUSY", EBUSY },
};
static const char *const stages[] = { "none", "parse", "policy", "open", "bind",
                                      "configure", "namespace", "internal" };

static int errno_of(const char *name)
{
	for (size_t i = 0; i < sizeof errnos / sizeof errnos[0]; i++)
		if (!strcmp(errnos[i].name, name))
			return errnos[i].err;
	return -1;
}

static int stage_of(const char *name)
{
	for (int i = 0; i < 8; i++)
		if (!strcmp(stages[i], name))
			return i;
	return -1;
}

static const char passwd[] =
	"root:x:0:0:root:/root:/bin/sh\n"
	"alice:x:1001:1001::/home/alice:/bin/sh\n"
	"alic:x:1002:1002::/:/bin/sh\n"
	"broken-line-without-fields\n"
	"carol:x:notanumber:1::/:/bin/sh\n"
	"dave:x:1004:1004::/:/bin/sh";
static const char group[] = "lab:x:500:alice\nwheel:x:10:\n";

static void parse_policy(const char *text, struct gp_policy *p)
{
	gp_parse_policy(text, strlen(text), passwd, strlen(passwd), group, strlen(group), p);
}

static int run_vectors(const char *path, const struct gp_policy *defaults)
{
	static char line[4096];
	static uint8_t buf[1024];
	int n = 0;
	FILE *f = fopen(path, "r");
	if (!f) {
		perror(path);
		return -1;
	}
	while (fgets(line, sizeof line, f)) {
		char name[128], hex[2100], ename[32], sname[32];
		if (line[0] == '#' || line[0] == '\n')
			continue;
		CHECK(sscanf(line, "%127s %2099s %31s %31s", name, hex, ename, sname) == 4, "bad line %s", line);
		size_t len = strlen(hex) / 2;
		for (size_t i = 0; i < len && i < sizeof buf; i++)
			CHECK(sscanf(hex + 2 * i, "%2hhx", &buf[i]) == 1, "%s: bad hex", name);
		struct gp_req r;
		struct gp_status st;
		struct gp_ident id = { .uid = 1000, .gid = 1000 };
		if (!gp_parse_request(buf, len, &r, &st) && r.op != OP_HELLO)
			gp_authorize(defaults, &id, &r, &st);
		CHECK(st.err == errno_of(ename) && st.stage == stage_of(sname),
		      "%s: got errno %d stage %d (%s), want %s %s", name, st.err, st.stage, st.detail, ename, sname);
		CHECK(strnlen(st.detail, GP_DETAIL) < GP_DETAIL && st.detail[0], "%s: detail", name);
		if (len >= 12)
			CHECK(r.id == (uint32_t)(buf[8] | buf[9] << 8 | buf[10] << 16 | (uint32_t)buf[11] << 24),
			      "%s: id not echoed", name);
		n++;
	}
	fclose(f);
	return n;
}

static struct gp_req sock(int family, int type, int proto, int port, const char *addr)
{
	struct gp_req r = { .op = OP_SOCKET, .family = family, .type = type, .protocol = proto,
	                    .port = (uint16_t)port };
	if (addr)
		memcpy(r.addr, addr, family == 2 ? 4 : 16);
	return r;
}

static int authz(const struct gp_policy *p, const struct gp_ident *id, struct gp_req r)
{
	struct gp_status st = { 0 };
	return gp_authorize(p, id, &r, &st);
}

static void test_policies(void)
{
	static const struct { const char *text; int broken, nrules; } cases[] = {
		{ "", 0, 0 },
		{ "# only a comment\n\n   \t\n", 0, 0 },
		{ gp_default_policy, 0, 1 },
		{ "allow * bind tcp 80", 0, 1 },
		{ "allow * bind tcp,udp,sctp 1-1023 # comment", 0, 1 },
		{ "allow\t*\tbind\tudp\t53\t192.0.2.10\r\n", 0, 1 },
		{ "allow * bind tcp 53 192.0.2.0/24", 0, 1 },
		{ "allow * bind tcp 53 ::/0", 0, 1 },
		{ "allow * bind tcp 53 192.0.2.0/33", 1, 0 },
		{ "allow * bind tcp 53 2001:db8::/129", 1, 0 },
		{ "allow * bind tcp 53 not-an-address", 1, 0 },
		{ "allow * bind tcp 0", 1, 0 },
		{ "allow * bind tcp 80-79", 1, 0 },
		{ "allow * bind tcp 65536", 1, 0 },
		{ "allow * bind tcp 1-", 1, 0 },
		{ "allow * bind foo 80", 1, 0 },
		{ "allow * bind tcp", 1, 0 },
		{ "allow * raw any", 0, 1 },
		{ "allow * raw icmp,icmpv6,6,17,255", 0, 1 },
		{ "allow * raw 256", 1, 0 },
		{ "allow * raw icmpx", 1, 0 },
		{ "allow * raw", 1, 0 },
		{ "allow user:alice packet", 0, 1 },
		{ "allow user:alic packet", 0, 1 },
		{ "allow user:al packet", 1, 0 },
		{ "allow user:carol packet", 1, 0 },
		{ "allow user:dave packet", 0, 1 },
		{ "allow user:mallory packet", 1, 0 },
		{ "allow user:1001 packet", 0, 1 },
		{ "allow user:4294967295 packet", 1, 0 },
		{ "allow user: packet", 1, 0 },
		{ "allow group:lab tun vpn* persist", 1, 0 },
		{ "allow group:lab tun vpn* net 10.9.0.0/24,fd00:9::/64 mtu 1280-9000", 0, 1 },
		{ "allow * tun gp* mtu 1500 net 10.0.0.0/8", 0, 1 },
		{ "allow * tun gp* net 0.0.0.0/0", 0, 1 },
		{ "allow * tun gp* net 10.9.0.1/24", 1, 0 },
		{ "allow * tun gp* net 10.9.0.0", 1, 0 },
		{ "allow * tun gp* net 10.9.0.0/33", 1, 0 },
		{ "allow * tun gp* net fd00::/129", 1, 0 },
		{ "allow * tun gp* net ,", 1, 0 },
		{ "allow * tun gp* net 1.0.0.0/8,2.0.0.0/8,3.0.0.0/8,4.0.0.0/8,5.0.0.0/8,"
		  "6.0.0.0/8,7.0.0.0/8,8.0.0.0/8", 0, 1 },
		{ "allow * tun gp* net 1.0.0.0/8,2.0.0.0/8,3.0.0.0/8,4.0.0.0/8,5.0.0.0/8,"
		  "6.0.0.0/8,7.0.0.0/8,8.0.0.0/8,9.0.0.0/8", 1, 0 },
		{ "allow * tun gp* net 10.0.0.0/8 net 11.0.0.0/8", 1, 0 },
		{ "allow * tun gp* mtu 67-1500", 1, 0 },
		{ "allow * tun gp* mtu 1500-1400", 1, 0 },
		{ "allow * tun gp* mtu 1500 mtu 1500", 1, 0 },
		{ "allow * tun gp* mtu", 1, 0 },
		{ "allow * tun gp* net", 1, 0 },
		{ "allow * bind udp 53 reuse", 0, 1 },
		{ "allow * bind udp 53 127.0.0.1 reuse", 0, 1 },
		{ "allow * bind udp 53 127.0.0.1 reuse reuse", 1, 0 },
		{ "allow * bind udp 53 reuse 127.0.0.1", 1, 0 },
		{ "allow group:wheel packet", 0, 1 },
		{ "allow group:alice packet", 1, 0 },
		{ "allow * tun *", 0, 1 },
		{ "allow * tun vpn0", 0, 1 },
		{ "allow * tun vpn0 forever", 1, 0 },
		{ "allow * tun abcdefghijklmnop", 1, 0 },
		{ "allow * tun ../x", 1, 0 },
		{ "allow * tun", 1, 0 },
		{ "allow * device net/tun", 0, 1 },
		{ "allow * device mem", 1, 0 },
		{ "allow * device ../net/tun", 1, 0 },
		{ "allow * device /dev/net/tun", 1, 0 },
		{ "allow * netns lab", 0, 1 },
		{ "allow * netns ../x", 1, 0 },
		{ "allow * netns /run/netns/lab", 1, 0 },
		{ "allow * packet extra", 1, 0 },
		{ "deny * packet", 1, 0 },
		{ "allow", 1, 0 },
		{ "allow * unknownkind", 1, 0 },
		{ "allow someone packet", 1, 0 },
		{ "allow * packet\nallow * bogus", 1, 0 },
		{ "allow * raw 1 2 3 4 5 6 7 8 9", 1, 0 },
	};
	struct gp_policy *p = calloc(1, sizeof *p);
	char buf[1200];
	for (size_t i = 0; p && i < sizeof cases / sizeof cases[0]; i++) {
		parse_policy(cases[i].text, p);
		CHECK(p->broken == cases[i].broken && p->nrules == cases[i].nrules,
		      "policy %zu '%s': broken %d rules %d (%s)", i, cases[i].text, p->broken, p->nrules, p->why);
		for (int j = 0; j < p->nrules; j++)
			CHECK(!gp_format_rule(&p->rules[j], buf, sizeof buf), "format %zu", i);
	}
	/* Limits: 256 rules fit, 257 do not; a 256-byte line, a NUL, a 64 KiB + 1 file. */
	static char big[GP_POLICY_MAX + 2];
	big[0] = '\0';
	for (int i = 0; i < 256; i++)
		strcat(big, "allow * packet\n");
	parse_policy(big, p);
	CHECK(!p->broken && p->nrules == 256, "256 rules");
	strcat(big, "allow * packet\n");
	parse_policy(big, p);
	CHECK(p->broken && strstr(p->why, "256"), "257 rules: %s", p->why);
	memset(big, ' ', 256);
	big[256] = '\0';
	parse_policy(big, p);
	CHECK(p->broken, "256-byte line");
	gp_parse_policy("allow * packet\0x", 16, passwd, strlen(passwd), group, strlen(group), p);
	CHECK(p->broken, "NUL byte");
	memset(big, '\n', GP_POLICY_MAX + 1);
	gp_parse_policy(big, GP_POLICY_MAX + 1, "", 0, "", 0, p);
	CHECK(p->broken, "over 64 KiB");
	/* Round trip: the formatted rules parse back to the same rules. */
	parse_policy("allow group:500 bind tcp,udp 53 192.0.2.0/24\nallow user:7 raw 1,58\n"
	             "allow * raw any\nallow * tun vpn* net 10.0.0.0/8,fd00::/8 mtu 1280-1500\n"
	             "allow * netns lab\nallow * bind udp 53-54 ::1 reuse\nallow * tun x\n"
	             "allow * device net/tun\nallow * packet\nallow * tun * mtu 1400\n", p);
	CHECK(!p->broken && p->nrules == 10, "round trip policy: %s", p->why);
	struct gp_policy *q = calloc(1, sizeof *q);
	buf[0] = '\0';
	static char text[8192];
	text[0] = '\0';
	for (int j = 0; q && j < p->nrules; j++) {
		CHECK(!gp_format_rule(&p->rules[j], buf, sizeof buf), "format");
		strcat(strcat(text, buf), "\n");
	}
	if (q) {
		parse_policy(text, q);
		CHECK(q->nrules == p->nrules && !memcmp(q->rules, p->rules, sizeof p->rules[0] * (size_t)p->nrules),
		      "round trip:\n%s", text);
	}
	free(q);
	free(p);
}

static struct gp_req tun_req(const char *name, const char *a4, int p4, const char *a6, int p6,
                             uint32_t mtu)
{
	struct gp_req t = { .op = OP_TUN, .tun_flags = TF_TUN, .mtu = mtu, .prefix4 = (uint8_t)p4,
	                    .prefix6 = (uint8_t)p6 };
	memcpy(t.ifname, name, strlen(name) + 1);
	if (a4) CHECK(inet_pton(AF_INET, a4, t.addr4) == 1, "%s", a4);
	if (a6) CHECK(inet_pton(AF_INET6, a6, t.addr6) == 1, "%s", a6);
	return t;
}

/* Finding 1: an address (so its connected route) and an MTU only inside what a rule names. */
static void test_tun_config(const struct gp_policy *p, const struct gp_ident *alice,
                            const struct gp_ident *bob)
{
	struct gp_status st;
	struct gp_req t;
	CHECK(authz(p, bob, tun_req("gp1", "128.0.0.1", 1, NULL, 0, 0)) == EPERM, "bob hijack v4");
	CHECK(authz(p, bob, tun_req("gp0", NULL, 0, "2000::1", 3, 0)) == EPERM, "bob hijack v6");
	CHECK(authz(p, bob, tun_req("gp0", "10.9.0.1", 24, NULL, 0, 0)) == EPERM, "bob: no net");
	CHECK(authz(p, bob, tun_req("gp0", NULL, 0, NULL, 0, 1400)) == EPERM, "bob: no mtu");
	CHECK(authz(p, alice, tun_req("vpn0", "10.9.0.1", 24, "fd00:9::1", 64, 1400)) == 0, "inside");
	CHECK(authz(p, alice, tun_req("vpn0", "10.9.0.77", 32, "fd00:9::5", 128, 0)) == 0, "narrower");
	CHECK(authz(p, alice, tun_req("vpn0", "10.9.0.1", 23, NULL, 0, 0)) == EPERM, "wider v4");
	CHECK(authz(p, alice, tun_req("vpn0", "10.9.1.1", 24, NULL, 0, 0)) == EPERM, "outside v4");
	CHECK(authz(p, alice, tun_req("vpn0", NULL, 0, "fd00:9::1", 63, 0)) == EPERM, "wider v6");
	CHECK(authz(p, alice, tun_req("vpn0", NULL, 0, "fd00:8::1", 64, 0)) == EPERM, "outside v6");
	CHECK(authz(p, alice, tun_req("vpn0", "128.0.0.1", 1, NULL, 0, 0)) == EPERM, "hijack v4");
	CHECK(authz(p, alice, tun_req("vpn0", NULL, 0, NULL, 0, 1279)) == EPERM, "mtu below");
	CHECK(authz(p, alice, tun_req("vpn0", NULL, 0, NULL, 0, 9001)) == EPERM, "mtu above");
	CHECK(authz(p, alice, tun_req("vpn0", NULL, 0, NULL, 0, 9000)) == 0, "mtu top");
	t = tun_req("vpn0", "128.0.0.1", 1, NULL, 0, 0);
	CHECK(gp_authorize(p, alice, &t, &st) == EPERM && strstr(st.detail, "128.0.0.1/1"),
	      "the detail names the address: %s", st.detail);
	t = tun_req("", "10.9.0.1", 24, NULL, 0, 0);
	CHECK(!gp_authorize(p, alice, &t, &st) && !strcmp(t.ifname, "vpn%d"), "empty name -> %s",
	      t.ifname);
	t = tun_req("", "10.9.0.1", 24, NULL, 0, 0);
	CHECK(gp_authorize(p, bob, &t, &st) == EPERM, "bob: no rule names an address");
	/* Attach: a name the rules grant; configuration was refused by the parser. */
	t = tun_req("gp7", NULL, 0, NULL, 0, 0);
	t.tun_options = T_ATTACH;
	CHECK(authz(p, bob, t) == 0, "bob attach gp7");
	memcpy(t.ifname, "eth0", 5);
	CHECK(authz(p, bob, t) == EPERM, "bob attach eth0");
}

/* Finding 5: SO_REUSEADDR/SO_REUSEPORT on a datagram or raw socket only with `reuse`. */
static void test_reuse(void)
{
	static const char lo[4] = { 127, 0, 0, 1 }, other[4] = { 127, 0, 0, 2 };
	static const struct {
		int type, proto, port;
		const char *addr;
		uint16_t flags;
		int want;
		const char *what;
	} cases[] = {
		{ 2, 17, 80, lo, 0, 0, "udp 80" },
		{ 2, 17, 80, lo, F_REUSEADDR, EPERM, "udp 80 reuseaddr" },
		{ 2, 17, 80, lo, F_REUSEPORT, EPERM, "udp 80 reuseport" },
		{ 1, 6, 80, lo, F_REUSEADDR | F_REUSEPORT, 0, "tcp 80 reuse: no listener is shared" },
		{ 2, 17, 53, lo, F_REUSEADDR, 0, "udp 53 reuse granted" },
		{ 2, 17, 53, other, F_REUSEADDR, EPERM, "udp 53 reuse at another address" },
		{ 2, 17, 8080, NULL, F_REUSEADDR, EPERM, "udp 8080 reuse: no rule names it" },
		{ 3, 1, 0, NULL, F_REUSEADDR, EPERM, "raw icmp reuse" },
		{ 2, 1, 0, NULL, F_REUSEPORT, EPERM, "ping socket reuse" },
	};
	struct gp_policy *p = calloc(1, sizeof *p);
	const struct gp_ident bob = { 1003, 1003, 0, { 0 } };
	if (!p) return;
	parse_policy("allow * bind udp,tcp 80\nallow * bind udp 53 127.0.0.1 reuse\n"
	             "allow * raw icmp\n", p);
	CHECK(!p->broken, "reuse policy: %s", p->why);
	for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
		struct gp_req r = sock(2, cases[i].type, cases[i].proto, cases[i].port, cases[i].addr);
		r.flags = cases[i].flags;
		CHECK(authz(p, &bob, r) == cases[i].want, "%s", cases[i].what);
	}
	free(p);
}

static void test_authorize(void)
{
	struct gp_policy *p = calloc(1, sizeof *p);
	if (!p)
		return;
	const char in4[4] = { (char)192, 0, 2, 7 }, out4[4] = { (char)192, 0, 3, 1 };
	const struct gp_ident alice = { 1001, 1001, 1, { 500 } }, bob = { 1003, 1003, 0, { 0 } };
	parse_policy("allow user:alice packet\nallow group:lab tun vpn* net 10.9.0.0/24,fd00:9::/64 mtu 1280-9000\n"
	             "allow * bind udp 53 192.0.2.0/24\nallow group:500 netns lab\n"
	             "allow * device net/tun\nallow * tun gp*\nallow user:alice raw 6\n", p);
	CHECK(!p->broken, "policy: %s", p->why);
	CHECK(authz(p, &alice, sock(17, 3, 3, 0, NULL)) == 0, "alice packet");
	CHECK(authz(p, &bob, sock(17, 3, 3, 0, NULL)) == EPERM, "bob packet");
	CHECK(authz(p, &alice, sock(2, 3, 6, 0, NULL)) == 0, "alice raw tcp");
	CHECK(authz(p, &alice, sock(2, 3, 1, 0, NULL)) == EPERM, "alice raw icmp not granted");
	CHECK(authz(p, &bob, sock(2, 2, 17, 53, in4)) == 0, "udp 53 inside prefix");
	CHECK(authz(p, &bob, sock(2, 2, 17, 53, out4)) == EPERM, "udp 53 outside prefix");
	CHECK(authz(p, &bob, sock(2, 2, 17, 53, NULL)) == EPERM, "udp 53 wildcard");
	CHECK(authz(p, &bob, sock(2, 1, 6, 53, in4)) == EPERM, "tcp 53 not granted");
	CHECK(authz(p, &bob, sock(10, 2, 17, 53, NULL)) == EPERM, "udp6 53 not granted");
	CHECK(authz(p, &bob, sock(2, 2, 17, 8080, NULL)) == 0, "unprivileged port");
	CHECK(authz(p, &bob, sock(2, 2, 1, 0, NULL)) == 0, "ping socket");
	struct gp_req t = { .op = OP_TUN, .tun_flags = TF_TUN, .tun_options = T_PERSIST };
	memcpy(t.ifname, "vpn3", 5);
	CHECK(authz(p, &alice, t) == 0, "alice tun vpn3 persist");
	CHECK(authz(p, &bob, t) == EPERM, "bob tun vpn3");
	memcpy(t.ifname, "gp1", 4);
	CHECK(authz(p, &bob, t) == 0, "bob tun gp1 persist: the holder could set it anyway");
	t.tun_options = 0;
	CHECK(authz(p, &bob, t) == 0, "bob tun gp1");
	test_tun_config(p, &alice, &bob);
	memset(t.ifname, 0, sizeof t.ifname);
	struct gp_status st;
	CHECK(!gp_authorize(p, &bob, &t, &st) && !strcmp(t.ifname, "gp%d"), "bob empty name -> %s", t.ifname);
	memset(t.ifname, 0, sizeof t.ifname);
	CHECK(!gp_authorize(p, &alice, &t, &st) && !strcmp(t.ifname, "vpn%d"), "alice empty -> %s", t.ifname);
	struct gp_req n = sock(2, 2, 17, 8080, NULL);
	memcpy(n.netns, "lab", 4);
	CHECK(authz(p, &alice, n) == 0, "alice netns lab");
	CHECK(authz(p, &bob, n) == EPERM, "bob netns lab");
	memcpy(n.netns, "lab2", 5);
	CHECK(authz(p, &alice, n) == EPERM, "alice netns lab2");
	/* --netns NAME: the same name rules as the field, the same grant. */
	CHECK(gp_authorize_netns(p, &alice, "lab", &st) == 0, "alice --netns lab");
	CHECK(gp_authorize_netns(p, &bob, "lab", &st) == EPERM && st.stage == ST_POLICY, "bob --netns");
	CHECK(gp_authorize_netns(p, &alice, "lab2", &st) == EPERM, "alice --netns lab2");
	static const char *const bad_ns[] = { "", ".", "..", "../lab", "/run/netns/lab", "-lab",
	                                      "la b", "lab\xff", "0123456789abcdef0123456789abcdef" };
	for (size_t i = 0; i < sizeof bad_ns / sizeof bad_ns[0]; i++)
		CHECK(gp_authorize_netns(p, &alice, bad_ns[i], &st) == EINVAL && st.stage == ST_PARSE,
		      "--netns '%s' refused as a bad name", bad_ns[i]);
	struct gp_req d = { .op = OP_DEVICE };
	memcpy(d.device, "net/tun", 8);
	CHECK(authz(p, &bob, d) == 0, "device net/tun");
	memcpy(d.device, "net/tap", 8);
	CHECK(authz(p, &bob, d) == EPERM, "device net/tap");
	uint64_t caps = gp_needed_caps(p, &alice, 1);
	CHECK(caps == (1ull << GCAP_NET_RAW | 1ull << GCAP_NET_ADMIN | 1ull << GCAP_SYS_ADMIN |
	               1ull << GCAP_NET_BIND_SERVICE | 1ull << GCAP_DAC_OVERRIDE), "alice caps %llx",
	      (unsigned long long)caps);
	caps = gp_needed_caps(p, &bob, 0);
	CHECK(caps == (1ull << GCAP_NET_ADMIN | 1ull << GCAP_NET_BIND_SERVICE), "bob caps %llx",
	      (unsigned long long)caps);
	parse_policy("allow * tun *\n", p);
	memset(t.ifname, 0, sizeof t.ifname);
	t.tun_flags = TF_TAP;
	CHECK(!gp_authorize(p, &bob, &t, &st) && !strcmp(t.ifname, "tap%d"), "'*' tap -> %s", t.ifname);
	parse_policy("allow * tun abcdefghijklmn*\n", p);
	memset(t.ifname, 0, sizeof t.ifname);
	CHECK(gp_authorize(p, &bob, &t, &st) == EPERM, "14-char prefix cannot take %%d");
	parse_policy("allow * bogus\n", p);
	CHECK(authz(p, &bob, sock(2, 2, 17, 8080, NULL)) == EACCES, "broken policy denies all");
	CHECK(gp_needed_caps(p, &bob, 1) == 0, "broken policy needs no caps");
	free(p);
}

static void test_reply(void)
{
	uint8_t out[GP_REP_SIZE];
	struct gp_status st;
	gp_fail(&st, EPERM, ST_POLICY, "%s", "a detail that is much longer than sixty bytes, to be cut off cleanly");
	gp_put_reply(out, 0x01020304, &st, "tun0");
	CHECK(!memcmp(out, "GPRP\1\0\x60\0\4\3\2\1\1\0\0\0\2\0\0\0tun0\0", 25), "reply header");
	CHECK(out[GP_REP_SIZE - 1] == 0 && strlen((char *)out + 36) == GP_DETAIL - 1, "detail bounded");
}

int main(int argc, char **argv)
{
	struct gp_policy *defaults = calloc(1, sizeof *defaults);
	if (argc != 2 || !defaults) {
		fprintf(stderr, "usage: %s vectors.txt\n", argv[0]);
		return 2;
	}
	gp_parse_policy(gp_default_policy, strlen(gp_default_policy), "", 0, "", 0, defaults);
	int n = run_vectors(argv[1], defaults);
	CHECK(n >= 25, "only %d vectors", n);
	test_policies();
	test_authorize();
	test_reuse();
	test_reply();
	free(defaults);
	printf("test_parse: %d vectors, %d checks, %d failures\n", n, checks, failures);
	return failures ? 1 : 0;
}
