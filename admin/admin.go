package admin

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/herald-rt/herald/hub"
)

// Source is what the admin server reads: the hub implements it.
type Source interface {
	Stats() hub.Stats
	Draining() bool
}

// Config configures the admin server.
type Config struct {
	Addr     string              // default "127.0.0.1:9601"
	Source   Source              // required
	Gatherer prometheus.Gatherer // default prometheus.DefaultGatherer
	Interval time.Duration       // rate sampling interval; default 1 s
	Logger   *slog.Logger        // default slog.Default()
}

// Server is the admin HTTP server.
type Server struct {
	cfg  Config
	ln   net.Listener
	http *http.Server

	mu         sync.Mutex
	prev, last sample

	stop chan struct{}
	wg   sync.WaitGroup
}

type sample struct {
	at  time.Time
	st  hub.Stats
	set bool
}

// ErrNoSource is returned by New without a Source.
var ErrNoSource = errors.New("admin: no stats source")

// New binds cfg.Addr.
func New(cfg Config) (*Server, error) {
	if cfg.Source == nil {
		return nil, ErrNoSource
	}
	if cfg.Addr == "" {
		cfg.Addr = "127.0.0.1:9601"
	}
	if cfg.Gatherer == nil {
		cfg.Gatherer = prometheus.DefaultGatherer
	}
	if cfg.Interval <= 0 {
		cfg.Interval = time.Second
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	ln, err := net.Listen("tcp", cfg.Addr)
	if err != nil {
		return nil, err
	}
	s := &Server{cfg: cfg, ln: ln, stop: make(chan struct{})}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /stats", s.stats)
	mux.Handle("GET /metrics", promhttp.HandlerFor(cfg.Gatherer, promhttp.HandlerOpts{}))
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write([]byte("ok\n")) })
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, _ *http.Request) {
		if cfg.Source.Draining() {
			http.Error(w, "draining", http.StatusServiceUnavailable)
			return
		}
		_, _ = w.Write([]byte("ready\n"))
	})
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	s.http = &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second, ErrorLog: slog.NewLogLogger(cfg.Logger.Handler(), slog.LevelWarn)}
	return s, nil
}

// Addr is the bound address.
func (s *Server) Addr() string { return s.ln.Addr().String() }

// Run serves in the background and returns at once.
func (s *Server) Run() {
	s.wg.Add(2)
	go func() {
		defer s.wg.Done()
		if err := s.http.Serve(s.ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			s.cfg.Logger.Error("admin server stopped", "err", err)
		}
	}()
	go func() {
		defer s.wg.Done()
		s.sample()
		t := time.NewTicker(s.cfg.Interval)
		defer t.Stop()
		for {
			select {
			case <-s.stop:
				return
			case <-t.C:
				s.sample()
			}
		}
	}()
}

// Close stops the server and the sampler and waits for them.
func (s *Server) Close(ctx context.Context) error {
	close(s.stop)
	err := s.http.Shutdown(ctx)
	s.wg.Wait()
	return err
}

func (s *Server) sample() {
	st := s.cfg.Source.Stats()
	s.mu.Lock()
	s.prev, s.last = s.last, sample{at: time.Now(), st: st, set: true}
	s.mu.Unlock()
}

// statsDoc is the /stats document: the hub's figures plus per-second rates over the
// last sampling interval.
type statsDoc struct {
	hub.Stats
	Rates rates `json:"rates"`
}

type rates struct {
	IntervalSeconds float64         `json:"interval_seconds"`
	Node            rate            `json:"node"`
	Apps            map[string]rate `json:"apps"`
}

type rate struct {
	MessagesInPerSec  float64 `json:"messages_in_per_sec"`
	MessagesOutPerSec float64 `json:"messages_out_per_sec"`
}

func (s *Server) stats(w http.ResponseWriter, _ *http.Request) {
	doc := statsDoc{Stats: s.cfg.Source.Stats(), Rates: rates{Apps: map[string]rate{}}}
	s.mu.Lock()
	prev, last := s.prev, s.last
	s.mu.Unlock()
	if prev.set && last.set {
		dt := last.at.Sub(prev.at).Seconds()
		if dt > 0 {
			doc.Rates.IntervalSeconds = dt
			per := func(a, b uint64) float64 { return float64(b-a) / dt }
			doc.Rates.Node = rate{per(prev.st.Node.MessagesIn, last.st.Node.MessagesIn), per(prev.st.Node.MessagesOut, last.st.Node.MessagesOut)}
			for id, b := range last.st.Apps {
				a := prev.st.Apps[id]
				doc.Rates.Apps[id] = rate{per(a.MessagesIn, b.MessagesIn), per(a.MessagesOut, b.MessagesOut)}
			}
		}
	}
	w.Header().Set("Content-Type", "application/json")
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(doc)
}
