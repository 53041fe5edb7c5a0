# Entry points: `make demo` and `make test` work from a fresh Debian 12 machine.
SHELL := /bin/bash
BUILD ?= build
BUILD_TYPE ?= RelWithDebInfo
JOBS ?= 2
CTEST_ARGS ?=
FUZZ_SECONDS ?= 600
FUZZ_SMOKE_SECONDS ?= 15
# the stack `make up`, `demo` and `down` work on (scripts/stack names: dev, test, h1..h5, ...)
STACK ?= dev

# the HA topology's stack (scripts/stack --topology ha)
HA_STACK ?= ha

.PHONY: all setup build up up-ha down demo test test-unit test-asan fuzz fuzz-smoke valgrind bench clean

all: build

setup:
	@scripts/setup

build: setup
	cmake -S . -B $(BUILD) -DCMAKE_BUILD_TYPE=$(BUILD_TYPE) -DWERROR=ON >/dev/null
	cmake --build $(BUILD) -j$(JOBS)

up: build
	scripts/stack up --name $(STACK)
	scripts/stack services-up --name $(STACK)

# The highly available topology: 3 NATS nodes, Redis + replica + 3 Sentinels, Postgres under
# pg_auto_failover, 2 writers and 2 read APIs behind haproxy, 2 projectors (README).
up-ha: build
	scripts/stack up --name $(HA_STACK) --topology ha
	scripts/stack services-up --name $(HA_STACK)

# `make down` stops the dev stack and every other stack under .stack/ (test, bench, ...);
# `make down STACK=x` only x.
down:
	scripts/stack down --name $(STACK)
	@if [ "$(origin STACK)" != "command line" ]; then \
		for d in .stack/*/; do n="$$(basename "$$d")"; [ "$$n" = "$(STACK)" ] || [ ! -f "$$d/env" ] || scripts/stack down --name "$$n"; done; \
	fi

demo: up
	STACK_NAME=$(STACK) scripts/demo

# Every test: unit (no server), integration (a test stack of its own under .stack/test,
# started and stopped by ctest), the libFuzzer harnesses briefly, and the unit suite under
# ASan+UBSan and valgrind.
test: build
	cd $(BUILD) && ctest --output-on-failure $(CTEST_ARGS)
	$(MAKE) --no-print-directory test-asan
	$(MAKE) --no-print-directory valgrind
	$(MAKE) --no-print-directory fuzz-smoke

test-unit: build
	cd $(BUILD) && ctest --output-on-failure -L unit

test-asan: setup
	cmake -S . -B build-asan -DCMAKE_BUILD_TYPE=Debug -DENABLE_SANITIZERS=ON -DWERROR=ON >/dev/null
	cmake --build build-asan -j$(JOBS)
	cd build-asan && ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
		CQRS_TEST_SMALL=1 ctest --output-on-failure -LE '^(chaos|ha)$$' $(CTEST_ARGS)

valgrind: build
	@for t in $(BUILD)/tests/unit/test_*; do \
		[ -x "$$t" ] || continue; \
		echo "valgrind $$t"; \
		valgrind -q --leak-check=full --show-leak-kinds=definite,indirect --errors-for-leak-kinds=definite,indirect \
			--error-exitcode=99 "$$t" >/dev/null || exit 1; \
	done

fuzz: setup
	FUZZ_SECONDS=$(FUZZ_SECONDS) scripts/fuzz

fuzz-smoke: setup
	FUZZ_SECONDS=$(FUZZ_SMOKE_SECONDS) scripts/fuzz

bench: build
	bench/run $(if $(QUICK),--quick,)

clean:
	rm -rf $(BUILD) build-asan build-fuzz
