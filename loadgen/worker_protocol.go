package loadgen

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"sync"
	"time"
)

// ProtocolVersion is the version of the coordinator/worker protocol. Both sides send
// it first (hello, plan); a coordinator rejects a worker of another version.
// Version 2: "seqs" entries carry [seq, unique, dups, last] (3 numbers before) and
// are sent whenever the run publishes through the API; snapshots no longer carry
// "broadcasts".
const ProtocolVersion = 2

// maxLine bounds one protocol message (a snapshot carries two compressed histograms
// and per-channel counters).
const maxLine = 64 << 20

// Message types.
const (
	msgHello    = "hello"    // worker → coordinator, first
	msgPlan     = "plan"     // coordinator → worker, its share
	msgReject   = "reject"   // coordinator → worker, then close
	msgLoad     = "load"     // coordinator → worker: every connection is up, start client events and churn
	msgQuiesce  = "quiesce"  // coordinator → worker: stop sending (drain before the end)
	msgStop     = "stop"     // coordinator → worker: close connections, send the final snapshot
	msgSnapshot = "snapshot" // worker → coordinator, every second and a final one
	msgFailed   = "failed"   // worker → coordinator: the worker cannot run its plan
	msgSeqs     = "seqs"     // worker → coordinator: deliveries of tracked publishes (tracking.go)
)

// ctrlMsg is one JSON line of the protocol.
type ctrlMsg struct {
	Type     string    `json:"type"`
	Version  int       `json:"version,omitempty"`
	Hello    *hello    `json:"hello,omitempty"`
	Plan     *Plan     `json:"plan,omitempty"`
	Snapshot *Snapshot `json:"snapshot,omitempty"`
	Error    string    `json:"error,omitempty"`
	// Seqs (type "seqs") are [seq, unique deliveries so far, duplicates so far,
	// latest receive unix ns] of tracked API publishes whose counts changed since
	// the worker's last "seqs".
	Seqs [][4]int64 `json:"seqs,omitempty"`
}

// hello introduces a worker.
type hello struct {
	PID    int    `json:"pid"`
	Host   string `json:"host"`
	Source string `json:"source,omitempty"` // a source address the worker insists on
}

// Plan is one worker's share of a run.
type Plan struct {
	WorkerID    int      `json:"worker_id"`   // 0..Workers-1
	Workers     int      `json:"workers"`     // in the run
	Spec        Spec     `json:"spec"`        // normalized
	Connections int      `json:"connections"` // this worker's share
	Sources     []string `json:"sources,omitempty"`
	Start       int64    `json:"start"` // unix ns: start dialing then
}

// Snapshot is what a worker measured since its previous snapshot (Stats, per-channel
// deltas) plus gauges (Open, ChanSubs, memory). Stats histograms travel in the
// HdrHistogram V2 encoding and merge exactly.
type Snapshot struct {
	N     int    `json:"n"`     // 1, 2, ... per worker
	Final bool   `json:"final"` // the last one: the worker is done
	Stats *Stats `json:"stats"` // delta
	Open  int64  `json:"open"`  // established connections open now
	Sent  int64  `json:"sent"`  // client events sent, delta
	// Per channel (index as in Spec.ChannelName): subscribed connections now, and
	// deltas of client events sent, sequenced deliveries and duplicates.
	ChanSubs      []int64 `json:"chan_subs"`
	ChanSent      []int64 `json:"chan_sent"`
	ChanDelivered []int64 `json:"chan_delivered"`
	ChanDups      []int64 `json:"chan_dups"`
	HeapBytes     int64   `json:"heap_bytes"` // Go heap in use
	RSSBytes      int64   `json:"rss_bytes"`  // resident set size
	Error         string  `json:"error,omitempty"`
	// TargetConnected is, per server of Spec.Target (in order), the connections
	// established to it so far (a gauge: cumulative, not a delta).
	TargetConnected []int64 `json:"target_connected,omitempty"`
	// RampSeconds, in the snapshot sent when this worker's share was all
	// established (or failed), is the time its ramp took; 0 otherwise.
	RampSeconds float64 `json:"ramp_seconds,omitempty"`
	// LostBeforeStop, in the final snapshot, is the connections that closed
	// before the coordinator said stop, not by loadgen's doing (churn).
	LostBeforeStop int64 `json:"lost_before_stop,omitempty"`
	// AtClose, in the final snapshot, is the reasons counted while loadgen closed
	// its own connections at the end (close_timeout, ...): not errors of the run.
	AtClose map[string]int64 `json:"at_close,omitempty"`
	// MemStart (once the pool runs, before the first dial) and MemLoad (when the
	// load phase begins: every connection up, nothing published yet) are the
	// worker's memory after a GC, each sent once, in the first snapshot after it
	// was taken.
	MemStart *WorkerMem `json:"mem_start,omitempty"`
	MemLoad  *WorkerMem `json:"mem_load,omitempty"`
}

// coalesce folds t, the next snapshot of the same worker, into s: deltas add
// (histograms exactly), gauges take t's values, peaks the larger.
func (s *Snapshot) coalesce(t *Snapshot) error {
	if len(t.ChanSubs) != len(s.ChanSubs) || len(t.ChanSent) != len(s.ChanSent) ||
		len(t.ChanDelivered) != len(s.ChanDelivered) || len(t.ChanDups) != len(s.ChanDups) {
		return fmt.Errorf("%w: snapshots with different channel counts", ErrProtocol)
	}
	if err := s.Stats.Merge(t.Stats); err != nil {
		return err
	}
	s.N, s.Open, s.Sent = t.N, t.Open, s.Sent+t.Sent
	s.ChanSubs = t.ChanSubs
	for i := range s.ChanSent {
		s.ChanSent[i] += t.ChanSent[i]
		s.ChanDelivered[i] += t.ChanDelivered[i]
		s.ChanDups[i] += t.ChanDups[i]
	}
	s.HeapBytes, s.RSSBytes = max(s.HeapBytes, t.HeapBytes), max(s.RSSBytes, t.RSSBytes)
	if t.TargetConnected != nil {
		s.TargetConnected = t.TargetConnected
	}
	s.RampSeconds = max(s.RampSeconds, t.RampSeconds)
	if t.MemStart != nil {
		s.MemStart = t.MemStart
	}
	if t.MemLoad != nil {
		s.MemLoad = t.MemLoad
	}
	return nil
}

// codec reads and writes protocol lines on one connection, each write bounded by a
// deadline. It is used by one reader and one writer goroutine at a time.
type codec struct {
	conn net.Conn
	r    *bufio.Reader
	wmu  sync.Mutex // a worker writes snapshots (snapSender) and seqs (its loop)
	w    *bufio.Writer
}

func newCodec(c net.Conn) *codec { return newCodecReader(c, c) }

// newCodecReader reads from r (c, or a wrapper of c) and writes to c.
func newCodecReader(c net.Conn, r io.Reader) *codec {
	return &codec{conn: c, r: bufio.NewReaderSize(r, 64<<10), w: bufio.NewWriterSize(c, 64<<10)}
}

func (c *codec) send(m *ctrlMsg, timeout time.Duration) error {
	b, err := json.Marshal(m)
	if err != nil {
		return fmt.Errorf("%w: encode %s: %w", ErrProtocol, m.Type, err)
	}
	c.wmu.Lock()
	defer c.wmu.Unlock()
	_ = c.conn.SetWriteDeadline(time.Now().Add(timeout))
	b = append(b, '\n')
	if _, err := c.w.Write(b); err != nil {
		return fmt.Errorf("loadgen: send %s: %w", m.Type, err)
	}
	if err := c.w.Flush(); err != nil {
		return fmt.Errorf("loadgen: send %s: %w", m.Type, err)
	}
	return nil
}

// recv reads one message; timeout 0 means no deadline.
func (c *codec) recv(timeout time.Duration) (*ctrlMsg, error) {
	if timeout > 0 {
		_ = c.conn.SetReadDeadline(time.Now().Add(timeout))
	} else {
		_ = c.conn.SetReadDeadline(time.Time{})
	}
	var line []byte
	for {
		part, isPrefix, err := c.r.ReadLine()
		if err != nil {
			if err == io.EOF && len(line) > 0 {
				err = io.ErrUnexpectedEOF
			}
			return nil, err
		}
		line = append(line, part...)
		if len(line) > maxLine {
			return nil, fmt.Errorf("%w: message over %d bytes", ErrProtocol, maxLine)
		}
		if !isPrefix {
			break
		}
	}
	var m ctrlMsg
	if err := json.Unmarshal(line, &m); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrProtocol, err)
	}
	if m.Type == "" {
		return nil, fmt.Errorf("%w: message without a type", ErrProtocol)
	}
	return &m, nil
}
