# Switchyard: two commands on a fresh Debian 12 machine, `make run` and `make test`.
# Both install what is missing first (scripts/setup.sh).
SWIFT ?= swift
SWIFT_FLAGS ?= -Xswiftc -warnings-as-errors
BIN = .build/debug/switchyard

.PHONY: setup build release run test unit-test tool-test bench clean rig-test

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
	# Then the real Linux guest: the nested rig, every scenario (about 10 minutes here).
	$(MAKE) rig-test

bench: setup
	bash Benchmarks/report.sh

# The static build the nested rig copies into its L1 guest (with the libraries ldd lists).
release: setup
	$(SWIFT) build -c release --static-swift-stdlib $(SWIFT_FLAGS)

# The nested rig (Tests/Rig/README.md): a real Linux guest under QEMU and under Switchyard, side
# by side. RIG_SWITCHYARD=PATH tests another binary built the same way.
RIG_SWITCHYARD ?= .build/release/switchyard
rig-test: $(if $(filter .build/release/switchyard,$(RIG_SWITCHYARD)),release,setup)
	@bash Tests/Rig/setup.sh
	bash Tests/Rig/run.sh --no-skip --switchyard $(RIG_SWITCHYARD) all

clean:
	rm -rf .build Benchmarks/.build
