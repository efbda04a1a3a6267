"""What a firewall rule-set slot holds, read from its maps, and what a compiled rule set says it must hold,
in one comparable shape: (meta, rules, port/protocol index, {prefix map: {key: chain}},
{host table: {bucket index: bucket}} without the empty buckets)."""

from ansible_collections.xdpfleet.xdp.plugins.module_utils import _fw_hosts, _fw_kernel, _layout, _libbpf


def slot_contents(maps, slot):
    meta = _fw_kernel.read_config(maps)[2][slot]
    count = _layout.SLOT_META.format.unpack_from(meta)[1]
    prefixes = {}
    for name in _layout.PREFIX_MAPS:
        fd = maps["xf_%s_%d" % (name, slot)]
        info = _libbpf.map_info(fd)
        prefixes[name] = dict(_libbpf.map_items(fd, info["key_size"], info["value_size"], 64))
    return (meta, _libbpf.array_values(maps["xf_rules_%d" % slot], _layout.RULE.size, count),
            _libbpf.array_values(maps["xf_gen_%d" % slot], 4, _layout.GEN_ENTRIES), prefixes,
            dict((table, host_buckets(maps["xf_%s_%d" % (table, slot)])) for table in _layout.HOST_TABLES.values()))


def host_buckets(fd):
    size = _layout.HOSTS4.size
    raw = _libbpf.array_values(fd, size, _layout.HOST_BUCKETS)
    return dict((index, raw[index * size:(index + 1) * size]) for index in range(_layout.HOST_BUCKETS)
                if raw[index * size:(index + 1) * size] != _fw_hosts.EMPTY_BUCKET)


def compiled_contents(compiled):
    return (compiled.meta, b"".join(compiled.rules), b"".join(_layout.U32.pack(first) for first in compiled.gen),
            compiled.prefixes, compiled.hosts)
