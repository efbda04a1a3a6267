"""A UDP probe stream from the client namespace to a lab host: the sender sends one datagram to each
port in turn until a stop file appears; the receiver counts what reaches each port."""

import subprocess

from tests.helpers.hosts import PYTHON

RECEIVER = """
import select, socket, sys, time
SO_RCVBUFFORCE = 33  # root may exceed rmem_max: a busy machine must not drop what XDP passed
sockets = []
for port in map(int, sys.argv[2:]):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, 1 << 26)
    s.bind((sys.argv[1], port))
    sockets.append(s)
print("ready", flush=True)
counts, stop_at, watched = [0] * len(sockets), None, sockets + [sys.stdin]
while stop_at is None or time.time() < stop_at:
    for ready in select.select(watched, [], [], 0.2)[0]:
        if ready is sys.stdin:
            stop_at, watched = time.time() + 1, sockets
        else:
            ready.recv(64)
            counts[sockets.index(ready)] += 1
print(*counts, flush=True)
"""

SENDER = """
import os, socket, sys, time
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
sent, stop_file, pause = 0, sys.argv[2], float(sys.argv[3])
ports = list(map(int, sys.argv[4:]))
while not os.path.exists(stop_file):
    for port in ports:
        s.sendto(b"x" * 32, (sys.argv[1], port))
    sent += 1
    if sent % 10 == 0:
        time.sleep(pause)  # short bursts: the veth's XDP ring holds 256 frames
print(sent, flush=True)
"""


class Stream:
    """Probes to `ports` of host from the lab's client; `stop()` returns (sent per port, received per port)."""

    def __init__(self, lab, host, ports, stop_file, pause=0.002):
        self.stop_file = stop_file
        ports = [str(port) for port in ports]
        self.receiver = subprocess.Popen(["nsenter", "-t", str(host.pid), "--net", "--", PYTHON, "-u", "-c",
                                          RECEIVER, host.address] + ports,
                                         stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        assert self.receiver.stdout.readline().strip() == "ready"
        self.sender = subprocess.Popen(["ip", "netns", "exec", lab.client.netns, PYTHON, "-c", SENDER, host.address,
                                        str(stop_file), str(pause)] + ports, stdout=subprocess.PIPE, text=True)

    def stop(self):
        self.stop_file.touch()
        try:
            sent = int(self.sender.communicate(timeout=60)[0])
            received = [int(count) for count in self.receiver.communicate("done\n", timeout=60)[0].split()]
            return sent, received
        finally:
            for process in (self.sender, self.receiver):
                process.kill()
                process.wait()
