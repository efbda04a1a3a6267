"""Network plumbing of the lab with pyroute2: the bridge and one veth-attached namespace per node."""

import errno
import os
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from pyroute2 import IPRoute, NetlinkError, netns

from .layout import HOST_IFNAME

PREFIXLEN = 24


def _disable_dad(ifname: str) -> None:
    """Root-namespace device: IPv6 link-local is usable at once instead of after DAD."""
    Path(f"/proc/sys/net/ipv6/conf/{ifname}/accept_dad").write_text("0")


def _add_address(ipr: IPRoute, index: int, address: str) -> None:
    try:
        ipr.addr("add", index=index, address=address, prefixlen=PREFIXLEN)
    except NetlinkError as error:
        if error.code != errno.EEXIST:
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


def _in_own_thread(function, *args):
    """Run `function` in a throwaway thread. unshare/setns of a network namespace switch only the
    calling thread, so the rest of the process stays in the root namespace, and nothing forks next
    to paramiko's threads (pyroute2's netns helpers fork a child for this)."""
    with ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(function, *args).result()


def _new_namespace(name: str) -> None:
    os.unshare(os.CLONE_NEWNET)
    netns.attach(name, threading.get_native_id())
    # A fresh namespace has the IPv6 defaults; eth0 copies `default` when it moves in.
    for scope in ("all", "default"):
        Path(f"/proc/sys/net/ipv6/conf/{scope}/accept_dad").write_text("0")


def _address_inside(name: str, address: str) -> None:
    with open(f"/run/netns/{name}") as namespace:
        os.setns(namespace.fileno(), os.CLONE_NEWNET)
    with IPRoute() as ipr:
        ipr.link("set", index=ipr.link_lookup(ifname="lo")[0], state="up")
        index = ipr.link_lookup(ifname=HOST_IFNAME)[0]
        ipr.addr("add", index=index, address=address, prefixlen=PREFIXLEN)
        ipr.link("set", index=index, state="up")


def _mac_of(address: str) -> str:
    """A locally administered MAC derived from the address: a rebuilt node keeps it, so no ARP cache
    on the bridge side goes stale."""
    return "02:00:" + ":".join(f"{int(octet):02x}" for octet in address.split("."))


def create_node_namespace(name: str, address: str, bridge: str, peer: str) -> None:
    """Namespace `name` whose eth0 holds `address`, cabled by a veth to `bridge`."""
    _in_own_thread(_new_namespace, name)
    with IPRoute() as ipr:
        ipr.link("add", ifname=peer, kind="veth",
                 peer={"ifname": HOST_IFNAME, "net_ns_fd": name, "address": _mac_of(address)})
        index = ipr.link_lookup(ifname=peer)[0]
        _disable_dad(peer)
        ipr.link("set", index=index, master=ipr.link_lookup(ifname=bridge)[0], state="up")
    _in_own_thread(_address_inside, name, address)


def namespaces() -> list[str]:
    return netns.listnetns()


def remove_namespace(name: str) -> None:
    if name in netns.listnetns():
        netns.remove(name)
