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

.PHONY: all setup setup-runtime build check-libs gpu-bundle run test fuzz bench db db-stop lint vet fmt clean

all: build

setup:
	@scripts/setup.sh

setup-runtime:
	@scripts/setup.sh --runtime

# The binary links only OpenCV core+imgproc, libjpeg, libpng and libwebp
# (third_party/gocv/README.md): no flags or tags are needed for that, so a
# plain `go build ./cmd/mlserve` gives the same binary.
build:
	go build -ldflags '$(LDFLAGS)' -o $(BIN) ./cmd/mlserve

# make check-libs: fail when the binary needs more than 30 shared libraries
# or 60 MB of them (CI runs it through scripts/gpu-check.sh --dry-run).
check-libs: build
	@scripts/check-libs.sh $(BIN)

# make gpu-bundle: build what scripts/gpu-check.sh runs on a GPU machine
# into .gpucheck/ and check it on CPU (see docs/remote-gpu.md).
gpu-bundle: setup
	@scripts/gpu-check.sh --dry-run

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

# third_party/ keeps upstream's formatting (scripts/vendor-gocv.sh --check).
GOFILES = $(shell git ls-files '*.go' ':!:third_party/**')

fmt:
	gofmt -l -w $(GOFILES)

# golangci-lint v2 with .golangci.yml; installed into $(go env GOPATH)/bin
# when missing (the version CI uses).
GOLANGCI_LINT_VERSION = v2.15.0
GOLANGCI_LINT = $(shell go env GOPATH)/bin/golangci-lint

lint: vet
	@test -z "$$(gofmt -l $(GOFILES))" || (gofmt -l $(GOFILES); echo "gofmt: files above need formatting"; exit 1)
	@$(GOLANGCI_LINT) version 2>/dev/null | grep -q "$(GOLANGCI_LINT_VERSION:v%=%)" || \
		go install github.com/golangci/golangci-lint/v2/cmd/golangci-lint@$(GOLANGCI_LINT_VERSION)
	$(GOLANGCI_LINT) run ./...

clean:
	rm -rf bin .gpucheck
