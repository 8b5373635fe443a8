# redis-cache: `make run` to try it, `make test` to test it. Both install what is missing.
SHELL := /bin/bash
PORT ?= 6379
MODULE := target/release/libredis_cache.so

.PHONY: all deps build run test unit integration bench lint fmt clean

all: build

deps:
	@scripts/deps.sh

build: deps
	cargo build --release

run: build
	@echo "redis-cache: redis-server on 127.0.0.1:$(PORT) with $(MODULE)"
	@echo "             connect with: redis-cli -p $(PORT)    (Ctrl-C stops the server)"
	redis-server redis.conf.example --port $(PORT)

# Integration tests load target/release/libredis_cache.so into real redis-server processes:
# it is built first (cargo test does not build a cdylib-only crate's .so).
test: build
	cargo test --release -- --test-threads=4

unit: deps
	cargo test --release --lib

bench: build
	MODULE=$(abspath $(MODULE)) bash bench/run

lint:
	cargo fmt --check
	cargo clippy --release --all-targets -- -D warnings

fmt:
	cargo fmt

clean:
	cargo clean
