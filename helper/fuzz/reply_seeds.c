/* reply_seeds.c - fuzz_reply's seeds from the shared vectors: for each line of
 * vectors.txt, the reply the helper gives it (parsed, and authorized under the
 * default policy for uid 1000, as test_parse.c checks), carrying one descriptor
 * when it grants and none when it refuses, then its control message as the
 * kernel writes it; and a few seeds with other control data (more descriptors
 * than the client takes, a message of another type, truncated ones).
 * Usage: reply_seeds vectors.txt DIR   (writes DIR/NAME; exit 0 = all written) */
#define _GNU_SOURCE
#include "gp.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

static const char *dir;

/* DIR/name <- [k][96][reply][control]: k descriptors sent, control as given. */
static int write_seed(const char *name, int k, const uint8_t reply[GP_REP_SIZE],
                      const uint8_t *control, size_t clen)
{
	char path[512];
	uint8_t head[2] = { (uint8_t)k, GP_REP_SIZE };
	if (snprintf(path, sizeof path, "%s/%s", dir, name) >= (int)sizeof path)
		return -1;
	FILE *f = fopen(path, "wb");
	if (!f) {
		perror(path);
		return -1;
	}
	int bad = fwrite(head, 1, 2, f) != 2 || fwrite(reply, 1, GP_REP_SIZE, f) != GP_REP_SIZE ||
	          (clen && fwrite(control, 1, clen, f) != clen);
	return fclose(f) || bad ? -1 : 0;
}

/* One control message as the kernel writes it: header, n ints from 3 up, padding. */
static size_t rights(uint8_t *out, int level, int type, int n, size_t len_field)
{
	struct cmsghdr c = { .cmsg_len = len_field, .cmsg_level = level, .cmsg_type = type };
	memset(out, 0, CMSG_SPACE(sizeof(int) * (size_t)n));
	memcpy(out, &c, sizeof c);
	for (int i = 0; i < n; i++) {
		int fd = 3 + i;
		memcpy(CMSG_DATA((struct cmsghdr *)(void *)out) + i * sizeof(int), &fd, sizeof fd);
	}
	return CMSG_SPACE(sizeof(int) * (size_t)n);
}

static int extra_seeds(const uint8_t reply[GP_REP_SIZE])
{
	_Alignas(struct cmsghdr) static uint8_t c[CMSG_SPACE(sizeof(int) * 24) * 2];
	size_t n;
	int bad = 0;
	n = rights(c, SOL_SOCKET, SCM_RIGHTS, 2, CMSG_LEN(2 * sizeof(int)));
	bad |= write_seed("extra_two_fds", 2, reply, c, n);
	n = rights(c, SOL_SOCKET, SCM_RIGHTS, 16, CMSG_LEN(16 * sizeof(int)));
	bad |= write_seed("extra_seventeen_sent", 17, reply, c, n);
	n = rights(c, SOL_SOCKET, SCM_CREDENTIALS, 3, CMSG_LEN(3 * sizeof(int)));
	n += rights(c + n, SOL_SOCKET, SCM_RIGHTS, 1, CMSG_LEN(sizeof(int)));
	bad |= write_seed("extra_credentials_then_rights", 1, reply, c, n);
	n = rights(c, SOL_SOCKET, SCM_RIGHTS, 4, CMSG_LEN(4 * sizeof(int)));
	bad |= write_seed("extra_truncated_rights", 0, reply, c, n - 6);
	n = rights(c, SOL_SOCKET, SCM_RIGHTS, 2, CMSG_LEN(40 * sizeof(int)));
	bad |= write_seed("extra_length_past_end", 0, reply, c, n);
	n = rights(c, SOL_SOCKET, SCM_RIGHTS, 2, 3);
	bad |= write_seed("extra_length_inside_header", 0, reply, c, n);
	bad |= write_seed("extra_short_header", 1, reply, c, sizeof(struct cmsghdr) - 1);
	return bad;
}

int main(int argc, char **argv)
{
	static char line[4096];
	static uint8_t buf[1024];
	struct gp_policy defaults;
	uint8_t reply[GP_REP_SIZE];
	_Alignas(struct cmsghdr) uint8_t control[CMSG_SPACE(sizeof(int))];
	int n = 0, bad = 0;
	if (argc != 3) {
		fprintf(stderr, "usage: reply_seeds vectors.txt DIR\n");
		return 2;
	}
	dir = argv[2];
	gp_parse_policy(gp_default_policy, strlen(gp_default_policy), "", 0, "", 0, &defaults);
	FILE *f = fopen(argv[1], "r");
	if (!f || defaults.broken) {
		perror(argv[1]);
		return 1;
	}
	while (fgets(line, sizeof line, f)) {
		char name[128], hex[2100];
		if (line[0] == '#' || line[0] == '\n')
			continue;
		if (sscanf(line, "%127s %2099s", name, hex) != 2) {
			fprintf(stderr, "bad line: %s", line);
			bad = 1;
			continue;
		}
		size_t len = strlen(hex) / 2;
		for (size_t i = 0; i < len && i < sizeof buf; i++)
			bad |= sscanf(hex + 2 * i, "%2hhx", &buf[i]) != 1;
		len = len < sizeof buf ? len : sizeof buf;
		struct gp_req r;
		struct gp_status st;
		struct gp_ident id = { .uid = 1000, .gid = 1000 };
		int granted = !gp_parse_request(buf, len, &r, &st) && r.op != OP_HELLO &&
		              !gp_authorize(&defaults, &id, &r, &st);
		gp_put_reply(reply, r.id, &st, r.ifname);
		size_t clen = granted ? rights(control, SOL_SOCKET, SCM_RIGHTS, 1,
		                               CMSG_LEN(sizeof(int))) : 0;
		bad |= write_seed(name, granted, reply, control, clen);
		if (n++ == 0)
			bad |= extra_seeds(reply);
	}
	if (fclose(f) || bad || !n) {
		fprintf(stderr, "reply_seeds: %d vectors, %s\n", n, bad ? "errors" : "none read");
		return 1;
	}
	return 0;
}
