// Package redistest starts real redis-server processes for tests: a single server, or
// a Redis Cluster of three masters joined with `redis-cli --cluster create`. Servers
// listen on free loopback ports, keep nothing on disk, and are stopped by their PID
// when the test (or, for the shared ones, the test binary) ends.
//
// redis-server and redis-cli must be on PATH (`make test` installs them from Debian);
// without them the tests fail with a message saying so, rather than skip: a suite that
// silently skips is a suite that does not run.
//
// Tests that only need a Redis share one server (Shared) or one cluster (SharedCluster)
// per test binary and keep apart with a unique key prefix (Prefix); tests that stop,
// freeze or kill their Redis start their own (Start). A package that uses the shared
// ones wraps its TestMain's testing.M with Main, so that they are stopped at the end:
//
//	func TestMain(m *testing.M) { goleak.VerifyTestMain(redistest.Main(m)) }
package redistest

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// startTimeout bounds how long a server may take to answer PING, and a cluster to
// report cluster_state:ok on every node.
const startTimeout = 20 * time.Second

// Server is one redis-server process.
type Server struct {
	// Addr is "127.0.0.1:port".
	Addr string

	dir  string
	args []string

	mu     sync.Mutex
	cmd    *exec.Cmd
	exited chan struct{}
	log    *syncWriter
}

// URL is the server's address as Herald's --redis flag takes it.
func (s *Server) URL() string { return "redis://" + s.Addr }

// PID is the running process's id (0 after Kill or Stop).
func (s *Server) PID() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cmd == nil {
		return 0
	}
	return s.cmd.Process.Pid
}

// Start starts a redis-server of the test's own, stopped when the test ends. extra are
// more redis-server arguments ("--maxmemory", "10mb", …).
func Start(t testing.TB, extra ...string) *Server {
	t.Helper()
	s, err := start(t.TempDir(), extra...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.stop() })
	return s
}

func start(dir string, extra ...string) (*Server, error) {
	if _, err := exec.LookPath("redis-server"); err != nil {
		return nil, errors.New("redistest: redis-server is not on PATH; run `make test` (it installs Debian's redis-server) or apt-get install redis-server")
	}
	var lastErr error
	for range 5 { // a free port can be taken between choosing and binding it
		port, err := freePort()
		if err != nil {
			return nil, err
		}
		args := []string{
			"--port", strconv.Itoa(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
			"--dir", dir, "--daemonize", "no", "--protected-mode", "no", "--logfile", "",
		}
		if slices.Contains(extra, "--cluster-enabled") {
			// The cluster bus defaults to port+10000, which may be taken or past 65535.
			bus, err := freePort()
			if err != nil {
				return nil, err
			}
			args = append(args, "--cluster-port", strconv.Itoa(bus))
		}
		s := &Server{Addr: "127.0.0.1:" + strconv.Itoa(port), dir: dir, args: append(args, extra...)}
		if lastErr = s.run(); lastErr == nil {
			return s, nil
		}
	}
	return nil, lastErr
}

// run starts the process on s.Addr and waits until it answers PING.
func (s *Server) run() error {
	log := &syncWriter{}
	cmd := exec.Command("redis-server", s.args...)
	cmd.Dir = s.dir
	cmd.Stdout = log
	cmd.Stderr = log
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("redistest: start redis-server: %w", err)
	}
	exited := make(chan struct{})
	go func() {
		_ = cmd.Wait()
		close(exited)
	}()
	s.mu.Lock()
	s.cmd, s.exited, s.log = cmd, exited, log
	s.mu.Unlock()
	deadline := time.Now().Add(startTimeout)
	for time.Now().Before(deadline) {
		select {
		case <-exited:
			s.mu.Lock()
			s.cmd = nil
			s.mu.Unlock()
			return fmt.Errorf("redistest: redis-server on %s exited at start:\n%s", s.Addr, log.String())
		default:
		}
		if reply, err := s.Do("PING"); err == nil && reply == "PONG" {
			return nil
		}
		time.Sleep(20 * time.Millisecond)
	}
	s.stop()
	return fmt.Errorf("redistest: redis-server on %s did not answer PING within %v:\n%s", s.Addr, startTimeout, log.String())
}

// Kill sends SIGKILL and waits for the process to exit. The data is lost (nothing is
// saved); Restart starts an empty server on the same port.
func (s *Server) Kill() { s.signalAndWait(syscall.SIGKILL) }

// Stop shuts the server down with SIGTERM and waits for it.
func (s *Server) Stop() { s.signalAndWait(syscall.SIGTERM) }

// Freeze stops the process with SIGSTOP: connections stay open and nothing answers.
func (s *Server) Freeze() { s.signal(syscall.SIGSTOP) }

// Thaw resumes a frozen server with SIGCONT.
func (s *Server) Thaw() { s.signal(syscall.SIGCONT) }

// Restart starts the server again on the same port, after Kill or Stop.
func (s *Server) Restart(t testing.TB) {
	t.Helper()
	var err error
	for range 50 { // the port may take a moment to be free again
		if err = s.run(); err == nil {
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatal(err)
}

func (s *Server) signal(sig syscall.Signal) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cmd != nil {
		_ = s.cmd.Process.Signal(sig)
	}
}

func (s *Server) signalAndWait(sig syscall.Signal) {
	s.mu.Lock()
	cmd, exited := s.cmd, s.exited
	s.cmd = nil
	s.mu.Unlock()
	if cmd == nil {
		return
	}
	_ = cmd.Process.Signal(syscall.SIGCONT) // a frozen process cannot act on SIGTERM
	_ = cmd.Process.Signal(sig)
	select {
	case <-exited:
	case <-time.After(10 * time.Second):
		_ = cmd.Process.Kill()
		<-exited
	}
}

// stop kills the process, whatever its state.
func (s *Server) stop() { s.signalAndWait(syscall.SIGKILL) }

// Log is what the server printed so far.
func (s *Server) Log() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.log == nil {
		return ""
	}
	return s.log.String()
}

// Do runs one command on a fresh connection and returns its reply as text: a simple
// string, an integer or a bulk string as is, an array as its elements joined by
// newlines, an error as an error. It is meant for test set-up and checks (CLIENT KILL,
// DBSIZE, INFO), not for the code under test, which uses its own client.
func (s *Server) Do(args ...string) (string, error) { return Do(s.Addr, args...) }

// Do runs one command against addr; see Server.Do.
func Do(addr string, args ...string) (string, error) {
	conn, err := net.DialTimeout("tcp", addr, 2*time.Second)
	if err != nil {
		return "", err
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(5 * time.Second))
	var b bytes.Buffer
	fmt.Fprintf(&b, "*%d\r\n", len(args))
	for _, a := range args {
		fmt.Fprintf(&b, "$%d\r\n%s\r\n", len(a), a)
	}
	if _, err := conn.Write(b.Bytes()); err != nil {
		return "", err
	}
	return readReply(bufio.NewReader(conn))
}

func readReply(r *bufio.Reader) (string, error) {
	line, err := r.ReadString('\n')
	if err != nil {
		return "", err
	}
	line = strings.TrimSuffix(line, "\r\n")
	if line == "" {
		return "", errors.New("redistest: empty reply line")
	}
	switch line[0] {
	case '+', ':':
		return line[1:], nil
	case '-':
		return "", errors.New(line[1:])
	case '$':
		n, err := strconv.Atoi(line[1:])
		if err != nil || n < 0 {
			return "", err // a nil bulk string is "", nil
		}
		buf := make([]byte, n+2)
		if _, err := io.ReadFull(r, buf); err != nil {
			return "", err
		}
		return string(buf[:n]), nil
	case '*':
		n, err := strconv.Atoi(line[1:])
		if err != nil {
			return "", err
		}
		parts := make([]string, 0, max(n, 0))
		for range n {
			p, err := readReply(r)
			if err != nil {
				return "", err
			}
			parts = append(parts, p)
		}
		return strings.Join(parts, "\n"), nil
	}
	return "", fmt.Errorf("redistest: unexpected reply %q", line)
}

// Cluster is a Redis Cluster of three masters (no replicas).
type Cluster struct {
	Servers []*Server
}

// Addrs are the masters' addresses, as Herald's --redis-cluster flag takes them.
func (c *Cluster) Addrs() []string {
	out := make([]string, len(c.Servers))
	for i, s := range c.Servers {
		out[i] = s.Addr
	}
	return out
}

// StartCluster starts a cluster of the test's own, stopped when the test ends.
func StartCluster(t testing.TB) *Cluster {
	t.Helper()
	c, err := startCluster(t.TempDir())
	if c != nil {
		t.Cleanup(c.stop)
	}
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func startCluster(dir string) (*Cluster, error) {
	if _, err := exec.LookPath("redis-cli"); err != nil {
		return nil, errors.New("redistest: redis-cli is not on PATH; run `make test` (it installs Debian's redis-tools)")
	}
	c := &Cluster{}
	for i := range 3 {
		d := filepath.Join(dir, "node"+strconv.Itoa(i))
		if err := os.MkdirAll(d, 0o755); err != nil {
			return c, err
		}
		s, err := start(d, "--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf",
			"--cluster-node-timeout", "2000")
		if err != nil {
			return c, err
		}
		c.Servers = append(c.Servers, s)
	}
	ctx, cancel := context.WithTimeout(context.Background(), startTimeout)
	defer cancel()
	args := append([]string{"--cluster", "create"}, c.Addrs()...)
	args = append(args, "--cluster-replicas", "0", "--cluster-yes")
	out, err := exec.CommandContext(ctx, "redis-cli", args...).CombinedOutput()
	if err != nil {
		return c, fmt.Errorf("redistest: redis-cli --cluster create: %v\n%s", err, out)
	}
	deadline := time.Now().Add(startTimeout)
	for _, s := range c.Servers {
		for {
			info, err := s.Do("CLUSTER", "INFO")
			if err == nil && strings.Contains(info, "cluster_state:ok") {
				break
			}
			if time.Now().After(deadline) {
				return c, fmt.Errorf("redistest: cluster not ok on %s within %v: %v %s", s.Addr, startTimeout, err, info)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	return c, nil
}

func (c *Cluster) stop() {
	for _, s := range c.Servers {
		s.stop()
	}
}

// --- shared servers -----------------------------------------------------------------

var (
	sharedMu      sync.Mutex
	shared        *Server
	sharedCluster *Cluster
	sharedDir     string
	prefixes      atomic.Int64
)

// Shared returns this test binary's shared server, starting it on first use. Keep tests
// apart with Prefix; never stop or freeze it.
func Shared(t testing.TB) *Server {
	t.Helper()
	sharedMu.Lock()
	defer sharedMu.Unlock()
	if shared == nil {
		dir, err := sharedTempDir()
		if err != nil {
			t.Fatal(err)
		}
		s, err := start(filepath.Join(dir, "single"))
		if err != nil {
			t.Fatal(err)
		}
		shared = s
	}
	return shared
}

// SharedCluster returns this test binary's shared cluster, starting it on first use.
func SharedCluster(t testing.TB) *Cluster {
	t.Helper()
	sharedMu.Lock()
	defer sharedMu.Unlock()
	if sharedCluster == nil {
		dir, err := sharedTempDir()
		if err != nil {
			t.Fatal(err)
		}
		c, err := startCluster(filepath.Join(dir, "cluster"))
		if err != nil {
			if c != nil {
				c.stop()
			}
			t.Fatal(err)
		}
		sharedCluster = c
	}
	return sharedCluster
}

func sharedTempDir() (string, error) {
	if sharedDir != "" {
		return sharedDir, nil
	}
	d, err := os.MkdirTemp("", "redistest-")
	if err != nil {
		return "", err
	}
	for _, sub := range []string{"single", "cluster"} {
		if err := os.MkdirAll(filepath.Join(d, sub), 0o755); err != nil {
			return "", err
		}
	}
	sharedDir = d
	return d, nil
}

// Prefix returns a key prefix unique in this test binary, named after the test.
func Prefix(t testing.TB) string {
	name := strings.Map(func(r rune) rune {
		if r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' {
			return r
		}
		return '-'
	}, t.Name())
	if len(name) > 40 {
		name = name[len(name)-40:]
	}
	return fmt.Sprintf("t%d-%s", prefixes.Add(1), name)
}

// Main wraps a TestMain's testing.M so that the shared servers are stopped after the
// tests ran: goleak.VerifyTestMain(redistest.Main(m)).
func Main(m interface{ Run() int }) interface{ Run() int } { return mainRunner{m} }

type mainRunner struct{ m interface{ Run() int } }

func (r mainRunner) Run() int {
	code := r.m.Run()
	StopShared()
	return code
}

// StopShared stops the shared server and cluster, if they were started.
func StopShared() {
	sharedMu.Lock()
	defer sharedMu.Unlock()
	if shared != nil {
		shared.stop()
		shared = nil
	}
	if sharedCluster != nil {
		sharedCluster.stop()
		sharedCluster = nil
	}
	if sharedDir != "" {
		_ = os.RemoveAll(sharedDir)
		sharedDir = ""
	}
}

func freePort() (int, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port, nil
}

// syncWriter guards a buffer written by the process's output copier and read by Log.
type syncWriter struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (w *syncWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.b.Write(p)
}

func (w *syncWriter) String() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.b.String()
}
