# worker-exporters. `make run` starts worker-exporter on the guide's ports; `make test` runs every test.
GO       ?= go
BIN      := bin
# Executions per fuzz target, a count rather than a time: Go 1.26's fuzz
# coordinator can fail a target with "context deadline exceeded", no input
# found, when a -fuzztime duration ends on a loaded machine (golang/go#75804,
# fixed in 1.27). 100,000 runs take 8-20 s a target here, about the runs 10 s
# gave.
FUZZTIME ?= 100000x

.PHONY: all build build-agent run test fuzz budget bench collector victoriametrics clean image fleet

GOBIN_DIR := $(shell $(GO) env GOPATH)/bin

all: build

# Static binaries (no libc: about 1 MiB less resident memory each), stripped;
# gpu-exporter and worker-exporter need cgo, for NVML (go-nvml's headers warn about
# deprecated calls we do not make). The version and revision are stamped here:
# Go records none when its VCS stamping is off (GOFLAGS=-buildvcs=false).
VERSION   ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo unknown)
REVISION  ?= $(shell git rev-parse HEAD 2>/dev/null || echo unknown)
BUILDINFO := github.com/ffmpeg-rtmp/worker-exporters/internal/buildinfo
GOFLAGS_BUILD = -trimpath -ldflags='-s -w -X $(BUILDINFO).version=$(VERSION) -X $(BUILDINFO).revision=$(REVISION)'
export CGO_CFLAGS ?= -O2 -g -Wno-deprecated-declarations
STATIC := $(filter-out ./cmd/gpu-exporter ./cmd/worker-exporter ./cmd/internal,$(patsubst %/,./%,$(wildcard cmd/*/)))

build:
	@mkdir -p $(BIN)
	CGO_ENABLED=0 $(GO) build $(GOFLAGS_BUILD) -o $(BIN)/ $(STATIC)
	CGO_ENABLED=1 $(GO) build $(GOFLAGS_BUILD) -o $(BIN)/ ./cmd/gpu-exporter ./cmd/worker-exporter

# The deployment guide's name for building the worker's binaries.
build-agent: build

# The container image (Containerfile), tagged $(IMAGE):latest and
# $(IMAGE):$(git describe): the binaries of `make build`, FROM scratch, with the
# loader and glibc libraries they (and libnvidia-ml.so.1) need copied from this
# machine, its CA certificates, and a passwd naming nobody (65534), who runs
# them. No base image and no network: podman only copies the context made here.
IMAGE  ?= ghcr.io/ffmpeg-rtmp/worker-exporters
PODMAN ?= podman
image: build
	@set -e; ctx=$$(mktemp -d); trap 'rm -rf "$$ctx"' EXIT; \
	version=$$(git describe --always --dirty 2>/dev/null || echo dev); \
	revision=$$(git rev-parse HEAD 2>/dev/null || echo unknown); \
	mkdir -p "$$ctx/bin" "$$ctx/etc/ssl/certs" "$$ctx/usr/lib/$$($${CC:-gcc} -dumpmachine)"; \
	cp $(BIN)/worker-exporter "$$ctx/bin/"; \
	for b in cpu-exporter gpu-exporter ffmpeg-exporter docker-stats-exporter; do ln -s worker-exporter "$$ctx/bin/$$b"; done; \
	libs=$$(ldd $(BIN)/worker-exporter | awk '$$2 == "=>" && $$3 ~ /^\// { print $$3 } $$1 ~ /^\// { print $$1 }' | sort -u); \
	libc=$$(echo "$$libs" | grep '/libc\.so\.6$$'); libdir=$$(dirname "$$libc"); \
	for lib in $$libs $$libdir/libm.so.6 $$libdir/libpthread.so.0 $$libdir/libdl.so.2 $$libdir/librt.so.1; do \
		test ! -e "$$lib" || cp -L --parents "$$lib" "$$ctx/"; done; \
	test ! -e /etc/ssl/certs/ca-certificates.crt || cp -L /etc/ssl/certs/ca-certificates.crt "$$ctx/etc/ssl/certs/"; \
	printf 'root:x:0:0:root:/root:/sbin/nologin\nnobody:x:65534:65534:nobody:/nonexistent:/sbin/nologin\n' >"$$ctx/etc/passwd"; \
	printf 'root:x:0:\nnogroup:x:65534:\n' >"$$ctx/etc/group"; \
	chmod -R u=rwX,go=rX "$$ctx"; \
	$(PODMAN) build --file Containerfile --format oci --layers=false \
		--build-arg VERSION="$$version" --build-arg REVISION="$$revision" \
		--annotation org.opencontainers.image.version="$$version" \
		--annotation org.opencontainers.image.revision="$$revision" \
		--annotation org.opencontainers.image.source=https://github.com/ffmpeg-rtmp/worker-exporters \
		--tag $(IMAGE):latest --tag $(IMAGE):"$$version" "$$ctx"; \
	$(PODMAN) image ls --format '{{.Repository}}:{{.Tag}} {{.Size}}' $(IMAGE):latest

# worker-exporter: every source this machine has, on the guide's ports.
run: build
	$(BIN)/worker-exporter

# vet, gofmt, the race-enabled suite against real peers (ffmpeg, promtool,
# node_exporter, podman, the built collector and VictoriaMetrics), the
# worker-exporter soak without the race detector (10 minutes when CI=true,
# so resident memory means something), and a short fuzz run.
test: collector victoriametrics
	$(GO) vet ./...
	test -z "$$(gofmt -l $$(git ls-files '*.go'))" || { gofmt -l $$(git ls-files '*.go'); echo "gofmt: files above need formatting"; exit 1; }
	$(GO) test -race -count=1 -timeout 30m ./...
	$(GO) test -count=1 -timeout 30m -run '^TestSoak$$' -v ./cmd/worker-exporter
	$(MAKE) fuzz

# Every parser of outside input, FUZZTIME each (go test -fuzz takes one target at a time).
FUZZ := ./sources/ffmpeg:FuzzParser ./sources/rapl:FuzzAdvance ./sources/rapl:FuzzReadZone \
	./sources/docker:FuzzLimitedBody ./sources/docker:FuzzCgroupFiles ./sources/procfs:FuzzParseUptime \
	./sources/encodeprofile:FuzzFromQuery ./sources/encodeprofile:FuzzStderr ./sources/encodeprofile:FuzzFromArgs

fuzz:
	@set -e; for t in $(FUZZ); do \
		echo "fuzz $${t#*:} in $${t%%:*}"; \
		$(GO) test -run '^$$' -fuzz "^$${t#*:}$$" -fuzztime $(FUZZTIME) -fuzzminimizetime 2s "$${t%%:*}"; \
	done

# The guide's "<20MB memory" as an operator sets it: every binary serves
# scrapes inside a 20 MiB memory cgroup (root), as fast as unlimited within
# 10%. On a quiet machine, not in `make test`: it compares scrape rates,
# which a machine busy with other work moves by more than that.
budget:
	$(GO) test -tags budget -count=1 -v -timeout 20m ./e2e/budget

# One table: scrape load (plain, gzip, OpenMetrics Accept) against
# node_exporter and a fixed-body ceiling, resident memory of every exporter
# started cold, the Go benchmarks (needs wrk and prometheus-node-exporter).
bench: build
	BIN=$(BIN) ./scripts/bench

# The fleet sizing table (docs/fleet.md): simulated workers pushing
# through one gateway into VictoriaMetrics, three fleet sizes, about 4 minutes.
# FLEET='-workers 1000 -sweep' doubles the fleet until the gateway fails it.
FLEET ?=
fleet: collector victoriametrics
	$(GO) build -o $(BIN)/fleet-sim ./tools/fleet-sim
	$(BIN)/fleet-sim $(FLEET)

# The gateway collector (otel-collector/builder-config.yaml) as bin/otelcol-worker.
collector: $(BIN)/otelcol-worker
$(BIN)/otelcol-worker: otel-collector/builder-config.yaml
	@mkdir -p $(BIN)
	$(GO) install go.opentelemetry.io/collector/cmd/builder@v0.165.0
	@mkdir -p otel-collector/build
	cd otel-collector && $(GOBIN_DIR)/builder --config builder-config.yaml
	cp otel-collector/build/otelcol-worker/otelcol-worker $@

# VictoriaMetrics single-node, for the end-to-end tests and the quick start.
victoriametrics: $(BIN)/victoria-metrics
$(BIN)/victoria-metrics:
	@mkdir -p $(BIN)
	GOBIN=$(abspath $(BIN)) $(GO) install github.com/VictoriaMetrics/VictoriaMetrics/app/victoria-metrics@v1.151.0

clean:
	rm -rf $(BIN) otel-collector/build

# The .deb and .rpm (packaging/nfpm.yaml) into $(BIN)/packages: worker-exporter
# and the single exporters' links under /opt/ffmpeg-rtmp/worker/bin, the
# systemd units of examples/systemd, an environment file per unit, and the
# scripts that create their user. Versioned from git describe
# (packaging/version.sh) unless PKG_VERSION is given; the binaries carry the
# commit too (-buildvcs: `worker-exporter --version` names it).
NFPM        ?= $(BIN)/nfpm
PKG_VERSION ?= $(shell packaging/version.sh)
package: $(NFPM)
	GOFLAGS="$$GOFLAGS -buildvcs=auto" $(MAKE) build BIN=$(BIN)
	@mkdir -p $(BIN)/packages
	@set -e; ctx=$$(mktemp -d); trap 'rm -rf "$$ctx"' EXIT; \
	ln -s $(abspath $(BIN)) "$$ctx/bin"; ln -s $(CURDIR)/examples "$$ctx/examples"; ln -s $(CURDIR)/packaging "$$ctx/packaging"; \
	for p in deb rpm; do \
		(cd "$$ctx" && PKG_VERSION='$(PKG_VERSION)' GOARCH=$$($(GO) env GOARCH) \
			$(abspath $(NFPM)) package --config packaging/nfpm.yaml --packager $$p --target $(abspath $(BIN))/packages/); \
	done

# nfpm, which builds the packages, and Helm, which checks the chart
# (charts/worker-exporters), from the Go module proxy.
nfpm: $(NFPM)
$(NFPM):
	@mkdir -p $(dir $@)
	GOBIN=$(abspath $(dir $@)) $(GO) install github.com/goreleaser/nfpm/v2/cmd/nfpm@v2.48.0

HELM ?= $(BIN)/helm
helm: $(HELM)
$(HELM):
	@mkdir -p $(dir $@)
	GOBIN=$(abspath $(dir $@)) $(GO) install helm.sh/helm/v4/cmd/helm@v4.3.2

# Docker Compose v2, for e2e/image's run of examples/compose, built from its
# module (its go.mod's exclude directives keep `go install` from it).
COMPOSE ?= $(BIN)/docker-compose
compose: $(COMPOSE)
$(COMPOSE):
	@mkdir -p $(dir $@)
	set -e; dir=$$($(GO) mod download -json github.com/docker/compose/v2@v2.40.3 | sed -n 's/^\t"Dir": "\(.*\)",$$/\1/p'); \
	cd "$$dir" && CGO_ENABLED=0 GOFLAGS=-mod=mod $(GO) build -trimpath -o $(abspath $@) ./cmd

.PHONY: package nfpm helm compose
