package webhook

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"fmt"
	"hash"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// App is one tenant's credentials and webhooks. An app without hooks costs nothing.
type App struct {
	ID     string `json:"id"`
	Key    string `json:"key"`
	Secret string `json:"secret"`
	Hooks  []Hook `json:"webhooks,omitempty"`
}

// Config configures a Sender. The zero Config works (no app: Send does nothing).
type Config struct {
	// Apps and their webhooks. Each id appears once; an app with hooks needs its key
	// (the X-Pusher-Key header) and secret (the signature).
	Apps []App
	// BatchWait is the longest an event waits for others to share its request;
	// default 250 ms.
	BatchWait time.Duration
	// BatchMax is the most events in one request; default 20.
	BatchMax int
	// Timeout bounds one request, from dialing to reading the answer; default 4 s.
	Timeout time.Duration
	// RetryFor is how long after its first attempt a failed batch is still retried;
	// then it is dropped and counted (reason retries_exhausted). Default 5 min;
	// negative: never retried.
	RetryFor time.Duration
	// BackoffMin is the wait before the first retry of a batch; each retry waits twice
	// as long as the one before, up to BackoffMax, and every wait is drawn from ±50 %
	// of that. Defaults 1 s and 60 s.
	BackoffMin, BackoffMax time.Duration
	// QueueSize is how many events wait per hook at most; past it new events are
	// dropped and counted (reason queue_full). Default 10,000.
	QueueSize int
	// QueueBytes caps the bytes of event strings (channel, data, ...) waiting per hook,
	// so that large client events cannot hold QueueSize × 10 KB; past it new events are
	// dropped as queue_full. An event larger than QueueBytes is still taken into an
	// empty queue. Default 16 MiB.
	QueueBytes int
	// Client makes the requests. Default: one of the Sender's own, with Timeout, no
	// redirects followed (a 3xx is a failure) and a few idle connections per host.
	// The Sender bounds each request with Timeout through its context either way.
	Client *http.Client
	// Logger defaults to slog.Default().
	Logger *slog.Logger
	// Registerer receives the webhook metrics; nil registers nowhere. Close
	// unregisters them.
	Registerer prometheus.Registerer
	// Clock gives the wall time of a request's time_ms, of an Event's zero At and of
	// the answer in the latency metric; default time.Now. Waiting (batching,
	// timeouts, backoff, RetryFor) uses the runtime's timers, which testing/synctest
	// fakes.
	Clock func() time.Time
}

func (c *Config) setDefaults() error {
	def := func(d *time.Duration, v time.Duration) {
		if *d == 0 {
			*d = v
		}
	}
	defInt := func(d *int, v int) {
		if *d == 0 {
			*d = v
		}
	}
	def(&c.BatchWait, 250*time.Millisecond)
	def(&c.Timeout, 4*time.Second)
	def(&c.RetryFor, 5*time.Minute)
	def(&c.BackoffMin, time.Second)
	def(&c.BackoffMax, time.Minute)
	defInt(&c.BatchMax, 20)
	defInt(&c.QueueSize, 10_000)
	defInt(&c.QueueBytes, 16<<20)
	switch {
	case c.BatchWait < 0:
		return fmt.Errorf("%w: BatchWait %v is negative", ErrInvalidConfig, c.BatchWait)
	case c.Timeout < 0:
		return fmt.Errorf("%w: Timeout %v is negative", ErrInvalidConfig, c.Timeout)
	case c.BackoffMin < 0 || c.BackoffMax < c.BackoffMin:
		return fmt.Errorf("%w: backoff %v to %v: want 0 <= BackoffMin <= BackoffMax", ErrInvalidConfig, c.BackoffMin, c.BackoffMax)
	case c.BatchMax < 0:
		return fmt.Errorf("%w: BatchMax %d is negative", ErrInvalidConfig, c.BatchMax)
	case c.QueueSize < 0:
		return fmt.Errorf("%w: QueueSize %d is negative", ErrInvalidConfig, c.QueueSize)
	case c.QueueBytes < 0:
		return fmt.Errorf("%w: QueueBytes %d is negative", ErrInvalidConfig, c.QueueBytes)
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	return nil
}

// Sender delivers the webhooks of a set of apps; see the package doc.
type Sender struct {
	cfg       Config
	client    *http.Client
	ownClient bool
	log       *slog.Logger
	epoch     time.Time // queue times are durations since it (monotonic)

	apps  map[string]*app // read-only after New
	hooks []*hook
	coll  *collector // nil without a Registerer

	// abort ends in-flight requests and backoff waits once Close's context is done.
	abort  context.Context
	cancel context.CancelFunc

	running   atomic.Int32  // hook goroutines not yet returned
	done      chan struct{} // closed when running reaches 0
	closeOnce sync.Once     // starts the drain
	finish    sync.Once     // unregisters and closes idle connections
}

type app struct {
	id, key, secret string
	mask            uint8 // types any hook wants
	hooks           []*hook
	stats           appStats
}

// queued is an event in a hook's queue.
type queued struct {
	ev   Event
	at   time.Duration // when Send took it, since Sender.epoch
	size int           // ev.size()
	t    uint8         // type index
}

// hook is one endpoint and its queue. Send fills the queue under mu; the hook's own
// goroutine (run) empties it and is the only one to touch the fields below "worker".
type hook struct {
	s       *Sender
	app     *app
	index   int
	url     string
	logURL  string      // scheme://host/path: no credentials or query
	header  http.Header // every header but the signature
	mask    uint8
	filter  Filter
	wake    chan struct{} // capacity 1: the queue went non-empty or full, or Close began
	failing atomic.Bool   // the last attempt failed (Stats)
	qfull   atomic.Uint64 // events refused as queue_full since the last warning

	mu      sync.Mutex
	buf     []queued // ring of n events from head; grows to QueueSize at most
	head, n int
	bytes   int  // sum of the queued events' sizes
	closing bool // Close began: no new events, send the rest without waiting

	// worker
	mac      hash.Hash
	health   health
	sizeHint int // last body's length
}

// New validates every app and hook and starts one goroutine per hook, which Close
// stops. The error wraps ErrInvalidConfig or ErrInvalidHook.
func New(cfg Config) (*Sender, error) {
	if err := cfg.setDefaults(); err != nil {
		return nil, err
	}
	s := &Sender{
		cfg:   cfg,
		log:   cfg.Logger,
		epoch: time.Now(),
		apps:  make(map[string]*app),
		done:  make(chan struct{}),
	}
	seen := make(map[string]bool, len(cfg.Apps))
	for i := range cfg.Apps {
		ac := &cfg.Apps[i]
		switch {
		case ac.ID == "":
			return nil, fmt.Errorf("%w: apps[%d]: empty id", ErrInvalidConfig, i)
		case seen[ac.ID]:
			return nil, fmt.Errorf("%w: app %q listed twice", ErrInvalidConfig, ac.ID)
		}
		seen[ac.ID] = true
		if len(ac.Hooks) == 0 {
			continue
		}
		if ac.Key == "" || ac.Secret == "" {
			return nil, fmt.Errorf("%w: app %q has webhooks but no key or secret", ErrInvalidConfig, ac.ID)
		}
		a := &app{id: ac.ID, key: ac.Key, secret: ac.Secret}
		for j := range ac.Hooks {
			h, err := s.newHook(a, j, &ac.Hooks[j])
			if err != nil {
				return nil, fmt.Errorf("%w: app %q webhooks[%d]: %w", ErrInvalidHook, ac.ID, j, err)
			}
			a.hooks = append(a.hooks, h)
			a.mask |= h.mask
			s.hooks = append(s.hooks, h)
		}
		s.apps[a.id] = a
	}
	s.client = cfg.Client
	if s.client == nil {
		s.client, s.ownClient = newClient(cfg.Timeout), true
	}
	if cfg.Registerer != nil {
		s.coll = newCollector(s)
		if err := cfg.Registerer.Register(s.coll); err != nil {
			return nil, fmt.Errorf("webhook: register metrics: %w", err)
		}
	}
	s.abort, s.cancel = context.WithCancel(context.Background())
	s.running.Store(int32(len(s.hooks)))
	if len(s.hooks) == 0 {
		close(s.done)
	}
	for _, h := range s.hooks {
		go h.run()
	}
	return s, nil
}

func (s *Sender) newHook(a *app, index int, hc *Hook) (*hook, error) {
	if err := hc.validate(); err != nil {
		return nil, err
	}
	mask, _ := hc.mask()
	u, _ := parseURL(hc.URL)
	header := make(http.Header, len(hc.Headers)+3)
	header.Set("User-Agent", "herald-webhooks")
	for k, v := range hc.Headers {
		header.Set(k, v)
	}
	header.Set("Content-Type", "application/json")
	header.Set("X-Pusher-Key", a.key)
	return &hook{
		s:      s,
		app:    a,
		index:  index,
		url:    hc.URL,
		logURL: u.Scheme + "://" + u.Host + u.EscapedPath(),
		header: header,
		mask:   mask,
		filter: hc.Filter,
		wake:   make(chan struct{}, 1),
		mac:    hmac.New(sha256.New, []byte(a.secret)),
	}, nil
}

func newClient(timeout time.Duration) *http.Client {
	dialer := &net.Dialer{Timeout: timeout, KeepAlive: 30 * time.Second}
	return &http.Client{
		Timeout: timeout,
		Transport: &http.Transport{
			Proxy:                  http.ProxyFromEnvironment,
			DialContext:            dialer.DialContext,
			ForceAttemptHTTP2:      true,
			TLSHandshakeTimeout:    timeout,
			ResponseHeaderTimeout:  timeout,
			MaxIdleConns:           100,
			MaxIdleConnsPerHost:    4, // one request in flight per hook; a few hooks may share a host
			IdleConnTimeout:        90 * time.Second,
			MaxResponseHeaderBytes: 64 << 10,
			DisableCompression:     true, // the answer is discarded
		},
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
}

// Send hands ev to each hook of the app that wants its type and channel. It never
// blocks on the network or on a slow endpoint: an event a hook's queue has no room for
// is dropped and counted (queue_full), and after Close began, every event is
// (shutdown). An unknown app or an unknown event name is a no-op.
func (s *Sender) Send(appID string, ev Event) {
	a := s.apps[appID]
	if a == nil {
		return
	}
	t := typeIndex(ev.Name)
	if t < 0 || a.mask&(1<<t) == 0 {
		return
	}
	now := time.Now()
	if ev.At.IsZero() {
		if s.cfg.Clock != nil {
			ev.At = s.cfg.Clock()
		} else {
			ev.At = now
		}
	}
	at, size := now.Sub(s.epoch), ev.size()
	for _, h := range a.hooks {
		if h.mask&(1<<t) != 0 && h.filter.match(ev.Channel) {
			h.push(&ev, t, at, size)
		}
	}
}

// Enabled reports whether any hook of the app wants events of that type, so that the
// caller can skip building events nobody wants. It ignores channel filters.
func (s *Sender) Enabled(appID, eventType string) bool {
	a := s.apps[appID]
	if a == nil {
		return false
	}
	t := typeIndex(eventType)
	return t >= 0 && a.mask&(1<<t) != 0
}

// Close stops taking events and sends what the queues hold, without waiting for
// batches to fill. When ctx is done first, it abandons in-flight requests and
// retries, drops what is left (counted as shutdown) and returns ctx's error, wrapped.
// Either way every goroutine of the Sender has returned when Close does. Calling it
// again waits the same way.
func (s *Sender) Close(ctx context.Context) error {
	s.closeOnce.Do(func() {
		for _, h := range s.hooks {
			h.mu.Lock()
			h.closing = true
			h.mu.Unlock()
			h.signal()
		}
	})
	var err error
	select {
	case <-s.done: // drained, even if ctx is done too
	default:
		select {
		case <-s.done:
		case <-ctx.Done():
			s.cancel()
			<-s.done
			err = fmt.Errorf("webhook: close: %w", ctx.Err())
		}
	}
	s.finish.Do(func() {
		s.cancel()
		if s.coll != nil {
			s.cfg.Registerer.Unregister(s.coll)
		}
		if s.ownClient {
			s.client.CloseIdleConnections()
		}
	})
	return err
}

// push queues one event, or drops it when the queue is full or closing.
func (h *hook) push(ev *Event, t int, at time.Duration, size int) {
	cfg := &h.s.cfg
	h.mu.Lock()
	if h.closing {
		h.mu.Unlock()
		h.app.stats.dropped[reasonShutdown][t].Add(1)
		return
	}
	if h.n >= cfg.QueueSize || (h.n > 0 && h.bytes+size > cfg.QueueBytes) {
		h.mu.Unlock()
		h.app.stats.dropped[reasonQueueFull][t].Add(1)
		h.qfull.Add(1)
		return
	}
	if h.n == len(h.buf) {
		h.grow()
	}
	i := h.head + h.n
	if i >= len(h.buf) {
		i -= len(h.buf)
	}
	h.buf[i] = queued{ev: *ev, at: at, size: size, t: uint8(t)}
	h.n++
	h.bytes += size
	n := h.n
	h.mu.Unlock()
	// The worker's decision changes only when the queue stops being empty (start the
	// batch timer) or fills a batch (send now).
	if n == 1 || n == cfg.BatchMax {
		h.signal()
	}
}

func (h *hook) signal() {
	select {
	case h.wake <- struct{}{}:
	default:
	}
}

// grow doubles the ring, up to QueueSize; h.mu is held.
func (h *hook) grow() {
	size := max(2*len(h.buf), 16)
	size = min(size, h.s.cfg.QueueSize)
	buf := make([]queued, size)
	k := copy(buf, h.buf[h.head:])
	copy(buf[k:], h.buf[:h.head])
	h.buf, h.head = buf, 0
}

// shrinkAbove is the ring size beyond which an emptied ring is released, so that a
// burst or an outage does not pin QueueSize events' worth of memory for good.
const shrinkAbove = 1024

// takeLocked moves up to max events from the queue to dst; h.mu is held.
func (h *hook) takeLocked(dst []queued, max int) []queued {
	for k := 0; k < max && h.n > 0; k++ {
		dst = append(dst, h.buf[h.head])
		h.bytes -= h.buf[h.head].size
		h.buf[h.head] = queued{} // release the strings
		h.head++
		if h.head == len(h.buf) {
			h.head = 0
		}
		h.n--
	}
	if h.n == 0 {
		h.head = 0
		if len(h.buf) > shrinkAbove {
			h.buf = nil
		}
	}
	return dst
}

// pending is how many events wait.
func (h *hook) pending() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.n
}
