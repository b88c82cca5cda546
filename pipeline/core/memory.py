"""Keep freed memory in the process: glibc's malloc gives big freed blocks back to the kernel at
once (each over its mmap threshold is unmapped; the heap's top is trimmed), so the tensors of every
training or inference step are mapped and page-faulted in afresh. Where a page fault is costly (a
VM: 120,000 minor faults a training step and half the CPU time in the kernel, measured on a 2-core
AMD EPYC), that makes training 2 to 3 times slower than it need be. The numbers computed are the
same: only where memory comes from changes (`scripts/benchmark.py --allocator` checks the weights).
"""

import ctypes
import ctypes.util
import platform

M_TRIM_THRESHOLD = -1  # glibc's mallopt parameters (malloc.h)
M_MMAP_MAX = -4
NEVER_TRIM = 2**31 - 1  # mallopt takes an int


def keep_freed_memory() -> bool:
    """Ask glibc's malloc to serve every block from its heap and never trim it, so freed memory is
    reused rather than faulted in again; the process keeps its peak size. True where it applied
    (glibc), False elsewhere (macOS, musl), where nothing changes."""
    if platform.libc_ver()[0] != "glibc":
        return False
    libc = ctypes.CDLL(ctypes.util.find_library("c"))
    return bool(libc.mallopt(M_MMAP_MAX, 0)) and bool(libc.mallopt(M_TRIM_THRESHOLD, NEVER_TRIM))
