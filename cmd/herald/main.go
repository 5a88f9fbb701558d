// Command herald runs one Herald node: a Pusher Channels protocol v7 WebSocket server
// with the Pusher HTTP API on the same port and an admin server on another.
//
// Every flag can also be set by an environment variable: HERALD_ and the flag's name
// in upper case with dashes as underscores (--app-key → HERALD_APP_KEY). A flag on the
// command line wins over the environment. Run `herald --help` for the list.
package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"runtime/debug"
	"strings"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/herald-rt/herald/admin"
	"github.com/herald-rt/herald/hub"
	"github.com/herald-rt/herald/transport"
	"github.com/herald-rt/herald/webhook"
)

type options struct {
	addr, adminAddr              string
	appID, appKey, appSecret     string
	clientEvents                 bool
	webhookURL                   string
	configFile                   string
	reusePort                    bool
	loops                        int
	nodeID                       uint
	maxConnections               int
	activityTimeout, pongTimeout time.Duration
	shutdownTimeout              time.Duration
	maxMessageBytes, maxPending  int
	logLevel, logFormat          string
	redisURL, redisCluster       string
	redisPrefix                  string
	nodeLease                    time.Duration
}

// fileConfig is the --config file: JSON with the apps and their limits.
type fileConfig struct {
	Apps []hub.App `json:"apps"`
}

func main() {
	if err := run(os.Args[1:], os.Stdout, os.Stderr); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return
		}
		fmt.Fprintln(os.Stderr, "herald:", err)
		os.Exit(1)
	}
}

func parseFlags(args []string, stderr io.Writer) (*options, error) {
	o := &options{}
	fs := flag.NewFlagSet("herald", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&o.addr, "addr", ":6001", "public address: WebSocket (/app/{key}) and the Pusher HTTP API (/apps/{id}/...)")
	fs.StringVar(&o.adminAddr, "admin-addr", "127.0.0.1:9601", "admin address: /stats, /metrics, /healthz, /readyz, /debug/pprof (keep it private)")
	fs.StringVar(&o.appID, "app-id", "", "default app's id (with --app-key and --app-secret)")
	fs.StringVar(&o.appKey, "app-key", "", "default app's key, used by clients in /app/{key}")
	fs.StringVar(&o.appSecret, "app-secret", "", "default app's secret, used to sign auth and API requests")
	fs.BoolVar(&o.clientEvents, "client-events", false, "allow client-* events for the default app")
	fs.StringVar(&o.webhookURL, "webhook-url", "", "send the default app's webhooks (every event type) to this http(s) URL; --config gives an app several, with event types, filters and headers")
	fs.StringVar(&o.configFile, "config", "", "JSON file with several apps and their limits: {\"apps\":[{\"id\":…,\"key\":…,\"secret\":…},…]}")
	fs.BoolVar(&o.reusePort, "reuseport", false, "set SO_REUSEPORT so that several herald processes share --addr")
	fs.IntVar(&o.loops, "loops", 0, "epoll loops (0: one per CPU)")
	fs.UintVar(&o.nodeID, "node-id", 0, "node part of socket ids, unique per node (0: random)")
	fs.IntVar(&o.maxConnections, "max-connections", 0, "node connection limit; past it new connections get 4100 (0: none)")
	fs.DurationVar(&o.activityTimeout, "activity-timeout", 120*time.Second, "activity_timeout sent to clients; the server pings after this plus 30s of silence")
	fs.DurationVar(&o.pongTimeout, "pong-timeout", 30*time.Second, "close with 4201 when nothing arrives this long after a server ping")
	fs.DurationVar(&o.shutdownTimeout, "shutdown-timeout", 10*time.Second, "on SIGTERM/SIGINT, how long to drain connections (4200) before exiting")
	fs.IntVar(&o.maxMessageBytes, "max-message-bytes", 64<<10, "largest WebSocket message accepted from a client (1009 beyond)")
	fs.IntVar(&o.maxPending, "max-pending-bytes", 1<<20, "per-connection output queue; past it the client is a slow consumer (4100)")
	fs.StringVar(&o.redisURL, "redis", "", "join the nodes that share this Redis into one cluster: redis://[user:password@]host:port[/db], or rediss://… for TLS (default: one node, in-memory broker)")
	fs.StringVar(&o.redisCluster, "redis-cluster", "", "join the nodes through a Redis Cluster (sharded pub/sub, Redis >= 7): seed addresses host:port[,host:port…]")
	fs.StringVar(&o.redisPrefix, "redis-prefix", "herald", "prefix of Herald's Redis keys and channels, so that several clusters can share one Redis")
	fs.DurationVar(&o.nodeLease, "node-lease", 15*time.Second, "how long a node's presence entries and counts outlive it: when a node dies, another removes them and sends member_removed within this")
	fs.StringVar(&o.logLevel, "log-level", "info", "debug, info, warn or error")
	fs.StringVar(&o.logFormat, "log-format", "text", "text or json")
	fs.Usage = func() {
		fmt.Fprintf(stderr, "Usage: herald [flags]\n\nHerald is a Pusher Channels protocol v7 compatible WebSocket server.\n"+
			"Each flag may be given as an environment variable HERALD_<FLAG> (e.g. HERALD_APP_KEY).\n"+
			"With no app configured, a demo app is created and its credentials printed.\n"+
			"The Go GC runs at GOGC=50 (memory-bound server) unless GOGC is set.\n\nFlags:\n")
		fs.PrintDefaults()
	}
	// The environment fills in what the command line does not set.
	var envErr error
	fs.VisitAll(func(f *flag.Flag) {
		name := "HERALD_" + strings.ToUpper(strings.ReplaceAll(f.Name, "-", "_"))
		if v, ok := os.LookupEnv(name); ok && envErr == nil {
			if err := f.Value.Set(v); err != nil {
				envErr = fmt.Errorf("%s: %w", name, err)
			}
		}
	})
	if envErr != nil {
		return nil, envErr
	}
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	if fs.NArg() > 0 {
		return nil, fmt.Errorf("unexpected arguments: %v", fs.Args())
	}
	return o, nil
}

// apps returns the configured apps and whether the demo app was made up.
func (o *options) apps() ([]hub.App, bool, error) {
	var apps []hub.App
	if o.configFile != "" {
		b, err := os.ReadFile(o.configFile)
		if err != nil {
			return nil, false, err
		}
		var fc fileConfig
		dec := json.NewDecoder(strings.NewReader(string(b)))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&fc); err != nil {
			return nil, false, fmt.Errorf("config %s: %w", o.configFile, err)
		}
		apps = fc.Apps
	}
	if o.appID != "" || o.appKey != "" || o.appSecret != "" {
		if o.appID == "" || o.appKey == "" || o.appSecret == "" {
			return nil, false, errors.New("--app-id, --app-key and --app-secret go together")
		}
		a := hub.App{ID: o.appID, Key: o.appKey, Secret: o.appSecret, ClientEvents: o.clientEvents}
		if o.webhookURL != "" {
			a.Webhooks = []webhook.Hook{{URL: o.webhookURL}}
		}
		apps = append(apps, a)
	} else if o.webhookURL != "" {
		return nil, false, errors.New("--webhook-url is for the app given with --app-id, --app-key and --app-secret; in --config, give each app its \"webhooks\"")
	}
	if len(apps) > 0 {
		return apps, false, nil
	}
	secret := make([]byte, 16)
	_, _ = rand.Read(secret)
	return []hub.App{{ID: "1", Key: "herald-demo-key", Secret: hex.EncodeToString(secret), ClientEvents: true}}, true, nil
}

func newLogger(o *options, w io.Writer) (*slog.Logger, error) {
	var lvl slog.Level
	if err := lvl.UnmarshalText([]byte(o.logLevel)); err != nil {
		return nil, fmt.Errorf("--log-level: %w", err)
	}
	hopts := &slog.HandlerOptions{Level: lvl}
	switch o.logFormat {
	case "text":
		return slog.New(slog.NewTextHandler(w, hopts)), nil
	case "json":
		return slog.New(slog.NewJSONHandler(w, hopts)), nil
	}
	return nil, fmt.Errorf("--log-format: want text or json, got %q", o.logFormat)
}

func run(args []string, stdout, stderr io.Writer) error {
	o, err := parseFlags(args, stderr)
	if err != nil {
		return err
	}
	log, err := newLogger(o, stderr)
	if err != nil {
		return err
	}
	apps, demo, err := o.apps()
	if err != nil {
		return err
	}
	rc, err := o.redisClient()
	if err != nil {
		return err
	}
	if rc != nil {
		defer rc.Close()
	}
	setGCPercent()
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))

	cfg := hub.Config{
		Apps:            apps,
		NodeID:          uint32(o.nodeID),
		ActivityTimeout: o.activityTimeout,
		PongTimeout:     o.pongTimeout,
		MaxConnections:  o.maxConnections,
		Logger:          log,
		Registerer:      reg,
		Transport: transport.Config{
			Addr:            o.addr,
			ReusePort:       o.reusePort,
			Loops:           o.loops,
			MaxMessageBytes: o.maxMessageBytes,
			MaxPendingBytes: o.maxPending,
		},
	}
	if rc != nil {
		o.useRedis(&cfg, rc, log)
	}
	h, err := hub.New(cfg)
	if err != nil {
		return err
	}
	adm, err := admin.New(admin.Config{Addr: o.adminAddr, Source: h, Gatherer: reg, Logger: log})
	if err != nil {
		_ = h.Shutdown(context.Background())
		return fmt.Errorf("admin: %w", err)
	}
	if err := h.Run(); err != nil {
		return err
	}
	adm.Run()

	fmt.Fprintf(stdout, "herald: node %d serving WebSocket and HTTP API on %s, admin on %s; %s\n", h.NodeID(), h.Addr(), adm.Addr(), o.clusterMode())
	for _, a := range apps {
		if demo { // a fresh secret nobody else knows: the user needs it to sign anything
			fmt.Fprintf(stdout, "herald: app id=%s key=%s secret=%s client_events=%v\n", a.ID, a.Key, a.Secret, a.ClientEvents)
			continue
		}
		// A configured app's secret stays out of logs.
		fmt.Fprintf(stdout, "herald: app id=%s key=%s client_events=%v webhooks=%d\n", a.ID, a.Key, a.ClientEvents, len(a.Webhooks))
	}
	if demo {
		fmt.Fprintf(stdout, "herald: this is a demo app with a fresh secret; configure --app-id/--app-key/--app-secret or --config for real use\n")
		fmt.Fprintf(stdout, "herald: pusher-js: new Pusher(%q, {wsHost: '127.0.0.1', wsPort: %s, forceTLS: false, enabledTransports: ['ws'], cluster: ''})\n",
			apps[0].Key, portOf(h.Addr()))
	}

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	<-ctx.Done()
	stop()
	log.Info("draining: closing connections with 4200", "timeout", o.shutdownTimeout)
	sctx, cancel := context.WithTimeout(context.Background(), o.shutdownTimeout)
	defer cancel()
	err = h.Shutdown(sctx)
	err = errors.Join(err, adm.Close(sctx))
	log.Info("stopped")
	return err
}

// defaultGCPercent is the GOGC Herald runs with unless GOGC is set. A node is
// memory-bound: its live heap is mostly idle connections' small structs, and the
// fan-out path allocates next to nothing per delivery, so collections are rare and
// cheap. With Go's default of 100 the heap may grow to twice the live size before a
// collection, and the process keeps those pages; 50 bounds that at 1.5 times.
const defaultGCPercent = 50

func setGCPercent() {
	if _, ok := os.LookupEnv("GOGC"); !ok {
		debug.SetGCPercent(defaultGCPercent)
	}
}

func portOf(addr string) string {
	if i := strings.LastIndexByte(addr, ':'); i >= 0 {
		return addr[i+1:]
	}
	return addr
}
