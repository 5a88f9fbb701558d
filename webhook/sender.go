package webhook

import (
	"context"
	"fmt"
	"hash"
	"log/slog"
	"maps"
	"net"
	"net/http"
	"slices"
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

	// apps is replaced whole by Reload and read without a lock by Send, Enabled and
	// Stats: an app and its hooks are never modified once published.
	apps atomic.Pointer[map[string]*app]
	coll *collector // nil without a Registerer

	// abort ends in-flight requests and backoff waits once Close's context is done.
	abort  context.Context
	cancel context.CancelFunc

	mu      sync.Mutex  // serializes Reload and the start of Close
	closing atomic.Bool // Close began: Reload refuses, no hook is started (set under mu)

	running   atomic.Int64  // hook goroutines not yet returned, the retired ones included
	done      chan struct{} // closed once Close began and running is 0
	doneOnce  sync.Once
	closeOnce sync.Once // starts the drain
	finish    sync.Once // unregisters and closes idle connections
}

type app struct {
	id    string
	mask  uint8 // types any hook wants
	hooks []*hook
	// stats outlive a Reload: the app's next version, and its hooks retired by the
	// Reload while they deliver what they hold, count into the same ones.
	stats *appStats
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
	app     *app // the version that started the hook: its id and stats
	spec    Hook // as configured: Reload keeps a hook whose spec is unchanged
	url     string
	logURL  string // scheme://host/path: no credentials or query
	mask    uint8
	filter  Filter
	wake    chan struct{} // capacity 1: the queue went non-empty or full, or Close began
	failing atomic.Bool   // the last attempt failed (Stats)
	qfull   atomic.Uint64 // events refused as queue_full since the last warning
	// cred is what a Reload may change on a hook it keeps: the app's key and secret
	// (a new secret signs the next request, queued events included) and the hook's
	// place in the app's list (for the logs).
	cred atomic.Pointer[hookCred]

	mu      sync.Mutex
	buf     []queued // ring of n events from head; grows to QueueSize at most
	head, n int
	bytes   int  // sum of the queued events' sizes
	closing bool // Close began: no new events, send the rest without waiting

	// worker
	mac      hash.Hash
	macCred  *hookCred // the cred mac was made for
	health   health
	sizeHint int // last body's length
}

// hookCred is a hook's credentials and position; replaced whole, never modified.
type hookCred struct {
	index  int
	header http.Header // every header but the signature
	secret string
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
		done:  make(chan struct{}),
	}
	v, err := s.build(cfg.Apps, nil)
	if err != nil {
		return nil, err
	}
	s.apps.Store(&v.apps) // for the collector; apply starts the hooks
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
	s.apply(v)
	return s, nil
}

// version is a validated set of apps, made by build and not yet in use.
type version struct {
	apps    map[string]*app
	fresh   []*hook     // to start
	retired []*hook     // of the running version, to stop
	creds   []*hookCred // creds[i] is for the i-th hook of hooks, in build order
	hooks   []*hook     // every hook of apps
}

// build validates apps and makes their version. A hook of old (the running version,
// nil in New) whose app id and spec are unchanged is kept, queue included, and gets
// the app's current key and secret; the others are made anew (fresh) or left out
// (retired). It changes nothing that is running: apply does.
func (s *Sender) build(cfgs []App, old map[string]*app) (*version, error) {
	v := &version{apps: make(map[string]*app, len(cfgs))}
	kept := make(map[*hook]bool)
	seen := make(map[string]bool, len(cfgs))
	for i := range cfgs {
		ac := &cfgs[i]
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
		prev := old[ac.ID]
		a := &app{id: ac.ID, stats: &appStats{}}
		if prev != nil {
			a.stats = prev.stats
		}
		for j := range ac.Hooks {
			hc := &ac.Hooks[j]
			if err := hc.validate(); err != nil {
				return nil, fmt.Errorf("%w: app %q webhooks[%d]: %w", ErrInvalidHook, ac.ID, j, err)
			}
			var h *hook
			if prev != nil {
				for _, ph := range prev.hooks {
					if !kept[ph] && sameHook(&ph.spec, hc) {
						h = ph
						break
					}
				}
			}
			if h == nil {
				h = s.newHook(a, hc)
				v.fresh = append(v.fresh, h)
			}
			kept[h] = true
			v.hooks = append(v.hooks, h)
			v.creds = append(v.creds, h.credFor(j, ac.Key, ac.Secret))
			a.hooks = append(a.hooks, h)
			a.mask |= h.mask
		}
		v.apps[a.id] = a
	}
	for _, a := range old {
		for _, h := range a.hooks {
			if !kept[h] {
				v.retired = append(v.retired, h)
			}
		}
	}
	return v, nil
}

// apply makes v the running version: the kept hooks take their new creds and the
// fresh ones start (s.mu held, or New). The caller retires v.retired.
func (s *Sender) apply(v *version) {
	for i, h := range v.hooks {
		if c := v.creds[i]; c != nil {
			h.cred.Store(c)
		}
	}
	s.apps.Store(&v.apps)
	s.running.Add(int64(len(v.fresh)))
	for _, h := range v.fresh {
		go h.run()
	}
}

// newHook makes the hook of a valid spec; it gets its cred from apply.
func (s *Sender) newHook(a *app, hc *Hook) *hook {
	mask, _ := hc.mask()
	u, _ := parseURL(hc.URL)
	spec := *hc
	spec.EventTypes = slices.Clone(hc.EventTypes)
	spec.Headers = maps.Clone(hc.Headers)
	return &hook{
		s:      s,
		app:    a,
		spec:   spec,
		url:    hc.URL,
		logURL: u.Scheme + "://" + u.Host + u.EscapedPath(),
		mask:   mask,
		filter: hc.Filter,
		wake:   make(chan struct{}, 1),
	}
}

// credFor returns the hook's cred at position index of an app with that key and
// secret, or nil when it has that one already.
func (h *hook) credFor(index int, key, secret string) *hookCred {
	if cur := h.cred.Load(); cur != nil && cur.index == index && cur.secret == secret &&
		cur.header.Get("X-Pusher-Key") == key {
		return nil
	}
	header := make(http.Header, len(h.spec.Headers)+3)
	header.Set("User-Agent", "herald-webhooks")
	for k, v := range h.spec.Headers {
		header.Set(k, v)
	}
	header.Set("Content-Type", "application/json")
	header.Set("X-Pusher-Key", key)
	return &hookCred{index: index, header: header, secret: secret}
}

// sameHook reports whether two specs make the same hook: same endpoint, types,
// filter and headers.
func sameHook(a, b *Hook) bool {
	ma, _ := a.mask()
	mb, _ := b.mask()
	return a.URL == b.URL && ma == mb && a.Filter == b.Filter && maps.Equal(a.Headers, b.Headers)
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
	a := (*s.apps.Load())[appID]
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
	a := (*s.apps.Load())[appID]
	if a == nil {
		return false
	}
	t := typeIndex(eventType)
	return t >= 0 && a.mask&(1<<t) != 0
}

// Reload replaces the apps and their hooks with cfgs, validated as New does; on an
// error nothing changes. A hook whose app id and spec (URL, event types, filter,
// headers) are unchanged is kept with its queue, and signs its next request with the
// app's current key and secret, the events it already holds included. A hook that is
// gone or changed stops taking events and sends what it holds before its goroutine
// returns (Close waits for it too); a new hook starts empty. An event Send handed to a
// hook in the instant it was retired is dropped as shutdown. An app's counters go on
// across reloads while it keeps an id in the set. After Close, Reload returns ErrClosed.
func (s *Sender) Reload(cfgs []App) error {
	s.mu.Lock()
	if s.closing.Load() {
		s.mu.Unlock()
		return ErrClosed
	}
	v, err := s.build(cfgs, *s.apps.Load())
	if err != nil {
		s.mu.Unlock()
		return err
	}
	s.apply(v)
	s.mu.Unlock()
	for _, h := range v.retired { // out of s.mu: no two locks are held together
		h.retire()
	}
	return nil
}

// Close stops taking events and sends what the queues hold, without waiting for
// batches to fill. When ctx is done first, it abandons in-flight requests and
// retries, drops what is left (counted as shutdown) and returns ctx's error, wrapped.
// Either way every goroutine of the Sender has returned when Close does (hooks that
// a Reload retired included). Calling it again waits the same way.
func (s *Sender) Close(ctx context.Context) error {
	s.closeOnce.Do(func() {
		s.mu.Lock()
		s.closing.Store(true) // no hook starts after this
		s.mu.Unlock()
		for _, a := range *s.apps.Load() {
			for _, h := range a.hooks {
				h.retire()
			}
		}
		if s.running.Load() == 0 {
			s.markDone()
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

// hookDone is the last thing a hook goroutine does.
func (s *Sender) hookDone() {
	if s.running.Add(-1) == 0 && s.closing.Load() {
		s.markDone()
	}
}

// markDone closes done, once: by Close when no hook runs, else by the last hook to
// return after Close began.
func (s *Sender) markDone() { s.doneOnce.Do(func() { close(s.done) }) }

// retire has the hook take no more events, send what it holds and return.
func (h *hook) retire() {
	h.mu.Lock()
	h.closing = true
	h.mu.Unlock()
	h.signal()
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
