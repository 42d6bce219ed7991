# rekey: make demo runs the main job on the local stack; make test runs every test.
SHELL := /bin/bash
GO ?= go
REKEY_CACHE ?= $(HOME)/.cache/rekey
export REKEY_BIN_DIR ?= $(REKEY_CACHE)/bin
# Tests and the local stack talk to loopback only: the credentials chain never asks the ECS
# metadata service from here.
export ALIBABA_CLOUD_ECS_METADATA_DISABLED ?= true
PKGS := ./...

.PHONY: all build tools test unit e2e lint demo bench clean

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

## test: lint, unit tests and end-to-end tests on a real etcd + kube-apiserver
test: tools lint
	$(GO) test -count=1 -timeout 45m $(PKGS)

## unit: the tests that need no control plane
unit:
	$(GO) test -count=1 ./shared/... ./cmd/... ./infra/local/kmsapi/... ./infra/local/faultproxy/...

## e2e: only the end-to-end suite
e2e: tools
	$(GO) test -count=1 -timeout 40m -v ./tests/e2e/

## demo: the serverless story on the local twin (KMS event -> rotation function -> job -> off-peak tick
## -> re-encryption -> verifier PASS; DisableKey -> alert at a webhook), then the CLI story
demo: tools build
	$(GO) run ./infra/local/cmd/rekey-demo -rekey bin/rekey

## bench: rekey vs the kubectl pipelines on the same 10k Secrets, with peak RSS
bench: tools build
	$(GO) test -count=1 -timeout 30m -run '^$$' -bench . -benchtime 1x -v ./tests/bench/ -rekey $(CURDIR)/bin/rekey

clean:
	rm -rf bin dist
