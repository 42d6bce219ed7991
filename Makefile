# rekey: make demo runs the main job on the local stack; make test runs every test.
SHELL := /bin/bash
GO ?= go
REKEY_CACHE ?= $(HOME)/.cache/rekey
export REKEY_BIN_DIR ?= $(REKEY_CACHE)/bin
# Tests and the local stack talk to loopback only: the credentials chain never asks the ECS
# metadata service from here.
export ALIBABA_CLOUD_ECS_METADATA_DISABLED ?= true
PKGS := ./...

# Fuzz targets (package:target). make test runs each for TEST_FUZZTIME after the other tests; make
# fuzz runs them and FUZZ_EXTRA for FUZZTIME each. go test -fuzz takes one target per invocation.
FUZZ_TARGETS := \
	shared/events:FuzzDecode \
	infra/local/eventbridge:FuzzMatch \
	shared/config:FuzzLoad \
	shared/kubeaccess:FuzzCSResponse \
	shared/storedvalue:FuzzClassify
FUZZ_EXTRA := \
	shared/storedvalue:FuzzEncryptedObjectMatchesUpstream \
	infra/local/kmsapi:FuzzDecodeBlob \
	infra/local/kmsapi:FuzzServeHTTP
FUZZTIME ?= 2m
TEST_FUZZTIME ?= 10s

# run-fuzz runs each package:target of $(1) for $(2) and prints one line per target with the
# executions done; a failure prints go test's whole output (with the failing input's file). Go 1.26's
# coordinator can end a run that found nothing with a bare "context deadline exceeded" when
# -fuzztime expires under CPU contention (golang/go#75804, fixed in Go 1.27): that, with no failing
# input written, is reported and not counted as a failure.
define run-fuzz
@set -e; for t in $(1); do \
	  pkg=./$${t%%:*}; fn=$${t##*:}; note=""; \
	  if ! out=$$($(GO) test -run '^$$' -fuzz "^$$fn$$" -fuzztime $(2) $$pkg 2>&1); then \
	    if echo "$$out" | grep -q 'context deadline exceeded' && ! echo "$$out" | grep -q 'Failing input written'; then \
	      note=" (stopped by golang/go#75804, no failing input)"; \
	    else echo "$$out"; exit 1; fi; \
	  fi; \
	  echo "fuzz $$fn ($$pkg, $(2)): $$(echo "$$out" | grep -o 'execs: [0-9]*' | tail -1)$$note"; \
	done
endef

.PHONY: all build tools test unit e2e lint demo bench bench-politeness clean fuzz fuzz-short

all: build

## build: the rekey CLI and the local stand-ins into bin/
build:
	$(GO) build -o bin/ ./cmd/... ./infra/local/cmd/...

## tools: etcd and kube-apiserver for the local control plane, built from the Go module proxy
## once and cached in $(REKEY_BIN_DIR), keyed by version
tools:
	infra/local/tools/build.sh "$(REKEY_BIN_DIR)"

## lint: gofmt and go vet must be clean
lint:
	@out=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
	  if [ -n "$$out" ]; then echo "gofmt would change:"; echo "$$out"; exit 1; fi
	$(GO) vet $(PKGS)

## test: lint, unit tests, then the end-to-end packages (tests/...: each starts real etcd +
## kube-apiserver processes), then the fuzz targets briefly. tests/e2e (one test at a time, much of
## it waiting for API servers to adopt a key version) and tests/faults (two cases at a time) run side
## by side: on 2 cores that fills the e2e suite's idle time, and every test is written to hold on a
## busy machine (progress and outcomes, never wall-clock budgets)
test: tools lint
	$(GO) test -count=1 -timeout 30m $$($(GO) list $(PKGS) | grep -v '/tests/')
	$(GO) test -count=1 -p 2 -timeout 60m ./tests/...
	$(MAKE) --no-print-directory fuzz-short

## fuzz-short: each fuzz target of FUZZ_TARGETS for TEST_FUZZTIME (part of make test)
fuzz-short:
	$(call run-fuzz,$(FUZZ_TARGETS),$(TEST_FUZZTIME))

## fuzz: every fuzz target for FUZZTIME each (default 2m; e.g. make fuzz FUZZTIME=1h)
fuzz:
	$(call run-fuzz,$(FUZZ_TARGETS) $(FUZZ_EXTRA),$(FUZZTIME))

## unit: the tests that need no control plane
unit:
	$(GO) test -count=1 ./shared/... ./cmd/... ./infra/local/kmsapi/... ./infra/local/faultproxy/...

## e2e: only the end-to-end suite
e2e: tools
	$(GO) test -count=1 -timeout 40m -v ./tests/e2e/

## demo: the CLI story, then the serverless story on the local twin (KMS event -> rotation function ->
## job -> off-peak tick -> re-encryption -> verifier PASS; DisableKey -> alert at a webhook), ending
## with rekey status over the twin and rekey history -o markdown of the rotation
demo: tools build
	$(GO) run ./infra/local/cmd/rekey-demo -rekey bin/rekey

## bench: every way to re-encrypt N Secrets of 1 KiB (REKEY_BENCH_N, default 1000,10000,50000) on the
## local control plane with the KMS v2 chain: kubectl pipelines, rekey (adaptive and --max-speed),
## a raw saturating client, the functions on the twin; results.md/.json/.png in tests/bench/results/
## (see tests/bench/doc.go for the other REKEY_BENCH_* knobs)
bench: tools build
	$(GO) test -count=1 -timeout 150m -run '^$$' -bench 'Rotation' -benchtime 1x -v ./tests/bench/ -rekey $(CURDIR)/bin/rekey
	$(MAKE) bench-politeness

## bench-politeness: rekey's pace on the ACK-shaped twin (two API server replicas): --max-speed, the
## default under rekey's FlowSchema and without it, against a foreground client's p50/p99
## (REKEY_BENCH_POLITE_N, _IDLE, _ROUNDS); tests/bench/results/politeness.md and .json
bench-politeness: tools build
	$(GO) test -count=1 -timeout 60m -run '^$$' -bench 'Politeness' -benchtime 1x -v ./tests/bench/ -rekey $(CURDIR)/bin/rekey

clean:
	rm -rf bin dist
