# Switchyard: two commands on a fresh Debian 12 machine, `make run` and `make test`.
# Both install what is missing first (scripts/setup.sh).
SWIFT ?= swift
SWIFT_FLAGS ?= -Xswiftc -warnings-as-errors
BIN = .build/debug/switchyard

.PHONY: setup build run test unit-test tool-test bench clean

setup:
	@bash scripts/setup.sh

build: setup
	$(SWIFT) build $(SWIFT_FLAGS)

run: build
	$(BIN) run

test: setup
	$(SWIFT) build --build-tests $(SWIFT_FLAGS)
	$(SWIFT) test --skip-build --parallel

bench: setup
	bash Benchmarks/report.sh

clean:
	rm -rf .build Benchmarks/.build
