"""What `make demo` and `make test` would install on a fresh machine, read from the Makefile's dry run
(`make -n -B`: every target out of date, as on a machine without the virtualenv's stamps)."""

import re
import subprocess

import pytest

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

