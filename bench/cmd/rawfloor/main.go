// Command rawfloor is the raw write floor that Herald's fan-out figures are compared
// with: the least a server can do to deliver one message to N WebSocket connections.
//
// It accepts WebSocket connections on /app/{key} (a goroutine per handshake, through
// net/http), answers 101 followed by a pre-built pusher:connection_established and a
// pre-built pusher_internal:subscription_succeeded for --channel, and from then on
// never reads the socket again: it keeps only the descriptor, in blocking mode. POST
// /apps/{id}/events with a JSON body {name, channel, data} (signature ignored) builds
// the event's frame once and has one writer goroutine per CPU write(2) it to each of
// its share of the sockets; the request is answered 200 {} when every write returned.
// Nothing else: no subscription index, no queues, no pings, no reads.
//
// It prints "rawfloor: serving on ADDR" when ready and exits on SIGTERM or SIGINT,
// closing every socket.
package main

import (
	"context"
	"crypto/sha1"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/signal"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

var (
	errBadEvent = errors.New("rawfloor: bad event")
	errStopped  = errors.New("rawfloor: stopped")
)

func main() {
	if err := run(os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "rawfloor:", err)
		os.Exit(1)
	}
}

func run(args []string) error {
	fs := flag.NewFlagSet("rawfloor", flag.ContinueOnError)
	addr := fs.String("addr", "127.0.0.1:6101", "listen address: WebSocket /app/{key} and POST /apps/{id}/events")
	channel := fs.String("channel", "bench", "channel named in the pre-built subscription_succeeded")
	writers := fs.Int("writers", runtime.NumCPU(), "writer goroutines (sockets are split between them)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	f := newFloor(*channel, max(*writers, 1))
	defer f.close()

	ln, err := net.Listen("tcp4", *addr)
	if err != nil {
		return err
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /app/{key}", f.upgrade)
	mux.HandleFunc("POST /apps/{id}/events", f.trigger)
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	serveErr := make(chan error, 1)
	go func() { serveErr <- srv.Serve(ln) }()
	fmt.Printf("rawfloor: serving on %s with %d writers\n", ln.Addr(), len(f.shards))

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	select {
	case <-ctx.Done():
	case err := <-serveErr:
		return err
	}
	sctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	err = srv.Shutdown(sctx)
	<-serveErr
	return err
}

// floor holds the sockets, split into one shard per writer goroutine.
type floor struct {
	established []byte // pre-built frames sent after the 101
	nextSocket  atomic.Uint64
	shards      []*shard
	stop        chan struct{} // closed by close: writers return, triggers give up
	wg          sync.WaitGroup
}

type shard struct {
	mu  sync.Mutex // guards fds
	fds []int
	// jobs is bounded: a trigger waits for room.
	jobs chan job
}

type job struct {
	frame []byte
	done  chan<- struct{} // one token per shard, buffered for all of them
}

func newFloor(channel string, writers int) *floor {
	f := &floor{stop: make(chan struct{})}
	f.established = append(f.established, serverFrame(`{"event":"pusher:connection_established","data":"{\"socket_id\":\"1.1\",\"activity_timeout\":120}"}`)...)
	f.established = append(f.established, serverFrame(`{"event":"pusher_internal:subscription_succeeded","channel":`+strconv.Quote(channel)+`,"data":"{}"}`)...)
	for i := 0; i < writers; i++ {
		s := &shard{jobs: make(chan job, 64)}
		f.shards = append(f.shards, s)
		f.wg.Add(1)
		go func() {
			defer f.wg.Done()
			s.write(f.stop)
		}()
	}
	return f
}

// close stops the writers, waits for them and closes every socket.
func (f *floor) close() {
	close(f.stop)
	f.wg.Wait()
	for _, s := range f.shards {
		s.mu.Lock()
		for _, fd := range s.fds {
			unix.Close(fd)
		}
		s.fds = nil
		s.mu.Unlock()
	}
}

// write is a writer goroutine: for each job, write(2) the frame to every socket of
// the shard. Sockets are blocking, so a full socket buffer makes it wait, as the
// floor should.
func (s *shard) write(stop <-chan struct{}) {
	for {
		var j job
		select {
		case j = <-s.jobs:
		case <-stop:
			return
		}
		s.mu.Lock()
		fds := s.fds
		s.mu.Unlock()
		var dead []int
		for _, fd := range fds {
			if !writeAll(fd, j.frame) {
				dead = append(dead, fd)
			}
		}
		if len(dead) > 0 {
			s.drop(dead)
		}
		j.done <- struct{}{}
	}
}

func writeAll(fd int, b []byte) bool {
	for len(b) > 0 {
		n, err := unix.Write(fd, b)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return false
		}
		b = b[n:]
	}
	return true
}

func (s *shard) drop(dead []int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	gone := map[int]bool{}
	for _, fd := range dead {
		gone[fd] = true
		unix.Close(fd)
	}
	kept := s.fds[:0:0]
	for _, fd := range s.fds {
		if !gone[fd] {
			kept = append(kept, fd)
		}
	}
	s.fds = kept
}

func (f *floor) upgrade(w http.ResponseWriter, r *http.Request) {
	key := r.Header.Get("Sec-WebSocket-Key")
	if !strings.EqualFold(r.Header.Get("Upgrade"), "websocket") || key == "" {
		http.Error(w, "not a websocket upgrade", http.StatusBadRequest)
		return
	}
	hj, ok := w.(http.Hijacker)
	if !ok {
		http.Error(w, "cannot hijack", http.StatusInternalServerError)
		return
	}
	conn, _, err := hj.Hijack()
	if err != nil {
		return
	}
	defer conn.Close()
	sum := sha1.Sum([]byte(key + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"))
	resp := make([]byte, 0, 256+len(f.established))
	resp = append(resp, "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: "...)
	resp = base64.StdEncoding.AppendEncode(resp, sum[:])
	resp = append(resp, "\r\n\r\n"...)
	resp = append(resp, f.established...)
	if _, err := conn.Write(resp); err != nil {
		return
	}
	// Keep a blocking duplicate of the descriptor and let net/http's copy go.
	tc, ok := conn.(*net.TCPConn)
	if !ok {
		return
	}
	rc, err := tc.SyscallConn()
	if err != nil {
		return
	}
	fd := -1
	_ = rc.Control(func(s uintptr) { fd, err = unix.Dup(int(s)) })
	if err != nil || fd < 0 {
		return
	}
	if err := unix.SetNonblock(fd, false); err != nil {
		unix.Close(fd)
		return
	}
	s := f.shards[f.nextSocket.Add(1)%uint64(len(f.shards))]
	s.mu.Lock()
	s.fds = append(s.fds, fd)
	s.mu.Unlock()
}

func (f *floor) trigger(w http.ResponseWriter, r *http.Request) {
	frame, err := eventFrame(io.LimitReader(r.Body, 1<<20))
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	if err := f.broadcast(r.Context(), frame); err != nil {
		http.Error(w, err.Error(), http.StatusServiceUnavailable)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	_, _ = io.WriteString(w, "{}")
}

// broadcast hands the frame to every writer and waits until each has written it to
// all of its sockets.
func (f *floor) broadcast(ctx context.Context, frame []byte) error {
	done := make(chan struct{}, len(f.shards))
	for _, s := range f.shards {
		select {
		case s.jobs <- job{frame: frame, done: done}:
		case <-f.stop:
			return errStopped
		case <-ctx.Done():
			return fmt.Errorf("%w: %w", errStopped, ctx.Err())
		}
	}
	for range f.shards {
		select {
		case <-done:
		case <-f.stop:
			return errStopped
		}
	}
	return nil
}

// eventFrame builds the Pusher event frame for a trigger body, once.
func eventFrame(body io.Reader) ([]byte, error) {
	var ev struct {
		Name    string `json:"name"`
		Channel string `json:"channel"`
		Data    string `json:"data"`
	}
	if err := json.NewDecoder(body).Decode(&ev); err != nil {
		return nil, fmt.Errorf("%w: %w", errBadEvent, err)
	}
	if ev.Name == "" || ev.Channel == "" {
		return nil, fmt.Errorf("%w: name and channel are required", errBadEvent)
	}
	msg, err := json.Marshal(struct {
		Event   string `json:"event"`
		Channel string `json:"channel"`
		Data    string `json:"data"`
	}{ev.Name, ev.Channel, ev.Data})
	if err != nil {
		return nil, fmt.Errorf("%w: %w", errBadEvent, err)
	}
	return serverFrame(string(msg)), nil
}

// serverFrame is an unmasked final text frame.
func serverFrame(msg string) []byte {
	b := []byte{0x81}
	switch n := len(msg); {
	case n < 126:
		b = append(b, byte(n))
	case n <= 0xffff:
		b = append(b, 126, byte(n>>8), byte(n))
	default:
		b = append(b, 127)
		b = binary.BigEndian.AppendUint64(b, uint64(n))
	}
	return append(b, msg...)
}
