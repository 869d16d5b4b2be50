/* The packet layer's compiled hot loops (gprocket.packet._speed): their interface.
 *
 * _build.py hands cffi the declarations from "cffi reads from here" to
 * #endif (struct iovec it declares itself: here it comes from <sys/uio.h>).
 * Keep only declarations cffi understands there.
 */
#ifndef GPROCKET_PACKET_SPEED_H
#define GPROCKET_PACKET_SPEED_H

#include <stddef.h>
#include <stdint.h>
#include <sys/uio.h>

/* cffi reads from here. */
int gpk_walk_block(const uint8_t *block, uint32_t *start, uint32_t *end, int max);
int gpk_block_meta(const uint8_t *block, uint32_t *meta, int max);
long gpk_block_to_pcap(const uint8_t *block, uint8_t *dst, size_t cap, uint32_t snaplen,
                       int nsec, uint32_t *count, uint64_t *bytes);
int gpk_block_write(int fd, const uint8_t *block, uint32_t snaplen, int nsec, uint32_t limit,
                    uint8_t *stage, size_t stage_cap, struct iovec *iov, int iov_cap,
                    uint32_t *count);
int gpk_send_batch(int fd, const uint8_t *buf, const uint32_t *lens, int n, size_t *used);
int gpk_tx_fill(uint8_t *ring, uint32_t frame_size, uint32_t frame_nr, uint32_t *cursor,
                const uint8_t *buf, const uint32_t *lens, int n, size_t *used, int vnet);

#endif
