# fanout: `make run` starts a standalone node, `make test` runs every test.
# Both install missing Debian packages first (deploy/install-deps.sh).
PRESET ?= release
BUILD := build/$(PRESET)
ARGS ?=

.PHONY: deps build run test test-sanitizers bench-smoke clean

deps:
	@bash deploy/install-deps.sh
	@if [ -x deploy/install-js-deps.sh ]; then bash deploy/install-js-deps.sh; fi

build: deps
	@cmake --preset $(PRESET) >/dev/null
	@cmake --build --preset $(PRESET)

run: build
	$(BUILD)/service/fanoutd $(ARGS)

test: build
	ctest --preset $(PRESET)

# ASan+UBSan and TSan builds of the concurrency tests (what CI also runs).
test-sanitizers: deps
	@for p in asan tsan; do \
	  cmake --preset $$p >/dev/null && cmake --build --preset $$p && ctest --preset $$p || exit 1; \
	done

clean:
	rm -rf build
