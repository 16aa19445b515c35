# Set-up and checks. Every target is idempotent; `make demo` and `make test` install what they need.
SHELL := /bin/bash
PYTHON ?= /usr/bin/python3
VENV := $(CURDIR)/.venv
PREFIX ?= /usr/local
# Debian packages used by the programs, the tests and the demos.
APT_PACKAGES := python3-venv python3-dev gcc make libssl-dev runc busybox-static iproute2 procps \
	util-linux libseccomp2 containerd docker.io podman conmon

EXT_SUFFIX = $(shell $(PYTHON) -c 'import sysconfig; print(sysconfig.get_config_var("EXT_SUFFIX"))')
SYSCALLS_EXT := src/inclavare/linux/_syscalls$(EXT_SUFFIX)
SKELETON := pal/skeleton
SKELETON_PALS := $(SKELETON)/liberpal-skeleton-v1.so $(SKELETON)/liberpal-skeleton-v2.so \
	$(SKELETON)/liberpal-skeleton-v3.so
SKELETON_SOURCES := $(SKELETON)/skeleton.c $(SKELETON)/skeleton.h $(SKELETON)/report.c
PAL_CFLAGS := -O2 -Wall -Wextra -Werror -shared -fPIC -fvisibility=hidden -pthread
# The project's .proto files; `build` generates <name>_pb2.py(i) beside each (gitignored) with
# the protoc of grpcio-tools in the venv. Add a component's protos here.
PROTO_FILES := src/inclavare/k8s/proto/deviceplugin.proto \
	$(wildcard src/inclavare/shim/proto/*.proto)
PROTO_MODULES := $(PROTO_FILES:.proto=_pb2.py)
PROTO_PYTHON ?= $(VENV)/bin/python

.PHONY: all install apt venv build pal protos programs lint test test-unit test-integration test-e2e demo bench clean

all: install

install: apt venv build programs

# The C extension with the system calls Python's os module lacks (see linux/syscalls.py),
# the sample enclave runtime of the PAL ABI, and the Python modules of the .proto files.
build: $(SYSCALLS_EXT) pal protos

protos: $(PROTO_MODULES)

$(PROTO_MODULES): %_pb2.py: %.proto scripts/gen-protos.py
	$(PROTO_PYTHON) scripts/gen-protos.py $<

$(SYSCALLS_EXT): src/inclavare/linux/_syscalls.c
	gcc -O2 -Wall -Wextra -Wno-unused-parameter -Werror -shared -fPIC \
		$$($(PYTHON)-config --includes) -o $@ $<

# The skeleton PAL, one shared object per ABI version; version 3 makes sim local reports.
pal: $(SKELETON_PALS)

$(SKELETON)/liberpal-skeleton-v1.so $(SKELETON)/liberpal-skeleton-v2.so: $(SKELETON)/liberpal-skeleton-v%.so: $(SKELETON_SOURCES)
	gcc $(PAL_CFLAGS) -DPAL_VERSION=$* -o $@ $(SKELETON)/skeleton.c

$(SKELETON)/liberpal-skeleton-v3.so: $(SKELETON_SOURCES)
	gcc $(PAL_CFLAGS) -DPAL_VERSION=3 -o $@ $(SKELETON)/skeleton.c $(SKELETON)/report.c -lcrypto

apt:
	@missing=$$(for p in $(APT_PACKAGES); do dpkg-query -W -f='$${Status}\n' $$p 2>/dev/null | grep -q '^install ok installed' || echo $$p; done); \
	if [ -n "$$missing" ]; then \
		echo "installing Debian packages:" $$missing; \
		export DEBIAN_FRONTEND=noninteractive; \
		apt-get update -q && apt-get install -y -q --no-install-recommends $$missing; \
	fi

venv: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	$(VENV)/bin/python -m pip install -q --upgrade pip
	$(VENV)/bin/python -m pip install -q -e '.[dev]'
	touch $@

# Launchers in $(PREFIX)/bin, where containerd, dockerd and podman look for runtimes.
programs: venv
	$(VENV)/bin/python scripts/install-launchers.py --prefix $(PREFIX) --venv $(VENV) --src $(CURDIR)/src

lint: venv build
	$(VENV)/bin/ruff check src tests bench scripts
	$(VENV)/bin/ruff format --check src tests bench scripts
	$(VENV)/bin/mypy

test: install lint
	$(VENV)/bin/python -m pytest tests/unit tests/integration tests/e2e

test-unit: venv build
	$(VENV)/bin/python -m pytest tests/unit

test-integration: install
	$(VENV)/bin/python -m pytest tests/integration

test-e2e: install
	$(VENV)/bin/python -m pytest tests/e2e

demo: install
	$(VENV)/bin/python scripts/demo.py

bench: install
	$(VENV)/bin/python bench/lifecycle.py
	$(VENV)/bin/python bench/exec.py
	$(VENV)/bin/python bench/containerd.py
	$(VENV)/bin/python bench/verify.py
	$(VENV)/bin/python bench/tls.py
	$(VENV)/bin/python bench/image_measure.py
	$(VENV)/bin/python bench/inclavared.py
	$(VENV)/bin/python bench/shim.py
	$(VENV)/bin/python bench/carrier.py

clean:
	rm -rf $(VENV) build src/*.egg-info .pytest_cache .mypy_cache .ruff_cache $(SYSCALLS_EXT) \
		$(SKELETON_PALS) $(PROTO_MODULES) $(PROTO_MODULES:.py=.pyi)
