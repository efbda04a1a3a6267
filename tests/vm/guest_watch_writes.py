"""Run on a guest: puts this process's pid in the write monitor's wm_pid, makes N write() calls to /dev/null,
then watches nobody again; prints its pid. Plain ctypes over the guest's libbpf, as the guest has no xdpfleet."""
import ctypes
import os
import sys

PIN_DIR = "/sys/fs/bpf/xdpfleet/tracing/write_monitor"
libbpf = ctypes.CDLL("libbpf.so.1", use_errno=True)
fd = libbpf.bpf_obj_get((PIN_DIR + "/wm_pid").encode())
assert fd >= 0, os.strerror(ctypes.get_errno())
key = ctypes.c_uint32(0)


def watch(pid):
    value = ctypes.c_uint32(pid)
    assert libbpf.bpf_map_update_elem(fd, ctypes.byref(key), ctypes.byref(value), ctypes.c_uint64(0)) == 0


devnull = os.open("/dev/null", os.O_WRONLY)
watch(os.getpid())
for _ in range(int(sys.argv[1])):
    os.write(devnull, b"x")
watch(0)
print(os.getpid())
