"""cffi ABI-mode declarations shared by the packet layer.

ABI mode needs no compiler: the structures are declared with their exact
Linux x86-64/aarch64 layouts and libc is opened at import. These are the
structures that hold pointers (``sock_fprog``, ``ifconf``, ``ifreq.ifr_data``),
which Python's ``fcntl.ioctl``/``setsockopt`` cannot build safely.
"""

from __future__ import annotations

from typing import Any

import cffi

ffi = cffi.FFI()
ffi.cdef(
    """
    struct sock_filter { uint16_t code; uint8_t jt; uint8_t jf; uint32_t k; };
    struct sock_fprog { unsigned short len; struct sock_filter *filter; };

    struct ifmap_ { unsigned long mem_start; unsigned long mem_end;
                    unsigned short base_addr; unsigned char irq; unsigned char dma;
                    unsigned char port; };
    struct ifreq {
        char ifr_name[16];
        union {
            unsigned char sockaddr[16];
            short flags;
            int ivalue;
            int mtu;
            char newname[16];
            void *data;
            struct ifmap_ map;
        } u;
    };
    struct ifconf { int ifc_len; void *ifc_buf; };

    struct ethtool_drvinfo {
        uint32_t cmd;
        char driver[32];
        char version[32];
        char fw_version[32];
        char bus_info[32];
        char erom_version[32];
        char reserved2[12];
        uint32_t n_priv_flags;
        uint32_t n_stats;
        uint32_t testinfo_len;
        uint32_t eedump_len;
        uint32_t regdump_len;
    };

    int ioctl(int fd, unsigned long request, ...);
    """
)

libc: Any = ffi.dlopen(None)
