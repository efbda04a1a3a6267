# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Address sets: named lists of IPv4 and IPv6 prefixes that rules match with source_set or destination_set.

A set's canonical form is its prefixes without the ones another prefix of the set covers, in ipaddress'
text, IPv4 before IPv6, each family in address order. Its digest is that of those lines; a rule refers to the
set by a tag derived from its name. The controller (action plugin) and the host parse sets with the same
code here. Semantics: docs/RULES.md.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import base64
import binascii
import hashlib
import re
import socket
import zlib
from collections import namedtuple

from ansible_collections.xdpfleet.xdp.plugins.module_utils import _errors

NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
COMMENT = re.compile(r"[#;]")
FAMILIES = ((4, socket.AF_INET, 32), (6, socket.AF_INET6, 128))
WIDTHS = dict((family, width) for family, _af, width in FAMILIES)
DIFF_ENTRIES_UP_TO = 20  # entries listed per set and direction in diff mode


class SetError(_errors.XdpfleetError, ValueError):
    """Invalid sets; `errors` lists one message per problem, each naming the set and the line or item."""

    def __init__(self, errors):
        super(SetError, self).__init__(_errors.listed(errors))
        self.errors = list(errors)


def set_tag(name):
    """The 16 bytes by which a packed rule names its set (the kernel holds no names)."""
    return hashlib.sha256(b"xdpfleet set " + name.encode("utf-8")).digest()[:16]


def by_tag(sets):
    """{set tag: value} of {set name: value}."""
    return dict((set_tag(name), value) for name, value in sets.items())


def tag_names(names):
    """{set tag: name} of set names."""
    return dict((set_tag(name), name) for name in names)


def check_name(name, where):
    if not isinstance(name, str) or not NAME_PATTERN.match(name):
        raise ValueError("%s: %r is not a set name (letters, digits, '_', '.', '-'; up to 64, starting with a "
                         "letter or digit)" % (where, name))
    return name


# One prefix: family (4 or 6), the network address as an int and the prefix length; so ordered, a prefix comes
# right before the prefixes it covers.
Prefix = namedtuple("Prefix", "family address length")


class AddressSet(namedtuple("AddressSet", "lines digest")):
    """A set in canonical form: lines (canonical prefixes as text) and the digest of those lines."""

    @classmethod
    def of_lines(cls, lines):
        """The set of canonical lines, as AddressSet.lines holds them (not checked again)."""
        lines = list(lines)
        return cls(lines, lines_digest(lines))

    def prefixes(self):
        """(family, length, packed network address) of each prefix."""
        return [_packed_prefix(line) for line in self.lines]

    def holds(self, address):
        """True when an ipaddress address is in a prefix of the set."""
        width = address.max_prefixlen
        value = int(address)
        networks = set((family, length, int.from_bytes(packed, "big")) for family, length, packed in self.prefixes()
                       if family == address.version)
        return any((address.version, length, value >> (width - length) << (width - length)) in networks
                   for length in range(width + 1))


def lines_digest(lines):
    return hashlib.sha256("\n".join(lines).encode("ascii")).hexdigest()


def _packed_prefix(line):
    address, length = line.split("/")
    if ":" in address:
        return 6, int(length), socket.inet_pton(socket.AF_INET6, address)
    return 4, int(length), socket.inet_pton(socket.AF_INET, address)


def parse_prefix(text):
    """The Prefix of an address or CIDR; ValueError with the fix when it is not one."""
    address, slash, length_text = text.partition("/")
    for family, af, width in FAMILIES:
        try:
            packed = socket.inet_pton(af, address)
        except (OSError, ValueError):
            continue
        length = width if not slash else _length(length_text, width)
        if length is None:
            raise ValueError("%s has no valid prefix length (0-%d)" % (text, width))
        value = int.from_bytes(packed, "big")
        host_bits = value & ((1 << (width - length)) - 1)
        if host_bits:
            raise ValueError("%s has host bits set (did you mean %s?)"
                             % (text, prefix_text(Prefix(family, value ^ host_bits, length))))
        return Prefix(family, value, length)
    raise ValueError("%r is not an IPv4/IPv6 address or CIDR (e.g. 198.18.0.0/15 or 2001:db8::/32)" % (text,))


def _length(text, width):
    if not text.isascii() or not text.isdigit() or int(text) > width:
        return None
    return int(text)


def prefix_text(prefix):
    if prefix.family == 4:
        return "%s/%d" % (socket.inet_ntop(socket.AF_INET, prefix.address.to_bytes(4, "big")), prefix.length)
    return "%s/%d" % (socket.inet_ntop(socket.AF_INET6, prefix.address.to_bytes(16, "big")), prefix.length)


def canonical(prefixes):
    """The AddressSet of Prefixes: the ones another covers dropped (they match nothing more), sorted."""
    lines = []
    family, end = None, -1  # end: the last address the latest kept prefix of this family covers
    for prefix in sorted(prefixes):
        if prefix.family == family and prefix.address <= end:
            continue  # inside the kept prefix before it: prefixes nest or are disjoint
        family, end = prefix.family, prefix.address + (1 << (WIDTHS[prefix.family] - prefix.length)) - 1
        lines.append(prefix_text(prefix))
    return AddressSet.of_lines(lines)


def parse_entries(entries, where):
    """The AddressSet of a list of addresses and CIDRs; SetError naming `where` and the item of each problem."""
    if not isinstance(entries, list):
        raise SetError(["%s: must be a list of addresses or CIDRs" % where])
    return _parsed((("%s[%d]" % (where, index), entry) for index, entry in enumerate(entries)))


def parse_text(text, where):
    """The AddressSet of a blocklist file: one address or CIDR per line, '#' and ';' start comments."""
    items = []
    for number, line in enumerate(text.splitlines(), 1):
        entry = COMMENT.split(line, 1)[0].strip()
        if entry:
            items.append(("%s line %d" % (where, number), entry))
    return _parsed(items)


def _parsed(items):
    prefixes, errors = [], []
    for where, entry in items:
        try:
            prefixes.append(parse_prefix(entry) if isinstance(entry, str) else _not_text(entry))
        except ValueError as error:
            errors.append("%s: %s" % (where, error))
    if errors:
        raise SetError(errors)
    return canonical(prefixes)


def _not_text(entry):
    raise ValueError("%r is not an address or CIDR in quotes" % (entry,))


def changes(before, after):
    """(added lines, removed lines) from one AddressSet (or None) to another."""
    old, new = set(before.lines if before else ()), set(after.lines)
    return sorted(new - old), sorted(old - new)


def diff_lines(name, after, added, removed):
    """Diff mode's lines for one set (its changes as changes() gives them): counts, then entries up to
    DIFF_ENTRIES_UP_TO each way."""
    if not added and not removed:
        return []
    lines = ["~ set %s: %d entries, %d added, %d removed" % (name, len(after.lines), len(added), len(removed))]
    for sign, entries in (("+", added), ("-", removed)):
        lines += ["%s   %s" % (sign, entry) for entry in entries[:DIFF_ENTRIES_UP_TO]]
        if len(entries) > DIFF_ENTRIES_UP_TO:
            lines.append("%s   ... and %d more" % (sign, len(entries) - DIFF_ENTRIES_UP_TO))
    return lines


def sets_of_option(sets):
    """{name: AddressSet} of xdp_rules' sets option: per name a list of addresses and CIDRs, or canonical lines
    with their digest, as the stored desired state holds them (`lines`) or the action plugin sends them
    (`compressed`: zlib, base64)."""
    if sets is None:
        return {}
    if not isinstance(sets, dict):
        raise SetError(["sets: must be a dict of set name: list of addresses and CIDRs"])
    result, errors = {}, []
    for name, value in sorted(sets.items()):
        try:
            check_name(name, "sets")
            result[name] = _set_of_value(value, "sets.%s" % name)
        except SetError as error:
            errors.extend(error.errors)
        except ValueError as error:
            errors.append(str(error))
    if errors:
        raise SetError(errors)
    return result


def _set_of_value(value, where):
    if isinstance(value, list):
        return parse_entries(value, where)
    if not isinstance(value, dict) or "digest" not in value or not ("lines" in value or "compressed" in value):
        raise SetError(["%s: must be a list of addresses and CIDRs (a file is read by the action plugin: "
                        "give {file: PATH} to the task, not to the module directly)" % where])
    lines = value["lines"] if "lines" in value else _decompressed(value["compressed"], where)
    address_set = AddressSet.of_lines(lines)
    if address_set.digest != value["digest"]:
        raise SetError(["%s: its entries do not have the digest sent with them (%s): run the task again"
                        % (where, value["digest"])])
    return address_set


def compressed(address_set):
    """The action plugin's form of a set: its canonical lines, compressed, with their digest."""
    text = "\n".join(address_set.lines).encode("ascii")
    return {"compressed": base64.b64encode(zlib.compress(text, 6)).decode("ascii"), "digest": address_set.digest}


def _decompressed(text, where):
    try:
        lines = zlib.decompress(base64.b64decode(text, validate=True)).decode("ascii")
    except (binascii.Error, zlib.error, UnicodeDecodeError, ValueError, TypeError) as error:
        raise SetError(["%s: compressed entries that do not decompress (%s)" % (where, error)])
    return lines.split("\n") if lines else []


def stored_form(sets):
    """The sets as the desired state on disk keeps them."""
    return dict((name, {"digest": address_set.digest, "lines": address_set.lines})
                for name, address_set in sets.items())
