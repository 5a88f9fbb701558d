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
	// Interval is the rate sampling interval, and how often /events sends a document;
	// default 1 s.
	Interval time.Duration
	// MaxStreams caps the /events streams open at once (dashboards watching this
	// node); past it /events answers 503 and the dashboard polls /stats instead.
	// Default 8.
	MaxStreams int
	Logger     *slog.Logger // default slog.Default()
}

// Server is the admin HTTP server.
type Server struct {
	cfg  Config
	ln   net.Listener
	http *http.Server

	// mu guards the samples and what is derived from them: the history for the
	// dashboard's charts and the encoded document that /events sends.
	mu         sync.Mutex
	prev, last sample
	seq        uint64        // samples taken; the id of /events documents
	next       chan struct{} // closed (and replaced) when a sample lands
	hist       []point       // the last historyLen points, oldest first
	frame      []byte        // the document of sample seq, encoded once for every stream
	frameSeq   uint64

	streams streams

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
	if cfg.MaxStreams <= 0 {
		cfg.MaxStreams = 8
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	ln, err := net.Listen("tcp", cfg.Addr)
	if err != nil {
		return nil, err
	}
	s := &Server{cfg: cfg, ln: ln, stop: make(chan struct{}), next: make(chan struct{})}
	s.streams.max = cfg.MaxStreams
	mux := http.NewServeMux()
	mux.HandleFunc("GET /{$}", serveDashboard)
	mux.HandleFunc("GET /stats", s.stats)
	mux.HandleFunc("GET /events", s.events)
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

// Close stops the server, the sampler and the /events streams and waits for them.
// A stream ends at once; one whose client does not read is cut off when ctx ends.
func (s *Server) Close(ctx context.Context) error {
	close(s.stop)
	s.streams.close()
	err := s.http.Shutdown(ctx)
	if err != nil {
		_ = s.http.Close() // ctx ended: unblock the writes of streams nobody reads
	}
	s.streams.wait()
	s.wg.Wait()
	_ = s.ln.Close() // Shutdown closes it only if Run served it
	return err
}

func (s *Server) sample() {
	st := s.cfg.Source.Stats()
	s.mu.Lock()
	defer s.mu.Unlock()
	s.prev, s.last = s.last, sample{at: time.Now(), st: st, set: true}
	s.seq++
	if r := ratesBetween(s.prev, s.last); r.IntervalSeconds > 0 {
		if len(s.hist) == historyLen {
			s.hist = append(s.hist[:0], s.hist[1:]...)
		}
		s.hist = append(s.hist, point{Connections: st.Node.Connections, In: r.Node.MessagesInPerSec, Out: r.Node.MessagesOutPerSec})
	}
	close(s.next)
	s.next = make(chan struct{})
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

// ratesBetween computes the rates from two samples; zero without two of them.
func ratesBetween(prev, last sample) rates {
	r := rates{Apps: map[string]rate{}}
	if !prev.set || !last.set {
		return r
	}
	dt := last.at.Sub(prev.at).Seconds()
	if dt <= 0 {
		return r
	}
	r.IntervalSeconds = dt
	per := func(a, b uint64) float64 {
		if b < a { // a counter went back (a source that restarted): no rate, not 1.8e19
			return 0
		}
		return float64(b-a) / dt
	}
	r.Node = rate{per(prev.st.Node.MessagesIn, last.st.Node.MessagesIn), per(prev.st.Node.MessagesOut, last.st.Node.MessagesOut)}
	for id, b := range last.st.Apps {
		a := prev.st.Apps[id]
		r.Apps[id] = rate{per(a.MessagesIn, b.MessagesIn), per(a.MessagesOut, b.MessagesOut)}
	}
	return r
}

func (s *Server) stats(w http.ResponseWriter, _ *http.Request) {
	doc := statsDoc{Stats: s.cfg.Source.Stats()}
	s.mu.Lock()
	prev, last := s.prev, s.last // samples are never changed once taken
	s.mu.Unlock()
	doc.Rates = ratesBetween(prev, last)
	w.Header().Set("Content-Type", "application/json")
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(doc)
}
