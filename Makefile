# Switchyard: two commands on a fresh Debian 12 machine, `make run` and `make test`.
# Both install what is missing first (scripts/setup.sh).
SWIFT ?= swift
SWIFT_FLAGS ?= -Xswiftc -warnings-as-errors
BIN = .build/debug/switchyard

.PHONY: setup build run test unit-test tool-test bench clean rig-test

setup:
	@bash scripts/setup.sh

build: setup
	$(SWIFT) build $(SWIFT_FLAGS)

run: setup
	SWIFT="$(SWIFT)" SWIFT_FLAGS="$(SWIFT_FLAGS)" bash scripts/run.sh

test: setup
	$(SWIFT) build --build-tests $(SWIFT_FLAGS)
	# Serial: many tests start real processes (QEMU, lspci, iasl, switchyard), and Foundation's
	# Process lets concurrently spawned children inherit each other's pipes. A hang fails
	# after 30 minutes instead of eating CI's 90.
	timeout 1800 $(SWIFT) test --skip-build --no-parallel

bench: setup
	bash Benchmarks/report.sh

# The nested rig (Tests/Rig/README.md): a real Linux guest under QEMU, then under Switchyard when
# RIG_SWITCHYARD names a binary built with `swift build -c release --static-swift-stdlib`
# (default: .build/release/switchyard when it exists).
RIG_SWITCHYARD ?= $(wildcard .build/release/switchyard)
rig-test:
	@bash Tests/Rig/setup.sh
	bash Tests/Rig/run.sh $(if $(RIG_SWITCHYARD),--switchyard $(RIG_SWITCHYARD)) all

clean:
	rm -rf .build Benchmarks/.build
