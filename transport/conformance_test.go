package transport

// The RFC 6455 conformance suite: Autobahn|Testsuite's groups 1-7, 9 and 10 (framing,
// pings and pongs, reserved bits, opcodes, fragmentation, UTF-8, close handling,
// limits, misc) written again as a table over raw TCP, for machines where Autobahn
// cannot run. Each case is a client that writes exact bytes (in one write, a write per
// frame, or chopped into small writes) and a list of what the server must send back:
// echoes of the text messages (the test handler echoes), pongs, and either a close
// frame with a given code followed by the end of the TCP stream, or (for a server that
// must stay open) the answer to a sentinel ping and a clean close handshake.
//
// Where RFC 6455 lets a server answer in two ways (fail fast or at the end of an
// invalid UTF-8 message, echo a peer's close code or answer 1000, answer every ping or
// only the latest), the case accepts both and the summary table counts the cases where
// the server took the other, permitted answer as non-strict, as Autobahn does.
//
// In go test ./... each case is a subtest of TestConformance (go test -run
// 'Conformance/5.19' runs one). make conformance runs go test -run Conformance -v
// ./transport -args -conformance.table, which runs the cases without a subtest each
// and prints a table instead: group, cases, passed, failed, non-strict, each permitted
// alternative taken and each failure with the RFC section it checks. Either way a
// failing case fails the test. TestConformanceMutants and
// TestConformanceCatchesBrokenServer show that the cases can fail. The cases are in
// conformance_cases_test.go (groups 1-5, 7, 9, 10) and conformance_utf8_test.go
// (group 6), the raw client in conformance_client_test.go. The expectations live in
// the table rather than in golden files because a case may accept more than one
// answer.

import (
	"bytes"
	"flag"
	"fmt"
	"io"
	"os"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

var confTable = flag.Bool("conformance.table", false, "print the RFC 6455 conformance summary table (make conformance)")

const (
	confTimeout  = 5 * time.Second // per case: every read and write has this deadline
	confWorkers  = 8               // cases run at once
	confLimit    = 16 << 10        // MaxMessageBytes of the limits group's server
	confSentinel = "conformance sentinel"
	confAwait    = 2 * time.Second        // how long a write waits for its await
	confIdle     = 600 * time.Millisecond // the idle server's IdleTimeout
	confPong     = 200 * time.Millisecond // and its PongTimeout
)

// confServer names the servers the cases run against, all with the echo handler.
type confServer uint8

const (
	srvDefault confServer = iota // the default Config
	srvLimits                    // MaxMessageBytes = confLimit
	srvIdle                      // IdleTimeout = confIdle, PongTimeout = confPong; OnIdle sends the text "idle"
)

// confCase is one conformance case.
type confCase struct {
	id   string // Autobahn's case number where one matches; N.H.k is Herald's own case k in group N
	rfc  string // the RFC 6455 section(s) the case checks
	desc string
	send []confWrite // what the client writes, in order
	want outcome     // what RFC 6455 asks of the server
	// alt are other answers RFC 6455 permits; a server taking one passes, counted as
	// non-strict, and why says why it is allowed.
	alt []outcome
	why string
	// server is the server the case runs against.
	server confServer
	// failFast: the strict answer is a close that arrives before the client's last
	// write (the server found the error as soon as the bytes in hand proved it); one
	// that arrives later is non-strict (RFC 6455 8.1 lets a server check a whole
	// message).
	failFast bool
	// sentinel sends the sentinel ping and close even when no outcome stays open
	// (mutants of open cases: so that they fail at once, not at the deadline).
	sentinel bool
}

// confWrite is one write(2) of the client.
type confWrite struct {
	b     []byte
	pause time.Duration // slept before the write
	// await: before this write, the server must have sent at least this many events
	// (messages, control frames) in all, within confAwait. It checks that something
	// is answered before the client goes on (a ping between fragments before the
	// message ends).
	await int
}

// outcome is what the server sends back.
type outcome struct {
	frames []want
	// open: the server keeps the connection open after frames. The client then pings
	// with confSentinel and closes with 1000; the server must answer the ping and echo
	// the close, then close the TCP connection.
	open bool
}

type wantKind uint8

const (
	wText wantKind = iota
	wPong
	wClose
)

type want struct {
	kind wantKind
	p    []byte // text or pong payload
	// codes are the close codes accepted, the first the strict one (the others are
	// permitted alternatives); 0 stands for a close frame without a payload.
	codes []uint16
	// optional: a pong the server may leave out (RFC 6455 5.5.3: when pings arrive
	// faster than it answers, a server may answer only the latest).
	optional bool
}

// --- building cases -------------------------------------------------------------------

// Client frame first bytes not in helpers_test.go.
const (
	finPong  = 0x8a
	fragBin  = 0x02
	fragPing = 0x09
	rsv1     = 0x40
	rsv2     = 0x20
	rsv3     = 0x10
)

// fr is a masked client frame with first byte b0.
func fr(b0 byte, p string) []byte { return clientFrame(b0, []byte(p)) }

func closeFr(code uint16, reason string) []byte {
	return clientFrame(finClose, closePayload(code, reason))
}

// oneWrite sends the frames in a single write.
func oneWrite(frames ...[]byte) []confWrite {
	return []confWrite{{b: bytes.Join(frames, nil)}}
}

// frameWise sends each frame in its own write.
func frameWise(frames ...[]byte) []confWrite {
	w := make([]confWrite, len(frames))
	for i, f := range frames {
		w[i] = confWrite{b: f}
	}
	return w
}

// chopped sends the frames' bytes in writes of n bytes (n = 1: octet-wise), so that
// headers and payloads arrive split at every point.
func chopped(n int, frames ...[]byte) []confWrite {
	all := bytes.Join(frames, nil)
	var w []confWrite
	for len(all) > 0 {
		k := min(n, len(all))
		w = append(w, confWrite{b: all[:k]})
		all = all[k:]
	}
	return w
}

func octetWise(frames ...[]byte) []confWrite { return chopped(1, frames...) }

// fragments builds a text message from parts: the first a text frame without FIN,
// the rest continuations, the last with FIN (one part: a single text frame).
func fragments(parts ...string) [][]byte {
	if len(parts) == 1 {
		return [][]byte{fr(finText, parts[0])}
	}
	out := make([][]byte, len(parts))
	for i, p := range parts {
		switch {
		case i == 0:
			out[i] = fr(fragText, p)
		case i == len(parts)-1:
			out[i] = fr(finCont, p)
		default:
			out[i] = fr(fragCont, p)
		}
	}
	return out
}

// byteFragments is p as a text message with one byte per fragment (and an empty
// final fragment when p has fewer than two bytes, so that it is still fragmented).
func byteFragments(p string) [][]byte {
	parts := make([]string, 0, len(p)+1)
	for i := range len(p) {
		parts = append(parts, p[i:i+1])
	}
	for len(parts) < 2 {
		parts = append(parts, "")
	}
	return fragments(parts...)
}

// pattern is n printable ASCII bytes with a long period, so that reordered or
// dropped chunks change the echo.
func pattern(n int) string {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(' ' + (i+i/95)%95)
	}
	return string(b)
}

func echo(p string) want      { return want{kind: wText, p: []byte(p)} }
func pong(p string) want      { return want{kind: wPong, p: []byte(p)} }
func maybePong(p string) want { return want{kind: wPong, p: []byte(p), optional: true} }

func stays(frames ...want) outcome { return outcome{frames: frames, open: true} }

// closes: the server sends frames, then a close frame with code (or one of the
// permitted alternatives after it), then ends the TCP stream.
func closes(code uint16, frames ...want) outcome {
	return closesAny([]uint16{code}, frames...)
}

func closesAny(codes []uint16, frames ...want) outcome {
	return outcome{frames: append(slices.Clip(frames), want{kind: wClose, codes: codes})}
}

// --- running a case -------------------------------------------------------------------

type confResult struct {
	c         confCase
	err       error
	nonStrict string // the permitted alternative answer the server gave, if any
}

// wants is what o expects, the sentinel's answer and the close handshake included.
func (o outcome) wants() []want {
	if !o.open {
		return o.frames
	}
	return append(slices.Clip(o.frames), pong(confSentinel), want{kind: wClose, codes: []uint16{1000}})
}

func (c confCase) anyOpen() bool {
	return c.want.open || slices.ContainsFunc(c.alt, func(o outcome) bool { return o.open })
}

func runConfCase(addr string, c confCase) (r confResult) {
	r.c = c
	deadline := time.Now().Add(confTimeout)
	cc, err := dialConf(addr, deadline)
	if err != nil {
		r.err = err
		return r
	}
	defer cc.close()
	writes := c.send
	if c.anyOpen() || c.sentinel {
		writes = append(slices.Clip(writes), confWrite{b: append(fr(finPing, confSentinel), closeFr(1000, "")...)})
	}
	early := false
	var awaitErr error
	for i, w := range writes {
		time.Sleep(w.pause)
		if w.await > 0 {
			cc.clientClosed = cc.clientClosed || sentClose(writes[:i])
			cc.pump(time.Now().Add(confAwait), false, func() bool { return len(cc.evs) >= w.await })
			if len(cc.evs) < w.await {
				awaitErr = fmt.Errorf("before write %d: want %d frames from the server within %v, got %d", i+1, w.await, confAwait, len(cc.evs))
				break
			}
		}
		if c.failFast && i == len(c.send)-1 {
			early = cc.received() > 0
		}
		if _, err := cc.nc.Write(w.b); err != nil {
			break // the server may have closed already; the events say whether it should have
		}
	}
	if awaitErr != nil { // the client stopped half-way: the server has no reason to close
		r.err = fmt.Errorf("%v\n\tsent:   %s\n\tserver: %s", awaitErr, showWrites(c.send), showEvents(cc.evs))
		return r
	}
	cc.clientClosed = cc.clientClosed || sentClose(writes)
	cc.pump(deadline, true, func() bool { return false })
	evs := cc.evs
	note, err := match(evs, c.want)
	if err == nil {
		if c.failFast && !early {
			note = join(note, "failed at the end of the message, not at the first invalid byte (RFC 6455 8.1 permits)")
		}
		r.nonStrict = note
		return r
	}
	for _, a := range c.alt {
		if n, aerr := match(evs, a); aerr == nil {
			r.nonStrict = join(c.why, n)
			return r
		}
	}
	r.err = fmt.Errorf("%v\n\tsent:   %s\n\tserver: %s", err, showWrites(c.send), showEvents(evs))
	return r
}

func join(a, b string) string {
	if a == "" || b == "" {
		return a + b
	}
	return a + "; " + b
}

// match checks evs against o; note names a permitted alternative taken (another
// close code, pongs left out).
func match(evs []event, o outcome) (note string, err error) {
	i, skipped := 0, 0
	for _, w := range o.wants() {
		ev := evs[i] // the last event is always evEnd, which no want matches
		if !w.matches(ev) {
			if w.optional {
				skipped++
				continue
			}
			return "", fmt.Errorf("want %s, got %s", w, ev)
		}
		if w.kind == wClose && ev.code != w.codes[0] {
			note = join(note, fmt.Sprintf("closed with %s, not %s", codeName(ev.code), codeName(w.codes[0])))
		}
		i++
	}
	if skipped > 0 {
		note = join(note, fmt.Sprintf("answered only the latest ping, %d pongs left out (RFC 6455 5.5.3 permits)", skipped))
	}
	if ev := evs[i]; ev.kind != evEnd || ev.err != nil {
		return "", fmt.Errorf("after the close frame: want the server to end the TCP stream, got %s", ev)
	}
	return note, nil
}

func (w want) matches(ev event) bool {
	switch w.kind {
	case wText:
		return ev.kind == evText && bytes.Equal(ev.p, w.p)
	case wPong:
		return ev.kind == evPong && bytes.Equal(ev.p, w.p)
	}
	return ev.kind == evClose && slices.Contains(w.codes, ev.code)
}

func (w want) String() string {
	switch w.kind {
	case wText:
		return "text" + showPayload(w.p)
	case wPong:
		return "pong" + showPayload(w.p)
	}
	names := make([]string, len(w.codes))
	for i, c := range w.codes {
		names[i] = codeName(c)
	}
	return "close " + strings.Join(names, " or ")
}

func codeName(c uint16) string {
	if c == 0 {
		return "(no status)"
	}
	return strconv.Itoa(int(c))
}

func showEvents(evs []event) string {
	s := make([]string, len(evs))
	for i, e := range evs {
		s[i] = e.String()
	}
	return strings.Join(s, ", ")
}

func showWrites(ws []confWrite) string {
	n := 0
	for _, w := range ws {
		n += len(w.b)
	}
	first := ws[0].b
	if len(first) > 48 {
		first = first[:48]
	}
	return fmt.Sprintf("%d bytes in %d write(s), first % x", n, len(ws), first)
}

// runConfCases runs cases on a pool of workers and returns the results in order.
// With t, each case is a subtest that fails when the case does.
func runConfCases(t *testing.T, cases []confCase, addr func(confCase) string) []confResult {
	return runConfCasesAs(t, cases, addr, true)
}

// runConfCasesAs is runConfCases; without subtests, a failing case fails t itself
// (the table mode: -v then prints the table instead of a line per case).
func runConfCasesAs(t *testing.T, cases []confCase, addr func(confCase) string, subtests bool) []confResult {
	results := make([]confResult, len(cases))
	idx := make(chan int)
	var wg sync.WaitGroup
	for range confWorkers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range idx {
				c := cases[i]
				if t == nil || !subtests {
					r := runConfCase(addr(c), c)
					results[i] = r
					if t != nil && r.err != nil {
						t.Errorf("case %s, %s (RFC 6455 %s): %v", c.id, c.desc, c.rfc, r.err)
					}
					continue
				}
				t.Run(c.id, func(t *testing.T) { // t.Run may be called from several goroutines
					r := runConfCase(addr(c), c)
					results[i] = r
					switch {
					case r.err != nil:
						t.Errorf("%s (RFC 6455 %s): %v", c.desc, c.rfc, r.err)
					case r.nonStrict != "":
						t.Logf("non-strict: %s", r.nonStrict)
					}
				})
			}
		}()
	}
	for i := range cases {
		idx <- i
	}
	close(idx)
	wg.Wait()
	return results
}

// confServers starts a server of each kind with the echo handler (onMsg, when not
// nil, replaces the echo) and returns the address function for runConfCases.
func confServers(t *testing.T, onMsg func(c *Conn, msg []byte)) func(confCase) string {
	cfgs := map[confServer]Config{
		srvDefault: {},
		srvLimits:  {MaxMessageBytes: confLimit},
		srvIdle:    {IdleTimeout: confIdle, PongTimeout: confPong},
	}
	addrs := map[confServer]string{}
	for k, cfg := range cfgs {
		h := newTestHandler()
		h.onMsg = onMsg
		if k == srvIdle {
			h.onIdle = func(c *Conn) { c.WriteText([]byte("idle")) }
		}
		cfg.Handler = h
		addrs[k] = startServer(t, cfg).Addr()
	}
	return func(c confCase) string { return addrs[c.server] }
}

// --- the tests ------------------------------------------------------------------------

func conformanceCases() []confCase {
	return slices.Concat(framingCases(), pingCases(), reservedBitCases(), opcodeCases(),
		fragmentationCases(), utf8Cases(), closeCases(), limitCases(), miscCases())
}

func TestConformance(t *testing.T) {
	cases := conformanceCases()
	checkConfCases(t, cases)
	addr := confServers(t, nil)
	// With the table, no subtest per case: -v would print 900 lines around it.
	results := runConfCasesAs(t, cases, addr, !*confTable)
	if *confTable {
		printConfTable(os.Stdout, results)
	}
}

// checkConfCases keeps the table well-formed: unique ids, a section and description
// for each, a close at the end of every outcome that does not stay open.
func checkConfCases(t *testing.T, cases []confCase) {
	seen := map[string]bool{}
	for _, c := range cases {
		if seen[c.id] {
			t.Errorf("case id %s used twice", c.id)
		}
		seen[c.id] = true
		if c.rfc == "" || c.desc == "" || len(c.send) == 0 {
			t.Errorf("case %s: rfc, desc and send are required", c.id)
		}
		if _, ok := confGroups[confGroup(c.id)]; !ok {
			t.Errorf("case %s: no group %d", c.id, confGroup(c.id))
		}
		if len(c.alt) > 0 && c.why == "" {
			t.Errorf("case %s: alternatives need a why", c.id)
		}
		for _, o := range append([]outcome{c.want}, c.alt...) {
			ws := o.wants()
			for i, w := range ws {
				if (w.kind == wClose) != (i == len(ws)-1) {
					t.Errorf("case %s: an outcome must end with exactly one close", c.id)
				}
			}
		}
	}
}

// TestConformanceMutants shows that every case can fail: each case is run again with
// its expectation made wrong (another close code, or closed where it stays open; and
// a changed payload where it expects one) and must then fail.
func TestConformanceMutants(t *testing.T) {
	var muts []confCase
	var what []string
	for _, c := range conformanceCases() {
		for _, m := range mutants(c) {
			muts = append(muts, m.c)
			what = append(what, m.what)
		}
	}
	addr := confServers(t, nil)
	for i, r := range runConfCases(nil, muts, addr) {
		if r.err == nil {
			t.Errorf("case %s passes with a wrong expectation: %s", r.c.id, what[i])
		}
	}
}

type mutant struct {
	c    confCase
	what string
}

// mutants returns c with wrong expectations that no permitted answer meets.
func mutants(c confCase) []mutant {
	used := map[uint16]bool{}
	for _, o := range append([]outcome{c.want}, c.alt...) {
		for _, w := range o.wants() {
			for _, code := range w.codes {
				used[code] = true
			}
		}
	}
	var code uint16
	for _, k := range []uint16{1002, 1003, 1007, 1009, 1001} {
		if !used[k] {
			code = k
			break
		}
	}
	base := c
	base.alt, base.why, base.failFast, base.sentinel = nil, "", false, c.anyOpen()
	var out []mutant
	m := base
	m.want = closes(code, c.want.frames[:len(c.want.frames)-boolInt(!c.want.open)]...)
	out = append(out, mutant{m, fmt.Sprintf("close %d instead", code)})
	// Wait for one frame more than the server sends before a write.
	for i, w := range c.send {
		if w.await > 0 {
			m := base
			m.send = slices.Clone(c.send)
			m.send[i].await++
			out = append(out, mutant{m, fmt.Sprintf("write %d awaits %d frames", i+1, m.send[i].await)})
			break
		}
	}
	// Change the payload of the last text or pong the server must send.
	for i := len(c.want.frames) - 1; i >= 0; i-- {
		if w := c.want.frames[i]; w.kind != wClose && !w.optional {
			m := base
			m.want.frames = slices.Clone(c.want.frames)
			m.want.frames[i].p = append(bytes.Clone(w.p), '!')
			out = append(out, mutant{m, fmt.Sprintf("frame %d's payload changed", i)})
			break
		}
	}
	return out
}

func boolInt(b bool) int {
	if b {
		return 1
	}
	return 0
}

// TestConformanceCatchesBrokenServer runs the cases that need an echo against servers
// that answer wrongly: each such case must fail.
func TestConformanceCatchesBrokenServer(t *testing.T) {
	var echoCases []confCase
	for _, c := range conformanceCases() {
		needsEcho := c.server != srvIdle // its text comes from OnIdle, not the echo
		for _, o := range append([]outcome{c.want}, c.alt...) {
			if !slices.ContainsFunc(o.frames, func(w want) bool { return w.kind == wText }) {
				needsEcho = false
			}
		}
		if needsEcho {
			echoCases = append(echoCases, c)
		}
	}
	if len(echoCases) < 100 {
		t.Fatalf("only %d cases need an echo", len(echoCases))
	}
	broken := map[string]func(c *Conn, msg []byte){
		"echo_plus_one_byte": func(c *Conn, msg []byte) { c.WriteText(append(bytes.Clone(msg), '!')) },
		"close_1000_instead": func(c *Conn, msg []byte) { c.Close(CloseNormal) },
	}
	for name, onMsg := range broken {
		t.Run(name, func(t *testing.T) {
			addr := confServers(t, onMsg)
			for _, r := range runConfCases(nil, echoCases, addr) {
				if r.err == nil {
					t.Errorf("case %s passes against a broken server", r.c.id)
				}
			}
		})
	}
}

// --- the summary ----------------------------------------------------------------------

var confGroups = map[int]string{
	1: "framing", 2: "pings and pongs", 3: "reserved bits", 4: "opcodes", 5: "fragmentation",
	6: "UTF-8", 7: "close handling", 9: "limits", 10: "misc",
}

func confGroup(id string) int {
	g, _, _ := strings.Cut(id, ".")
	n, _ := strconv.Atoi(g)
	return n
}

func printConfTable(w io.Writer, results []confResult) {
	type row struct{ cases, passed, failed, nonStrict int }
	rows := map[int]*row{}
	var total row
	var fails, lax []confResult
	for _, r := range results {
		g := confGroup(r.c.id)
		if rows[g] == nil {
			rows[g] = &row{}
		}
		for _, x := range []*row{rows[g], &total} {
			x.cases++
			switch {
			case r.err != nil:
				x.failed++
			default:
				x.passed++
				if r.nonStrict != "" {
					x.nonStrict++
				}
			}
		}
		if r.err != nil {
			fails = append(fails, r)
		} else if r.nonStrict != "" {
			lax = append(lax, r)
		}
	}
	groups := make([]int, 0, len(rows))
	for g := range rows {
		groups = append(groups, g)
	}
	sort.Ints(groups)
	fmt.Fprintln(w, "\nRFC 6455 conformance (Autobahn|Testsuite groups 1-7, 9, 10 over raw TCP)")
	fmt.Fprintf(w, "%-22s %6s %7s %7s %11s\n", "group", "cases", "passed", "failed", "non-strict")
	for _, g := range groups {
		r := rows[g]
		fmt.Fprintf(w, "%-22s %6d %7d %7d %11d\n", fmt.Sprintf("%2d %s", g, confGroups[g]), r.cases, r.passed, r.failed, r.nonStrict)
	}
	fmt.Fprintf(w, "%-22s %6d %7d %7d %11d\n", "total", total.cases, total.passed, total.failed, total.nonStrict)
	if len(lax) > 0 {
		fmt.Fprintln(w, "\nnon-strict (an answer RFC 6455 also permits):")
		for _, r := range lax {
			fmt.Fprintf(w, "  %-10s RFC 6455 %-12s %s: %s\n", r.c.id, r.c.rfc, r.c.desc, r.nonStrict)
		}
	}
	if len(fails) > 0 {
		fmt.Fprintln(w, "\nfailures:")
		for _, r := range fails {
			fmt.Fprintf(w, "  %-10s RFC 6455 %-12s %s\n\t%v\n", r.c.id, r.c.rfc, r.c.desc, r.err)
		}
	}
}
