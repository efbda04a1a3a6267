"""Runs xdpfleet modules one after another in one Python process inside a lab host: a JSON request
per stdin line ({"module", "args", "env"}), the module's JSON result per stdout line. The module file
runs as __main__ with its arguments handed over the way ansible's module wrapper hands them over,
which saves the interpreter and import start-up (about a second each under load) per run."""

import contextlib
import io
import json
import os
import runpy
import sys
import traceback

from ansible.module_utils import basic

MODULES = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "plugins", "modules")


@contextlib.contextmanager
def environment(extra):
    saved = dict(os.environ)
    os.environ.update(extra)
    try:
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved)


def run(module, args, env):
    basic._ANSIBLE_ARGS = json.dumps({"ANSIBLE_MODULE_ARGS": args}).encode()
    basic._ANSIBLE_PROFILE = "legacy"  # what a module run by hand gets
    printed = io.StringIO()
    with environment(env), contextlib.redirect_stdout(printed):
        try:
            runpy.run_path(os.path.join(MODULES, module + ".py"), run_name="__main__")
        except SystemExit:
            pass
        except Exception:  # ansible would show MODULE FAILURE with this traceback
            return json.dumps({"failed": True, "msg": "MODULE FAILURE", "traceback": traceback.format_exc()})
    lines = printed.getvalue().strip().splitlines()
    return lines[-1] if lines else json.dumps({"failed": True, "msg": "no result printed"})


def main():
    for line in sys.stdin:
        request = json.loads(line)
        print(run(request["module"], request["args"], request.get("env", {})), flush=True)


if __name__ == "__main__":
    main()
