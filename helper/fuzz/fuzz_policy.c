/* fuzz_policy.c - libFuzzer harness: any bytes as the policy file (or, by the
 * first byte, as /etc/passwd or /etc/group for a fixed policy), then
 * authorization and formatting of whatever parsed. */
#define _GNU_SOURCE
#include "gp.h"

#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static struct gp_policy p;
	static const char names[] = "allow user:alice packet\nallow group:lab tun vpn* net 10.0.0.0/8\n";
	static const char pw[] = "alice:x:1001:1001::/:/bin/sh\n", gr[] = "lab:x:500:\n";
	static const uint8_t seed[GP_REQ_SIZE] = "GPRQ\1\0\xc0\0\0\0\0\0\1\0\0\0\2\0\0\0\2\0\0\0\0\0\0\0\x35";
	char line[1200];
	if (size == 0)
		return 0;
	const char *text = (const char *)data + 1;
	size_t len = size - 1;
	if (data[0] % 3 == 0)
		gp_parse_policy(text, len, pw, strlen(pw), gr, strlen(gr), &p);
	else if (data[0] % 3 == 1)
		gp_parse_policy(names, strlen(names), text, len, gr, strlen(gr), &p);
	else
		gp_parse_policy(names, strlen(names), pw, strlen(pw), text, len, &p);
	if (p.nrules < 0 || p.nrules > GP_MAXRULES || (p.broken && p.nrules) ||
	    strnlen(p.why, GP_DETAIL) >= GP_DETAIL)
		abort();
	for (int i = 0; i < p.nrules; i++)
		if (gp_format_rule(&p.rules[i], line, sizeof line))
			abort(); /* every accepted rule can be printed back */
	struct gp_ident id = { 1001, 1001, 1, { 500 } };
	struct gp_req r;
	struct gp_status st;
	if (gp_parse_request(seed, sizeof seed, &r, &st))
		abort();
	gp_authorize(&p, &id, &r, &st);
	gp_needed_caps(&p, &id, 1);
	return 0;
}
