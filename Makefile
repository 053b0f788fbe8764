# fanout: `make run` starts a standalone node, `make test` runs every test.
# Both install missing Debian packages first (deploy/install-deps.sh).
PRESET ?= release
BUILD := build/$(PRESET)
ARGS ?=

.PHONY: deps build run cluster test test-sanitizers bench-smoke clean install

deps:
	@bash deploy/install-deps.sh
	@if [ -x deploy/install-js-deps.sh ]; then bash deploy/install-js-deps.sh; fi

build: deps
	@cmake --preset $(PRESET) >/dev/null
	@cmake --build --preset $(PRESET)

run: build
	$(BUILD)/service/fanoutd $(ARGS)

# Three nats-server and three fanoutd on this machine (docs/operations.md,
# "Cluster"); Ctrl-C stops them all.
cluster: build
	@bash deploy/local-cluster.sh $(BUILD)/service/fanoutd

test: build
	ctest --preset $(PRESET)

# ASan+UBSan and TSan builds of the concurrency and integration tests (what CI
# also runs). TSan's reports go to files that tests/tsan_reports.py judges: any
# report involving fanout's code fails the run (see that script for why this
# is not a suppressions file).
test-sanitizers: deps
	@cmake --preset asan >/dev/null && cmake --build --preset asan && ctest --preset asan
	@cmake --preset tsan >/dev/null && cmake --build --preset tsan
	@rm -rf build/tsan/tsan-reports && mkdir -p build/tsan/tsan-reports
	@ctest --preset tsan
	@/usr/bin/python3 tests/tsan_reports.py build/tsan/tsan-reports

# libFuzzer targets (clang-14), a minute each, two at a time; fails on any
# crash, leak or timeout and prints the input (tests/fuzz/README.md).
.PHONY: test-fuzz
test-fuzz: deps
	@bash tests/fuzz/run.sh 60

clean:
	rm -rf build

# Installs what `make build` built (it builds nothing: `sudo make install`
# leaves no root-owned files in build/), the systemd unit naming the installed
# binary, and the example configuration as /etc/default/fanoutd unless one is
# there already. DESTDIR stages the tree (packaging, tests/deploy).
PREFIX ?= /usr/local
BINDIR ?= $(PREFIX)/bin
UNITDIR ?= $(PREFIX)/lib/systemd/system
SYSCONFDIR ?= /etc
FANOUTD ?= $(BUILD)/service/fanoutd

install:
	@test -x $(FANOUTD) || { echo "install: no $(FANOUTD): run make build first" >&2; exit 1; }
	install -D -m 0755 $(FANOUTD) $(DESTDIR)$(BINDIR)/fanoutd
	install -d $(DESTDIR)$(UNITDIR)
	sed 's|^ExecStart=/usr/local/bin/fanoutd|ExecStart=$(BINDIR)/fanoutd|' \
	  deploy/systemd/fanoutd.service > $(DESTDIR)$(UNITDIR)/fanoutd.service
	chmod 0644 $(DESTDIR)$(UNITDIR)/fanoutd.service
	@if [ -e $(DESTDIR)$(SYSCONFDIR)/default/fanoutd ]; then \
	  echo "install: keeping $(DESTDIR)$(SYSCONFDIR)/default/fanoutd"; \
	else \
	  install -D -m 0644 deploy/systemd/fanoutd.env $(DESTDIR)$(SYSCONFDIR)/default/fanoutd; \
	fi
	@echo "install: done; then: systemctl daemon-reload && systemctl enable --now fanoutd"
