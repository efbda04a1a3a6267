"""Controller-side build of the firewall role, run once per play: the BPF object and the restore zipapp.

Prints JSON {"object": path, "restore": path}, both in xdp_program's controller cache.
- The object comes from xdp_program's own compile step (loaded from the collection by path), so
  the flags, include paths and content-hash cache are the action plugin's, not a copy.
- The restore zipapp holds all of the collection's module_utils (so it follows their imports) and, as its
  __main__, restore_main.py beside this file:
  `python3 xdpfleet-restore.pyz` on a host runs the same code as the modules. It is written
  byte for byte the same for the same sources, so copying it again changes nothing.
Usage: python3 build.py COLLECTION_ROOT [SOURCE [CFLAG ...]] (no SOURCE: the user brings a prebuilt object)
"""

import glob
import hashlib
import importlib.util
import io
import json
import os
import sys
import zipfile

PACKAGE = "ansible_collections/xdpfleet/xdp/plugins/module_utils"
MAIN = os.path.join(os.path.dirname(os.path.abspath(__file__)), "restore_main.py")
FIXED_TIME = (1980, 1, 1, 0, 0, 0)


def make_importable(collection):
    """Puts the directory holding ansible_collections/xdpfleet/xdp on sys.path (the action plugin imports by FQCN).

    The role passes its own path, which runs through that directory when Ansible found the role by FQCN; a
    checkout used directly carries the link in .collections/.
    """
    collection = os.path.abspath(collection)
    parts = collection.split(os.sep)
    if parts[-3:] == ["ansible_collections", "xdpfleet", "xdp"]:
        sys.path.insert(0, os.sep.join(parts[:-3]))
    else:
        sys.path.insert(0, os.path.join(collection, ".collections"))


def compile_object(collection, source, cflags):
    make_importable(collection)
    path = os.path.join(collection, "plugins", "action", "xdp_program.py")
    spec = importlib.util.spec_from_file_location("xdpfleet_xdp_program_action", path)
    action = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(action)
    return action.compile_source(source, list(cflags)), os.path.expanduser(action.CACHE_DIR)


def zipapp_bytes(collection):
    # __init__.py at every level: older zipimport has no namespace packages
    with open(MAIN, "rb") as handle:
        members = [("__main__.py", handle.read())]
    parts = PACKAGE.split("/")
    members += [("/".join(parts[:depth] + ["__init__.py"]), b"") for depth in range(1, len(parts) + 1)]
    for path in sorted(glob.glob(os.path.join(collection, "plugins", "module_utils", "_*.py"))):
        with open(path, "rb") as handle:
            members.append(("%s/%s" % (PACKAGE, os.path.basename(path)), handle.read()))
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in members:
            archive.writestr(zipfile.ZipInfo(name, FIXED_TIME), data, zipfile.ZIP_DEFLATED)
    return buffer.getvalue()


def write_restore(collection, cache_dir):
    data = zipapp_bytes(collection)
    path = os.path.join(cache_dir, "xdpfleet-restore-%s.pyz" % hashlib.sha256(data).hexdigest()[:16])
    if not os.path.exists(path):
        partial = "%s.%d" % (path, os.getpid())
        with open(partial, "wb") as handle:
            handle.write(data)
        os.rename(partial, path)
    return path


def main(collection, source=None, *cflags):
    object_path, cache_dir = compile_object(collection, source, cflags) if source else (None, None)
    cache_dir = cache_dir or os.path.expanduser(os.path.join("~", ".cache", "xdpfleet"))
    os.makedirs(cache_dir, 0o700, exist_ok=True)
    print(json.dumps({"object": object_path, "restore": write_restore(collection, cache_dir)}))


if __name__ == "__main__":
    main(*sys.argv[1:])
