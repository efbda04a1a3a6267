# xdpfleet: two commands on a fresh machine, as root: `make demo` and `make test`.
SHELL := /bin/bash
.DEFAULT_GOAL := help

VENV       := .venv
PY         := $(VENV)/bin/python
STAMP      := $(VENV)/.requirements.stamp
TEST_STAMP := $(VENV)/.requirements-test.stamp
HOSTS      ?= 3
export PATH := $(CURDIR)/$(VENV)/bin:$(PATH)
export ANSIBLE_CONFIG := $(CURDIR)/ansible.cfg

# What the demo needs (`make setup`): clang and the libbpf and kernel UAPI headers compile the firewall on
# the controller; the lab hosts share this machine's root filesystem, so its sshd, ip, libbpf1 and
# python3-pyroute2 are theirs too; ping and curl send the demo's traffic.
DEMO_PACKAGES := clang libbpf-dev linux-libc-dev libbpf1 openssh-server iproute2 iputils-ping curl \
	python3 python3-venv python3-pyroute2
# What only the tests and benches add (`make setup-test`): bpftool, nft, promtool (prometheus), a headless
# browser, rsync (sanity), xdp-tools, trafgen and tcpdump; bcc with kernel headers (compiler: bcc); qemu
# and debootstrap (tests/vm).
TEST_PACKAGES := llvm bpftool xdp-tools netsniff-ng tcpdump nftables rsync prometheus chromium-headless-shell \
	python3-bpfcc linux-headers-amd64 qemu-system-x86 qemu-utils debootstrap

.PHONY: help setup setup-test packages packages-test venv venv-test bcc-headers build demo test test-vm \
	lab-up lab-down lab-status lint sanity clean soak

help:
	@echo "make demo   - set up, build a lab fleet of $(HOSTS) hosts, deploy, show verdicts and stats"
	@echo "make test   - set up for the tests too and run every test suite"
	@echo "make setup | setup-test | lab-up [HOSTS=n] | lab-down | lint | sanity | clean"

setup: packages venv

setup-test: setup packages-test venv-test bcc-headers

# bcc (xdp_program compiler: bcc) needs kernel headers; see docs/BCC.md.
bcc-headers: packages-test
	scripts/bcc-kernel-headers

# Installs only the Debian packages of $(1) that are missing, so a second run is quick and changes nothing.
define install-missing
@missing=$$(for p in $(1); do \
	dpkg-query -W -f='$${Status}\n' $$p 2>/dev/null | grep -q '^install ok installed' || echo $$p; done); \
if [ -n "$$missing" ]; then \
	echo "installing Debian packages:" $$missing; \
	apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q $$missing; \
fi
endef

packages:
	$(call install-missing,$(DEMO_PACKAGES))

packages-test:
	$(call install-missing,$(TEST_PACKAGES))

venv: $(STAMP)

venv-test: $(TEST_STAMP)

$(STAMP): requirements.txt
	@python=$$(scripts/find-python); echo "virtualenv with $$python"; \
	[ -x $(PY) ] || $$python -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -r requirements.txt
	touch $@

$(TEST_STAMP): requirements-test.txt $(STAMP)
	$(PY) -m pip install -q -r requirements-test.txt
	touch $@

build: setup
	$(MAKE) -C bpf

lab-up: setup
	$(PY) -m tests.lab up --hosts $(HOSTS)

lab-down:
	$(PY) -m tests.lab down

lab-status:
	$(PY) -m tests.lab status

demo: setup build
	$(PY) -m tests.lab up --hosts 3
	ansible-playbook -i inventories/lab/hosts.yml playbooks/demo.yml

# One pytest run: the lab suites share lab hosts, and BPF test runs are faster serial on 2 CPUs.
# It starts from no lab, so what `make demo` left on the lab hosts cannot change a verdict.
test: setup-test build lab-down
	$(PY) -m pytest -q
	$(MAKE) lint
	$(MAKE) sanity
	$(MAKE) lab-down

# The reliability soak for 5 minutes (make test runs it for 2).
soak: setup-test build
	XDPFLEET_SOAK_SECONDS=300 $(PY) -m pytest -q -s tests/reliability/test_soak.py

# Only the real-VM part of `make test` (Debian 12's 6.1 kernel, tests/vm): image build,
# kernel-compatibility tests and the molecule vm scenario.
test-vm: setup-test build
	$(PY) -m pytest -q tests/vm
	env -u ANSIBLE_CONFIG molecule test --scenario-name vm

lint: setup-test
	ansible-lint --profile production

sanity: setup-test
	scripts/run-sanity

clean: lab-down
	rm -rf build $(VENV)
