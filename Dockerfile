# Herald's container image: one static binary on distroless, running as non-root,
# with no shell and no package manager.
#
#   docker build -t herald .
#   docker run --rm -p 6001:6001 -p 127.0.0.1:9601:9601 herald      # demo app, printed at start
#   docker run --rm -p 6001:6001 -v $PWD/apps.json:/etc/herald/apps.json:ro herald \
#       --addr :6001 --admin-addr :9601 --config /etc/herald/apps.json --redis redis://redis:6379
#
# Arguments after the image name replace CMD (the addresses), not the binary.
# go test ./deploy checks this file's shape (base image, user, static build).

# --- build -----------------------------------------------------------------------------
# The Go version of go.mod (or newer).
FROM golang:1.26.8-bookworm AS build
WORKDIR /src
# Modules first, so that a change to the code does not download them again.
COPY go.mod go.sum ./
RUN go mod download
COPY . .
# CGO_ENABLED=0: a static binary that needs no libc, so that it runs on distroless
# static (or scratch). -trimpath and -s -w: reproducible and smaller.
RUN CGO_ENABLED=0 GOOS=linux go build -trimpath -ldflags="-s -w" -o /out/herald ./cmd/herald

# --- run -------------------------------------------------------------------------------
# distroless static: CA certificates (for rediss:// and https webhooks), tzdata and
# /etc/passwd with a nonroot user, nothing else. Pin it by digest in production.
FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/herald /usr/local/bin/herald
# uid 65532 ("nonroot" in distroless). Ports above 1024 need no capability.
USER 65532:65532
# 6001: WebSockets and the Pusher HTTP API. 9601: the admin server (/readyz, /healthz,
# /metrics, /stats, pprof): publish it only to the load balancer and Prometheus.
EXPOSE 6001 9601
ENTRYPOINT ["/usr/local/bin/herald"]
# Inside a container the admin server must listen beyond loopback for probes to reach it.
CMD ["--addr", ":6001", "--admin-addr", ":9601"]
