"""_bcc.translate, the text rewrite that lets bcc compile the libbpf-style firewall source."""

from ansible_collections.xdpfleet.xdp.plugins.module_utils import _bcc

SOURCE = """
struct {
    __uint(type, BPF_MAP_TYPE_ARRAY);
    __uint(max_entries, 1);
    __type(key, __u32);
    __type(value, __u32);
} first_map SEC(".maps");

struct {
    __uint(type, BPF_MAP_TYPE_ARRAY);
    __uint(max_entries, 1);
    __type(key, __u32);
    __type(value, __u32);
} second_map SEC(".maps");

static __always_inline __u32 read_one(void *map, __u32 key)
{
    __u32 *value = bpf_map_lookup_elem(map, &key);

    return value ? *value : 0;
}

static __always_inline void bump(void *map, __u32 key)
{
    __u32 *value = bpf_map_lookup_elem(map, &key);

    if (value)
        *value += 1;
}

SEC("xdp")
int prog(struct xdp_md *ctx)
{
    bump(&second_map, read_one(&first_map, 0) + read_one(&second_map, 0));
    return XDP_PASS;
}
"""


def test_every_inline_function_taking_a_map_gets_a_copy_per_map():
    """The second function's definition is found after the first one's copies moved it."""
    text, maps, programs = _bcc.translate(SOURCE)
    for copy in ("read_one__first_map(", "read_one__second_map(", "bump__second_map("):
        assert text.count(copy) == 2, copy  # its definition and its call
    assert "bump(" not in text and "read_one(" not in text
    assert sorted(maps) == ["first_map", "second_map"] and programs == ["prog"]


def test_a_size_replaces_the_declared_one_of_that_map_alone():
    text, maps, _programs = _bcc.translate(SOURCE, sizes={"second_map": 4096})
    assert 'BPF_F_TABLE("array", __u32, __u32, second_map, 4096, 0);' in text
    assert 'BPF_F_TABLE("array", __u32, __u32, first_map, 1, 0);' in text
    assert maps["second_map"]["max_entries"] == "1", "the source's own declaration is what translate reports"
