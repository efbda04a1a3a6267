# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Controller side of xdp_program: compile src with clang (cached), run the module with the object inline."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import base64
import hashlib
import os
import shutil
import subprocess
import tempfile

from ansible.errors import AnsibleActionFail
from ansible.module_utils.common.text.converters import to_bytes, to_text
from ansible.plugins.action import ActionBase
from ansible_collections.xdpfleet.xdp.plugins.module_utils import _bcc, _hostfs

MODULE = "xdpfleet.xdp.xdp_program"
BASE_CFLAGS = ["-O2", "-g", "-target", "bpf"]
CACHE_DIR = os.path.join("~", ".cache", "xdpfleet")
MISSING_CLANG = ("clang was not found on the controller (PATH=%s): install it (Debian/Ubuntu: apt-get install "
                 "clang) or pass a prebuilt object instead of src")


def _run(argv):
    """stdout of a compiler run, or AnsibleActionFail carrying its stderr."""
    process = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, check=False)
    if process.returncode != 0:
        raise AnsibleActionFail("%s failed: %s" % (" ".join(argv), to_text(process.stderr).strip()))
    return process.stdout


def _clang():
    clang = shutil.which("clang")
    if clang is None:
        raise AnsibleActionFail(MISSING_CLANG % os.environ.get("PATH", ""))
    return clang


def _include_flags(clang, source):
    """The source's own directory and the multiarch <asm/...> headers, which -target bpf does not search."""
    flags = ["-I", os.path.dirname(os.path.abspath(source))]
    printed = subprocess.run([clang, "-print-multiarch"], stdout=subprocess.PIPE, check=False)
    multiarch = to_text(printed.stdout).strip()
    if multiarch and os.path.isdir(os.path.join("/usr/include", multiarch)):
        flags += ["-I", os.path.join("/usr/include", multiarch)]
    return flags


def _cache_key(clang, source, flags):
    """sha256 of the compiler version, the flags and every file the source includes."""
    digest = hashlib.sha256(_run([clang, "--version"]))
    digest.update(to_bytes("\0".join(flags)))
    dependencies = to_text(_run([clang] + flags + ["-M", source])).replace("\\\n", " ").split()[1:]
    for path in [source] + sorted(set(dependencies) - {source}):
        digest.update(to_bytes(path))
        with open(path, "rb") as handle:
            digest.update(handle.read())
    return digest.hexdigest()


def compile_source(source, cflags):
    """The path of the compiled object in the controller's cache, compiling only on a cache miss."""
    clang = _clang()
    flags = BASE_CFLAGS + _include_flags(clang, source) + list(cflags)
    cache_dir = os.path.expanduser(CACHE_DIR)
    cached = os.path.join(cache_dir, "%s.o" % _cache_key(clang, source, flags))
    if not os.path.exists(cached):
        if not os.path.isdir(cache_dir):
            os.makedirs(cache_dir, 0o700)
        handle, partial = tempfile.mkstemp(suffix=".o", dir=cache_dir)
        os.close(handle)
        try:
            _run([clang] + flags + ["-c", source, "-o", partial])
            os.rename(partial, cached)
        finally:
            if os.path.exists(partial):
                os.unlink(partial)
    return cached


def file_base64(path):
    with open(path, "rb") as handle:
        return to_text(base64.b64encode(handle.read()))


def bundle_source(source):
    """For compiler bcc: the source with its local includes inlined, in the controller's cache (one file travels)."""
    text = _bcc.bundle(source)
    cache_dir = os.path.expanduser(CACHE_DIR)
    bundled = os.path.join(cache_dir, "%s.bcc.c" % hashlib.sha256(to_bytes(text)).hexdigest())
    if not os.path.exists(bundled):
        if not os.path.isdir(cache_dir):
            os.makedirs(cache_dir, 0o700)
        handle, partial = tempfile.mkstemp(suffix=".c", dir=cache_dir)
        with os.fdopen(handle, "w") as output:
            output.write(text)
        os.rename(partial, bundled)
    return bundled


def uses_bcc(args):
    return args.get("compiler") == "bcc"


class ActionModule(ActionBase):
    """Sends a controller-side object (or bcc source) with the module arguments: one round trip per host."""

    def run(self, tmp=None, task_vars=None):
        result = super(ActionModule, self).run(tmp, task_vars)
        module_args = dict(self._task.args)
        if not (uses_bcc(module_args) and module_args.get("remote_src")):
            module_args.pop("src", None)
        try:
            local_object = self._local_object(self._task.args)
            if local_object:
                self._expect_hash(module_args, _bcc.source_sha256(local_object, module_args.get("cflags") or [])
                                  if uses_bcc(module_args) else _hostfs.file_sha256(local_object))
                module_args.pop("object", None)
                module_args["object_content"] = file_base64(local_object)
            result.update(self._execute_module(MODULE, module_args=module_args, task_vars=task_vars))
        except AnsibleActionFail as error:
            result.update(failed=True, msg=to_text(error))
        finally:
            self._remove_tmp_path(self._connection._shell.tmpdir)
        return result

    @staticmethod
    def _expect_hash(module_args, sha256):
        expected = (module_args.get("object_sha256") or "").lower()
        if expected and expected != sha256:
            raise AnsibleActionFail("object %s has sha256 %s, but object_sha256 expects %s"
                                    % (module_args.get("object") or module_args.get("src"), sha256, expected))
        module_args["object_sha256"] = sha256

    def _local_object(self, task_args):
        """The controller-side object to transfer, or None when the host already has it (or detaching)."""
        if task_args.get("state", "attached") == "detached":
            return None
        if uses_bcc(task_args):
            return bundle_source(self._find_needle("files", task_args["src"])) \
                if task_args.get("src") and not task_args.get("remote_src") else None
        if task_args.get("src"):
            return compile_source(self._find_needle("files", task_args["src"]), task_args.get("cflags") or [])
        if task_args.get("object") and not task_args.get("remote_src"):
            return self._find_needle("files", task_args["object"])
        return None
