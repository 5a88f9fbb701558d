package transport

import "sync/atomic"

// Stats are the transport's counters, safe to read at any time.
type Stats struct {
	Accepted        uint64 // TCP connections accepted
	Upgraded        uint64 // WebSocket handshakes completed
	HandshakeFailed uint64 // handshakes refused (an HTTP error, or closed for a PROXY header) or timed out: the sum of Refused
	HTTPRequests    uint64 // connections handed to the HTTP handler
	HTTPRefused     uint64 // of those, closed instead: the HTTP handoff queue was full (or the server stopping)
	Open            int64  // WebSocket connections open now
	BytesIn         uint64
	BytesOut        uint64
	FramesIn        uint64
	FramesOut       uint64
	// Writes counts the loops' write(2) and writev(2) calls: FramesOut/Writes
	// is how many frames gathering put in one syscall.
	Writes         uint64
	MailboxDropped uint64 // fan-out jobs (one loop's share of a Fanout) refused because the loop's backlog was full
	// DeliveriesDropped counts the connections in those refused shares.
	DeliveriesDropped uint64
	// FanoutBacklog is the deliveries queued or being written now, over all loops.
	FanoutBacklog int64
	// DoRefused counts Do jobs refused past DoMailboxSize; DoOverflowClosed the
	// connections closed for it (with Config.Overloaded).
	DoRefused, DoOverflowClosed uint64
	// SlowCloseSent and SlowCloseUnsent count the slow consumers whose close frame
	// the kernel took when they were cut, and those it did not (closed without one).
	SlowCloseSent, SlowCloseUnsent uint64
	Closed                         map[string]uint64 // closes by CloseReason.Label
	// Refused counts the connections refused before they became WebSockets, by
	// label (the Refused* constants); every label is present, zero or not.
	Refused map[string]uint64

	Draining    bool   // Drain has been called
	DrainTotal  uint64 // WebSocket connections open when Drain started
	DrainClosed uint64 // of those, how many Drain has started closing so far
}

// Refusal labels: why a connection was refused before it became a WebSocket. They
// are metric labels, stable across releases.
const (
	RefusedProxyMissing   = "proxy_missing"               // a trusted source sent no PROXY header (closed)
	RefusedProxyInvalid   = "proxy_invalid"               // a malformed, oversized or UDP/UNIX PROXY header (closed)
	RefusedProxyUntrusted = "proxy_untrusted"             // a PROXY header from a source not in TrustedProxies (closed)
	RefusedConnsPerIP     = "too_many_connections_per_ip" // MaxConnectionsPerIP reached (429)
	RefusedUpgradesPerIP  = "too_many_upgrades_per_ip"    // MaxUpgradesPerIPPerSecond exceeded (429)
	RefusedDraining       = "draining"                    // an upgrade after Drain started (503)
	RefusedHeadTimeout    = "head_timeout"                // the request head did not arrive within HandshakeTimeout (408)
	RefusedHeadTooLarge   = "head_too_large"              // the request head passed MaxHeaderBytes (431)
	RefusedBadRequest     = "bad_request"                 // a malformed request head or WebSocket handshake (400, 426)
	RefusedRejected       = "rejected"                    // Handler.Accept returned an error (its status)
)

// refusal indexes the per-loop refusal counters; refusalLabels names each.
type refusal uint8

const (
	refProxyMissing refusal = iota
	refProxyInvalid
	refProxyUntrusted
	refConnsPerIP
	refUpgradesPerIP
	refDraining
	refHeadTimeout
	refHeadTooLarge
	refBadRequest
	refRejected
	numRefusals
)

var refusalLabels = [numRefusals]string{
	refProxyMissing:   RefusedProxyMissing,
	refProxyInvalid:   RefusedProxyInvalid,
	refProxyUntrusted: RefusedProxyUntrusted,
	refConnsPerIP:     RefusedConnsPerIP,
	refUpgradesPerIP:  RefusedUpgradesPerIP,
	refDraining:       RefusedDraining,
	refHeadTimeout:    RefusedHeadTimeout,
	refHeadTooLarge:   RefusedHeadTooLarge,
	refBadRequest:     RefusedBadRequest,
	refRejected:       RefusedRejected,
}

// counters belong to one loop: only that loop writes them (load+store, no locked
// read-modify-write on the hot path, no cache line shared between loops); Stats
// reads them with atomic loads.
type counters struct {
	accepted, upgraded, httpReqs           atomic.Uint64
	bytesIn, bytesOut, framesIn, framesOut atomic.Uint64
	open                                   atomic.Int64
	refused                                [numRefusals]atomic.Uint64
	drainTotal, drainClosed                atomic.Uint64
	slowSent, slowUnsent, doOverflowClosed atomic.Uint64
	writes, httpRefused                    atomic.Uint64
	_                                      [64]byte // keep the next loop's counters off this cache line
}

// bump adds n to a counter that only the calling loop writes.
func bump(v *atomic.Uint64, n uint64) { v.Store(v.Load() + n) }

// Stats returns a snapshot of the counters.
func (s *Server) Stats() Stats {
	st := Stats{
		MailboxDropped:    s.mailboxDropped.Load(),
		DeliveriesDropped: s.deliveriesDropped.Load(),
		DoRefused:         s.doRefused.Load(),
		Closed:            map[string]uint64{},
		Refused:           make(map[string]uint64, numRefusals),
		Draining:          s.draining.Load(),
	}
	for _, label := range refusalLabels {
		st.Refused[label] = 0
	}
	for _, l := range s.loops {
		c := &l.st
		st.Accepted += c.accepted.Load()
		st.Upgraded += c.upgraded.Load()
		st.HTTPRequests += c.httpReqs.Load()
		st.HTTPRefused += c.httpRefused.Load()
		st.Open += c.open.Load()
		st.BytesIn += c.bytesIn.Load()
		st.BytesOut += c.bytesOut.Load()
		st.FramesIn += c.framesIn.Load()
		st.FramesOut += c.framesOut.Load()
		st.Writes += c.writes.Load()
		for i := range c.refused {
			v := c.refused[i].Load()
			st.Refused[refusalLabels[i]] += v
			st.HandshakeFailed += v
		}
		st.DrainTotal += c.drainTotal.Load()
		st.DrainClosed += c.drainClosed.Load()
		st.SlowCloseSent += c.slowSent.Load()
		st.SlowCloseUnsent += c.slowUnsent.Load()
		st.DoOverflowClosed += c.doOverflowClosed.Load()
		st.FanoutBacklog += l.backlog.Load()
	}
	s.closed.Range(func(k, v any) bool {
		st.Closed[k.(string)] = v.(*atomic.Uint64).Load()
		return true
	})
	return st
}

// countClosed counts one close under its label. Labels are few; after the first
// close of a label this is a lock-free map read and one atomic add.
func (s *Server) countClosed(label string) {
	v, ok := s.closed.Load(label)
	if !ok {
		v, _ = s.closed.LoadOrStore(label, new(atomic.Uint64))
	}
	v.(*atomic.Uint64).Add(1)
}
