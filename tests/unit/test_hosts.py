"""The IPv4 host tables the compiler writes in front of the /32 hash maps (plugins/module_utils/_fw_hosts.py)."""

import ipaddress

from ansible_collections.xdpfleet.xdp.plugins.module_utils import _fw_hosts, _layout
from tests.helpers import reference
from tests.helpers.reference import parse_rules


def colliding_keys(count):
    """count 4-byte keys in one bucket: the table takes any key, so these need not be addresses in use."""
    by_bucket = {}
    for number in range(1 << 24):
        key = number.to_bytes(4, "little")
        held = by_bucket.setdefault(_fw_hosts.bucket_of(number), [])
        held.append(key)
        if len(held) == count:
            return held
    raise AssertionError("no bucket reached %d keys" % count)


def chain(*positions):
    return _layout.CHAIN.format.pack(len(positions), *(list(positions) + [0] * (_layout.CHAIN_MAX - len(positions))))


def test_a_bucket_keeps_its_first_addresses_in_order_and_marks_the_rest_as_overflow():
    keys = colliding_keys(_layout.BUCKET_HOSTS + 2)
    entries = dict((key, chain(index)) for index, key in enumerate(reversed(keys)))
    entries[keys[0]] = chain(3, 9)
    (index, packed), = _fw_hosts.host_tables({"s4h": entries, "d4h": {}})["s4x"].items()
    bucket = _layout.HOSTS4.unpack(packed)
    assert index == _fw_hosts.bucket_of(int.from_bytes(keys[0], "little"))
    assert (bucket.count, bucket.overflow) == (_layout.BUCKET_HOSTS, 1)
    addresses = [getattr(bucket, "addr%d" % slot) for slot in range(_layout.BUCKET_HOSTS)]
    assert addresses == sorted(int.from_bytes(key, "little") for key in keys)[:_layout.BUCKET_HOSTS]
    positions = [getattr(bucket, "pos%d" % slot) for slot in range(_layout.BUCKET_HOSTS)]
    assert positions[0] == _layout.CHAINED
    assert positions[1:] == [len(keys) - 1 - slot for slot in range(1, _layout.BUCKET_HOSTS)]


def test_the_tables_are_those_of_the_hash_maps_and_a_function_of_their_entries():
    config = [{"action": "drop", "source": "198.18.%d.%d" % (third, fourth)} for third in range(4) for fourth in range(200)]
    config += [{"action": "pass", "destination": "198.19.0.1", "port": 22}, {"action": "drop", "source": "198.18.9.0/24"}]
    compiled = reference.compile_rules(parse_rules(config), "pass")
    reordered = dict((name, dict(reversed(list(entries.items())))) for name, entries in compiled.prefixes.items())
    assert _fw_hosts.host_tables(reordered) == compiled.hosts
    held = sorted(address for packed in compiled.hosts["s4x"].values()
                  for address in _held(_layout.HOSTS4.unpack(packed)))
    assert held == sorted(int.from_bytes(ipaddress.ip_address(rule["source"]).packed, "little") for rule in config[:800])
    assert [_layout.HOSTS4.unpack(packed).pos0 for packed in compiled.hosts["d4x"].values()] == [800]


def _held(bucket):
    return [getattr(bucket, "addr%d" % slot) for slot in range(bucket.count)]
