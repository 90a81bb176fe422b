# hybridnb — one entry point for setup, tests, demo and benchmarks.
#   make test    installs what the tests need (apt packages as root, the venv, images) and runs them
#   make demo    sets up the sandbox and runs the seed's lab end to end (KEEP=1 leaves it up)
#   make unit    unit tests only (no root, no daemons)
#   make bench   the benchmarks in benchmarks/
#   make docs    regenerate the reference pages of the user guide (docs/) from the code

SHELL := /bin/bash
PY ?= python3
VENV ?= .venv
VPY := $(VENV)/bin/python
PYTEST_ARGS ?=
APT_PACKAGES := docker.io iptables busybox-static iproute2 nftables kmod \
	qemu-system-x86 libvirt-daemon-system libvirt-clients libvirt-dev pkg-config \
	dnsmasq-base dnsutils fping dnsperf tcpdump xz-utils cpio genisoimage gcc libc6-dev python3-dev \
	iperf3 chromium-headless-shell python3-venv \
	mmdebstrap debian-archive-keyring e2fsprogs qemu-utils util-linux

.PHONY: test unit real demo bench deps venv images clean sandbox-down docs

test: deps venv images
	$(VPY) -m pytest -q -ra $(PYTEST_ARGS) tests

unit: venv
	$(VPY) -m pytest -q -m "not real" $(PYTEST_ARGS) tests

real: deps venv images
	$(VPY) -m pytest -q -ra -m real $(PYTEST_ARGS) tests

# System packages (Debian/Ubuntu, as root). Skipped when not root: the unit tests need none.
deps:
	@if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  missing=$$(for p in $(APT_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || echo $$p; done); \
	  if [ -n "$$missing" ]; then \
	    echo "== installing system packages:" $$missing; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
	      --no-install-recommends $$missing >/dev/null; \
	  elif ! ls /var/lib/apt/lists/*_Packages* >/dev/null 2>&1; then \
	    echo "== apt package lists missing (the test VM image is built from them): apt-get update"; \
	    apt-get update -qq; \
	  fi; \
	else echo "== not root (or no apt): skipping system packages"; fi

# setup.py builds the C extensions (DNS server, probe engine): an edit to their source needs a reinstall
$(VENV)/.stamp: pyproject.toml setup.py hybridnb/daemons/dns/_mmsg.c hybridnb/services/probe/_fast.c
	@echo "== creating $(VENV) with hybridnb[all,test]"
	$(PY) -m venv $(VENV)
	$(VPY) -m pip install -q --upgrade pip
	@if pkg-config --exists libvirt 2>/dev/null; then extras="all,test"; \
	  else echo "== libvirt-dev missing: installing without the libvirt extra"; \
	  extras="host,docker,dns,notebook,capture,test"; fi; \
	  $(VPY) -m pip install -q -e ".[$$extras]"
	touch $@

venv: $(VENV)/.stamp

# The small test VM (Debian kernel + busybox initramfs) and the images of the example labs the
# real tests apply (image recipes built from Debian packages: minutes from a cold cache, with
# progress; a cache hit in milliseconds after), cached under /var/cache/hybridnb/images.
IMAGE_LABS := examples/recipes.yaml examples/templates.yaml examples/cloud-init.yaml
images: venv
	@if [ "$$(id -u)" = 0 ]; then $(VPY) -m hybridnb.cli images build -q && \
	  echo "== image recipes of $(IMAGE_LABS)" && \
	  $(VPY) -m hybridnb.cli images build $(IMAGE_LABS); \
	else echo "== not root: skipping the test VM image and the recipe images"; fi

demo: deps venv
	$(VPY) -m hybridnb.demo $(if $(KEEP),--keep,)

bench: deps venv
	@for b in benchmarks/*.py; do echo "== $$b"; $(VPY) $$b || exit 1; done

docs: venv
	$(VPY) docs/generate.py

sandbox-down: venv
	$(VPY) -m hybridnb.cli sandbox down

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache
