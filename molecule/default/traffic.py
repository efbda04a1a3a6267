"""Send the verdict traffic from the lab client to one host and count, from the client's own
network namespace (/proc/net/snmp), exactly how many packets of each kind left it.

    ip netns exec <client> python3 traffic.py HOST PORT BLOCKED_SOURCE
Prints JSON: ping replies, echo requests, HTTP status and TCP segments from the client address,
the blocked source's HTTP outcome, TCP segments and UDP datagrams.
"""

import json
import socket
import subprocess
import sys
import time
from pathlib import Path

PINGS = 5
BLOCKED_DATAGRAMS = 7
# /proc/net/tcp states after which the client sends nothing more: TIME_WAIT, CLOSE.
QUIET_TCP_STATES = {"06", "07"}
SETTLE_SECONDS = 10


def snmp() -> dict[str, int]:
    """Counters such as Tcp.OutSegs of the calling process's network namespace."""
    lines = Path("/proc/net/snmp").read_text().splitlines()
    counters = {}
    for names, values in zip(lines[::2], lines[1::2]):
        kind, names = names.split(":")
        counters.update({f"{kind}.{name}": int(value) for name, value in zip(names.split(), values.split()[1:])})
    return counters


def counted(action, *names):
    """Run `action`; return its result and how many packets of the named counters it sent."""
    before = snmp()
    result = action()
    after = snmp()
    return result, sum(after[name] - before[name] for name in names)


def tcp_sent(action):
    # OutSegs leaves out retransmissions (a dropped SYN is sent again), RetransSegs counts them.
    return counted(action, "Tcp.OutSegs", "Tcp.RetransSegs")


def _remote(host: str, port: int) -> str:
    """host:port as /proc/net/tcp writes a remote address (little-endian hex IPv4)."""
    return "%s:%04X" % (socket.inet_aton(host)[::-1].hex().upper(), port)


def wait_closed(host: str, port: int) -> None:
    """Wait until the client's connections to host:port send nothing more: a slow host (a VM under
    TCG) acknowledges the client's FIN late, and a retransmitted FIN would be counted with the next
    measurement."""
    deadline = time.monotonic() + SETTLE_SECONDS
    remote = _remote(host, port)
    while time.monotonic() < deadline:
        rows = [line.split() for line in Path("/proc/net/tcp").read_text().splitlines()[1:]]
        if all(row[3] in QUIET_TCP_STATES for row in rows if row[2] == remote):
            return
        time.sleep(0.1)
    raise TimeoutError(f"connections to {host}:{port} still open after {SETTLE_SECONDS} s")


def ping(host: str) -> int:
    run = subprocess.run(["ping", "-n", "-q", "-c", str(PINGS), "-i", "0.2", "-W", "1", host],
                         capture_output=True, text=True, check=False)  # lost pings are counted, not an error
    return int(run.stdout.split(" received")[0].rsplit(",", 1)[1])


def http_get(host: str, port: int, source: str, timeout: float):
    """GET / over HTTP/1.0, read until the server closes: the client then closes second, and once
    the server has acknowledged that FIN nothing of this connection is sent any more (a client that
    closed first would sit in TIME_WAIT and answer a late FIN retransmission from a slow guest
    while the next measurement runs)."""
    try:
        with socket.create_connection((host, port), timeout=timeout, source_address=(source, 0)) as connection:
            connection.sendall(b"GET / HTTP/1.0\r\nHost: %s\r\n\r\n" % host.encode())
            reply = b""
            while chunk := connection.recv(65536):
                reply += chunk
        status = int(reply.split(b" ", 2)[1])
    except OSError as error:
        status = type(error).__name__
    wait_closed(host, port)
    return status


def udp_burst(host: str, source: str) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sender:
        sender.bind((source, 0))
        for datagram in range(BLOCKED_DATAGRAMS):
            sender.sendto(b"xdpfleet", (host, 9))


def main(host: str, port: str, blocked: str) -> None:
    replies, echoes = counted(lambda: ping(host), "Icmp.OutEchos")
    status, segments = tcp_sent(lambda: http_get(host, int(port), "0.0.0.0", 5))
    blocked_status, blocked_segments = tcp_sent(lambda: http_get(host, int(port), blocked, 1.5))
    datagrams = counted(lambda: udp_burst(host, blocked), "Udp.OutDatagrams")[1]
    print(json.dumps({"ping_replies": replies, "echo_requests": echoes, "http_status": status,
                      "http_segments": segments, "blocked_http": blocked_status,
                      "blocked_segments": blocked_segments, "blocked_datagrams": datagrams}))


if __name__ == "__main__":
    main(*sys.argv[1:])
