// Command herald runs one Herald node: a Pusher Channels protocol v7 WebSocket server
// with the Pusher HTTP API on the same port and an admin server on another.
//
// Every flag can also be set by an environment variable: HERALD_ and the flag's name
// in upper case with dashes as underscores (--app-key → HERALD_APP_KEY). A flag on the
// command line wins over the environment. Run `herald --help` for the list.
package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net/netip"
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
	shutdownTimeout, drainWindow time.Duration
	maxMessageBytes, maxPending  int
	logLevel, logFormat          string
	redisURL, redisCluster       string
	redisPrefix                  string
	nodeLease                    time.Duration
	proxyProtocol                bool
	trustedProxies               prefixList
	maxConnsPerIP                int
	maxUpgradesPerIP             int
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
	fs.DurationVar(&o.shutdownTimeout, "shutdown-timeout", 15*time.Second, "on SIGTERM/SIGINT, the whole stop: the drain, then queued work, webhook confirmations and leaving the cluster; the process exits by then")
	fs.DurationVar(&o.drainWindow, "drain-window", 0, "on SIGTERM/SIGINT, close the connections with 4200 spread evenly over this (less than --shutdown-timeout); a second signal closes the rest at once (default: 10s, or two thirds of a shorter --shutdown-timeout)")
	fs.BoolVar(&o.proxyProtocol, "proxy-protocol", false, "expect a PROXY protocol header (v1 or v2) from the load balancer on every connection from --trusted-proxies; the client address it carries is the one the per-IP limits count (per node)")
	fs.Var(&o.trustedProxies, "trusted-proxies", "load balancer addresses whose PROXY header is believed, `CIDR[,CIDR…]` (a bare IP is one address); empty with --proxy-protocol: every connection must send one")
	fs.IntVar(&o.maxConnsPerIP, "max-connections-per-ip", 0, "open WebSocket connections per client address; past it an upgrade is answered 429 (0: none)")
	fs.IntVar(&o.maxUpgradesPerIP, "max-upgrades-per-ip-per-second", 0, "WebSocket upgrades per client address per second (burst as large); past it 429 (0: none)")
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
	if o.drainWindow == 0 {
		// Not given: 10 s, or less within a short --shutdown-timeout, so that setting
		// only the timeout (as before there was a drain window) keeps working.
		o.drainWindow = min(defaultDrainWindow, o.shutdownTimeout*2/3)
	}
	if err := o.check(); err != nil {
		return nil, err
	}
	return o, nil
}

// defaultDrainWindow is --drain-window when neither it nor a short --shutdown-timeout
// says otherwise.
const defaultDrainWindow = 10 * time.Second

// check refuses combinations of flags that each parse but make no sense together.
func (o *options) check() error {
	switch {
	case o.drainWindow <= 0:
		return fmt.Errorf("--drain-window %v must be positive (--shutdown-timeout %v)", o.drainWindow, o.shutdownTimeout)
	case o.drainWindow >= o.shutdownTimeout:
		return fmt.Errorf("--drain-window %v must be less than --shutdown-timeout %v: the drain is the first part of the stop, "+
			"which also needs time for the last close handshakes, queued work and webhook confirmations", o.drainWindow, o.shutdownTimeout)
	case o.maxConnsPerIP < 0:
		return fmt.Errorf("--max-connections-per-ip %d is negative", o.maxConnsPerIP)
	case o.maxUpgradesPerIP < 0:
		return fmt.Errorf("--max-upgrades-per-ip-per-second %d is negative", o.maxUpgradesPerIP)
	case len(o.trustedProxies) > 0 && !o.proxyProtocol:
		return errors.New("--trusted-proxies is for --proxy-protocol, which is off: turn it on, or leave --trusted-proxies out")
	}
	return nil
}

// prefixList is the value of --trusted-proxies: comma-separated CIDR prefixes, a bare
// address meaning itself alone (/32 or /128). Setting it replaces the list, so that
// the command line wins over HERALD_TRUSTED_PROXIES.
type prefixList []netip.Prefix

func (l *prefixList) String() string {
	s := make([]string, len(*l))
	for i, p := range *l {
		s[i] = p.String()
	}
	return strings.Join(s, ",")
}

func (l *prefixList) Set(v string) error {
	var out prefixList
	for _, f := range strings.Split(v, ",") {
		if f = strings.TrimSpace(f); f == "" {
			continue
		}
		if !strings.Contains(f, "/") {
			a, err := netip.ParseAddr(f)
			if err != nil || a.Zone() != "" {
				return fmt.Errorf("%q is neither an IP address nor a CIDR prefix like 10.0.0.0/8", f)
			}
			out = append(out, netip.PrefixFrom(a, a.BitLen()))
			continue
		}
		p, err := netip.ParsePrefix(f)
		if err != nil {
			return fmt.Errorf("%q is not a CIDR prefix like 10.0.0.0/8 or fd00::/8", f)
		}
		out = append(out, p.Masked())
	}
	*l = out
	return nil
}

// apps returns the configured apps and whether the demo app was made up.
func (o *options) apps() ([]hub.App, bool, error) {
	apps, err := o.configuredApps()
	if err != nil || len(apps) > 0 {
		return apps, false, err
	}
	secret := make([]byte, 16)
	_, _ = rand.Read(secret)
	return []hub.App{{ID: "1", Key: "herald-demo-key", Secret: hex.EncodeToString(secret), ClientEvents: true}}, true, nil
}

// configuredApps reads --config and adds the app of the flags; none is not an error.
func (o *options) configuredApps() ([]hub.App, error) {
	var apps []hub.App
	if o.configFile != "" {
		b, err := os.ReadFile(o.configFile)
		if err != nil {
			return nil, err
		}
		var fc fileConfig
		dec := json.NewDecoder(bytes.NewReader(b))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&fc); err != nil {
			return nil, fmt.Errorf("config %s: %w", o.configFile, err)
		}
		apps = fc.Apps
	}
	if o.appID != "" || o.appKey != "" || o.appSecret != "" {
		if o.appID == "" || o.appKey == "" || o.appSecret == "" {
			return nil, errors.New("--app-id, --app-key and --app-secret go together")
		}
		a := hub.App{ID: o.appID, Key: o.appKey, Secret: o.appSecret, ClientEvents: o.clientEvents}
		if o.webhookURL != "" {
			a.Webhooks = []webhook.Hook{{URL: o.webhookURL}}
		}
		apps = append(apps, a)
	} else if o.webhookURL != "" {
		return nil, errors.New("--webhook-url is for the app given with --app-id, --app-key and --app-secret; in --config, give each app its \"webhooks\"")
	}
	return apps, nil
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
	// From here on the signals are ours: one that comes while the node starts waits
	// in the channel instead of killing the process.
	sigs := make(chan os.Signal, 4)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM, syscall.SIGHUP)
	defer signal.Stop(sigs)
	n, err := start(o, stdout, stderr)
	if err != nil {
		return err
	}
	return n.wait(sigs)
}

// node is a started herald: its hub and admin server, and what reloads need.
type node struct {
	o       *options
	log     *slog.Logger
	h       *hub.Hub
	adm     *admin.Server
	closers []func()  // after the hub and the admin server are down
	demo    []hub.App // the demo app, when no app is configured: a reload keeps it
}

// start builds the node from o and starts serving.
func start(o *options, stdout, stderr io.Writer) (_ *node, err error) {
	n := &node{o: o}
	defer func() {
		if err != nil {
			n.close()
		}
	}()
	if n.log, err = newLogger(o, stderr); err != nil {
		return nil, err
	}
	apps, demo, err := o.apps()
	if err != nil {
		return nil, err
	}
	if demo {
		n.demo = apps
	}
	rc, err := o.redisClient()
	if err != nil {
		return nil, err
	}
	if rc != nil {
		n.closers = append(n.closers, func() { rc.Close() })
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
		Logger:          n.log,
		Registerer:      reg,
		Transport: transport.Config{
			Addr:                      o.addr,
			ReusePort:                 o.reusePort,
			Loops:                     o.loops,
			MaxMessageBytes:           o.maxMessageBytes,
			MaxPendingBytes:           o.maxPending,
			ProxyProtocol:             o.proxyProtocol,
			TrustedProxies:            o.trustedProxies,
			MaxConnectionsPerIP:       o.maxConnsPerIP,
			MaxUpgradesPerIPPerSecond: o.maxUpgradesPerIP,
		},
	}
	if rc != nil {
		o.useRedis(&cfg, rc, n.log)
	}
	h, err := hub.New(cfg)
	if err != nil {
		return nil, err
	}
	adm, err := admin.New(admin.Config{Addr: o.adminAddr, Source: h, Gatherer: reg, Logger: n.log})
	if err != nil {
		_ = h.Shutdown(context.Background())
		return nil, fmt.Errorf("admin: %w", err)
	}
	if err := h.Run(); err != nil {
		_ = h.Shutdown(context.Background())
		_ = adm.Close(context.Background())
		return nil, err
	}
	adm.Run()
	n.h, n.adm = h, adm

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
	if o.proxyProtocol {
		n.log.Info("PROXY protocol on", "trusted_proxies", o.trustedProxies.String())
	}
	return n, nil
}

// close releases what start made besides the hub and the admin server.
func (n *node) close() {
	for _, c := range n.closers {
		c()
	}
	n.closers = nil
}

// wait serves until the first SIGTERM or SIGINT, reloading the apps on each SIGHUP,
// then stops the node (stop) and returns nil: a stop asked for is a clean exit.
func (n *node) wait(sigs <-chan os.Signal) error {
	for sig := range sigs {
		if sig == syscall.SIGHUP {
			n.reload()
			continue
		}
		break
	}
	return n.stop(sigs)
}

// reload rereads --config (and the flags' app, as at start) and hands the set to the
// hub, which validates it whole, applies it or keeps the running one, and logs and
// counts either. A node that started with the demo app keeps it while nothing is
// configured, its secret included.
func (n *node) reload() {
	n.log.Info("SIGHUP: reloading the apps", "config", n.o.configFile)
	_, _ = n.h.Reload(func() ([]hub.App, error) {
		apps, err := n.o.configuredApps()
		if err == nil && len(apps) == 0 && n.demo != nil {
			return n.demo, nil
		}
		return apps, err
	})
}

// stop is the graceful stop of the first SIGTERM or SIGINT, all within
// --shutdown-timeout: the hub drains (readiness fails at once, the listener closes,
// the connections are closed with 4200 over --drain-window), then shuts down (what is
// left is closed at once; queued work, webhook confirmations, the engines, the
// webhook sender), then the admin server stops. A second SIGTERM or SIGINT during the
// drain cuts it short: the rest are closed at once and the stop goes on. The drain
// may take its window plus half of the time left after it (close handshakes that
// linger), so that the other half stays for the rest of the stop. Errors are logged:
// past the deadline the node goes anyway, and the process exits 0.
func (n *node) stop(sigs <-chan os.Signal) error {
	defer n.close()
	sctx, cancel := context.WithTimeout(context.Background(), n.o.shutdownTimeout)
	defer cancel()
	if d, ok := sctx.Deadline(); ok {
		n.h.StopBy(d) // from now on no Redis call outlives the stop
	}
	drainFor := n.o.drainWindow + (n.o.shutdownTimeout-n.o.drainWindow)/2
	dctx, cut := context.WithTimeout(sctx, drainFor)
	defer cut()
	watching := make(chan struct{})
	go func() {
		defer close(watching)
		for {
			select {
			case sig, ok := <-sigs:
				switch {
				case !ok:
					return
				case sig == syscall.SIGHUP:
					n.log.Warn("SIGHUP while stopping: no reload")
					continue
				}
				n.log.Warn("second signal: closing the remaining connections at once", "signal", sig.String())
				cut()
				return
			case <-dctx.Done():
				return
			}
		}
	}()
	err := n.h.Drain(dctx, n.o.drainWindow)
	cut()
	<-watching
	if err != nil && !errors.Is(err, transport.ErrDrainCut) {
		n.log.Warn("drain", "err", err)
	}
	if err := n.h.Shutdown(sctx); err != nil {
		n.log.Warn("shutdown: connections closed abruptly at the deadline", "err", err)
	}
	if err := n.adm.Close(sctx); err != nil {
		n.log.Warn("admin server", "err", err)
	}
	n.log.Info("stopped")
	return nil
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
