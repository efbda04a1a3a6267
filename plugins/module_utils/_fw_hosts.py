# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The IPv4 host tables (struct xf_hosts4 in bpf/xdp_firewall.h): an index in front of each IPv4 /32 hash map
that the program reads without a helper call. Each bucket holds the first BUCKET_HOSTS of the addresses that
hash to it in ascending order, each with the position of its only rule (CHAINED when it has more); a bucket
with more addresses is marked overflowing, and the program looks those up in the hash map, which holds every
address as before. A table is a function of its hash map's entries, so the same entries give the same bytes."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

from collections import defaultdict

from ansible_collections.xdpfleet.xdp.plugins.module_utils._layout import (
    BUCKET_HOSTS, CHAIN, CHAINED, HOST_BUCKET_BITS, HOST_BUCKETS, HOST_HASH, HOST_TABLES, HOSTS4, U32)

EMPTY_BUCKET = bytes(HOSTS4.size)
_SHIFT = 32 - HOST_BUCKET_BITS


def bucket_of(address):
    """The bucket of an address as the program computes it: address is the u32 the program loads from the
    packet's network-order bytes, in this host's byte order (little-endian, as every layout of _layout)."""
    return ((address * HOST_HASH) & 0xFFFFFFFF) >> _SHIFT


def host_tables(prefixes):
    """{table name: {bucket index: packed xf_hosts4}} (buckets left out are empty) from the compiled prefix maps
    {short map name: {key: packed xf_chain}}."""
    return dict((table, _table(prefixes[hash_map])) for hash_map, table in HOST_TABLES.items())


def _table(entries):
    # The keys and chains as u32 columns in one pass each: the per-entry work is the bucket alone.
    addresses = memoryview(b"".join(entries)).cast("I")
    chains = memoryview(b"".join(entries.values())).cast("I")
    step = CHAIN.size // U32.size
    buckets = defaultdict(list)
    for address, length, first in zip(addresses, chains[0::step], chains[1::step]):
        buckets[bucket_of(address)].append((address, first if length == 1 else CHAINED))
    return dict((index, _bucket(sorted(held))) for index, held in buckets.items())


def _bucket(held):
    kept = held[:BUCKET_HOSTS]
    padding = [0] * (BUCKET_HOSTS - len(kept))
    return HOSTS4.format.pack(len(kept), int(len(held) > BUCKET_HOSTS), *([address for address, _rule in kept]
                              + padding + [rule for _address, rule in kept] + padding))


def bucket_edits(current, table):
    """The bucket indexes whose packed bucket in current (the table map's values, HOST_BUCKETS of them) is
    not the one table gives."""
    size = HOSTS4.size
    return [index for index in range(HOST_BUCKETS)
            if current[index * size:(index + 1) * size] != table.get(index, EMPTY_BUCKET)]
