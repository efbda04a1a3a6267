# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The subset of libxdp (libxdp.so.1, through ctypes) that the dispatcher hook needs: a program made from a
libbpf object, its run priority and chain-call actions, and an interface's dispatcher (read, add to, remove
from). dispatcher_programs() is the reader for the facts: this file imports nothing of the loader. libxdp links
against libbpf.so.1, the library _libbpf loads: the bpf_object pointers pass between them.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import ctypes
import errno
import os

from ansible_collections.xdpfleet.xdp.plugins.module_utils import _libbpf as libbpf
from ansible_collections.xdpfleet.xdp.plugins.module_utils._errors import XdpfleetError
from ansible_collections.xdpfleet.xdp.plugins.module_utils._link import ifindex

LIBRARY_NAME = "libxdp.so.1"
MIN_VERSION = "1.3.0"
# The first function of libxdp's LIBXDP_1.3.0 symbol version; an older library lacks it.
MIN_VERSION_SYMBOL = "xdp_program__create"
# XDP_ABORTED .. XDP_REDIRECT, by their value in enum xdp_action.
ACTIONS = ("aborted", "drop", "pass", "tx", "redirect")
MODES = {1: "native", 2: "skb", 3: "hw"}  # enum xdp_attach_mode; 0 is unspecified
MODE_VALUES = dict((name, value) for value, name in MODES.items())
MESSAGE_LINES = 20
# Where the Debian/Fedora packages install xdp-dispatcher.o; LIBXDP_OBJECT_PATH overrides it, as for libxdp.
OBJECT_DIRECTORIES = ("/usr/lib/x86_64-linux-gnu/bpf", "/usr/lib64/bpf", "/usr/lib/bpf", "/usr/local/lib/bpf")
OBJECT_PATH_VARIABLE = "LIBXDP_OBJECT_PATH"

c_ptr, c_int, c_u32, c_bool, c_str = ctypes.c_void_p, ctypes.c_int, ctypes.c_uint32, ctypes.c_bool, ctypes.c_char_p
_PRINT_CALLBACK = ctypes.CFUNCTYPE(c_int, c_int, c_str, c_ptr)

_SIGNATURES = {
    "libxdp_get_error": (ctypes.c_long, [c_ptr]),
    "libxdp_strerror": (c_int, [c_int, c_str, ctypes.c_size_t]),
    "libxdp_set_print": (c_ptr, [_PRINT_CALLBACK]),
    "xdp_program__from_bpf_obj": (c_ptr, [c_ptr, c_str]),
    "xdp_program__close": (None, [c_ptr]),
    "xdp_program__id": (c_u32, [c_ptr]),
    "xdp_program__fd": (c_int, [c_ptr]),
    "xdp_program__name": (c_str, [c_ptr]),
    "xdp_program__run_prio": (ctypes.c_uint, [c_ptr]),
    "xdp_program__set_run_prio": (c_int, [c_ptr, ctypes.c_uint]),
    "xdp_program__chain_call_enabled": (c_bool, [c_ptr, c_int]),
    "xdp_program__set_chain_call_enabled": (c_int, [c_ptr, ctypes.c_uint, c_bool]),
    "xdp_program__attach": (c_int, [c_ptr, c_int, c_int, ctypes.c_uint]),
    "xdp_program__detach": (c_int, [c_ptr, c_int, c_int, ctypes.c_uint]),
    "xdp_multiprog__get_from_ifindex": (c_ptr, [c_int]),
    "xdp_multiprog__close": (None, [c_ptr]),
    "xdp_multiprog__is_legacy": (c_bool, [c_ptr]),
    "xdp_multiprog__attach_mode": (c_int, [c_ptr]),
    "xdp_multiprog__main_prog": (c_ptr, [c_ptr]),
    "xdp_multiprog__next_prog": (c_ptr, [c_ptr, c_ptr]),
}

_library = None
_messages = []


class LibxdpError(XdpfleetError):
    """A libxdp failure; `errno` is the error number, the message ends with libxdp's own last words."""

    def __init__(self, message, err=None):
        if err:
            message = "%s: %s" % (message, strerror(err))
        if _messages:
            message = "%s (libxdp: %s)" % (message, "; ".join(_messages[-3:]))
        super(LibxdpError, self).__init__(message)
        self.errno = err


class LibxdpMissing(LibxdpError):
    pass


@_PRINT_CALLBACK
def _collect_message(_level, fmt, args):
    """Keeps libxdp's messages for error reports instead of letting it print on stderr."""
    _messages.append(libbpf.printed(fmt, args).strip())
    del _messages[:-MESSAGE_LINES]
    return 0


def library():
    """libxdp.so.1 with declared signatures; raises LibxdpMissing when it is absent or older than MIN_VERSION."""
    global _library
    if _library is None:
        libbpf.library()  # first, so that libxdp binds to the libbpf.so.1 _libbpf configured
        try:
            loaded = ctypes.CDLL(LIBRARY_NAME, use_errno=True)
        except OSError:
            raise LibxdpMissing("libxdp.so.1 was not found on this host: install the 'libxdp1' package "
                                "(Debian/Ubuntu) or 'libxdp' (RHEL family)")
        if not hasattr(loaded, MIN_VERSION_SYMBOL):
            raise LibxdpMissing("the libxdp.so.1 on this host is older than %s (it has no %s): install libxdp "
                                ">= %s, whose dispatcher the xdp-tools of current distributions share"
                                % (MIN_VERSION, MIN_VERSION_SYMBOL, MIN_VERSION))
        libbpf.declare(loaded, _SIGNATURES)
        loaded.libxdp_set_print(_collect_message)
        _library = loaded
    return _library


def strerror(err):
    text = ctypes.create_string_buffer(256)
    if _library is None or _library.libxdp_strerror(-err, text, len(text)) < 0:
        return os.strerror(err)
    return text.value.decode("utf-8", "replace")


def _checked(pointer, what):
    """A pointer libxdp returned, or LibxdpError from its ERR_PTR/NULL."""
    err = library().libxdp_get_error(pointer)
    if err:
        raise LibxdpError(what, -err)
    return pointer


def _check(result, what):
    if result < 0:
        raise LibxdpError(what, -result)
    return result


def dispatcher_object():
    """The path of xdp-dispatcher.o, where libxdp looks for it, or None."""
    directories = [os.environ[OBJECT_PATH_VARIABLE]] if os.environ.get(OBJECT_PATH_VARIABLE) else []
    for directory in directories + list(OBJECT_DIRECTORIES):
        path = os.path.join(directory, "xdp-dispatcher.o")
        if os.path.isfile(path):
            return path
    return None


def actions_mask(names):
    return sum(1 << ACTIONS.index(name) for name in set(names))


def action_names(mask):
    return [name for index, name in enumerate(ACTIONS) if mask & (1 << index)]


class Program:
    """An xdp_program; `owned` ones (made here) are closed by close(), views into a dispatcher are not."""

    def __init__(self, pointer, owned):
        self.pointer, self.owned = pointer, owned

    @classmethod
    def from_bpf_object(cls, bpf_object, program):
        """The program of an opened, not yet loaded, libbpf object: libxdp loads it as a dispatcher extension."""
        del _messages[:]
        pointer = library().xdp_program__from_bpf_obj(bpf_object.pointer, program.section.encode())
        return cls(_checked(pointer, "libxdp cannot use program %s of %s" % (program.name, bpf_object.path)), True)

    def close(self):
        if self.owned and self.pointer:
            library().xdp_program__close(self.pointer)
            self.pointer = None

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.close()

    @property
    def id(self):
        return library().xdp_program__id(self.pointer)

    @property
    def fd(self):
        return _check(library().xdp_program__fd(self.pointer), "the program is not loaded")

    @property
    def run_prio(self):
        return library().xdp_program__run_prio(self.pointer)

    @property
    def chain_call_actions(self):
        lib = library()
        return [name for value, name in enumerate(ACTIONS) if lib.xdp_program__chain_call_enabled(self.pointer, value)]

    def configure(self, run_prio, chain_call_actions):
        lib = library()
        _check(lib.xdp_program__set_run_prio(self.pointer, run_prio), "cannot set the run priority")
        for value, name in enumerate(ACTIONS):
            _check(lib.xdp_program__set_chain_call_enabled(self.pointer, value, name in chain_call_actions),
                   "cannot set the chain-call action %s" % name)

    def attach(self, ifindex, mode):
        """Loads the program (as an extension) and adds it to the interface's dispatcher in one atomic swap."""
        del _messages[:]
        _check(library().xdp_program__attach(self.pointer, ifindex, MODE_VALUES[mode], 0),
               "libxdp cannot add the program to the dispatcher in %s mode" % mode)

    def detach(self, ifindex, mode):
        """Removes the program from the interface's dispatcher in one atomic swap (the last one detaches it)."""
        del _messages[:]
        _check(library().xdp_program__detach(self.pointer, ifindex, MODE_VALUES[mode], 0),
               "libxdp cannot remove program %d from the dispatcher" % self.id)


class Dispatcher:
    """What libxdp reads on an interface's hook: a dispatcher and its programs in run order, or a
    program attached alone (legacy)."""

    def __init__(self, pointer):
        self.pointer = pointer

    @classmethod
    def of(cls, ifindex):
        """The interface's hook as libxdp sees it, None when nothing is attached."""
        del _messages[:]
        pointer = library().xdp_multiprog__get_from_ifindex(ifindex)
        err = library().libxdp_get_error(pointer)
        if err == -errno.ENOENT:
            return None
        if err:
            raise LibxdpError("libxdp cannot read the XDP hook of ifindex %d" % ifindex, -err)
        return cls(pointer)

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        library().xdp_multiprog__close(self.pointer)

    @property
    def is_legacy(self):
        """True when the hook holds a program alone, not a dispatcher."""
        return library().xdp_multiprog__is_legacy(self.pointer)

    @property
    def mode(self):
        return MODES.get(library().xdp_multiprog__attach_mode(self.pointer))

    @property
    def main_id(self):
        return Program(library().xdp_multiprog__main_prog(self.pointer), False).id

    def programs(self):
        found, current = [], None
        while True:
            current = library().xdp_multiprog__next_prog(current, self.pointer)
            if not current:
                return found
            found.append(Program(current, False))


def dispatcher_programs(interface):
    """The libxdp dispatcher on interface and its programs in run order, or None when the hook holds no
    dispatcher (or libxdp is absent)."""
    try:
        library()
    except LibxdpMissing:
        return None
    dispatcher = Dispatcher.of(ifindex(interface))
    if dispatcher is None:
        return None
    with dispatcher:
        if dispatcher.is_legacy:
            return None
        return {"dispatcher_id": dispatcher.main_id, "mode": dispatcher.mode,
                "programs": [{"prog_id": program.id, "priority": program.run_prio,
                              "chain_call_actions": program.chain_call_actions} for program in dispatcher.programs()]}
