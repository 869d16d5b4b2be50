/* The broker channel's compiled receive and check (gprocket._channel._fdpass_speed): its interface.
 *
 * fdpass_build.py hands cffi the declarations from "cffi reads from here" to
 * #endif; keep only declarations cffi understands there. helper/fuzz/fuzz_reply.c
 * includes this file too.
 */
#ifndef GPROCKET_FDPASS_SPEED_H
#define GPROCKET_FDPASS_SPEED_H

#include <stddef.h>
#include <stdint.h>

/* cffi reads from here. */
/* Room for more descriptors than the protocol allows, so extras are seen (and closed). */
#define GPF_MAXFDS 16
/* How a poll went (gpf_receive's meta[3]). */
#define GPF_AT_ONCE 0
#define GPF_POLLED 1
#define GPF_LOST_CPU 2 /* gave up: this thread lost its CPU on the way */
#define GPF_EXPIRED 3  /* gave up: the window passed */

int gpf_receive(int fd, uint8_t *buf, int cap, int64_t spin_ns, int *fds, int *meta);
int gpf_cpu(void);
void gpf_parse_control(const uint8_t *control, size_t len, int *fds, int *meta);
int gpf_check_inet(int fd, int family, int type, int protocol, const char *addr,
                   int port, int v6only, const char *ifname, int listening);

#endif
