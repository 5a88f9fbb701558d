# Herald: the two commands a user needs are `make run` and `make test`.
# Tool versions are pinned here.

GO            ?= go
STATICCHECK   := honnef.co/go/tools/cmd/staticcheck@v0.8.2
FUZZTIME      ?= 10s
ARGS          ?=
export GOFLAGS ?= -mod=readonly

# apt-get needs root; use sudo when we are not root and it exists.
SUDO := $(shell [ "$$(id -u)" = 0 ] || command -v sudo >/dev/null && echo sudo)

.PHONY: all build run test test-deps go-test lint fuzz bench clean

all: build

build:
	$(GO) build -o bin/herald ./cmd/herald

## run: build and start one node with the in-memory broker and a demo app (its id, key
## and secret are printed). Pass flags with ARGS="--client-events --addr :7001".
run: build
	./bin/herald $(ARGS)

## test: install what the tests need and the machine lacks, then run every test with
## the race detector on.
test: test-deps go-test

test-deps:
	@command -v node >/dev/null && command -v npm >/dev/null || { \
	  echo "installing nodejs and npm (Debian)"; \
	  $(SUDO) apt-get update && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y nodejs npm; }
	@node -e 'const [a,b]=process.versions.node.split(".").map(Number); process.exit(a>20||(a==20&&b>=14)?0:1)' || \
	  { echo "Node.js >= 20.14 is required for the pusher-js tests (node --test --test-force-exit); found $$(node --version)"; exit 1; }
	cd e2e/js && npm ci --no-audit --no-fund --loglevel=error

go-test:
	$(GO) vet ./...
	$(GO) test -race -shuffle=on -timeout 15m ./...

## lint: gofmt, go vet, staticcheck.
lint:
	@out=$$(gofmt -l $$(git ls-files '*.go')); [ -z "$$out" ] || { echo "gofmt would change:"; echo "$$out"; exit 1; }
	$(GO) vet ./...
	$(GO) run $(STATICCHECK) ./...

## fuzz: run each fuzz target for FUZZTIME.
fuzz:
	@set -e; for pkg in ./transport ./hub ./loadgen; do \
	  for t in $$($(GO) test -list '^Fuzz' $$pkg | grep '^Fuzz'); do \
	    echo "== $$pkg $$t"; $(GO) test -run '^$$' -fuzz "^$$t$$" -fuzztime $(FUZZTIME) -fuzzminimizetime 50x $$pkg; \
	  done; \
	done

## bench: benchmarks and the load figures (memory per connection, fan-out against the
## raw write floor, upgrades per second).
bench: build
	$(GO) test -run '^$$' -bench . -benchmem ./transport ./pubsub ./hub
	$(GO) run ./bench/cmd/benchrun

clean:
	rm -rf bin
