"""Network plumbing of the lab with pyroute2: the bridge and one veth-attached namespace per node."""

import subprocess
from pathlib import Path

from pyroute2 import IPRoute, NetlinkError, netns

from .layout import HOST_IFNAME

PREFIXLEN = 24
EEXIST = 17


def _disable_dad(ifname: str) -> None:
    """Root-namespace device: IPv6 link-local is usable at once instead of after DAD."""
    Path(f"/proc/sys/net/ipv6/conf/{ifname}/accept_dad").write_text("0")


def _add_address(ipr: IPRoute, index: int, address: str) -> None:
    try:
        ipr.addr("add", index=index, address=address, prefixlen=PREFIXLEN)
    except NetlinkError as error:
        if error.code != EEXIST:
            raise


def link_index(ifname: str):
    with IPRoute() as ipr:
        found = ipr.link_lookup(ifname=ifname)
    return found[0] if found else None


def ensure_bridge(name: str, address: str) -> None:
    with IPRoute() as ipr:
        if not ipr.link_lookup(ifname=name):
            # No multicast snooping: without a querier it would starve IPv6 neighbour discovery.
            ipr.link("add", ifname=name, kind="bridge", br_mcast_snooping=0)
        index = ipr.link_lookup(ifname=name)[0]
        _disable_dad(name)
        _add_address(ipr, index, address)
        ipr.link("set", index=index, state="up")


def delete_link(ifname: str) -> None:
    """Deleting one end of a veth deletes its peer inside the namespace as well."""
    with IPRoute() as ipr:
        for index in ipr.link_lookup(ifname=ifname):
            ipr.link("del", index=index)


def _disable_dad_in(name: str) -> None:
    # A fresh namespace resets IPv6 sysctls to the defaults; eth0 copies `default` when it moves in.
    subprocess.run(
        ["nsenter", f"--net=/run/netns/{name}", "sysctl", "-qw",
         "net.ipv6.conf.all.accept_dad=0", "net.ipv6.conf.default.accept_dad=0"],
        check=True,
    )


def create_node_namespace(name: str, address: str, bridge: str, peer: str) -> None:
    """Namespace `name` whose eth0 holds `address`, cabled by a veth to `bridge`."""
    netns.create(name)
    _disable_dad_in(name)
    with IPRoute() as ipr:
        ipr.link("add", ifname=peer, kind="veth", peer={"ifname": HOST_IFNAME, "net_ns_fd": name})
        index = ipr.link_lookup(ifname=peer)[0]
        _disable_dad(peer)
        ipr.link("set", index=index, master=ipr.link_lookup(ifname=bridge)[0], state="up")
    with IPRoute(netns=name) as ipr:
        ipr.link("set", index=ipr.link_lookup(ifname="lo")[0], state="up")
        index = ipr.link_lookup(ifname=HOST_IFNAME)[0]
        ipr.addr("add", index=index, address=address, prefixlen=PREFIXLEN)
        ipr.link("set", index=index, state="up")


def namespaces() -> list[str]:
    return netns.listnetns()


def remove_namespace(name: str) -> None:
    if name in netns.listnetns():
        netns.remove(name)
