/* multiping's compiled send/receive/match loop (gprocket.icmp._speed): its interface.
 *
 * _build.py hands cffi this file's declarations: the functions, and the
 * struct's fields down to "The loop's own" (Python reads and sets those; the
 * rest stay hidden behind cffi's "..."). Keep only declarations between the
 * struct and #endif.
 */
#ifndef GPROCKET_ICMP_LOOP_H
#define GPROCKET_ICMP_LOOP_H

#include <stdint.h>

/* gpi_ctx.status after gpi_step: finished, wait to read until wake_ns, wait to
   write, or call again at once. */
#define GPI_DONE 0
#define GPI_READ 1
#define GPI_WRITE 2
#define GPI_AGAIN 3

/* Event kinds (EV_FINAL marks the event that completes its target). */
enum { EV_REPLY = 1, EV_DUP = 2, EV_ERROR = 3, EV_SENDFAIL = 4, EV_DONE = 5, EV_FINAL = 0x100 };
/* Rejection reasons, named on the Python side (_fast._REASONS). */
enum { R_TRUNC = 0, R_SUM, R_NOTICMP, R_BADIP, R_QUOTE, R_UNKNOWN, R_CODE, R_BIG };

typedef struct {
    /* Read and set from Python. */
    int status;            /* GPI_DONE, GPI_READ, GPI_WRITE or GPI_AGAIN */
    int64_t wake_ns;       /* GPI_READ: monotonic time to call again at the latest */
    int window, batch;     /* flow control, settable before the first step */
    int nev;               /* events from the last step */
    int32_t *ev_kind, *ev_target, *ev_seq, *ev_ttl, *ev_type, *ev_code, *ev_family;
    uint32_t *ev_scope;
    int64_t *ev_value;     /* RTT in ns (reply, duplicate, error), errno, or sent count */
    uint8_t *ev_addr;      /* 16 bytes an event: the error's reporter */
    int64_t own_requests, foreign, rejected, mismatched, late;
    int64_t reasons[8];
    int32_t *tsent;        /* requests sent to each target so far */

    /* The loop's own. */
    int fd, v6, raw, ident, size, count, cookie_len, n, seq0;
    int64_t interval_ns, timeout_ns, max_rtt_ns;
    uint8_t *addrs;        /* n * 4 or n * 16 */
    uint32_t *scopes;      /* n (IPv6) */
    int32_t *tpending;
    int remaining;
    /* probes, in send order */
    int cap, nprobes, win_head, exp_head, ret_head, outstanding;
    int32_t *ptarget;
    int64_t *psent_ns, *psent_mono;
    uint8_t *pstate, *pflags, *pcookie;
    /* targets due again (count > 1): FIFO of (target, due) */
    int32_t *qtarget;
    int64_t *qdue;
    int qhead, qtail, fresh;
    uint8_t *rbuf;
    int rsize;
    uint8_t *packet;
    uint8_t *fill;
    uint8_t cookies[8 * 512];
    int cookie_used;
} gpi_ctx;

gpi_ctx *gpi_new(int fd, int family, int raw, int ident, int size, int count,
                 int64_t interval_ns, int64_t timeout_ns, int n, const uint8_t *addrs,
                 const uint32_t *scopes, int seq0, int ring);
void gpi_free(gpi_ctx *c);
int gpi_step(gpi_ctx *c);
int gpi_seq(gpi_ctx *c);

#endif
