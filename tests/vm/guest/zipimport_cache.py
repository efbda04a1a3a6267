"""Test guests only: a bytecode cache for modules imported from zip files. Ansible sends each module
as a zip (AnsiballZ) whose Python, module_utils included, is compiled again at every run; under TCG
that compiling is most of a module run. Keyed by the source's hash; the file name inside the code is
the importing run's own, so tracebacks stay right."""

import marshal
import os
import zipimport

CACHE = "/var/cache/xdpfleet-zipimport"
_compile_source = zipimport._compile_source  # pylint: disable=protected-access


def _with_filename(code, filename):
    consts = tuple(_with_filename(const, filename) if isinstance(const, type(code)) else const
                   for const in code.co_consts)
    return code.replace(co_filename=filename, co_consts=consts)


def _store(path, code):
    try:
        os.makedirs(CACHE, exist_ok=True)
        partial = "%s.%d" % (path, os.getpid())
        with open(partial, "wb") as out:
            marshal.dump(code, out)
        os.replace(partial, path)
    except OSError:
        pass


def _cached_compile_source(pathname, source):
    from _blake2 import blake2b  # pylint: disable=import-outside-toplevel
    path = os.path.join(CACHE, blake2b(source).hexdigest())
    try:
        with open(path, "rb") as cached:
            return _with_filename(marshal.load(cached), pathname)
    except (OSError, EOFError, ValueError, TypeError):
        code = _compile_source(pathname, source)
        _store(path, code)
        return code


zipimport._compile_source = _cached_compile_source  # pylint: disable=protected-access
