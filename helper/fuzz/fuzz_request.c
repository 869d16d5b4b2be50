/* fuzz_request.c - libFuzzer harness: any bytes through the request parser and,
 * when they parse, authorization under the default policy and a rich one; the
 * same bytes as a --netns argument.
 * Checks the invariants the privileged side relies on. */
#define _GNU_SOURCE
#include "gp.h"

#include <stdlib.h>
#include <string.h>

static struct gp_policy defaults, rich;

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static int ready;
	static const char rules[] = "allow * packet\nallow * raw any\nallow * bind any 1-65535 ::/0\n"
	                            "allow * tun gp* net 10.0.0.0/8,fd00::/8 mtu 68-65535\nallow * tun *\n"
	                            "allow * device net/tun\nallow * bind udp 1-65535 reuse\n"
	                            "allow * netns lab\nallow group:5 tun x\n";
	if (!ready) {
		gp_parse_policy(gp_default_policy, strlen(gp_default_policy), "", 0, "", 0, &defaults);
		gp_parse_policy(rules, strlen(rules), "", 0, "", 0, &rich);
		if (defaults.broken || rich.broken)
			abort();
		ready = 1;
	}
	struct gp_ident id = { 1000, 1000, 1, { 5 } };
	struct gp_req r;
	struct gp_status st;
	uint8_t out[GP_REP_SIZE];
	int err = gp_parse_request(data, size, &r, &st);
	if ((err != 0) != (st.err != 0) || strnlen(st.detail, GP_DETAIL) >= GP_DETAIL)
		abort();
	if (!err && (size != GP_REQ_SIZE || r.op < OP_SOCKET || r.op > OP_HELLO ||
	             r.ifname[15] || r.netns[31] || r.device[31]))
		abort();
	if (!err) {
		struct gp_req r2 = r;
		gp_authorize(&defaults, &id, &r, &st);
		if (!gp_authorize(&rich, &id, &r2, &st) && r2.op == OP_TUN &&
		    (!r2.ifname[0] || r2.ifname[15]))
			abort(); /* an accepted TUN request always carries a bounded name */
		if (!gp_authorize(&rich, &id, &r2, &st) && r2.op == OP_TUN &&
		    ((r2.prefix4 && (r2.addr4[0] != 10 || r2.prefix4 < 8)) ||
		     (r2.prefix6 && (r2.addr6[0] != 0xfd || r2.prefix6 < 8))))
			abort(); /* an address, and so its route, only inside a granted network */
		if (!gp_authorize(&defaults, &id, &r, &st) && r.op == OP_SOCKET && r.type != 1 &&
		    r.type != 5 && (r.flags & (F_REUSEADDR | F_REUSEPORT)))
			abort(); /* no reuse flag on a datagram or raw socket without a reuse rule */
	}
	gp_put_reply(out, r.id, &st, r.ifname);
	/* The same bytes as a --netns argument: accepted only as the field would be. */
	char arg[64];
	size_t n = size < sizeof arg - 1 ? size : sizeof arg - 1;
	memcpy(arg, data, n);
	arg[n] = '\0';
	if (!gp_authorize_netns(&rich, &id, arg, &st) && strcmp(arg, "lab"))
		abort(); /* rich grants exactly one namespace */
	return 0;
}
