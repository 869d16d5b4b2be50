/* fuzz_reply.c - libFuzzer harness for the client's compiled reply receive
 * (gprocket's _fdpass_speed.c, found by the Makefile beside its cffi builder).
 *
 * Input: [k][n][n reply bytes][control bytes].
 * - The reply bytes go over a real SOCK_SEQPACKET pair with k % 20 descriptors
 *   in SCM_RIGHTS (0, 1, or more than the 16 gpf_receive has room for) and
 *   come back through gpf_receive: the bytes cut at its buffer (MSG_TRUNC
 *   said), at most 16 descriptors (MSG_CTRUNC said), each close-on-exec, and
 *   no descriptor left open once the harness closes those it got.
 * - The control bytes, whatever they hold (truncated messages, lengths
 *   shorter than a header or past the end, other types), go through
 *   gpf_parse_control in a buffer of exactly their size, so ASan sees any
 *   read outside; its answer must equal an independent walk's.
 * Seeds: build/corpus/reply, the helper's replies to vectors.txt (reply_seeds.c). */
#define _GNU_SOURCE
#include "_fdpass_speed.h"

#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/socket.h>

/* The reference walk below reads the layout directly: LP64 Linux's. */
_Static_assert(sizeof(struct cmsghdr) == 16 && CMSG_LEN(0) == 16 && CMSG_ALIGN(1) == 8,
               "cmsghdr layout");

enum { CAP = 97, SEND_MAX = 19 }; /* the client's buffer: REPLY_SIZE + 1 */

static int pair[2], nullfd;

/* The walk gpf_parse_control must agree with, written from the rules alone:
   SCM_RIGHTS descriptors in order (16 at most), odd = another type came or a
   message was shorter than its header or ran past the buffer (which ends the walk). */
static int reference(const uint8_t *p, size_t len, int *fds, int *odd)
{
	size_t off = 0;
	int n = 0;
	*odd = 0;
	while (off + 16 <= len) {
		uint64_t clen;
		int32_t level, type;
		memcpy(&clen, p + off, 8);
		memcpy(&level, p + off + 8, 4);
		memcpy(&type, p + off + 12, 4);
		if (clen < 16 || clen > len - off) {
			*odd = 1;
			break;
		}
		if (level != SOL_SOCKET || type != SCM_RIGHTS)
			*odd = 1;
		for (size_t at = off + 16; level == SOL_SOCKET && type == SCM_RIGHTS && at + 4 <= off + clen;
		     at += 4) {
			if (n < GPF_MAXFDS) {
				memcpy(&fds[n], p + at, 4);
				n++;
			}
		}
		off += (size_t)((clen + 7) & ~(uint64_t)7);
	}
	return n;
}

static void setup(void)
{
	if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, pair))
		abort();
	nullfd = open("/dev/null", O_RDONLY | O_CLOEXEC);
	if (nullfd < 0)
		abort();
}

/* The lowest free descriptor: unchanged across a call unless the call leaked one. */
static int lowest_free(void)
{
	int fd = dup(nullfd);
	if (fd < 0 || close(fd))
		abort();
	return fd;
}

/* The reply bytes and k descriptors over the socket pair and back through gpf_receive. */
static void through_socket(const uint8_t *data, size_t n, int k)
{
	union {
		struct cmsghdr align;
		uint8_t bytes[CMSG_SPACE(sizeof(int) * SEND_MAX)];
	} control;
	struct iovec iov = { (void *)data, n };
	struct msghdr mh = { .msg_iov = &iov, .msg_iovlen = 1 };
	if (k) {
		struct cmsghdr *c = (struct cmsghdr *)control.bytes;
		memset(&control, 0, sizeof control);
		mh.msg_control = control.bytes;
		mh.msg_controllen = CMSG_SPACE(sizeof(int) * (size_t)k);
		c->cmsg_level = SOL_SOCKET;
		c->cmsg_type = SCM_RIGHTS;
		c->cmsg_len = CMSG_LEN(sizeof(int) * (size_t)k);
		for (int i = 0; i < k; i++)
			memcpy(CMSG_DATA(c) + i * sizeof(int), &nullfd, sizeof(int));
	}
	int lowest = lowest_free();
	if (sendmsg(pair[0], &mh, MSG_DONTWAIT) != (ssize_t)n)
		abort();
	uint8_t *buf = malloc(CAP);
	int *fds = malloc(sizeof(int) * GPF_MAXFDS);
	int meta[4] = { -1, -1, -1, -1 };
	if (!buf || !fds)
		abort();
	int got = gpf_receive(pair[1], buf, CAP, 0, fds, meta);
	size_t want = n < CAP ? n : CAP;
	int kept = k < GPF_MAXFDS ? k : GPF_MAXFDS;
	if (got != (int)want || memcmp(buf, data, want) || meta[3] != GPF_AT_ONCE || meta[2] != 0)
		abort(); /* the bytes as sent, cut at the buffer; only SCM_RIGHTS came */
	if (!!(meta[1] & MSG_TRUNC) != (n > CAP) || !!(meta[1] & MSG_CTRUNC) != (k > GPF_MAXFDS))
		abort(); /* every cut is said */
	if (meta[0] != kept)
		abort();
	for (int i = 0; i < meta[0]; i++) {
		int flags = fcntl(fds[i], F_GETFD);
		if (flags < 0 || !(flags & FD_CLOEXEC) || fds[i] == nullfd || close(fds[i]))
			abort(); /* a new descriptor, close-on-exec from the first instant */
	}
	if (lowest_free() != lowest)
		abort(); /* nothing left open: the kernel closed the ones cut */
	free(fds);
	free(buf);
}

/* Arbitrary control bytes through the walk, in a buffer of exactly their size. */
static void through_parser(const uint8_t *data, size_t n)
{
	uint8_t *control = malloc(n ? n : 1);
	int *fds = malloc(sizeof(int) * GPF_MAXFDS);
	int expect[GPF_MAXFDS];
	int meta[4] = { -1, 12345, -1, 54321 };
	int odd;
	if (!control || !fds)
		abort();
	if (n)
		memcpy(control, data, n);
	gpf_parse_control(control, n, fds, meta);
	int count = reference(control, n, expect, &odd);
	if (meta[1] != 12345 || meta[3] != 54321)
		abort(); /* the walk sets the count and the odd flag only */
	if (meta[0] != count || meta[2] != odd || memcmp(fds, expect, sizeof(int) * (size_t)count))
		abort();
	free(fds);
	free(control);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static int ready;
	if (!ready) {
		setup();
		ready = 1;
	}
	if (size < 2)
		return 0;
	int k = data[0] % (SEND_MAX + 1);
	size_t n = data[1] < size - 2 ? data[1] : size - 2;
	through_socket(data + 2, n, k);
	through_parser(data + 2 + n, size - 2 - n);
	return 0;
}
