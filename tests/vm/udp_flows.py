"""UDP flows for the VM tests, stdlib only (it runs in the lab's client namespace and on a guest's python3).

    python3 udp_flows.py send DEST RATE STOP_FILE SOURCE:PORT:SIZE...   # until STOP_FILE exists; prints sent counts
    python3 udp_flows.py receive READY IDLE MAX PORT...                 # until IDLE s without a datagram; prints counts

Each flow sends RATE datagrams a second from SOURCE to DEST:PORT with SIZE bytes of payload. The receiver counts
datagrams by "source:port" (it creates the file READY once it listens) and stops once it has seen one and then none for IDLE seconds (or after MAX seconds).
"""

import json
import os
import select
import socket
import sys
import time


def send(destination, rate, stop_file, flows):
    sockets, sent = [], {}
    for flow in flows:
        source, port, size = flow.split(":")
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.bind((source, 0))
        sockets.append((sock, (destination, int(port)), b"x" * int(size), "%s:%s" % (source, port)))
        sent["%s:%s" % (source, port)] = 0
    interval, due = 1.0 / float(rate), time.monotonic()
    while not os.path.exists(stop_file):
        for sock, address, payload, key in sockets:
            sock.sendto(payload, address)
            sent[key] += 1
        due += interval
        time.sleep(max(0.0, due - time.monotonic()))
    print(json.dumps(sent))


def receive(ready_file, idle, longest, ports):
    sockets = []
    for port in ports:
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        # Past net.core.rmem_max (root): while a program loads, the verifier can keep a 1-CPU guest's receiver
        # from reading for seconds.
        sock.setsockopt(socket.SOL_SOCKET, getattr(socket, "SO_RCVBUFFORCE", 33), 1 << 24)
        sock.bind(("0.0.0.0", int(port)))
        sockets.append(sock)
    open(ready_file, "w").close()
    counts, started, last = {}, time.monotonic(), None
    while time.monotonic() - started < float(longest):
        if last is not None and time.monotonic() - last > float(idle):
            break
        for sock in select.select(sockets, [], [], 0.2)[0]:
            source = sock.recvfrom(65536)[1][0]
            key = "%s:%d" % (source, sock.getsockname()[1])
            counts[key] = counts.get(key, 0) + 1
            last = time.monotonic()
    print(json.dumps(counts))


if __name__ == "__main__":
    if sys.argv[1] == "send":
        send(sys.argv[2], sys.argv[3], sys.argv[4], sys.argv[5:])
    else:
        receive(sys.argv[2], sys.argv[3], sys.argv[4], sys.argv[5:])
