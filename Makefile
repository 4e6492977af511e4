# Switchyard: two commands on a fresh Debian 12 machine, `make run` and `make test`.
# Both install what is missing first (scripts/setup.sh).
SWIFT ?= swift
# pipefail in recipes (the test run is piped through tee).
SHELL := /bin/bash
SWIFT_FLAGS ?= -Xswiftc -warnings-as-errors
BIN = .build/debug/switchyard
# The Python tools (qemu.qmp, dt-validate) live in the checkout's .venv (scripts/setup.sh), made
# from Debian's python3; tests and scripts find python3 and dt-validate there first.
export PATH := $(CURDIR)/.venv/bin:$(PATH)

.PHONY: setup build release run test unit-test tool-test bench clean rig-test rig-full rig-iommufd rig-soak rig-bench fuzz fuzz-long fuzz-build fuzz-smoke soak stress stress-tsan test-asan test-tsan

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
	# Under CI (CI=true: everything is installed) a skipped test is a failure: the output is
	# kept and any skip that Swift Testing or XCTest reports fails the run.
	set -o pipefail; timeout 1800 $(SWIFT) test --skip-build --no-parallel 2>&1 | tee .build/test-output.txt
	@bash scripts/check-skips.sh .build/test-output.txt
	# The benchmark package builds and each benchmark runs briefly (figures: make bench).
	bash Benchmarks/report.sh --smoke
	# The fuzz targets: the committed corpus replayed, then a few seconds of libFuzzer each.
	$(MAKE) fuzz-smoke
	# Then the real Linux guest: the nested rig, every scenario that proves Switchyard (about 25
	# minutes here; `make rig-full` adds the QEMU-only references and cfg-exits).
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
	bash Tests/Rig/run.sh --no-skip --switchyard $(RIG_SWITCHYARD) quick

# Every rig scenario, with the QEMU-only reference boots and cfg-exits' measurement.
rig-full: $(if $(filter .build/release/switchyard,$(RIG_SWITCHYARD)),release,setup)
	@bash Tests/Rig/setup.sh
	bash Tests/Rig/run.sh --no-skip --switchyard $(RIG_SWITCHYARD) --append rig.full=1 all

# Device assignment through iommufd: builds the kernel first (Tests/Rig/build-kernel.sh, about
# 25 minutes once; Debian's kernels have no iommufd), then vfio-nvme and vfio-busreset on it.
rig-iommufd: $(if $(filter .build/release/switchyard,$(RIG_SWITCHYARD)),release,setup)
	@bash Tests/Rig/setup.sh
	bash Tests/Rig/build-kernel.sh
	bash Tests/Rig/run.sh --no-skip --switchyard $(RIG_SWITCHYARD) vfio-iommufd

# The soak with a real guest: 500 plug/unplug cycles into a running L2 (surprise, every tenth
# through the attention button), the VMM's fds, threads, memory and query-pci flat at the end.
# make test runs 8 (switchyard-soak in the quick set). RIG_SOAK_CYCLES to change the count.
RIG_SOAK_CYCLES ?= 500
rig-soak: $(if $(filter .build/release/switchyard,$(RIG_SWITCHYARD)),release,setup)
	@bash Tests/Rig/setup.sh
	bash Tests/Rig/run.sh --no-skip --switchyard $(RIG_SWITCHYARD) --timeout 7200 --append rig.soakcycles=$(RIG_SOAK_CYCLES) switchyard-soak

# virtio-net's figures against QEMU from several boots, not one: RIG_BENCH_ROUNDS rounds in one L1
# boot, each round an L2 boot of QEMU and of Switchyard with vhost=off and with vhost=on (the
# same cold-plugged NIC, the order swapped every round); medians per VMM, their ratio and the
# per-round spread (Tests/Rig/README.md). About 2.5 minutes a round here. L1 has one CPU
# (RIG_L1_SMP=2 gives it two; TCG then sometimes freezes L1 and the rig boots another).
RIG_BENCH_ROUNDS ?= 5
rig-bench: $(if $(filter .build/release/switchyard,$(RIG_SWITCHYARD)),release,setup)
	@bash Tests/Rig/setup.sh
	bash Tests/Rig/run.sh --no-skip --switchyard $(RIG_SWITCHYARD) --timeout 7200 --append rig.netbench=$(RIG_BENCH_ROUNDS) virtio-net

# Fuzzing (Fuzz/README.md): libFuzzer with AddressSanitizer, one binary, a target per name.
FUZZ_TARGETS = qmp qtest options machine loaders virtqueue vfio
FUZZ_SECONDS ?= 300
# Optimized: no check is lost (the sources use no assert(); preconditions and overflow traps
# stay), and inputs run several times faster than in a debug build.
# fuzz-smoke (in make test) builds it as debug instead: an optimized build from scratch costs
# minutes that a few seconds per target do not pay back.
FUZZ_CONFIG ?= release
FUZZ_BIN = .build-fuzz/$(FUZZ_CONFIG)/switchyard-fuzz
fuzz-build: setup
	$(SWIFT) build -c $(FUZZ_CONFIG) --scratch-path .build-fuzz --product switchyard-fuzz $(SWIFT_FLAGS) \
	  -Xswiftc -DFUZZING -Xswiftc -sanitize=fuzzer,address -Xswiftc -use-ld=lld

# Each target for FUZZ_SECONDS; new inputs gather in .build-fuzz/corpus/TARGET, crashes in
# .build-fuzz/artifacts/ (fix them, then add the input to Fuzz/corpus/TARGET).
fuzz: fuzz-build
	bash Fuzz/run.sh $(FUZZ_BIN) $(FUZZ_SECONDS) $(FUZZ_TARGETS)

# Each target to FUZZ_RUNS executions (10^7, issue 15), with no time limit: hours here, see
# Fuzz/README.md for the figures.
FUZZ_RUNS ?= 10000000
fuzz-long: fuzz-build
	FUZZ_RUNS=$(FUZZ_RUNS) bash Fuzz/run.sh $(FUZZ_BIN) 0 $(FUZZ_TARGETS)

# What make test runs: every committed input replayed by the plain build, then 5 s of each target.
fuzz-smoke:
	$(MAKE) fuzz-build FUZZ_CONFIG=debug
	$(SWIFT) build --product switchyard-fuzz $(SWIFT_FLAGS)
	for t in $(FUZZ_TARGETS); do .build/debug/switchyard-fuzz $$t Fuzz/corpus/$$t || exit 1; done
	bash Fuzz/run.sh .build-fuzz/debug/switchyard-fuzz 5 $(FUZZ_TARGETS)

# The long hot-plug soak (Tests/MachineTests/HotPlugSoakTests.swift): 10,000 plug/unplug cycles
# across every slot kind with leak accounting; make test runs 1,000.
soak: setup
	$(SWIFT) build --build-tests $(SWIFT_FLAGS)
	SWITCHYARD_SOAK_CYCLES=10000 $(SWIFT) test --skip-build --filter HotPlugSoakTests

# The concurrent unplug stress (Tests/MachineTests/ConcurrentUnplugStressTests.swift): vCPU-like
# threads hammer a function while it is plugged and unplugged, 10,000 cycles per hot-plug flavour;
# make test runs 100. stress-tsan: the same suite under ThreadSanitizer (test-tsan's build).
STRESS_CYCLES ?= 10000
stress: setup
	$(SWIFT) build --build-tests $(SWIFT_FLAGS)
	SWITCHYARD_STRESS_CYCLES=$(STRESS_CYCLES) $(SWIFT) test --skip-build --filter ConcurrentUnplugStressTests

stress-tsan:
	SWITCHYARD_STRESS_CYCLES=$(STRESS_CYCLES) $(MAKE) test-tsan TEST_FILTER=ConcurrentUnplugStressTests

# The unit and integration tests under a sanitizer, each in its own build directory (C shims
# included: --sanitize instruments C and Swift). Not part of `make test`: each takes a full
# build plus a slower test run (figures in README.md). Suppressions, each with its reason:
# scripts/asan.supp, scripts/lsan.supp, scripts/tsan.supp. TEST_FILTER=Suite runs only the
# suites it matches.
TEST_FILTER ?=
# The Swift runtime's backtracer would symbolicate a sanitizer's abort for minutes: off.
SANITIZER_TEST = SWIFT_BACKTRACE=enable=no timeout 3600 $(SWIFT) test --skip-build --no-parallel $(if $(TEST_FILTER),--filter '$(TEST_FILTER)')
test-asan: setup
	$(SWIFT) build --build-tests --scratch-path .build-asan --sanitize=address $(SWIFT_FLAGS)
	set -o pipefail; ASAN_OPTIONS=detect_leaks=1:suppressions=$(CURDIR)/scripts/asan.supp \
	  LSAN_OPTIONS=suppressions=$(CURDIR)/scripts/lsan.supp:print_suppressions=0 \
	  $(SANITIZER_TEST) --scratch-path .build-asan --sanitize=address 2>&1 | tee .build-asan/test-output.txt
	@bash scripts/check-skips.sh .build-asan/test-output.txt

test-tsan: setup
	$(SWIFT) build --build-tests --scratch-path .build-tsan --sanitize=thread $(SWIFT_FLAGS)
	set -o pipefail; TSAN_OPTIONS=suppressions=$(CURDIR)/scripts/tsan.supp:halt_on_error=1:second_deadlock_stack=1 \
	  $(SANITIZER_TEST) --scratch-path .build-tsan --sanitize=thread 2>&1 | tee .build-tsan/test-output.txt
	@bash scripts/check-skips.sh .build-tsan/test-output.txt

clean:
	rm -rf .build .build-fuzz .build-asan .build-tsan Benchmarks/.build
