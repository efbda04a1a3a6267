# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Controller side of xdp_rules: rule files and set files read into the form the module takes, and the digest
of a whole request.

Files are parsed here, with json and PyYAML's C loader (never Ansible's templating or loaders), and each
distinct file once: the result is cached on disk by path, size and modification time, so that every host of a
run (one process each) and every later run with the file unchanged reads a small digest instead.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import fcntl
import hashlib
import json
import os

from ansible_collections.xdpfleet.xdp.plugins.module_utils import _errors, _fw_sets, _hostfs
from ansible_collections.xdpfleet.xdp.plugins.module_utils._fw_input import Entries
from ansible_collections.xdpfleet.xdp.plugins.module_utils._fw_model import RuleError
from ansible_collections.xdpfleet.xdp.plugins.module_utils._fw_store import entries_json, json_digest

FORMATS = ("text", "json", "yaml")
CACHE_VERSION = "1"


class SourceError(_errors.XdpfleetError):
    pass


def cache_dir():
    return os.path.join(os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "xdpfleet", "sources")


def file_format(path, given=None):
    """The format of a file: given, else by extension (.json, .yml/.yaml; anything else is text)."""
    if given:
        if given not in FORMATS:
            raise SourceError("%s: format %r is not one of %s" % (path, given, ", ".join(FORMATS)))
        return given
    extension = os.path.splitext(path)[1].lower()
    return {".json": "json", ".yml": "yaml", ".yaml": "yaml"}.get(extension, "text")


class CachedSource:
    """A parsed file in the cache: `digest` (small, read first) and `payload` (the module's form, read only when
    the host needs the content); `new`: this process parsed it, so this version of the file is new here."""

    def __init__(self, base, new=False):
        self.base, self.new = base, new

    @property
    def digest(self):
        with open(self.base + ".digest") as handle:
            return handle.read()

    @property
    def payload(self):
        with open(self.base + ".json") as handle:
            return json.load(handle)


def cached(path, kind, fmt, parse):
    """The CachedSource of a file, parsed by parse(text, fmt) -> (digest, payload) when the cache has no entry
    for this path, size and modification time. One process parses; the others wait for it."""
    try:
        info = os.stat(path)
    except OSError as error:
        raise SourceError("cannot read %s %s: %s" % (kind, path, error.strerror))
    key = "\0".join((CACHE_VERSION, kind, fmt, os.path.realpath(path), str(info.st_size), str(info.st_mtime_ns)))
    base = os.path.join(cache_dir(), hashlib.sha256(key.encode("utf-8")).hexdigest())
    if os.path.exists(base + ".digest"):
        return CachedSource(base)
    os.makedirs(cache_dir(), exist_ok=True)
    with open(base + ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if os.path.exists(base + ".digest"):
            return CachedSource(base)
        digest, payload = parse(_read(path, kind), fmt)
        _hostfs.write_atomically(base + ".json", json.dumps(payload, separators=(",", ":")))
        _hostfs.write_atomically(base + ".digest", digest)  # last: it says the entry is complete
    return CachedSource(base, new=True)


def _read(path, kind):
    try:
        with open(path, encoding="utf-8") as handle:
            return handle.read()
    except (OSError, UnicodeDecodeError) as error:
        raise SourceError("cannot read %s %s: %s" % (kind, path, error))


def _structured(text, fmt, where):
    """The data of a JSON or YAML text."""
    try:
        if fmt == "json":
            return json.loads(text)
        import yaml  # only for YAML files
        return yaml.load(text, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
    except Exception as error:  # noqa: BLE001 - json and yaml raise many kinds; the message says which
        raise SourceError("%s is not valid %s: %s" % (where, fmt.upper(), error))


def parse_set_file(path, fmt=None):
    """The CachedSource of a set file: its digest, and the module's form of the set."""
    fmt = file_format(path, fmt)

    def parse(text, fmt):
        if fmt == "text":
            address_set = _fw_sets.parse_text(text, path)
        else:
            address_set = _fw_sets.parse_entries(_structured(text, fmt, path), path)
        return address_set.digest, _fw_sets.compressed(address_set)

    return cached(path, "set", fmt, parse)


def parse_rules_file(path, fmt=None):
    """The CachedSource of a rules file (a JSON or YAML list of rules): the digest and JSON text of its
    validated entries."""
    fmt = file_format(path, fmt)
    if fmt == "text":
        raise SourceError("rules_file %s: rules are a YAML or JSON list (.yml, .yaml or .json)" % path)

    def parse(text, fmt):
        items = _structured(text, fmt, path)
        try:
            entries = Entries().from_items(items).entries
        except RuleError as error:
            raise SourceError("rules_file %s: %s" % (path, error))
        text = entries_json(entries)
        return json_digest(text), text

    return cached(path, "rules", fmt, parse)


def inline_set(name, entries):
    """(digest, module form) of a set given as a list in the task."""
    address_set = _fw_sets.parse_entries(entries, "sets.%s" % name)
    return address_set.digest, _fw_sets.compressed(address_set)


def request_digest(args, config_digest, set_digests):
    """The digest of everything that decides what a request makes of a host's rules."""
    document = dict((key, args.get(key)) for key in ("state", "default_action", "sampling"))
    document.update(config=config_digest, sets=set_digests)
    return hashlib.sha256(json.dumps(document, sort_keys=True).encode("utf-8")).hexdigest()
