package admin

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strconv"
	"sync"
	"time"
)

// historyLen is how many samples the dashboard's charts show: five minutes at the
// default interval of a second.
const historyLen = 300

// streamWriteTimeout bounds one write to an /events client: one that stops reading is
// cut off instead of holding its stream (and Close) for ever.
const streamWriteTimeout = 10 * time.Second

// point is one sample in the dashboard's history.
type point struct {
	Connections int64   `json:"connections"`
	In          float64 `json:"messages_in_per_sec"`
	Out         float64 `json:"messages_out_per_sec"`
}

// history is the first document of an /events stream: the charts' points so far.
type history struct {
	IntervalSeconds float64 `json:"interval_seconds"`
	Points          []point `json:"points"`
}

// streams counts the open /events streams, up to max, and lets Close wait for them.
type streams struct {
	mu      sync.Mutex
	n, max  int
	closing bool
	wg      sync.WaitGroup
}

// acquire takes a slot; false when every slot is taken or the server is closing.
func (s *streams) acquire() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closing || s.n >= s.max {
		return false
	}
	s.n++
	s.wg.Add(1)
	return true
}

func (s *streams) release() {
	s.mu.Lock()
	s.n--
	s.mu.Unlock()
	s.wg.Done()
}

// open is the number of streams being served.
func (s *streams) open() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.n
}

func (s *streams) close() {
	s.mu.Lock()
	s.closing = true
	s.mu.Unlock()
}

func (s *streams) wait() { s.wg.Wait() }

// current returns the document of the last sample (encoded once, whoever asks), its
// sequence number and a channel closed when the next sample lands.
func (s *Server) current() ([]byte, uint64, <-chan struct{}) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.frameSeq != s.seq || s.frame == nil {
		b, err := json.Marshal(statsDoc{Stats: s.last.st, Rates: ratesBetween(s.prev, s.last)})
		if err != nil { // hub.Stats is plain data: this cannot happen
			b = []byte("{}")
		}
		s.frame, s.frameSeq = b, s.seq
	}
	return s.frame, s.seq, s.next
}

func (s *Server) history() ([]byte, uint64) {
	s.mu.Lock()
	h := history{IntervalSeconds: s.cfg.Interval.Seconds(), Points: append([]point{}, s.hist...)}
	seq := s.seq
	s.mu.Unlock()
	b, _ := json.Marshal(h)
	return b, seq
}

// events streams the /stats document as server-sent events, one per sample:
//
//	event: history (once, first): {"interval_seconds":…,"points":[…]}, the charts so far
//	data: the /stats document of each sample, with the sample's number as its id
//
// The figures are those of the last sample (at most one interval old), so every
// stream sends the same bytes and the hub is asked for its Stats once per interval
// however many dashboards watch. A stream ends when the client goes, when Close is
// called, or when a write blocks for streamWriteTimeout.
func (s *Server) events(w http.ResponseWriter, r *http.Request) {
	if !s.streams.acquire() {
		w.Header().Set("Retry-After", "10")
		http.Error(w, fmt.Sprintf("at most %d event streams at once; poll /stats", s.cfg.MaxStreams), http.StatusServiceUnavailable)
		return
	}
	defer s.streams.release()
	select { // Close may have begun between the handler's start and acquire
	case <-s.stop:
		http.Error(w, "shutting down", http.StatusServiceUnavailable)
		return
	default:
	}
	h := w.Header()
	h.Set("Content-Type", "text/event-stream")
	h.Set("Cache-Control", "no-store")
	h.Set("X-Accel-Buffering", "no") // a buffering proxy in the tunnel would hold the events
	rc := http.NewResponseController(w)
	send := func(parts ...[]byte) bool {
		_ = rc.SetWriteDeadline(time.Now().Add(streamWriteTimeout))
		for _, p := range parts {
			if _, err := w.Write(p); err != nil {
				return false
			}
		}
		return rc.Flush() == nil
	}
	hist, hseq := s.history()
	// retry: how long the browser waits before reconnecting after the stream ends.
	if !send([]byte("retry: 2000\n\nevent: history\nid: "+strconv.FormatUint(hseq, 10)+"\ndata: "), hist, []byte("\n\n")) {
		return
	}
	var sent uint64
	for {
		doc, seq, next := s.current()
		if seq != sent && seq > 0 {
			if !send([]byte("id: "+strconv.FormatUint(seq, 10)+"\ndata: "), doc, []byte("\n\n")) {
				return
			}
			sent = seq
		}
		select {
		case <-next:
		case <-s.stop:
			return
		case <-r.Context().Done():
			return
		}
	}
}
