# Herald: the two commands a user needs are `make run` and `make test`.
# Tool versions are pinned here.

GO            ?= go
STATICCHECK   := honnef.co/go/tools/cmd/staticcheck@v0.8.2
FUZZTIME      ?= 10s
ARGS          ?=
export GOFLAGS ?= -mod=readonly

# apt-get needs root; use sudo when we are not root and it exists.
SUDO := $(shell [ "$$(id -u)" != 0 ] && command -v sudo >/dev/null && echo sudo)

# What the tests need from Debian, as command:package (installed when the command is
# missing): Node.js for pusher-js, Chromium for the HTML report and dashboard tests,
# Redis for the cluster tests, HAProxy and OpenSSL for the load-balancer tests,
# promtool (Prometheus) to check the Grafana dashboard's queries.
TEST_PKGS := node:nodejs npm:npm chromium:chromium redis-server:redis-server redis-cli:redis-tools \
	haproxy:haproxy openssl:openssl promtool:prometheus

.PHONY: all build run test test-deps go-test lint fuzz conformance bench bench-burst bench-loadgen bench-cluster bench-1m soak loadgen clean

all: build

build:
	$(GO) build -o bin/herald ./cmd/herald
	$(GO) build -o bin/loadgen ./cmd/loadgen

## run: build and start one node with the in-memory broker and a demo app (its id, key
## and secret are printed). Pass flags with ARGS="--client-events --addr :7001".
run: build
	./bin/herald $(ARGS)

## test: install what the tests need and the machine lacks, then run every test with
## the race detector on.
test: test-deps go-test

test-deps:
	@missing=$$(for p in $(TEST_PKGS); do command -v $${p%%:*} >/dev/null || echo $${p#*:}; done); \
	if [ -n "$$missing" ]; then \
	  echo "installing from Debian:" $$missing; \
	  $(SUDO) apt-get update && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y $$missing; \
	fi
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

## conformance: the RFC 6455 conformance suite alone (Autobahn|Testsuite's groups 1-7, 9
## and 10 as raw TCP transcripts, transport/conformance*_test.go), with a summary table:
## cases, passed, failed and non-strict per group, each failure with its RFC section.
## make test runs the same cases (without the table).
conformance:
	$(GO) test -race -count=1 -run Conformance -v ./transport -args -conformance.table

## loadgen: run the load generator, e.g.
##   make loadgen ARGS="--target ws://127.0.0.1:6001 --app-id 1 --app-key KEY --app-secret S --scenario broadcast"
loadgen: build
	./bin/loadgen run $(ARGS)

## bench: benchmarks and the load figures (memory per connection, fan-out against the
## raw write floor, upgrades per second; one node and a 3-node cluster side by side),
## fan-out under load against today's code (bench-burst), a loadgen broadcast run
## against Herald, then the cluster runs (bench-cluster).
## About 13 minutes; redis-server must be installed (make test-deps).
bench: build
	$(GO) test -run '^$$' -bench . -benchmem ./transport ./pubsub ./hub
	$(GO) run ./bench/cmd/benchrun
	$(MAKE) bench-burst
	$(MAKE) bench-loadgen
	$(MAKE) bench-cluster

## bench-burst: fan-out to 15,000 subscribers at 1, 10 and 100 publishes/s and in
## bursts of 100 back-to-back publishes, today's code (herald built from BASELINE, the
## last commit before gathering, by git archive) against this tree, in the same run:
## deliveries/s, publish-to-delivery p50/p99/max, publishes refused (503), peak RSS,
## and every delivery accounted for. Every client is loadgen's (one run per scenario
## and target). About 5 minutes. It prints the command it ran.
BASELINE ?= dc108f2
bench-burst:
	$(GO) run ./bench/cmd/benchburst -baseline $(BASELINE) $(ARGS)

## bench-loadgen: 15,000 clients over 2 loadgen workers, broadcast on 10 channels.
bench-loadgen: build
	@./bin/herald --addr 127.0.0.1:6101 --admin-addr 127.0.0.1:9701 --app-id bench --app-key bench \
	  --app-secret bench --log-level warn & pid=$$!; sleep 1; \
	./bin/loadgen run --target ws://127.0.0.1:6101 --app-id bench --app-key bench --app-secret bench \
	  --scenario broadcast --connections 15000 --ramp 100000 --channels 10 --publish-rate 50 --duration 15s \
	  --workers 2 --progress lines --out bin/loadgen-bench.json --html bin/loadgen-bench.html; \
	rc=$$?; kill $$pid; wait $$pid; exit $$rc

## bench-cluster: 3 herald nodes joined through one redis-server, driven by loadgen
## over the three nodes: messages per second through Redis (1,000 channels, 3
## subscribers each, published to as fast as node 1 answers), a presence storm
## across the nodes, and webhooks (a presence storm posting every webhook to a
## receiver that checks each once). Reports: bin/bench-cluster-*.{json,html}.
## Pass options with ARGS="-duration 60s -presence-churn 2000".
bench-cluster:
	$(GO) run ./bench/cmd/benchcluster -out-dir bin $(ARGS)

## bench-1m: 1,000,000 connections on this host as one cluster (55 herald processes with
## SO_REUSEPORT joined through a redis-server, or --redis cluster: a 3-master Redis
## Cluster), loadgen as the client (55 workers, two source addresses each), then broadcasts
## to all of them; --scale 100k,250k,500k,1m for the growth table and chart; see
## bench/BENCH-1M.md. Never part of make test.
bench-1m: build
	$(GO) run ./bench/cmd/bench1m $(ARGS)

## soak: an hour of mixed load on 3 nodes and a redis-server (loadgen churn, presence
## joins and leaves, client events and broadcasts, a slow consumer and a reconnecting
## client), sampling each node's RSS, goroutines and fds; checks that none grew and
## that the quiet channels lost and duplicated nothing. Reports: bin/soak.html and
## bin/soak-*.html. Shorter: make soak ARGS="--duration 10m". Never part of make test.
soak:
	$(GO) run ./bench/cmd/soak -out-dir bin $(ARGS)

clean:
	rm -rf bin
