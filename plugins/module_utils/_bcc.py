# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The bcc backend of xdp_program: compile a libbpf-style XDP source on the host with bcc.

bcc compiles C with its own rewriter, which knows neither BTF map definitions
(SEC(".maps") with __uint/__type) nor raw helper calls on `&map`, and does not
rewrite map references inside macros. translate() turns the one source of
truth (bpf/xdp_firewall.bpf.c) into bcc's dialect at load time:

1. local "..." includes are inlined (bundle(), also run by the action plugin so one file travels);
2. the blocks under `#ifndef XF_NO_SHADOW` (shadow sets) and `#ifndef XF_NO_NEXT` (the next program) and the
   libbpf headers are dropped (bcc brings its own helpers), function-like macros defined in the source are
   expanded, so every map reference is written out;
3. BTF map definitions become BPF_F_TABLE declarations (optionally pinned, see below);
4. functions taking a map pointer are specialised per map, then bpf_map_lookup_elem(&m, k)
   becomes m.lookup(k), bpf_map_update_elem(&m, k, v, BPF_NOEXIST) m.insert(k, v) and
   bpf_ringbuf_reserve(&m, n, 0) m.ringbuf_reserve(n).

Maps carried over on upgrade use bcc's own sharing mechanism: a section "maps/<type>:<pin path>"
makes bcc use the map pinned there. bcc does not check that map's layout, so BccObject compares it.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import contextlib
import hashlib
import os
import re
import shutil
import sys
import tempfile

from ansible_collections.xdpfleet.xdp.plugins.module_utils import _hostfs
from ansible_collections.xdpfleet.xdp.plugins.module_utils import _libbpf as libbpf
from ansible_collections.xdpfleet.xdp.plugins.module_utils._errors import XdpfleetError

BCC_PACKAGES = "Debian/Ubuntu: apt-get install python3-bpfcc; RHEL/Fedora: dnf install python3-bcc"
MAP_TYPES = {  # the map types bcc can declare: (bcc's name, kernel type number)
    "BPF_MAP_TYPE_HASH": ("hash", 1), "BPF_MAP_TYPE_ARRAY": ("array", 2),
    "BPF_MAP_TYPE_PERCPU_HASH": ("percpu_hash", 5), "BPF_MAP_TYPE_PERCPU_ARRAY": ("percpu_array", 6),
    "BPF_MAP_TYPE_LRU_HASH": ("lru_hash", 9), "BPF_MAP_TYPE_LRU_PERCPU_HASH": ("lru_percpu_hash", 10),
    "BPF_MAP_TYPE_LPM_TRIE": ("lpm_trie", 11), "BPF_MAP_TYPE_RINGBUF": ("ringbuf", 27),
}
LIBBPF_INCLUDE = re.compile(r'^\s*#\s*include\s*<bpf/[^>]+>[^\n]*\n', re.M)
LOCAL_INCLUDE = re.compile(r'^\s*#\s*include\s*"([^"]+)"[^\n]*$', re.M)
MACRO_DEFINITION = re.compile(r'^[ \t]*#[ \t]*define[ \t]+(\w+)\(([^)]*)\)((?:[^\n]*\\\n)*[^\n]*)\n', re.M)
MAP_DEFINITION = re.compile(r'struct\s*\{([^{}]*)\}\s*(\w+)\s+SEC\("\.maps"\)\s*;')
MAP_ATTRIBUTE = re.compile(r'__(uint|type)\(\s*(\w+)\s*,\s*([^;]*?)\s*\)\s*;')
PROGRAM_SECTION = re.compile(r'SEC\("(xdp[^"]*)"\)\s*(?:int|__u32|unsigned int)\s+(\w+)\s*\(')
GLOBAL_FUNCTION = re.compile(r'^__noinline\s+', re.M)
# Left out before the translation (as the preprocessor would with XF_NO_SHADOW and XF_NO_NEXT defined), so that no
# map function is specialised for their maps. Shadow rule sets: bcc inlines every function, and a second
# classification would pass the verifier's limit. The next program (hook: chained): a tail call, which bcc spells
# its own way.
NOT_FOR_BCC = re.compile(r'^#ifndef XF_NO_(?:SHADOW|NEXT)\n.*?^#endif\n', re.M | re.S)
COMMENT = re.compile(r'/\*.*?\*/|//[^\n]*', re.S)
INLINE_FUNCTION = re.compile(r'static\s+__always_inline\s+[\w\s\*]*?\b(\w+)\s*\(\s*(?:const\s+)?void\s*\*\s*(\w+)\s*,')
MAP_LOOKUP = re.compile(r'bpf_map_lookup_elem\(\s*\(?&(\w+)\)?\s*,')
MAP_INSERT = re.compile(r'bpf_map_update_elem\(\s*&(\w+)\s*,\s*([^,]+),\s*([^,]+),\s*BPF_NOEXIST\s*\)')
DESIGNATED_LOCAL = re.compile(r'^([ \t]+(?:const\s+)?struct\s+\w+\s+)(\w+)\s*=\s*\{\s*(\.\w+\s*=[^{};]*?)\s*\};', re.M)
OBJECT_MACRO = re.compile(r'^[ \t]*#[ \t]*define[ \t]+(\w+)[ \t]+(\w+)[ \t]*$', re.M)
RINGBUF_RESERVE = re.compile(r'bpf_ringbuf_reserve\(\s*\(?&(\w+)\)?\s*,\s*([^,()]+(?:\([^()]*\))?)\s*,\s*0\s*\)')


class BccError(XdpfleetError):
    pass


# --- translation (pure text; runs on the controller and on the host) ------------------------

def bundle(path, seen=None):
    """The source at path with its local "..." includes inlined (each file once)."""
    seen = set() if seen is None else seen
    directory = os.path.dirname(os.path.abspath(path))
    with open(path) as handle:
        text = handle.read()

    def inline(match):
        included = os.path.realpath(os.path.join(directory, match.group(1)))
        if included in seen:
            return ""
        seen.add(included)
        return bundle(included, seen)
    return LOCAL_INCLUDE.sub(inline, text)


def _balanced_arguments(text, start):
    """(arguments, end) of the parenthesised argument list opening at text[start] == '('."""
    depth, arguments, current = 0, [], start + 1
    for index in range(start, len(text)):
        char = text[index]
        if char == "(":
            depth += 1
        elif char == ")":
            depth -= 1
            if depth == 0:
                arguments.append(text[current:index].strip())
                return arguments, index + 1
        elif char == "," and depth == 1:
            arguments.append(text[current:index].strip())
            current = index + 1
    raise BccError("unbalanced parentheses after offset %d" % start)


def _substitute(body, parameters, arguments):
    for parameter, argument in zip(parameters, arguments):
        body = re.sub(r"\b%s\b" % re.escape(parameter), lambda _m, a=argument: a, body)
    return re.sub(r"\s*##\s*", "", body)


def expand_macros(text):
    """Expands the function-like macros the source defines itself (bcc cannot see maps inside macros)."""
    macros = {}
    for name, parameters, body in MACRO_DEFINITION.findall(text):
        macros[name] = ([p.strip() for p in parameters.split(",") if p.strip()], body.replace("\\\n", "\n"))
    text = MACRO_DEFINITION.sub("", text)
    if not macros:
        return text
    invocation = re.compile(r"\b(%s)\s*\(" % "|".join(map(re.escape, macros)))
    while True:
        match = invocation.search(text)
        if not match:
            return text
        arguments, end = _balanced_arguments(text, match.end() - 1)
        parameters, body = macros[match.group(1)]
        text = text[:match.start()] + _substitute(body, parameters, arguments) + text[end:]


def _map_declaration(name, attributes, pin):
    if attributes.get("type") not in MAP_TYPES:
        raise BccError("map %s: type %s has no bcc equivalent here" % (name, attributes.get("type")))
    kind = MAP_TYPES[attributes["type"]][0]
    section = '"%s%s"' % (kind, ":" + pin if pin else "")
    if kind == "ringbuf":
        return "XF_BCC_RINGBUF(%s, %s, %s);" % (section, name, attributes["max_entries"])
    return "BPF_F_TABLE(%s, %s, %s, %s, %s, %s);" % (
        section, attributes["key"], attributes["value"], name, attributes["max_entries"],
        attributes.get("map_flags", "0"))


def map_definitions(text):
    """{name: {attribute: C expression}} of the BTF map definitions in expanded text."""
    definitions = {}
    for body, name in MAP_DEFINITION.findall(text):
        definitions[name] = dict((key, value) for _kind, key, value in MAP_ATTRIBUTE.findall(COMMENT.sub("", body)))
    return definitions


def _specialise_map_functions(text, maps):
    """f(&map, ...) calls of an inline function whose first parameter is a map pointer become f__map(...)."""
    for function in [match.group(1) for match in INLINE_FUNCTION.finditer(text)]:
        match = next(match for match in INLINE_FUNCTION.finditer(text) if match.group(1) == function)
        parameter = match.group(2)  # found again in the text as rewritten so far: offsets move with each copy
        called_with = sorted(set(re.findall(r"\b%s\(\s*&(\w+)\s*," % function, text)) & set(maps))
        if not called_with:
            continue
        open_brace = text.index("{", match.end())
        close_brace = _matching_brace(text, open_brace)
        definition = text[match.start():close_brace + 1]
        copies = []
        for map_name in called_with:
            copy = definition.replace(function + "(", "%s__%s(" % (function, map_name), 1)
            copy = re.sub(r"\(\s*(?:const\s+)?void\s*\*\s*%s\s*,\s*" % parameter, "(", copy, 1)
            copies.append(re.sub(r"\b%s\b" % parameter, "(&%s)" % map_name, copy))
        text = text.replace(definition, "\n".join(copies), 1)
        text = re.sub(r"\b%s\(\s*&(\w+)\s*,\s*" % function, lambda m: "%s__%s(" % (function, m.group(1)), text)
    return text


def _matching_brace(text, open_brace):
    depth = 0
    for index in range(open_brace, len(text)):
        depth += {"{": 1, "}": -1}.get(text[index], 0)
        if depth == 0:
            return index
    raise BccError("unbalanced braces after offset %d" % open_brace)


def _zero_then_assign(match):
    """struct s v = { .a = x, .b = y }; -> struct s v = {}; v.a = x; v.b = y;

    clang turns a partial designated initializer into a copy from a read-only global, which
    bcc cannot load (it has no global data); a zeroed struct and stores need none.
    """
    declaration, variable, fields = match.groups()
    stores = " ".join("%s%s;" % (variable, field.strip()) for field in fields.split(","))
    return "%s%s = {}; %s" % (declaration, variable, stores)


def translate(text, pins=None, sizes=None):
    """(bcc source, {map name: its attributes as C expressions}, XDP program names) of a bundled libbpf-style
    source.

    pins: {map name: bpffs path} of existing maps bcc is to use instead of creating them.
    sizes: {map name: max_entries} declared in place of the source's own.
    """
    pins, sizes = pins or {}, sizes or {}
    text = expand_macros(LIBBPF_INCLUDE.sub("", NOT_FOR_BCC.sub("", text)))
    definitions = map_definitions(text)
    programs = [name for _section, name in PROGRAM_SECTION.findall(text)]
    text = MAP_DEFINITION.sub(lambda m: _map_declaration(m.group(2), _sized(definitions[m.group(2)],
                                                                            sizes.get(m.group(2))),
                                                         pins.get(m.group(2))), text)
    text = re.sub(r'SEC\("xdp[^"]*"\)\s*', "", text)
    text = DESIGNATED_LOCAL.sub(_zero_then_assign, text)
    text = GLOBAL_FUNCTION.sub("static __always_inline ", text)  # bcc cannot call a global function
    text = _specialise_map_functions(text, definitions)
    text = MAP_LOOKUP.sub(lambda m: "%s.lookup(" % m.group(1), text)
    text = MAP_INSERT.sub(lambda m: "%s.insert(%s, %s)" % m.groups(), text)
    text = RINGBUF_RESERVE.sub(lambda m: "%s.ringbuf_reserve(%s)" % (m.group(1), m.group(2)), text)
    leftover = re.findall(r"&(%s)\b" % "|".join(map(re.escape, definitions)), text) if definitions else []
    if leftover:
        raise BccError("map %s is used in a way the bcc translation does not support (only "
                       "bpf_map_lookup_elem, bpf_map_update_elem with BPF_NOEXIST, bpf_ringbuf_reserve and "
                       "inline functions taking the map "
                       "as first argument)" % leftover[0])
    return COMPAT_HEADER + text, definitions, programs


def _sized(attributes, size):
    return attributes if size is None else dict(attributes, max_entries=str(size))


# bcc declares a ring buffer only through BPF_RINGBUF_OUTPUT, which cannot take a pin path; SEC is libbpf's.
COMPAT_HEADER = """\
#ifndef SEC
#define SEC(_name) __attribute__((section(_name), used))
#endif
#define XF_BCC_RINGBUF(_section, _name, _size) \\
struct _name##_table_t { int key; u32 leaf; \\
  int (*ringbuf_output) (void *, u64, u64); void *(*ringbuf_reserve) (u64); \\
  void (*ringbuf_submit) (void *, u64); void (*ringbuf_discard) (void *, u64); \\
  u32 max_entries; int flags; }; \\
__attribute__((section("maps/" _section))) struct _name##_table_t _name = { .max_entries = (_size) }
"""


def read_only_constant(text, cflags, name):
    """The value of the `const volatile` integer global `name` of a source (bcc keeps no global data to read it
    from): a number, or an object-like macro for one, which a -D flag overrides as the sources' #ifndef-guarded
    defaults expect. None when the source has no such global."""
    text = COMMENT.sub("", text)
    found = re.search(r'\bconst\s+volatile\s+\w+\s+%s\s*=\s*(\w+)\s*;' % re.escape(name), text)
    if not found:
        return None
    macros = dict(OBJECT_MACRO.findall(text))
    macros.update(_defined_by_flags(cflags))
    value, seen = found.group(1), set()
    while value in macros and value not in seen:
        seen.add(value)
        value = macros[value]
    try:
        return int(value.rstrip("uUlL"), 0)
    except ValueError:
        raise BccError("the value of %s (%s) is not a number the bcc backend can read from the source" % (name, value))


def _defined_by_flags(cflags):
    """{macro: value} of the -D flags among cflags (-DNAME=VALUE, -DNAME, -D NAME=VALUE)."""
    defined, flags = {}, iter(cflags)
    for flag in flags:
        if flag == "-D":
            flag += next(flags, "")
        if flag.startswith("-D"):
            macro, _equals, value = flag[2:].partition("=")
            defined[macro] = value or "1"
    return defined


def source_sha256(path, cflags):
    """Identity of a bcc program: its bundled source (local includes inlined, so not the file's digest) and
    the flags; nothing is compiled to compute it."""
    digest = hashlib.sha256(bundle(path).encode())
    digest.update("\0".join(cflags).encode())
    return digest.hexdigest()


# --- loading (host only) ---------------------------------------------------------------------

BCC_CFLAGS = ["-Wno-incompatible-pointer-types", "-Wno-incompatible-pointer-types-discards-qualifiers"]
LOG_LINES_IN_MESSAGE = 12


def bcc_module():
    """bcc's Python package, or BccError naming the package that provides it."""
    try:
        import bcc
    except ImportError as error:
        raise BccError("compiler: bcc needs bcc's Python bindings for %s on the host (%s): %s (%s)"
                       % (sys.executable, error, BCC_PACKAGES, "see docs/BCC.md"))
    return bcc


def check_kernel_headers(release=None, modules_root="/lib/modules", environ=None):
    """Refuses a host where bcc would find no kernel headers (it needs them to compile)."""
    release = release or os.uname()[2]
    environ = os.environ if environ is None else environ
    build = os.path.join(modules_root, release, "build")
    if environ.get("BCC_KERNEL_SOURCE") or os.path.exists("/sys/kernel/kheaders.tar.xz"):
        return
    if not os.path.isdir(os.path.join(build, "include")):
        raise BccError("compiler: bcc needs the headers of kernel %s, but %s does not lead to them. Install "
                       "them (Debian: linux-headers-%s, RHEL: kernel-devel-%s), or when the kernel has no "
                       "headers package, point %s (and ../source) at a headers tree of a close version "
                       "(see docs/BCC.md)" % (release, build, release, release, build))


@contextlib.contextmanager
def captured_stderr():
    """bcc (clang, the verifier) writes diagnostics to fd 2; yields a callable returning them."""
    with tempfile.TemporaryFile(mode="w+") as sink:
        sys.stderr.flush()
        saved = os.dup(2)
        os.dup2(sink.fileno(), 2)
        try:
            yield lambda: (sink.seek(0), sink.read())[1]
        finally:
            os.dup2(saved, 2)
            os.close(saved)


def _tail(log):
    lines = [line for line in log.strip().splitlines() if "warning:" not in line]
    return "\n".join(lines[-LOG_LINES_IN_MESSAGE:])


class BccProgram:
    is_xdp = True

    def __init__(self, owner, name):
        self._owner, self.name, self.autoload = owner, name, True

    @property
    def fd(self):
        return self._owner.program_fd(self.name)

    def set_autoload(self, autoload):
        self.autoload = autoload

    def set_ifindex(self, ifindex):
        raise BccError("compiler: bcc does not support XDP hardware offload (mode hw); use compiler: clang")


class BccMap:
    def __init__(self, owner, name):
        self._owner, self.name = owner, name

    @property
    def fd(self):
        return self._owner.map_fd(self.name)

    @property
    def map_type(self):
        return self._owner.map_type(self.name)

    def definition(self):
        return self._owner.definition(self.name)

    def set_max_entries(self, max_entries):
        self._owner.set_size(self.name, max_entries)

    def reuse_fd(self, fd):
        self._owner.reuse(self.name, fd)

    def set_ifindex(self, ifindex):
        raise BccError("compiler: bcc does not support XDP hardware offload (mode hw); use compiler: clang")


class BccObject:
    """A source compiled and loaded on this host with bcc; the same interface as _libbpf.BpfObject.

    live_map_fd(name) gives a new fd of the live map the program should keep (or None). The first
    compile (needed to learn the declared layouts) already uses every such map, so an upgrade that
    keeps them all compiles once; load() recompiles only when fewer maps are to be reused.
    """

    def __init__(self, path, cflags, live_map_fd):
        self.path, self._cflags, self._live_map_fd = path, list(cflags), live_map_fd
        self._text = bundle(path)
        _bcc_text, self._definitions, program_names = translate(self._text)
        self.maps = [BccMap(self, name) for name in self._definitions]
        self.programs = [BccProgram(self, name) for name in program_names]
        self._bpf, self._bound, self._reused, self._loaded, self._sizes = None, {}, {}, {}, {}

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.close()

    def close(self):
        for fd in self._bound.values():
            os.close(fd)
        self._bound = {}
        if self._bpf is not None:
            self._bpf.cleanup()
            self._bpf = None

    def _compile(self, fds):
        """Compiles with bcc, using the maps of fds ({name: fd}) instead of creating those."""
        self.close()
        bcc = bcc_module()
        check_kernel_headers()
        stage = None
        if fds:
            _hostfs.mount_bpffs()
            stage = tempfile.mkdtemp(prefix="xdpfleet-bcc-", dir=_hostfs.BPFFS_ROOT)
        try:
            pins = {}
            for name, fd in fds.items():
                pins[name] = os.path.join(stage, name)
                libbpf.obj_pin(fd, pins[name])
            text = translate(self._text, pins, self._sizes)[0]
            with captured_stderr() as log:
                try:
                    self._bpf = bcc.BPF(text=text, cflags=BCC_CFLAGS + self._cflags)
                except Exception as error:
                    raise BccError("bcc could not compile %s (%s):\n%s" % (self.path, error, _tail(log())))
        finally:
            if stage:
                shutil.rmtree(stage)
        self._bound = dict((name, os.dup(fd)) for name, fd in fds.items())

    def _ensure_compiled(self):
        if self._bpf is None:
            candidates = {}
            try:
                for bpf_map in self.maps:
                    fd = self._live_map_fd(bpf_map.name)
                    if fd is not None:
                        candidates[bpf_map.name] = fd
                self._compile(candidates)
            finally:
                for fd in candidates.values():
                    os.close(fd)
        return self._bpf

    def _table(self, name, attribute):
        return getattr(self._bcc_lib(), "bpf_table_" + attribute)(self._ensure_compiled().module, name.encode())

    def _bcc_lib(self):
        return bcc_module().lib

    def definition(self, name):
        return {"type": self._table(name, "type"), "key_size": self._table(name, "key_size"),
                "value_size": self._table(name, "leaf_size"), "max_entries": self._table(name, "max_entries"),
                "map_flags": self._table(name, "flags")}

    def map_fd(self, name):
        return self._table(name, "fd")

    def map_type(self, name):
        return MAP_TYPES[self._definitions[name]["type"]][1]

    def set_size(self, name, max_entries):
        """Declares the map with max_entries; a compile made before is dropped, as it used the declared size."""
        self._sizes[name] = max_entries
        self.close()

    def reuse(self, name, fd):
        self._reused[name] = fd

    def load(self):
        """Compiles again when the maps bound at the first compile are not exactly the ones to reuse."""
        if self._bpf is None or set(self._bound) != set(self._reused):
            self._compile(self._reused)
        bcc = bcc_module()
        for program in self.programs:
            if program.autoload:
                with captured_stderr() as log:
                    try:
                        self._loaded[program.name] = self._bpf.load_func(program.name, bcc.BPF.XDP)
                    except Exception as error:
                        raise BccError("the kernel rejected program %s of %s (%s); end of the verifier log:\n%s"
                                       % (program.name, self.path, error, _tail(log())))

    def program_fd(self, name):
        return self._loaded[name].fd

    def read_only_constant(self, name):
        return read_only_constant(self._text, self._cflags, name)
