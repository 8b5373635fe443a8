# redis-cache: `make run` to try it, `make test` to test it. Both install what is missing.
SHELL := /bin/bash
PORT ?= 6379
MODULE := target/release/libredis_cache.so

.PHONY: all deps build run cluster bench-cluster lab test test-redis test-valkey test-worker unit integration memcheck fuzz-restore fuzz fuzz-seeds soak bench lint fmt clean

all: build

deps:
	@scripts/deps.sh

# Both workspace members: the module (target/release/libredis_cache.so) and the write-behind
# worker (target/release/redis-cache-worker).
build: deps
	cargo build --release

# A local 3-primary, 3-replica cluster with the module (ports 7000-7005, CLUSTER_PORT=...).
cluster: build
	@scripts/cluster.sh

run: build
	@echo "redis-cache: redis-server on 127.0.0.1:$(PORT) with $(MODULE)"
	@echo "             connect with: redis-cli -p $(PORT)    (Ctrl-C stops the server)"
	redis-server redis.conf.example --port $(PORT)

# Integration tests load target/release/libredis_cache.so into real server processes: it is
# built first (cargo test does not build a cdylib-only crate's .so). The server is the binary
# $CACHE_SERVER names (default redis-server on PATH). `make test` runs the unit tests once,
# then the integration tests on Redis 7.0 (Debian's redis-server) and on Valkey 8.1 (the
# valkey-server that make deps installs, path from scripts/valkey-path.sh), then the worker's
# tests once. `-p redis-cache`: the module's tests only, the worker's run in test-worker.
INTEGRATION = cargo test --release -p redis-cache --test '*' -- --test-threads=4
# The write-behind worker: its unit tests, then its tests against real redis-server, SQLite
# and PostgreSQL, servers that the tests start themselves.
WORKER_TESTS = cargo test --release -p redis-cache-worker

# $(call integration,<shell expression for the binary>): one server's integration run, after
# a header line naming the binary and its version.
define integration
	@bin="$(1)" && path="$$(command -v "$$bin")" \
	  || { echo "make: no server binary '$$bin' (make deps installs them)" >&2; exit 1; }; \
	echo "=== integration tests on $$path: $$("$$path" --version)" \
	  && CACHE_SERVER="$$path" $(INTEGRATION)
endef

test: build
	cargo test --release -p redis-cache --lib -- --test-threads=4
	$(call integration,redis-server)
	$(call integration,$$(scripts/valkey-path.sh))
	$(WORKER_TESTS)

test-worker: build
	$(WORKER_TESTS)

test-redis: build
	$(call integration,redis-server)

test-valkey: build
	$(call integration,$$(scripts/valkey-path.sh))

# The integration tests on $CACHE_SERVER (default redis-server).
integration: build
	$(call integration,$${CACHE_SERVER:-redis-server})

# The integration tests that reach every command, callback, persistence path, replication and
# LOCKGET wake-up, on redis-server under valgrind memcheck (scripts/valgrind-server.sh as
# $CACHE_SERVER, harness waits CACHE_TEST_SLOW times longer); then scripts/memcheck-scan.sh
# fails on any invalid access, uninitialised use or definite leak with a frame in the module.
# valgrind is installed here, not by `make deps`. MEMCHECK_TESTS=... picks other test files.
# By default every integration file but the soak (its RSS bound and load need full-speed servers).
MEMCHECK_TESTS ?= basics getx lockget tags persistence replication invalidate writebehind \
  citizenship config id_clock paused_writes recipes versions bad_input \
  cluster cluster_invalidate cluster_reshard
MEMCHECK_LOGS ?= target/memcheck
# Tests skipped by name here only (the run prints them); none now: the tests whose timings a
# server under valgrind could not keep scale them by $CACHE_TEST_SLOW instead.
MEMCHECK_SKIP ?=
memcheck: build
	@scripts/deps.sh valgrind
	@rm -rf $(MEMCHECK_LOGS) && mkdir -p $(MEMCHECK_LOGS)
	@echo "=== memcheck: $(MEMCHECK_TESTS) on $$(redis-server --version) under $$(valgrind --version)"
	@echo "=== memcheck: skipped (timing under valgrind): $(or $(MEMCHECK_SKIP),none)"
	@status=0; MEMCHECK_LOGS=$(abspath $(MEMCHECK_LOGS)) CACHE_SERVER=$(abspath scripts/valgrind-server.sh) \
	  CACHE_TEST_SLOW=$${CACHE_TEST_SLOW:-10} \
	  cargo test --release --no-fail-fast -p redis-cache $(foreach t,$(MEMCHECK_TESTS),--test $(t)) \
	  -- --test-threads=2 --exact $(foreach t,$(MEMCHECK_SKIP),--skip $(t)) \
	  || status=$$?; \
	  scripts/memcheck-scan.sh $(MEMCHECK_LOGS) || status=1; exit $$status

# The live RESTORE fuzzer: $RESTORE_FUZZ_N (default 100,000) mutated DUMP payloads with valid
# checksums against a real redis-server (make test runs the same test with 10,000).
RESTORE_FUZZ_N ?= 100000
fuzz-restore: build
	RESTORE_FUZZ_N=$(RESTORE_FUZZ_N) cargo test --release -p redis-cache --test bad_input \
	  restore_of_mutated_payloads_leaves_the_digest_unchanged -- --exact --nocapture

# The cargo-fuzz targets of fuzz/ (libFuzzer, nightly), FUZZ_TIME seconds each (default 60),
# from the seed corpus fuzz/corpus/<target> (`make fuzz-seeds` writes it again). New inputs
# go to fuzz/scratch/<target>, crashes to fuzz/artifacts/<target>. Not part of `make test`:
# the same checks run there as property tests (src/**/check). FUZZ_TARGETS=... picks some.
FUZZ_TIME ?= 60
FUZZ_TARGETS ?= args codec apply_header spread_message tag_index
fuzz:
	@rustup toolchain list 2>/dev/null | grep -q '^nightly' || { \
	  echo "make fuzz: no nightly toolchain (cargo-fuzz builds with -Zsanitizer, nightly only):" >&2; \
	  echo "           rustup toolchain install nightly, then make fuzz again" >&2; exit 1; }
	@command -v cargo-fuzz >/dev/null || cargo install --locked cargo-fuzz
	@cd fuzz && cargo +nightly fuzz build
	@cd fuzz && status=0; summary=""; for t in $(FUZZ_TARGETS); do \
	  mkdir -p scratch/$$t artifacts/$$t; log=scratch/$$t.log; \
	  echo "=== fuzz $$t: $(FUZZ_TIME) s"; \
	  cargo +nightly fuzz run $$t scratch/$$t corpus/$$t -- -max_total_time=$(FUZZ_TIME) >$$log 2>&1; rc=$$?; \
	  runs=$$(sed -n 's/^Done \([0-9]*\) runs in \([0-9]*\) second.*/\1 runs in \2 s/p' $$log); \
	  cov=$$(grep -o 'cov: [0-9]*' $$log | tail -1); \
	  if [ $$rc -eq 0 ]; then result="ok, 0 crashes"; else result="FAILED (exit $$rc): see fuzz/$$log and fuzz/artifacts/$$t"; status=1; fi; \
	  line="$$t: $${runs:-no run count}, $${cov:-cov: ?}, $$result"; echo "$$line"; summary="$$summary$$line\n"; \
	done; echo "=== fuzz summary ($(FUZZ_TIME) s per target)"; printf "$$summary"; exit $$status

# Writes the seed corpus fuzz/corpus/<target> from real payloads (fuzz/src/bin/seeds.rs).
fuzz-seeds:
	cd fuzz && cargo run --release --bin seeds

# The soak (tests/soak.rs) for DURATION (30m, 90s, 1h): every command from many clients
# against a primary (AOF) and a replica with BGSAVE, BGREWRITEAOF, DEBUG RELOAD, restarts and
# failovers, and beside it a cluster resharding under load; prints the summary (full output in
# target/soak.log). A random seed, printed; SOAK_SEED=<n> replays one. `make test` runs the same
# file for 6 s.
DURATION ?= 10m
soak: build
	@scripts/soak.sh $(DURATION)

unit: deps
	cargo test --release -p redis-cache --lib -- --test-threads=4

bench: build
	MODULE=$(abspath $(MODULE)) bash bench/run

# GETX / TAGSET / WBQUEUE through a 3-primary cluster beside one node.
bench-cluster: build
	MODULE=$(abspath $(MODULE)) bash bench/cluster.sh

# The stampede lab: six strategies against a simulated database on a server of its own
# (bench/README.md, "Stampede lab"). matplotlib goes into a venv of its own the first time, not in deps.
# Options: make lab LAB_ARGS="--readers 2000 --scenarios stampede".
lab: build
	@bash bench/lab/run --module $(abspath $(MODULE)) $(LAB_ARGS)

lint:
	cargo fmt --check
	cargo clippy --release --workspace --all-targets -- -D warnings

fmt:
	cargo fmt

clean:
	cargo clean
