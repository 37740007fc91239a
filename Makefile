# mlserve: the two commands a newcomer needs are `make run` and `make test`.
# Both install what is missing first (scripts/setup.sh is idempotent).

SHELL := /bin/bash
ROOT := $(abspath .)
DEPS := $(ROOT)/.deps
BIN := $(ROOT)/bin/mlserve
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS := -X github.com/mlserve/mlserve/config.Version=$(VERSION)

export MLSERVE_ORT_LIBRARY ?= $(DEPS)/onnxruntime/libonnxruntime.so.1
export MLSERVE_TESTDATA ?= $(DEPS)/testdata
export CGO_ENABLED := 1

GO_TEST_FLAGS ?= -race -count=1 -timeout 20m
FUZZTIME ?= 10s

.PHONY: all setup setup-runtime build run test fuzz bench db db-stop lint vet fmt clean

all: build

setup:
	@scripts/setup.sh

setup-runtime:
	@scripts/setup.sh --runtime

build:
	go build -ldflags '$(LDFLAGS)' -o $(BIN) ./cmd/mlserve

# make run: install what is missing, build, start the service on
# IMMICH_HOST:IMMICH_PORT (0.0.0.0:3003) with CPU and the default cache folder.
run: setup-runtime build
	exec $(BIN) serve

# make test: install what is missing, start Redis and PGlite on loopback
# ports of their own, run the whole suite with the race detector, and stop
# the services again whatever the tests did.
test: setup
	@set -o pipefail; \
	scripts/services.sh start; \
	trap 'scripts/services.sh stop' EXIT; \
	eval "$$(scripts/services.sh env)"; \
	go vet ./... && \
	go test $(GO_TEST_FLAGS) ./...

# Short fuzzing of every parser (CI runs this after make test).
fuzz:
	@scripts/fuzz.sh $(FUZZTIME)

bench: setup
	go test -run '^$$' -bench . -benchtime 20x ./...

# make db: a local PostgreSQL + pgvector (PGlite) with data in .data/pglite,
# for trying `mlserve index` and `mlserve search` without installing
# PostgreSQL. It listens on 127.0.0.1:$(DB_PORT); `make db-stop` stops it.
DB_PORT ?= 55433
db: setup
	MLSERVE_SERVICES_DIR=$(ROOT)/.data/run MLSERVE_PGLITE_DATA=$(ROOT)/.data/pglite MLSERVE_TEST_PG_PORT=$(DB_PORT) scripts/services.sh start pglite
	@echo "export MLSERVE_DATABASE_URL='postgres://postgres:postgres@127.0.0.1:$(DB_PORT)/postgres?sslmode=disable'"

db-stop:
	MLSERVE_SERVICES_DIR=$(ROOT)/.data/run scripts/services.sh stop

vet:
	go vet ./...

fmt:
	gofmt -l -w .

lint: vet
	@test -z "$$(gofmt -l .)" || (gofmt -l .; echo "gofmt: files above need formatting"; exit 1)

clean:
	rm -rf bin
