package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

const (
	startTimeout = 30 * time.Second // herald prints "serving"
	stopTimeout  = 25 * time.Second // herald exits after SIGTERM, within its --shutdown-timeout (15 s)
	nodeTimeout  = 90 * time.Second // one test file
)

// app is one entry of apps.json.
type app struct {
	ID                       string   `json:"id"`
	Key                      string   `json:"key"`
	Secret                   string   `json:"secret"`
	ClientEvents             bool     `json:"client_events"`
	MaxConnections           int      `json:"max_connections"`
	MaxPresenceMembers       int      `json:"max_presence_members,omitempty"`
	AllowedOrigins           []string `json:"allowed_origins"`
	MaxClientEventsPerSecond int      `json:"max_client_events_per_second,omitempty"`
	MaxEventBytes            int      `json:"max_event_bytes,omitempty"`
	MaxChannelsPerEvent      int      `json:"max_channels_per_event,omitempty"`
	MaxBatchEvents           int      `json:"max_batch_events,omitempty"`
	// The apps of webhooks_test.go: subscription counts, authorized connections
	// ("2s") and webhook endpoints.
	SubscriptionCount         bool   `json:"subscription_count,omitempty"`
	UserAuthenticationTimeout string `json:"user_authentication_timeout,omitempty"`
	Webhooks                  []hook `json:"webhooks,omitempty"`
}

var (
	mainApp = app{ID: "1", Key: "e2e-key-1", Secret: "e2e-secret-1", ClientEvents: true, MaxPresenceMembers: 100,
		AllowedOrigins: []string{}, MaxClientEventsPerSecond: 10, MaxEventBytes: 10240, MaxChannelsPerEvent: 100, MaxBatchEvents: 10}
	otherApp = app{ID: "2", Key: "e2e-key-2", Secret: "e2e-secret-2", AllowedOrigins: []string{}, MaxPresenceMembers: 3}
	quotaApp = app{ID: "3", Key: "e2e-key-3", Secret: "e2e-secret-3", AllowedOrigins: []string{}, MaxConnections: 2}
	flagApp  = app{ID: "7", Key: "e2e-key-7", Secret: "e2e-secret-7"}
)

func appEnv(prefix string, a app) []string {
	return []string{prefix + "_ID=" + a.ID, prefix + "_KEY=" + a.Key, prefix + "_SECRET=" + a.Secret}
}

// writeApps writes an apps.json with these apps into a temporary directory of the test
// and returns its path, for --config.
func writeApps(t *testing.T, apps ...app) string {
	t.Helper()
	b, err := json.Marshal(map[string][]app{"apps": apps})
	if err != nil {
		t.Fatal(err)
	}
	cfg := filepath.Join(t.TempDir(), "apps.json")
	if err := os.WriteFile(cfg, b, 0o600); err != nil {
		t.Fatal(err)
	}
	return cfg
}

// The test files, by the herald instance they run against.
var (
	mainFiles = []string{
		"connection.test.mjs",
		"channels.test.mjs",
		"presence.test.mjs",
		"client_events.test.mjs",
		"users.test.mjs",
		"rest.test.mjs",
		"admin.test.mjs",
	}
	limitsFile = "limits.test.mjs"
	drainFile  = "drain.test.mjs"
	// cluster_test.go: each against a cluster of its own.
	clusterFile         = "cluster.test.mjs"
	clusterFailuresFile = "cluster_failures.test.mjs"
	// webhooks_test.go: one node, and three on Redis, each with a webhook receiver.
	webhooksFile        = "webhooks.test.mjs"
	clusterWebhooksFile = "cluster_webhooks.test.mjs"
	// haproxy_test.go: two nodes behind a real HAProxy.
	haproxyFile = "haproxy.test.mjs"
)

func TestMain(m *testing.M) {
	code := m.Run()
	if buildPath != "" {
		_ = os.RemoveAll(filepath.Dir(buildPath))
	}
	os.Exit(code)
}

// TestEveryFileRuns fails when a js/*.test.mjs file is not given to an instance above,
// so that a new file cannot be skipped silently.
func TestEveryFileRuns(t *testing.T) {
	found, err := filepath.Glob(filepath.Join("js", "*.test.mjs"))
	if err != nil {
		t.Fatal(err)
	}
	assigned := map[string]bool{limitsFile: true, drainFile: true, clusterFile: true, clusterFailuresFile: true,
		webhooksFile: true, clusterWebhooksFile: true, haproxyFile: true}
	for _, f := range mainFiles {
		assigned[f] = true
	}
	for _, f := range found {
		if !assigned[filepath.Base(f)] {
			t.Errorf("%s is not run: add it to mainFiles (or give it its own instance) in e2e_test.go", f)
		}
		delete(assigned, filepath.Base(f))
	}
	for f := range assigned {
		t.Errorf("e2e_test.go runs %s, which does not exist", f)
	}
}

// TestPusherJS runs the main files against one herald configured by apps.json.
func TestPusherJS(t *testing.T) {
	t.Parallel()
	cfg := writeApps(t, mainApp, otherApp, quotaApp)
	h := startHerald(t, "main", "--config", cfg)
	env := append(appEnv("APP", mainApp), appEnv("APP2", otherApp)...)
	env = append(env, "APP2_MAX_PRESENCE_MEMBERS="+strconv.Itoa(otherApp.MaxPresenceMembers))
	env = append(env, appEnv("APP3", quotaApp)...)
	env = append(env, "APP3_MAX_CONNECTIONS="+strconv.Itoa(quotaApp.MaxConnections))
	for _, f := range mainFiles {
		t.Run(strings.TrimSuffix(f, ".test.mjs"), func(t *testing.T) { runNode(t, []*herald{h}, f, env...) })
	}
	h.stop(t)
}

// TestLimits runs limits.test.mjs against a herald configured by flags only: no
// client events, a node connection limit and a short activity timeout.
func TestLimits(t *testing.T) {
	t.Parallel()
	const maxConns, activity = 3, 2
	h := startHerald(t, "limits",
		"--app-id", flagApp.ID, "--app-key", flagApp.Key, "--app-secret", flagApp.Secret,
		"--max-connections", strconv.Itoa(maxConns), "--activity-timeout", fmt.Sprintf("%ds", activity))
	env := append(appEnv("APP", flagApp), "E2E_MAX_CONNECTIONS="+strconv.Itoa(maxConns), "E2E_ACTIVITY_TIMEOUT="+strconv.Itoa(activity))
	t.Run("limits", func(t *testing.T) { runNode(t, []*herald{h}, limitsFile, env...) })
	h.stop(t)
}

// TestDrain runs drain.test.mjs, which sends SIGTERM to herald itself; herald must then
// close every client with 4200 and exit 0.
func TestDrain(t *testing.T) {
	t.Parallel()
	h := startHerald(t, "drain", "--app-id", mainApp.ID, "--app-key", mainApp.Key, "--app-secret", mainApp.Secret)
	if t.Run("drain", func(t *testing.T) { runNode(t, []*herald{h}, drainFile, appEnv("APP", mainApp)...) }) {
		select {
		case <-h.exited:
		case <-time.After(stopTimeout):
			t.Errorf("herald did not exit within %v of the SIGTERM sent by drain.test.mjs", stopTimeout)
		}
	}
	h.stop(t) // checks the exit status: 0
}

// --- herald -----------------------------------------------------------------------------

var (
	buildOnce sync.Once
	buildPath string
	buildErr  error
)

// heraldBinary builds ../cmd/herald with the race detector, once per test process.
func heraldBinary(t *testing.T) string {
	t.Helper()
	buildOnce.Do(func() {
		dir, err := os.MkdirTemp("", "herald-e2e-")
		if err != nil {
			buildErr = err
			return
		}
		buildPath = filepath.Join(dir, "herald")
		// go test puts its own GOROOT/bin first on PATH.
		gobin, err := exec.LookPath("go")
		if err != nil {
			buildErr = err
			return
		}
		cmd := exec.Command(gobin, "build", "-race", "-o", buildPath, "../cmd/herald")
		out, err := cmd.CombinedOutput()
		if err != nil {
			buildErr = fmt.Errorf("go build -race ../cmd/herald: %v\n%s", err, out)
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return buildPath
}

// herald is a running herald child process.
type herald struct {
	name        string
	cmd         *exec.Cmd
	addr, admin string
	out         *logWriter
	exited      chan struct{} // closed when the process has exited
	waitErr     error         // valid once exited is closed
	stopOnce    sync.Once
	killed      atomic.Bool // killed on purpose (kill): its exit status is not checked
}

// freePort returns a loopback port nobody listens on right now.
func freePort(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return strconv.Itoa(ln.Addr().(*net.TCPAddr).Port)
}

// startHerald starts the race-built herald on free loopback ports with the given extra
// flags and waits until it says it is serving. It is stopped at the end of the test.
func startHerald(t *testing.T, name string, args ...string) *herald {
	t.Helper()
	bin := heraldBinary(t)
	h := &herald{
		name:   name,
		addr:   "127.0.0.1:" + freePort(t),
		admin:  "127.0.0.1:" + freePort(t),
		exited: make(chan struct{}),
	}
	serving := make(chan struct{})
	h.out = &logWriter{t: t, prefix: "herald[" + name + "]: ", onLine: func(line string) {
		if strings.Contains(line, "serving") {
			select {
			case <-serving:
			default:
				close(serving)
			}
		}
	}}
	h.cmd = exec.Command(bin, append([]string{"--addr", h.addr, "--admin-addr", h.admin, "--log-level", "info"}, args...)...)
	h.cmd.Env = heraldEnv()
	h.cmd.Stdout = h.out
	h.cmd.Stderr = h.out
	if err := h.cmd.Start(); err != nil {
		t.Fatalf("start herald: %v", err)
	}
	go func() {
		h.waitErr = h.cmd.Wait()
		close(h.exited)
	}()
	t.Cleanup(func() { h.stop(t) })
	select {
	case <-serving:
	case <-h.exited:
		t.Fatalf("herald[%s] exited before serving: %v", name, h.waitErr)
	case <-time.After(startTimeout):
		t.Fatalf("herald[%s] did not print \"serving\" within %v", name, startTimeout)
	}
	return h
}

// heraldEnv is this process's environment without HERALD_* variables, so that a
// developer's settings do not change the server under test.
func heraldEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "HERALD_") {
			env = append(env, kv)
		}
	}
	return env
}

// kill sends SIGKILL, as a test that crashes a node on purpose does, and waits for the
// process to exit. stop then checks its log (data races, panics) but not its exit status.
// It may be called from any goroutine.
func (h *herald) kill() {
	h.killed.Store(true)
	_ = h.cmd.Process.Kill()
	<-h.exited
}

// stop sends SIGTERM (SIGKILL after stopTimeout), waits for the process and checks it
// exited with status 0 (unless kill killed it) and reported no data race. It runs once.
func (h *herald) stop(t *testing.T) {
	t.Helper()
	h.stopOnce.Do(func() {
		select {
		case <-h.exited:
		default:
			_ = h.cmd.Process.Signal(syscall.SIGTERM)
			select {
			case <-h.exited:
			case <-time.After(stopTimeout):
				t.Errorf("herald[%s] did not exit within %v of SIGTERM; killing it", h.name, stopTimeout)
				_ = h.cmd.Process.Kill()
				<-h.exited
			}
		}
		if h.waitErr != nil && !h.killed.Load() {
			var ee *exec.ExitError
			if errors.As(h.waitErr, &ee) {
				t.Errorf("herald[%s] exited with %v, want status 0 after SIGTERM", h.name, ee.ProcessState)
			} else {
				t.Errorf("herald[%s]: %v", h.name, h.waitErr)
			}
		}
		h.out.flush()
		if s := h.out.String(); strings.Contains(s, "WARNING: DATA RACE") {
			t.Errorf("herald[%s] reported a data race (see its log above)", h.name)
		} else if strings.Contains(s, "panic:") {
			t.Errorf("herald[%s] panicked (see its log above)", h.name)
		}
	})
}

// --- node -------------------------------------------------------------------------------

func jsDir(t *testing.T) string {
	t.Helper()
	dir, err := filepath.Abs("js")
	if err != nil {
		t.Fatal(err)
	}
	for _, pkg := range []string{"pusher-js", "pusher"} {
		if _, err := os.Stat(filepath.Join(dir, "node_modules", pkg, "package.json")); err != nil {
			t.Fatalf("e2e/js/node_modules/%s is missing: run make test (it installs e2e/js/node_modules), or npm ci --prefix e2e/js", pkg)
		}
	}
	return dir
}

var nodeVersion = regexp.MustCompile(`^v(\d+)\.(\d+)`)

// nodeBinary finds node and checks it is recent enough for the flags runNode uses
// (--test-concurrency needs 20.10, --test-force-exit 20.14).
func nodeBinary(t *testing.T) string {
	t.Helper()
	node, err := exec.LookPath("node")
	if err != nil {
		t.Fatalf("node is not on PATH (node >= 20.14 is needed for the e2e suite; make test installs it): %v", err)
	}
	out, err := exec.Command(node, "--version").Output()
	if err != nil {
		t.Fatalf("node --version: %v", err)
	}
	m := nodeVersion.FindStringSubmatch(strings.TrimSpace(string(out)))
	if m == nil {
		t.Fatalf("node --version said %q", out)
	}
	major, _ := strconv.Atoi(m[1])
	minor, _ := strconv.Atoi(m[2])
	if major < 20 || major == 20 && minor < 14 {
		t.Fatalf("node %s is too old for the e2e suite: need >= 20.14", strings.TrimSpace(string(out)))
	}
	return node
}

// fileTimeout is node's --test-timeout for a file. With one process per file it bounds
// the whole file, not only each test without a timeout of its own (every test sets
// one): cluster_failures.test.mjs waits out two 5 s Redis outages and their recoveries,
// the webhook files the 3 s departure grace several times (about 20 s each).
func fileTimeout(file string) time.Duration {
	switch file {
	case clusterFailuresFile:
		return 60 * time.Second
	case webhooksFile, clusterWebhooksFile:
		return 45 * time.Second
	}
	return 30 * time.Second
}

// runNode runs one test file with node's test runner against the herald nodes (the first
// is the one the single-node helpers of lib.mjs use) and fails t if any test in it fails.
// The spec reporter's output goes to the test log.
//
// The JS side gets the first node as HERALD_HOST, HERALD_PORT, HERALD_ADMIN and
// HERALD_PID, and every node, in order, as HERALD_NODES: a JSON array of
// {"host","port","admin","pid"}.
func runNode(t *testing.T, nodes []*herald, file string, env ...string) {
	dir := jsDir(t)
	node := nodeBinary(t)
	ctx, cancel := context.WithTimeout(context.Background(), nodeTimeout)
	defer cancel()
	type nodeEnv struct {
		Host  string `json:"host"`
		Port  int    `json:"port"`
		Admin string `json:"admin"`
		PID   int    `json:"pid"`
	}
	var all []nodeEnv
	for _, h := range nodes {
		host, port, _ := net.SplitHostPort(h.addr)
		p, _ := strconv.Atoi(port)
		all = append(all, nodeEnv{Host: host, Port: p, Admin: h.admin, PID: h.cmd.Process.Pid})
	}
	nodesJSON, err := json.Marshal(all)
	if err != nil {
		t.Fatal(err)
	}
	first := all[0]
	// --test-force-exit: when herald closes a socket with a 4xxx code pusher-js calls
	// close() on the already closed faye-websocket client, which arms a 30 s close timer
	// that nothing clears (faye's API.close); without the flag the file would linger
	// 30 s after its last test (measured with users.test.mjs's terminate test).
	cmd := exec.CommandContext(ctx, node, "--test", "--test-reporter=spec", "--test-concurrency=1",
		"--test-timeout="+strconv.FormatInt(fileTimeout(file).Milliseconds(), 10), "--test-force-exit", file)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "NO_COLOR=1", "FORCE_COLOR=0",
		"HERALD_HOST="+first.Host, "HERALD_PORT="+strconv.Itoa(first.Port), "HERALD_ADMIN="+first.Admin,
		"HERALD_PID="+strconv.Itoa(first.PID), "HERALD_NODES="+string(nodesJSON))
	cmd.Env = append(cmd.Env, env...)
	cmd.WaitDelay = 5 * time.Second
	start := time.Now()
	out, err := cmd.CombinedOutput()
	t.Logf("node --test %s (%v):\n%s", file, time.Since(start).Round(time.Millisecond), out)
	if ctx.Err() != nil {
		t.Fatalf("node --test %s did not finish within %v", file, nodeTimeout)
	}
	if err != nil {
		t.Fatalf("node --test %s failed: %v (the failing tests and the frames they saw are in the output above)", file, err)
	}
	if !bytes.Contains(out, []byte("ℹ fail 0")) {
		t.Fatalf("node --test %s: no \"fail 0\" summary in its output", file)
	}
}

// --- logging ----------------------------------------------------------------------------

// logWriter sends a child process's output to the test log line by line and keeps it
// for later checks (data race reports, panics).
type logWriter struct {
	t      *testing.T
	prefix string
	onLine func(string)

	mu      sync.Mutex
	partial []byte
	all     bytes.Buffer
}

func (w *logWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.all.Write(p)
	w.partial = append(w.partial, p...)
	for {
		i := bytes.IndexByte(w.partial, '\n')
		if i < 0 {
			break
		}
		w.line(string(w.partial[:i]))
		w.partial = w.partial[i+1:]
	}
	return len(p), nil
}

func (w *logWriter) line(s string) {
	w.t.Log(w.prefix + s)
	if w.onLine != nil {
		w.onLine(s)
	}
}

func (w *logWriter) flush() {
	w.mu.Lock()
	defer w.mu.Unlock()
	if len(w.partial) > 0 {
		w.line(string(w.partial))
		w.partial = nil
	}
}

func (w *logWriter) String() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.all.String()
}
