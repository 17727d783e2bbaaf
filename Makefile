# worker-exporters. `make run` starts the ffmpeg exporter on :9506; `make test` runs every test.
GO       ?= go
BIN      := bin
FUZZTIME ?= 20s

.PHONY: all build build-agent run test fuzz bench clean

all: build

build:
	@mkdir -p $(BIN)
	$(GO) build -o $(BIN)/ ./cmd/...

# The deployment guide's name for building the worker's binaries.
build-agent: build

run: build
	$(BIN)/ffmpeg-exporter --port 9506

# vet, the race-enabled suite (real ffmpeg, promtool, OTLP receivers), and a short fuzz run.
test:
	$(GO) vet ./...
	test -z "$$(gofmt -l .)" || { gofmt -l .; echo "gofmt: files above need formatting"; exit 1; }
	$(GO) test -race -count=1 ./...
	$(MAKE) fuzz

fuzz:
	$(GO) test -run '^$$' -fuzz '^FuzzParser$$' -fuzztime $(FUZZTIME) ./sources/ffmpeg

bench:
	$(GO) test -run '^$$' -bench . -benchmem -count 1 ./... | ./scripts/benchtable

clean:
	rm -rf $(BIN)
