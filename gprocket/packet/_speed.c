/* The packet layer's compiled hot loops (gprocket.packet._speed).
 *
 * Built by _build.py (cffi, API mode) with -std=c11 -Wall -Wextra
 * -Werror; its interface is _speed.h. Blocks come from a TPACKET_V3
 * receive ring the kernel filled; the TX ring's slots are the kernel's too.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE /* sendmmsg, struct mmsghdr */
#endif
#include "_speed.h"

#include <errno.h>
#include <string.h>
#include <sys/socket.h>
#include <arpa/inet.h>
#include <linux/if_packet.h>

/* A block's frames, one per call: the header at *off when it lies inside the
   block (else NULL), *off moved on to the next one. */
static const struct tpacket3_hdr *next_frame(const uint8_t *block, uint32_t *off)
{
    const struct tpacket_block_desc *bd = (const struct tpacket_block_desc *)block;
    const struct tpacket3_hdr *h;
    if (*off == 0 || *off + sizeof(*h) > bd->hdr.bh1.blk_len)
        return NULL;
    h = (const struct tpacket3_hdr *)(block + *off);
    *off += h->tp_next_offset;
    return h;
}

static uint32_t frame_count(const uint8_t *block, uint32_t *first)
{
    const struct tpacket_block_desc *bd = (const struct tpacket_block_desc *)block;
    *first = bd->hdr.bh1.offset_to_first_pkt;
    return bd->hdr.bh1.num_pkts;
}

/* One TPACKET_V3 block -> start and end of each frame's captured data
   (offsets from the block start): all Python needs to slice the frames. */
int gpk_walk_block(const uint8_t *block, uint32_t *start, uint32_t *end, int max)
{
    uint32_t off, n = frame_count(block, &off);
    const struct tpacket3_hdr *h;
    int i;
    for (i = 0; i < (int)n && i < max && (h = next_frame(block, &off)); i++) {
        start[i] = (uint32_t)((const uint8_t *)h - block) + h->tp_mac;
        end[i] = start[i] + h->tp_snaplen;
    }
    return i;
}

/* The same block -> 5 words per frame: wire length, seconds, nanoseconds,
   ifindex, ethertype << 16 | packet type (from the sockaddr_ll the kernel
   puts after the header). Separate from the walk: most consumers never ask. */
int gpk_block_meta(const uint8_t *block, uint32_t *meta, int max)
{
    uint32_t off, n = frame_count(block, &off);
    const struct tpacket3_hdr *h;
    int i;
    for (i = 0; i < (int)n && i < max && (h = next_frame(block, &off)); i++) {
        const struct sockaddr_ll *ll =
            (const struct sockaddr_ll *)((const uint8_t *)h + TPACKET_ALIGN(sizeof(*h)));
        meta[0] = h->tp_len;
        meta[1] = h->tp_sec;
        meta[2] = h->tp_nsec;
        meta[3] = (uint32_t)ll->sll_ifindex;
        meta[4] = ((uint32_t)ntohs(ll->sll_protocol) << 16) | ll->sll_pkttype;
        meta += 5;
    }
    return i;
}

struct pcap_rec { uint32_t sec, frac, caplen, len; };

/* One block -> pcap records appended at dst; -1 when dst cannot hold them. */
long gpk_block_to_pcap(const uint8_t *block, uint8_t *dst, size_t cap, uint32_t snaplen,
                       int nsec, uint32_t *count, uint64_t *bytes)
{
    uint32_t off, n = frame_count(block, &off), i;
    const struct tpacket3_hdr *h;
    size_t pos = 0;
    for (i = 0; i < n && (h = next_frame(block, &off)); i++) {
        struct pcap_rec r;
        r.caplen = h->tp_snaplen < snaplen ? h->tp_snaplen : snaplen;
        if (pos + sizeof(r) + r.caplen > cap)
            return -1;
        r.sec = h->tp_sec;
        r.frac = nsec ? h->tp_nsec : h->tp_nsec / 1000;
        r.len = h->tp_len;
        memcpy(dst + pos, &r, sizeof(r));
        memcpy(dst + pos + sizeof(r), (const uint8_t *)h + h->tp_mac, r.caplen);
        pos += sizeof(r) + r.caplen;
        *bytes += h->tp_len;
    }
    *count += i;
    return (long)pos;
}

/* A frame this short (caplen) is copied next to its record header in the
   staging buffer, so a run of them leaves as one segment; a longer one is
   written from the ring itself, after its header. */
#define GPK_STAGE_PER_FRAME 256

/* Write all of iov[0..n) to fd (retrying short writes and EINTR); 0 or -errno. */
static int write_all(int fd, struct iovec *iov, int n)
{
    while (n > 0) {
        ssize_t done = writev(fd, iov, n);
        if (done < 0) {
            if (errno == EINTR)
                continue;
            return -errno;
        }
        while (n > 0 && (size_t)done >= iov->iov_len) {
            done -= (ssize_t)iov->iov_len;
            iov++;
            n--;
        }
        if (n > 0) {
            iov->iov_base = (uint8_t *)iov->iov_base + done;
            iov->iov_len -= (size_t)done;
        }
    }
    return 0;
}

/* Append a segment, merging it with the previous one when they touch. */
static void add_segment(struct iovec *iov, int *n, const uint8_t *base, size_t len)
{
    if (*n > 0 && (const uint8_t *)iov[*n - 1].iov_base + iov[*n - 1].iov_len == base) {
        iov[*n - 1].iov_len += len;
        return;
    }
    iov[*n].iov_base = (void *)base;
    iov[*n].iov_len = len;
    (*n)++;
}

/* One TPACKET_V3 block -> pcap records (at most limit frames) written to fd,
   one writev per stage_cap bytes of records (a single longer record goes
   alone) or iov_cap segments, with no work per frame outside this loop.
   stage_cap >= 16 + GPK_STAGE_PER_FRAME, iov_cap >= 2. Returns frames
   written (also in *count), or -errno with *count the frames written before
   the failed call. */
int gpk_block_write(int fd, const uint8_t *block, uint32_t snaplen, int nsec, uint32_t limit,
                    uint8_t *stage, size_t stage_cap, struct iovec *iov, int iov_cap,
                    uint32_t *count)
{
    uint32_t off, n = frame_count(block, &off), i;
    const struct tpacket3_hdr *h;
    size_t pos = 0, queued = 0; /* bytes staged; bytes of records in iov */
    int segs = 0, rc;
    *count = 0;
    for (i = 0; i < n && i < limit && (h = next_frame(block, &off)); i++) {
        struct pcap_rec r;
        const uint8_t *data = (const uint8_t *)h + h->tp_mac;
        r.caplen = h->tp_snaplen < snaplen ? h->tp_snaplen : snaplen;
        r.sec = h->tp_sec;
        r.frac = nsec ? h->tp_nsec : h->tp_nsec / 1000;
        r.len = h->tp_len;
        /* Staged bytes never exceed queued ones: the stage cannot overflow. */
        if (segs && (segs + 2 > iov_cap || queued + sizeof(r) + r.caplen > stage_cap)) {
            if ((rc = write_all(fd, iov, segs)) < 0)
                return rc;
            *count = i;
            segs = 0;
            pos = queued = 0;
        }
        queued += sizeof(r) + r.caplen;
        memcpy(stage + pos, &r, sizeof(r));
        if (r.caplen <= GPK_STAGE_PER_FRAME) {
            memcpy(stage + pos + sizeof(r), data, r.caplen);
            add_segment(iov, &segs, stage + pos, sizeof(r) + r.caplen);
            pos += sizeof(r) + r.caplen;
        } else {
            add_segment(iov, &segs, stage + pos, sizeof(r));
            pos += sizeof(r);
            add_segment(iov, &segs, data, r.caplen);
        }
    }
    if (segs && (rc = write_all(fd, iov, segs)) < 0)
        return rc;
    *count = i;
    return (int)i;
}

/* UIO_MAXIOV: the most messages one sendmmsg call takes. */
#define GPK_BATCH 1024
/* Send n frames (concatenated in buf, lengths in lens) with sendmmsg,
   non-blocking. Returns frames sent, or -errno if none could be; *used is
   set to the bytes of buf those frames took. */
int gpk_send_batch(int fd, const uint8_t *buf, const uint32_t *lens, int n, size_t *used)
{
    struct mmsghdr msgs[GPK_BATCH];
    struct iovec iov[GPK_BATCH];
    int done = 0;
    size_t pos = 0;
    *used = 0;
    while (done < n) {
        int chunk = n - done < GPK_BATCH ? n - done : GPK_BATCH;
        size_t p = pos;
        int i, sent;
        for (i = 0; i < chunk; i++) {
            iov[i].iov_base = (void *)(buf + p);
            iov[i].iov_len = lens[done + i];
            memset(&msgs[i].msg_hdr, 0, sizeof(msgs[i].msg_hdr));
            msgs[i].msg_hdr.msg_iov = &iov[i];
            msgs[i].msg_hdr.msg_iovlen = 1;
            p += lens[done + i];
        }
        sent = sendmmsg(fd, msgs, (unsigned int)chunk, MSG_DONTWAIT);
        if (sent < 0)
            return done ? done : -errno;
        for (i = 0; i < sent; i++)
            pos += lens[done + i];
        done += sent;
        *used = pos;
        if (sent < chunk)
            break;
    }
    return done;
}

#define GPK_VNET_HDR 10
/* Copy up to n frames into free slots of a TPACKET_V3 TX ring, starting at
   *cursor, and mark them for sending. Returns how many were queued (0 when
   the next slot is still owned by the kernel); *used is set to the bytes
   of buf they took. The data offset is the
   kernel's default: TPACKET3_HDRLEN - sizeof(struct sockaddr_ll). */
int gpk_tx_fill(uint8_t *ring, uint32_t frame_size, uint32_t frame_nr, uint32_t *cursor,
                const uint8_t *buf, const uint32_t *lens, int n, size_t *used, int vnet)
{
    const size_t data_off = TPACKET3_HDRLEN - sizeof(struct sockaddr_ll);
    uint32_t c = *cursor;
    size_t pos = 0;
    int i;
    for (i = 0; i < n; i++) {
        struct tpacket3_hdr *h = (struct tpacket3_hdr *)(ring + (size_t)c * frame_size);
        if (__atomic_load_n(&h->tp_status, __ATOMIC_ACQUIRE) != TP_STATUS_AVAILABLE)
            break;
        if (vnet) {
            /* A virtio_net_hdr asking for nothing but hdr_len = the whole
               frame: the kernel then copies it into the skb instead of
               attaching ring pages, which virtual devices must copy anyway. */
            uint8_t *v = (uint8_t *)h + data_off;
            memset(v, 0, GPK_VNET_HDR);
            v[2] = (uint8_t)(lens[i] & 0xff);
            v[3] = (uint8_t)(lens[i] >> 8);
            memcpy(v + GPK_VNET_HDR, buf + pos, lens[i]);
        } else {
            memcpy((uint8_t *)h + data_off, buf + pos, lens[i]);
        }
        h->tp_next_offset = 0;
        h->tp_len = lens[i] + (vnet ? GPK_VNET_HDR : 0);
        h->tp_snaplen = h->tp_len;
        __atomic_store_n(&h->tp_status, TP_STATUS_SEND_REQUEST, __ATOMIC_RELEASE);
        pos += lens[i];
        c = c + 1 == frame_nr ? 0 : c + 1;
    }
    *cursor = c;
    *used = pos;
    return i;
}
