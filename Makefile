# picogate — see README.md. Binaries go to ./bin (git-ignored).
SHELL := /bin/bash
BIN   := $(CURDIR)/bin
GO    ?= go
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS := -s -w -X github.com/picogate/picogate/internal/version.Version=$(VERSION)

CONTROLPLANE := $(BIN)/kube-apiserver $(BIN)/kube-scheduler $(BIN)/kube-controller-manager $(BIN)/kubectl
ETCD         := $(BIN)/etcd

.PHONY: all build controlplane test test-deps test-short test-race test-integration lint fuzz-short vet fmt-check demo bench bench-fleet soak image clean

all: build

## build: picogate, picosim and the helper tools into ./bin
build:
	$(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $(BIN)/ ./cmd/...

## controlplane: kube-apiserver, kube-scheduler, kube-controller-manager, kubectl and etcd, built from the Go module proxy
controlplane: $(CONTROLPLANE) $(ETCD)

$(CONTROLPLANE) &: tools/controlplane/go.mod tools/controlplane/go.sum
	cd tools/controlplane && $(GO) build -trimpath -ldflags '-s -w' -o $(BIN)/ ./kube-apiserver ./kube-scheduler ./kube-controller-manager ./kubectl

$(ETCD): tools/etcd/go.mod tools/etcd/go.sum
	cd tools/etcd && $(GO) build -trimpath -ldflags '-s -w' -o $(BIN)/etcd .

# Packages whose tests start a control plane (their tests import internal/controlplane): the integration
# tier, run once without -race. Every other package is the unit tier, run under -race. Both lists are
# computed when a target needs them, so a new package lands in the right one by its imports.
GO_LIST_TESTS = $(GO) list -f '{{.ImportPath}}{{range .TestImports}} {{.}}{{end}}{{range .XTestImports}} {{.}}{{end}}' ./...
CP_PKGS   = $(shell $(GO_LIST_TESTS) | awk '/ github.com\/picogate\/picogate\/internal\/controlplane/ {print $$1}')
UNIT_PKGS = $(filter-out $(CP_PKGS),$(shell $(GO) list ./...))

## test: the whole suite, what CI runs: vet, gofmt, golangci-lint, the unit tier under -race, the
## integration tier against the real control plane, short fuzzing (see the README for what each costs)
test: controlplane test-deps vet fmt-check lint test-race test-integration fuzz-short

## test-deps: what the tests need beyond Go and the control plane (Debian's chromium and libmbedtls-dev)
test-deps:
	./scripts/install-test-deps.sh

## test-short: the unit tier only, without -race (go test -short skips whatever needs a control plane or a
## product binary): the quick loop while editing
test-short:
	$(GO) test -short -count=1 $(UNIT_PKGS)

## test-race: the unit tier under the race detector
test-race:
	$(GO) test -race -count=1 -timeout 20m $(UNIT_PKGS)

## test-integration: the packages that start a control plane (the binaries they run are built from source
## by the tests themselves; PICOGATE_BIN only says where the control plane's binaries are)
test-integration: controlplane
	PICOGATE_BIN=$(BIN) $(GO) test -count=1 -timeout 40m $(CP_PKGS)

vet:
	$(GO) vet ./...

## lint: golangci-lint with .golangci.yml (installs the pinned version into ./bin on first use)
GOLANGCI_LINT_VERSION := v2.15.0
GOLANGCI_LINT_STAMP   := $(BIN)/.golangci-lint-$(GOLANGCI_LINT_VERSION)
lint: $(GOLANGCI_LINT_STAMP)
	$(BIN)/golangci-lint run ./...

$(GOLANGCI_LINT_STAMP):
	GOBIN=$(BIN) $(GO) install github.com/golangci/golangci-lint/v2/cmd/golangci-lint@$(GOLANGCI_LINT_VERSION)
	touch $@

fmt-check:
	@out=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
	if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi

## fuzz-short: every fuzz target for a few seconds (make test runs it)
FUZZTIME ?= 5s
fuzz-short:
	@set -e; for pkg in $$($(GO) list ./...); do \
	  for f in $$($(GO) test -list '^Fuzz' $$pkg 2>/dev/null | grep '^Fuzz' || true); do \
	    echo "fuzz $$pkg $$f ($(FUZZTIME))"; \
	    $(GO) test -run '^$$' -fuzz "^$$f$$" -fuzztime $(FUZZTIME) $$pkg >/dev/null || { $(GO) test -run '^$$' -fuzz "^$$f$$" -fuzztime $(FUZZTIME) $$pkg; exit 1; }; \
	  done; \
	done

## demo: a local control plane, the gateway, 3 simulated Picos and a Deployment on them (Ctrl-C stops)
demo: controlplane build
	./scripts/demo.sh

## bench: side-by-side benchmarks (nginx, kubectl proxy, picogate); writes docs/benchmarks.{json,md}
bench: controlplane build
	./scripts/bench.sh

## bench-fleet: picosim fleets of 1,000/5,000/10,000 boards (firmware and agent mode) through one gateway, and 5,000 firmware boards through nginx as the baseline; adds the fleet tables to docs/benchmarks.md (about 45 min)
bench-fleet: controlplane build
	./scripts/bench.sh --fleet 1000,5000,10000 --fleet-modes firmware,agent --fleet-baseline 5000 --fleet-ramp 60s

## soak: the long reliability tests
soak: controlplane build
	PICOGATE_BIN=$(BIN) $(GO) test -count=1 -tags soak -timeout 60m -run Soak ./internal/reliability/...

## image: the container image (needs a Docker engine; not available on the dev machines)
IMAGE ?= ghcr.io/picogate/picogate:$(VERSION)
image:
	docker build --build-arg VERSION=$(VERSION) -t $(IMAGE) .

clean:
	rm -rf $(BIN) tmp
