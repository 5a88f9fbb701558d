package loadgen

import (
	"context"
	"errors"
	"regexp"
	"sync"
	"sync/atomic"
	"time"
)

// apiPublisher publishes sequenced events through the HTTP API at a steady rate
// (or, with PublishRateMax, as fast as its senders are answered), round-robin over
// the first Spec.PublishChannels channels, Spec.PublishBatch events per request. Its
// goroutines (one pacer, PublishConcurrency senders) are started by start and
// stopped by stop. A job is one request: the index of its first channel.
type apiPublisher struct {
	spec   *Spec
	pub    *Publisher
	names  []string
	stride uint64 // seq = n*stride + 1 (slot 0 is the coordinator's)

	jobs   chan int
	cancel context.CancelFunc
	wg     sync.WaitGroup

	n         atomic.Uint64
	published []atomic.Int64 // per channel, accepted by the server
	total     atomic.Int64
	mu        sync.Mutex // guards errs, stopped
	errs      map[string]uint64
	stopped   bool
	schedule  []time.Duration

	// track (tracking.go) follows the events to their last delivery (every one,
	// or the first maxTrackedBroadcasts); finished counts the events answered
	// (Spec.PublishCount).
	track    *tracker
	finished atomic.Int64
}

func newAPIPublisher(spec *Spec, workers int) (*apiPublisher, error) {
	base, err := spec.publishBase()
	if err != nil {
		return nil, err
	}
	pub, err := NewPublisher(PublisherConfig{BaseURL: base, AppID: spec.AppID, Key: spec.Key,
		Secret: spec.Secret, MaxConns: spec.PublishConcurrency})
	if err != nil {
		return nil, err
	}
	var sched []time.Duration
	if spec.PublishSchedule != "" {
		steps, err := parseSchedule(spec.PublishSchedule)
		if err != nil {
			return nil, err
		}
		sched = scheduleOffsets(steps)
	}
	return &apiPublisher{
		spec: spec, pub: pub, names: spec.ChannelNames(), stride: uint64(workers) + 1,
		schedule:  sched,
		jobs:      make(chan int, 4*spec.PublishConcurrency),
		published: make([]atomic.Int64, spec.Channels),
		errs:      map[string]uint64{},
	}, nil
}

func (a *apiPublisher) start() {
	ctx, cancel := context.WithCancel(context.Background())
	a.cancel = cancel
	for i := 0; i < a.spec.PublishConcurrency; i++ {
		a.wg.Add(1)
		go func() {
			defer a.wg.Done()
			a.send(ctx)
		}()
	}
	a.wg.Add(1)
	go func() {
		defer a.wg.Done()
		defer close(a.jobs)
		a.pace(ctx)
	}()
}

// stop ends publishing: nothing new is sent, publishes in flight get until grace.
func (a *apiPublisher) stop(grace time.Duration) {
	if a.cancel == nil {
		return
	}
	t := time.AfterFunc(grace, a.cancel)
	a.cancelPace()
	a.wg.Wait()
	t.Stop()
	a.cancel()
	a.pub.Close()
}

// paceStopped reports whether stop was called.
func (a *apiPublisher) paceStopped() bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.stopped
}

// cancelPace stops the pacer only; senders finish what is queued (at a fixed rate:
// those publishes were due; at PublishRateMax nothing is, and the queue is dropped).
func (a *apiPublisher) cancelPace() {
	a.mu.Lock()
	a.stopped = true
	a.mu.Unlock()
}

func (a *apiPublisher) pace(ctx context.Context) {
	if d := a.spec.PublishDelay.D(); d > 0 {
		t := time.NewTimer(d)
		select {
		case <-t.C:
		case <-ctx.Done(): // a stop during the delay: its grace ends it
			t.Stop()
			return
		}
	}
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	begin := time.Now()
	issued := 0
	next := 0
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-tick.C:
			a.mu.Lock()
			stopped := a.stopped
			a.mu.Unlock()
			if stopped {
				return
			}
			if a.schedule != nil {
				for ; issued < len(a.schedule) && now.Sub(begin) >= a.schedule[issued]; issued++ {
					select {
					case a.jobs <- next:
					default:
						a.addErr("publish_overrun")
					}
					next = (next + a.spec.PublishBatch) % a.spec.PublishChannels
				}
				continue
			}
			if a.spec.PublishRate == PublishRateMax {
				// Keep the queue full: the senders take jobs as fast as they are
				// answered; the tick only bounds how long a stop waits.
				for !a.countReached(issued) {
					select {
					case a.jobs <- next:
						next = (next + a.spec.PublishBatch) % a.spec.PublishChannels
						issued++
						continue
					case <-ctx.Done():
						return
					default:
					}
					break
				}
				continue
			}
			// Requests due: the rate counts events, a request carries PublishBatch.
			batch := a.spec.PublishBatch
			due := (int(a.spec.PublishRate*now.Sub(begin).Seconds()) + batch) / batch
			for ; issued < due && !a.countReached(issued); issued++ {
				select {
				case a.jobs <- next:
				default:
					a.addErr("publish_overrun")  // senders cannot keep up: the rate is not met
					a.finished.Add(int64(batch)) // never sent: done, for Spec.PublishCount
				}
				next = (next + batch) % a.spec.PublishChannels
			}
		}
	}
}

var statusRE = regexp.MustCompile(`^(\d{3}) `)

func (a *apiPublisher) send(ctx context.Context) {
	var buf []byte
	batch := a.spec.PublishBatch
	var events []BatchEvent
	var chans []int
	var bufs [][]byte
	var seqs []uint64
	for c := range a.jobs {
		if a.spec.PublishRate == PublishRateMax && a.paceStopped() {
			continue // queued only to keep the senders busy: nothing is due
		}
		var err error
		now := time.Now().UnixNano()
		seqs = seqs[:0]
		if batch == 1 {
			seq := a.n.Add(1)*a.stride + 1 - a.stride
			var done <-chan struct{}
			if a.track != nil {
				done = a.track.register(seq, c, now)
			}
			buf = AppendPayload(buf[:0], seq, now, a.spec.PayloadSize)
			err = a.pub.Publish(ctx, a.names[c], "loadgen", buf)
			chans = append(chans[:0], c)
			seqs = append(seqs, seq)
			if a.track != nil {
				a.track.answer(seq, err == nil)
				if err == nil && a.spec.PublishAwait && !awaitDone(ctx, done, a.spec.AwaitTimeout.D()) && ctx.Err() == nil {
					a.addErr("await_timeout")
				}
			}
		} else {
			events, chans = events[:0], chans[:0]
			for i := 0; i < batch; i++ {
				if len(bufs) <= i {
					bufs = append(bufs, nil)
				}
				ch := (c + i) % a.spec.PublishChannels
				seq := a.n.Add(1)*a.stride + 1 - a.stride
				bufs[i] = AppendPayload(bufs[i][:0], seq, now, a.spec.PayloadSize)
				seqs = append(seqs, seq)
				events = append(events, BatchEvent{Channel: a.names[ch], Name: "loadgen", Data: bufs[i]})
				chans = append(chans, ch)
				if a.track != nil {
					a.track.register(seq, ch, now)
				}
			}
			err = a.pub.PublishBatch(ctx, events)
			for _, seq := range seqs {
				if a.track != nil {
					a.track.answer(seq, err == nil)
				}
			}
		}
		a.finished.Add(int64(len(chans)))
		switch {
		case err == nil:
			for _, ch := range chans {
				a.published[ch].Add(1)
			}
			a.total.Add(int64(len(chans)))
		case errors.Is(err, ErrPublish):
			kind := "publish_refused"
			if m := statusRE.FindStringSubmatch(publishStatus(err)); m != nil {
				kind = "publish_http_" + m[1]
			}
			a.addErr(kind)
		case ctx.Err() != nil:
			a.addErr("publish_cancelled")
		default:
			a.addErr("publish_error")
		}
	}
}

// countReached reports whether issued requests carry Spec.PublishCount events.
func (a *apiPublisher) countReached(issued int) bool {
	return a.spec.PublishCount > 0 && issued*a.spec.PublishBatch >= a.spec.PublishCount
}

// publishStatus extracts the "NNN Text" status from an ErrPublish error message.
func publishStatus(err error) string {
	s := err.Error()
	prefix := ErrPublish.Error() + ": "
	if len(s) > len(prefix) && s[:len(prefix)] == prefix {
		return s[len(prefix):]
	}
	return s
}

func (a *apiPublisher) addErr(kind string) {
	a.mu.Lock()
	a.errs[kind]++
	a.mu.Unlock()
}

func (a *apiPublisher) errors() map[string]uint64 {
	a.mu.Lock()
	defer a.mu.Unlock()
	out := make(map[string]uint64, len(a.errs))
	for k, v := range a.errs {
		out[k] = v
	}
	return out
}
