"""Frames crafted with scapy from a FrameSpec, and the Packet the firewall must see in them.

Addresses: only 198.18.0.0/15, and its IPv4-mapped IPv6 form (::ffff:198.18.x.y) for
IPv6; these frames only ever go through BPF_PROG_TEST_RUN.
"""

import ipaddress
from collections import namedtuple

from scapy.layers.inet import ICMP, IP, TCP, UDP, IPOption_NOP
from scapy.layers.inet6 import (ICMPv6ND_NS, ICMPv6Unknown, IPv6, IPv6ExtHdrDestOpt, IPv6ExtHdrFragment,
                                IPv6ExtHdrHopByHop, IPv6ExtHdrRouting, PadN)
from scapy.layers.l2 import ARP, Dot1AD, Dot1Q, Ether
from scapy.packet import Raw

from ansible_collections.xdpfleet.xdp.plugins.module_utils._fw_model import NEIGHBOUR_DISCOVERY, PROTOCOLS
from tests.helpers.reference import Packet

TCP_, UDP_, ICMP_, ICMPV6_ = PROTOCOLS["tcp"], PROTOCOLS["udp"], PROTOCOLS["icmp"], PROTOCOLS["icmpv6"]
GRE = 47
ND_NEIGHBOUR_SOLICITATION = 135
ECHO_REQUEST = {ICMP_: 8, ICMPV6_: 128}
SYN = 0x02
L4_REQUIRED = {TCP_: 20, UDP_: 8, ICMP_: 4, ICMPV6_: 4}
PAYLOAD = b"xdpfleet"
PADDED_UP_TO = 1500  # a declared IP length up to this is carried by the frame; a longer one is only declared
IPV6_HEADER = 40


class FrameSpec(namedtuple("FrameSpec", "src dst proto dport vlans qinq ip_options ext fragment nd sport tcp_flags "
                                        "icmp_type icmp_code ttl length")):
    """src/dst: address strings; vlans: 0-3 tags; ip_options: IPv4 option bytes (NOPs);
    ext: IPv6 extension headers ('hbh', 'rt', 'dst'); fragment: None, 'first' or 'later';
    nd: an ICMPv6 neighbour solicitation instead of icmp_type (default: an echo request);
    tcp_flags: byte 13 of the TCP header; ttl: the IPv4 TTL or IPv6 hop limit;
    length: the IP length the header declares (IPv4 total length, IPv6 payload length + 40, so 40 at least):
    the payload is padded to it when the frame can carry it (up to PADDED_UP_TO), else only the header
    says so; None: the length of what the frame carries."""

    def __new__(cls, src, dst, proto, dport=None, vlans=0, qinq=False, ip_options=0, ext=(), fragment=None,
                nd=False, sport=40000, tcp_flags=SYN, icmp_type=None, icmp_code=0, ttl=64, length=None):
        return super(FrameSpec, cls).__new__(cls, src, dst, proto, dport, vlans, qinq, ip_options, tuple(ext),
                                             fragment, nd, sport, tcp_flags, icmp_type, icmp_code, ttl, length)

    @property
    def family(self):
        return ipaddress.ip_address(self.src).version

    @property
    def icmp(self):
        """(type, code) of the ICMP/ICMPv6 header."""
        if self.nd:
            return ND_NEIGHBOUR_SOLICITATION, 0
        return ECHO_REQUEST.get(self.proto, 0) if self.icmp_type is None else self.icmp_type, self.icmp_code


def mapped(address):
    """The IPv4-mapped IPv6 form of a 198.18.0.0/15 address."""
    return "::ffff:" + address


def expected_packet(spec, ip_length):
    """The Packet of a frame built from spec whose IP header declares ip_length."""
    if spec.vlans > 2:
        return Packet.special("not_ip")
    if spec.fragment == "later":
        return Packet.ip(spec.src, spec.dst, spec.proto, length=ip_length, ttl=spec.ttl)
    fields = {}
    if spec.proto in (TCP_, UDP_):
        fields.update(dport=spec.dport, sport=spec.sport, tcp_flags=spec.tcp_flags if spec.proto == TCP_ else None)
    elif spec.proto in (ICMP_, ICMPV6_):
        if spec.family == 6 and spec.proto == ICMPV6_ and spec.icmp[0] in NEIGHBOUR_DISCOVERY:
            return Packet.special("nd")
        fields.update(zip(("icmp_type", "icmp_code"), spec.icmp))
    return Packet.ip(spec.src, spec.dst, spec.proto, length=ip_length, ttl=spec.ttl, **fields)


def _l2(spec):
    if spec.qinq and spec.vlans:
        return _ether() / Dot1AD(vlan=100) / _tags(spec.vlans - 1)
    return _ether() / _tags(spec.vlans) if spec.vlans else _ether()


def _ether():
    return Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02")


def _tags(count):
    stack = Dot1Q(vlan=200)
    for index in range(1, count):
        stack = stack / Dot1Q(vlan=200 + index)
    return stack


def _l4(spec):
    if spec.fragment == "later":
        return Raw(PAYLOAD)
    if spec.proto == TCP_:
        return TCP(sport=spec.sport, dport=spec.dport, flags=spec.tcp_flags) / Raw(PAYLOAD)
    if spec.proto == UDP_:
        return UDP(sport=spec.sport, dport=spec.dport) / Raw(PAYLOAD)
    icmp_type, icmp_code = spec.icmp
    if spec.proto == ICMP_:
        return ICMP(type=icmp_type, code=icmp_code) / Raw(PAYLOAD)
    if spec.proto == ICMPV6_:
        return ICMPv6ND_NS(tgt=spec.dst) if spec.nd else ICMPv6Unknown(type=icmp_type, code=icmp_code) / Raw(PAYLOAD)
    return Raw(PAYLOAD)


def _ipv4(spec):
    header = IP(src=spec.src, dst=spec.dst, proto=spec.proto, ttl=spec.ttl,
                options=[IPOption_NOP()] * spec.ip_options)
    if spec.fragment == "first":
        header.flags = "MF"
    elif spec.fragment == "later":
        header.frag = 8
    return header


EXTENSIONS = {
    "hbh": lambda: IPv6ExtHdrHopByHop(options=[PadN(optdata=b"\0" * 12)]),
    "rt": lambda: IPv6ExtHdrRouting(addresses=[mapped("198.18.9.9")]),
    "dst": lambda: IPv6ExtHdrDestOpt(options=[PadN(optdata=b"\0" * 4)]),
}


def _ipv6(spec):
    headers = [IPv6(src=spec.src, dst=spec.dst, hlim=spec.ttl)] + [EXTENSIONS[name]() for name in spec.ext]
    if spec.fragment:
        headers.append(IPv6ExtHdrFragment(m=1, offset=0 if spec.fragment == "first" else 1))
    headers[-1].nh = spec.proto  # scapy cannot infer it over a raw payload
    stack = headers[0]
    for header in headers[1:]:
        stack = stack / header
    return stack


def _l3(spec):
    return _ipv4(spec) if spec.family == 4 else _ipv6(spec)


def _frame(spec):
    """(frame bytes, the IP length its header declares)."""
    l2, l3, l4 = _l2(spec), _l3(spec), _l4(spec)
    frame = bytes(l2 / l3 / l4)
    carried = len(frame) - len(bytes(l2))
    if spec.length is None or spec.length == carried:
        return frame, carried
    if carried < spec.length <= PADDED_UP_TO:
        l4 = l4 / Raw(b"\0" * (spec.length - carried))
    elif spec.family == 4:
        l3.len = spec.length
    else:
        l3.plen = spec.length - IPV6_HEADER
    return bytes(l2 / l3 / l4), spec.length


def build(spec):
    """(frame bytes, bytes the firewall needs: any shorter cut is malformed)."""
    l4_start = len(bytes(_l2(spec) / _l3(spec)))
    required = 0 if spec.fragment == "later" else L4_REQUIRED.get(spec.proto, 0)
    return _frame(spec)[0], l4_start + required


def frames_for(specs):
    """(frame bytes, expected Packet) pairs for the harness."""
    return [(frame, expected_packet(spec, length)) for spec, (frame, length) in zip(specs, map(_frame, specs))]


def arp_frame():
    return bytes(Ether(src="02:00:00:00:00:01", dst="ff:ff:ff:ff:ff:ff") / ARP(hwsrc="02:00:00:00:00:01", psrc="198.18.0.1", pdst="198.18.0.2"))


def other_ethertype_frame():
    return bytes(Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02", type=0x88CC) / Raw(b"\0" * 46))
