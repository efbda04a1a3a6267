"""What `make demo` and `make test` would install on a fresh machine, read from the Makefile's dry run
(`make -n -B`: every target out of date, as on a machine without the virtualenv's stamps)."""

import re
import subprocess

import pytest

from tests.lab import Layout
from tests.lab import __main__ as lab_cli
from tests.lab.layout import REPO

# Only the tests use these: VM images and guests, the HTML report's browser, promtool, bcc and its headers,
# and the Python test tools.
TEST_ONLY = {"qemu-system-x86", "qemu-utils", "debootstrap", "chromium-headless-shell", "prometheus",
             "python3-bpfcc", "linux-headers-amd64", "scripts/bcc-kernel-headers", "requirements-test.txt"}
# The demo compiles the firewall (clang, libbpf headers), runs lab hosts (sshd, ip, libbpf and pyroute2
# for the modules) and probes them (ping, curl), from a virtualenv with the controller's requirements.
DEMO_NEEDS = {"clang", "libbpf-dev", "linux-libc-dev", "libbpf1", "python3-pyroute2", "openssh-server",
              "iproute2", "iputils-ping", "curl", "python3-venv", "requirements.txt"}


def dry_run_words(target):
    done = subprocess.run(["make", "-n", "-B", "--no-print-directory", target], cwd=REPO, capture_output=True,
                          text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    return set(re.split(r"[\s;]+", done.stdout))


@pytest.mark.parametrize("target", ["setup", "demo"])
def test_setup_and_demo_install_what_the_demo_needs_and_nothing_only_tests_need(target):
    words = dry_run_words(target)
    assert sorted(TEST_ONLY & words) == []
    assert sorted(DEMO_NEEDS - words) == []


def test_test_installs_the_test_only_packages_too():
    words = dry_run_words("test")
    assert sorted((TEST_ONLY | DEMO_NEEDS) - words) == []


README = (REPO / "README.md").read_text()
PLACEHOLDERS = {"P": "pk", "N": "70", "H": "2"}


def readme_lab_invocations():
    """The README's usage line of the lab CLI, one argv per subcommand, its placeholders filled in."""
    usage = re.search(r"^\.venv/bin/python -m tests\.lab (.*)$", README, re.M)
    assert usage, "README.md shows no `.venv/bin/python -m tests.lab ...` usage line"
    first, *others = usage.group(1).split(" | ")
    options, subcommand = first.split("] ", 1)
    invocations = [options + "] " + command for command in [subcommand] + others]
    return [[PLACEHOLDERS.get(word, word) for word in invocation.replace("[", "").replace("]", "").split()]
            for invocation in invocations]


def test_readme_shows_the_lab_cli_as_it_parses_with_every_option():
    parser_options = {"--prefix", "--subnet", "--hosts"}
    invocations = readme_lab_invocations()
    assert parser_options <= {word for argv in invocations for word in argv}
    commands = [lab_cli._arguments(argv) for argv in invocations]
    assert [(args.command, args.prefix, args.subnet) for args in commands] == [
        ("up", "pk", 70), ("down", "pk", 70), ("status", "pk", 70)]


def test_readme_names_the_inventory_each_lab_writes():
    assert str(Layout().inventory.relative_to(REPO)) in README
    assert str(Layout("pk", 70).inventory).replace("/pk/", "/P/") in README
