"""Frames crafted with scapy from a FrameSpec, and the Packet the firewall must see in them.

Addresses: only 198.18.0.0/15, and its IPv4-mapped IPv6 form (::ffff:198.18.x.y) for
IPv6; these frames only ever go through BPF_PROG_TEST_RUN.
"""

import ipaddress
from collections import namedtuple

from scapy.layers.inet import ICMP, IP, TCP, UDP, IPOption_NOP
from scapy.layers.inet6 import (ICMPv6EchoRequest, ICMPv6ND_NS, IPv6, IPv6ExtHdrDestOpt, IPv6ExtHdrFragment,
                                IPv6ExtHdrHopByHop, IPv6ExtHdrRouting, PadN)
from scapy.layers.l2 import ARP, Dot1AD, Dot1Q, Ether
from scapy.packet import Raw

from ansible_collections.xdpfleet.xdp.plugins.module_utils._fw_model import PROTOCOLS
from tests.helpers.reference import Packet

TCP_, UDP_, ICMP_, ICMPV6_ = PROTOCOLS["tcp"], PROTOCOLS["udp"], PROTOCOLS["icmp"], PROTOCOLS["icmpv6"]
GRE = 47
ND_NEIGHBOUR_SOLICITATION = 135
L4_REQUIRED = {TCP_: 20, UDP_: 8, ICMP_: 4, ICMPV6_: 4}
PAYLOAD = b"xdpfleet"


class FrameSpec(namedtuple("FrameSpec", "src dst proto dport vlans qinq ip_options ext fragment nd")):
    """src/dst: address strings; vlans: 0-3 tags; ip_options: IPv4 option bytes (NOPs);
    ext: IPv6 extension headers ('hbh', 'rt', 'dst'); fragment: None, 'first' or 'later';
    nd: an ICMPv6 neighbour solicitation instead of an echo request."""

    def __new__(cls, src, dst, proto, dport=None, vlans=0, qinq=False, ip_options=0, ext=(), fragment=None,
                nd=False):
        return super(FrameSpec, cls).__new__(cls, src, dst, proto, dport, vlans, qinq, ip_options, tuple(ext),
                                             fragment, nd)

    @property
    def family(self):
        return ipaddress.ip_address(self.src).version


def mapped(address):
    """The IPv4-mapped IPv6 form of a 198.18.0.0/15 address."""
    return "::ffff:" + address


def expected_packet(spec):
    if spec.vlans > 2:
        return Packet.special("not_ip")
    has_l4 = spec.fragment != "later"
    if spec.nd and has_l4:
        return Packet.special("nd")
    dport = spec.dport if has_l4 and spec.proto in (TCP_, UDP_) else None
    return Packet.ip(spec.src, spec.dst, spec.proto, dport)


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
        return TCP(sport=40000, dport=spec.dport) / Raw(PAYLOAD)
    if spec.proto == UDP_:
        return UDP(sport=40000, dport=spec.dport) / Raw(PAYLOAD)
    if spec.proto == ICMP_:
        return ICMP() / Raw(PAYLOAD)
    if spec.proto == ICMPV6_:
        return ICMPv6ND_NS(tgt=spec.dst) if spec.nd else ICMPv6EchoRequest() / Raw(PAYLOAD)
    return Raw(PAYLOAD)


def _ipv4(spec):
    header = IP(src=spec.src, dst=spec.dst, proto=spec.proto, options=[IPOption_NOP()] * spec.ip_options)
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
    headers = [IPv6(src=spec.src, dst=spec.dst)] + [EXTENSIONS[name]() for name in spec.ext]
    if spec.fragment:
        headers.append(IPv6ExtHdrFragment(m=1, offset=0 if spec.fragment == "first" else 1))
    headers[-1].nh = spec.proto  # scapy cannot infer it over a raw payload
    stack = headers[0]
    for header in headers[1:]:
        stack = stack / header
    return stack


def build(spec):
    """(frame bytes, bytes the firewall needs: any shorter cut is malformed)."""
    l3 = _ipv4(spec) if spec.family == 4 else _ipv6(spec)
    headers = _l2(spec) / l3
    l4_start = len(bytes(headers))
    frame = bytes(headers / _l4(spec))
    required = 0 if spec.fragment == "later" else L4_REQUIRED.get(spec.proto, 0)
    return frame, l4_start + required


def frames_for(specs):
    """(frame bytes, expected Packet) pairs for the harness."""
    return [(build(spec)[0], expected_packet(spec)) for spec in specs]


def arp_frame():
    return bytes(Ether(src="02:00:00:00:00:01", dst="ff:ff:ff:ff:ff:ff") / ARP(hwsrc="02:00:00:00:00:01", psrc="198.18.0.1", pdst="198.18.0.2"))


def other_ethertype_frame():
    return bytes(Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02", type=0x88CC) / Raw(b"\0" * 46))
