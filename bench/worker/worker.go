package worker

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"os"
	"runtime"
	"time"

	"github.com/herald-rt/herald/bench/proc"
	"github.com/herald-rt/herald/loadgen"
)

// Errors of this package.
var (
	ErrWorker   = errors.New("worker: worker failed")
	ErrProtocol = errors.New("worker: protocol error")
	ErrTimeout  = errors.New("worker: timed out")
)

// Request is one line from the orchestrator.
type Request struct {
	ID        uint64 `json:"id"`
	Op        string `json:"op"`
	N         int    `json:"n,omitempty"`
	Seq       uint64 `json:"seq,omitempty"`
	Want      int64  `json:"want,omitempty"`
	First     uint64 `json:"first,omitempty"`
	Last      uint64 `json:"last,omitempty"`
	TimeoutMS int64  `json:"timeout_ms,omitempty"`
}

// Response is one line from a worker.
type Response struct {
	ID        uint64         `json:"id"`
	Err       string         `json:"err,omitempty"`
	Counts    loadgen.Counts `json:"counts"`
	ElapsedNS int64          `json:"elapsed_ns,omitempty"`
	Count     int64          `json:"count,omitempty"`
	Last      int64          `json:"last,omitempty"`
	Delivered int64          `json:"delivered,omitempty"`
	Mem       *Mem           `json:"mem,omitempty"`
	Stats     *loadgen.Stats `json:"stats,omitempty"`
}

// Mem is a process's memory.
type Mem struct {
	RSS       int64 `json:"rss"`        // VmRSS, bytes
	HeapInuse int64 `json:"heap_inuse"` // Go heap in use after a GC, bytes
}

// Config is a worker's pool.
type Config struct {
	Addr, Key, Secret string
	// Addrs, if set, replaces Addr with several servers (a cluster's nodes):
	// connection id goes to Addrs[id % len(Addrs)].
	Addrs         []string
	Channel       string       // subscribed by every connection; "" for none
	Sources       []netip.Addr // source addresses
	Loops         int          // default GOMAXPROCS
	MaxHandshakes int          // default 512
}

const waitPoll = 500 * time.Microsecond

// Serve runs a worker until in closes or ctx ends.
func Serve(ctx context.Context, cfg Config, in io.Reader, out io.Writer) error {
	lc := loadgen.Config{
		Addr: cfg.Addr, Addrs: cfg.Addrs, Key: cfg.Key, Secret: cfg.Secret, SourceAddrs: cfg.Sources,
		Loops: cfg.Loops, MaxHandshakes: cfg.MaxHandshakes,
	}
	if cfg.Channel != "" {
		chans := []string{cfg.Channel}
		lc.Channels = func(uint64) []string { return chans }
	}
	pool, err := loadgen.New(lc)
	if err != nil {
		return err
	}
	defer pool.Close()
	if err := pool.Run(); err != nil {
		return err
	}

	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	reqs := make(chan Request, 64)
	readErr := make(chan error, 1)
	go func() { // stopped by in closing (the orchestrator) or by cancel below
		defer close(reqs)
		sc := bufio.NewScanner(in)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		for sc.Scan() {
			var r Request
			if err := json.Unmarshal(sc.Bytes(), &r); err != nil {
				readErr <- fmt.Errorf("%w: %w", ErrProtocol, err)
				return
			}
			select {
			case reqs <- r:
			case <-ctx.Done():
				return
			}
		}
		readErr <- sc.Err()
	}()

	enc := json.NewEncoder(out)
	type waiting struct {
		req      Request
		deadline time.Time
	}
	var waits []waiting
	var tick *time.Ticker
	var tickC <-chan time.Time
	defer func() {
		if tick != nil {
			tick.Stop()
		}
	}()
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case r, ok := <-reqs:
			if !ok {
				select {
				case err := <-readErr:
					return err
				default:
					return nil
				}
			}
			if r.Op == "wait" {
				waits = append(waits, waiting{r, time.Now().Add(time.Duration(r.TimeoutMS) * time.Millisecond)})
				if tick == nil {
					tick = time.NewTicker(waitPoll)
					tickC = tick.C
				}
				continue
			}
			resp := handle(ctx, pool, r)
			resp.ID = r.ID
			resp.Counts = pool.Counts()
			if err := enc.Encode(resp); err != nil {
				return err
			}
		case <-tickC:
			now := time.Now()
			kept := waits[:0]
			for _, w := range waits {
				c, last := pool.SeqDeliveries(w.req.Seq)
				timedOut := now.After(w.deadline)
				if c < w.req.Want && !timedOut {
					kept = append(kept, w)
					continue
				}
				resp := Response{ID: w.req.ID, Count: c, Last: last, Counts: pool.Counts()}
				if c < w.req.Want {
					resp.Err = fmt.Sprintf("seq %d: %d of %d deliveries", w.req.Seq, c, w.req.Want)
				}
				if err := enc.Encode(resp); err != nil {
					return err
				}
			}
			waits = kept
			if len(waits) == 0 {
				tick.Stop()
				tick, tickC = nil, nil
			}
		}
	}
}

func handle(ctx context.Context, pool *loadgen.Pool, r Request) Response {
	timeout := time.Duration(r.TimeoutMS) * time.Millisecond
	if timeout <= 0 {
		timeout = 30 * time.Second
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	switch r.Op {
	case "dial":
		start := time.Now()
		before := pool.Counts()
		if err := pool.Dial(ctx, r.N); err != nil {
			return Response{Err: err.Error()}
		}
		want := int64(r.N)
		c, err := pool.WaitCounts(ctx, func(c loadgen.Counts) bool {
			return c.Failed > before.Failed || c.Subscribed-before.Subscribed >= want
		})
		resp := Response{ElapsedNS: int64(time.Since(start))}
		if err != nil {
			resp.Err = err.Error()
		} else if c.Failed > before.Failed {
			resp.Err = fmt.Sprintf("%d connections failed", c.Failed-before.Failed)
		}
		if resp.Err != "" {
			if s, err := pool.Stats(ctx, 0, 0); err == nil {
				resp.Err += ": " + s.ReasonsString()
			}
		}
		return resp
	case "mem":
		m, err := ReadMem()
		if err != nil {
			return Response{Err: err.Error()}
		}
		return Response{Mem: &m}
	case "delivered":
		return Response{Delivered: pool.Delivered()}
	case "stats":
		s, err := pool.Stats(ctx, r.First, r.Last)
		if err != nil {
			return Response{Err: err.Error()}
		}
		return Response{Stats: s}
	case "shutdown":
		if err := pool.Shutdown(ctx); err != nil {
			return Response{Err: err.Error()}
		}
		return Response{}
	}
	return Response{Err: fmt.Sprintf("unknown op %q", r.Op)}
}

// ReadMem returns this process's VmRSS and, after a GC, its Go heap in use.
func ReadMem() (Mem, error) {
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	rss, err := ReadRSS(os.Getpid())
	return Mem{RSS: rss, HeapInuse: int64(ms.HeapInuse)}, err
}

// ReadRSS returns the VmRSS of process pid in bytes (proc.ReadRSS).
func ReadRSS(pid int) (int64, error) { return proc.ReadRSS(pid) }

// ReadCPU returns the CPU time (user + system) process pid has used (proc.ReadCPU).
func ReadCPU(pid int) (time.Duration, error) { return proc.ReadCPU(pid) }
