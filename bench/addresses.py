"""Distinct source addresses for the benches' rule sets, as many as asked for.

Rules are only data here (no traffic is sent to these addresses), but they stay inside ranges meant for
this: the 131,072 addresses of 198.18.0.0/15 (RFC 2544) first, then those of 2001:db8::/32 (RFC 3849).
"""

import ipaddress
import itertools
import socket

BENCHMARK_V4 = ipaddress.IPv4Network("198.18.0.0/15")
DOCUMENTATION_V6 = ipaddress.IPv6Network("2001:db8::/32")


def host_addresses(count, first="198.18.0.1", avoid=None):
    """`count` distinct addresses as text: those of 198.18.0.0/15 from `first` up, wrapping round to
    198.18.0.0, then 2001:db8::1 and up. The addresses of the IPv4 network `avoid` (a lab's subnet, whose
    SSH must keep working) are left out."""
    base, size = int(BENCHMARK_V4.network_address), BENCHMARK_V4.num_addresses
    offset = int(ipaddress.IPv4Address(first)) - base
    if not 0 <= offset < size:
        raise ValueError("%s is not in %s" % (first, BENCHMARK_V4))
    v4 = (base + (offset + step) % size for step in range(size))
    if avoid:
        avoided = ipaddress.IPv4Network(avoid)
        low, high = int(avoided.network_address), int(avoided.broadcast_address)
        v4 = (number for number in v4 if not low <= number <= high)
    v4_text = (socket.inet_ntoa(number.to_bytes(4, "big")) for number in v4)
    v6_text = (str(DOCUMENTATION_V6.network_address + index) for index in itertools.count(1))
    return list(itertools.islice(itertools.chain(v4_text, v6_text), count))


def host_prefixes(count, first="198.18.0.1", avoid=None):
    """host_addresses() as host prefixes: "198.18.0.1/32", ..., "2001:db8::1/128", ..."""
    return [address + ("/128" if ":" in address else "/32") for address in host_addresses(count, first, avoid)]
