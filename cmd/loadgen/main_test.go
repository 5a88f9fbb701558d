package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/herald-rt/herald/loadgen"
)

// These tests run the built loadgen binary (which spawns its own workers) against a
// built Herald on loopback.

var binDir string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "loadgen-cmd-test-")
	if err != nil {
		panic(err)
	}
	binDir = dir
	code := func() int {
		for _, b := range []struct{ out, pkg string }{{"loadgen", "."}, {"herald", "../herald"}} {
			out, err := exec.Command("go", "build", "-o", filepath.Join(dir, b.out), b.pkg).CombinedOutput()
			if err != nil {
				fmt.Fprintf(os.Stderr, "go build %s: %v\n%s", b.pkg, err, out)
				return 1
			}
		}
		return m.Run()
	}()
	os.RemoveAll(dir)
	os.Exit(code)
}

func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// proc is a started child process whose output is collected.
type proc struct {
	cmd            *exec.Cmd
	mu             sync.Mutex
	stdout, stderr bytes.Buffer
	lines          chan string // stderr lines, for waiting on log messages
	exited         chan struct{}
	code           int
}

type lockedWriter struct {
	mu  *sync.Mutex
	buf *bytes.Buffer
}

func (w lockedWriter) Write(b []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.buf.Write(b)
}

// start runs bin with args; it is killed by PID in t.Cleanup if still running.
func start(t *testing.T, bin string, args ...string) *proc {
	t.Helper()
	p := &proc{cmd: exec.Command(filepath.Join(binDir, bin), args...), lines: make(chan string, 1024),
		exited: make(chan struct{})}
	p.cmd.Stdout = lockedWriter{&p.mu, &p.stdout}
	errPipe, err := p.cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	copied := make(chan struct{})
	go func() {
		defer close(copied)
		sc := bufio.NewScanner(errPipe)
		for sc.Scan() {
			p.mu.Lock()
			p.stderr.WriteString(sc.Text() + "\n")
			p.mu.Unlock()
			select {
			case p.lines <- sc.Text():
			default:
			}
		}
	}()
	go func() {
		<-copied
		err := p.cmd.Wait()
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			p.code = ee.ExitCode()
		} else if err != nil {
			p.code = -1
		}
		close(p.exited)
	}()
	t.Cleanup(func() {
		select {
		case <-p.exited:
		default:
			_ = syscall.Kill(p.cmd.Process.Pid, syscall.SIGKILL)
			<-p.exited
		}
	})
	return p
}

func (p *proc) output() (string, string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.stdout.String(), p.stderr.String()
}

// wait waits for the exit within d and returns the exit code.
func (p *proc) wait(t *testing.T, d time.Duration) int {
	t.Helper()
	select {
	case <-p.exited:
		return p.code
	case <-time.After(d):
		out, errs := p.output()
		t.Fatalf("%s did not exit within %v\nstdout:\n%s\nstderr:\n%s", p.cmd.Path, d, out, errs)
		return 0
	}
}

// waitLine waits for a stderr line matching re and returns its submatches.
func (p *proc) waitLine(t *testing.T, re *regexp.Regexp, d time.Duration) []string {
	t.Helper()
	timeout := time.After(d)
	for {
		select {
		case l := <-p.lines:
			if m := re.FindStringSubmatch(l); m != nil {
				return m
			}
		case <-timeout:
			_, errs := p.output()
			t.Fatalf("no line matching %v within %v; stderr:\n%s", re, d, errs)
		}
	}
}

const appID, appKey, appSecret = "1", "cmdkey", "cmdsecret"

func startHerald(t *testing.T) string {
	t.Helper()
	addr := freeAddr(t)
	h := start(t, "herald", "--addr", addr, "--admin-addr", freeAddr(t), "--app-id", appID, "--app-key", appKey,
		"--app-secret", appSecret, "--client-events", "--log-level", "warn")
	t.Cleanup(func() {
		select {
		case <-h.exited:
		default:
			_ = syscall.Kill(h.cmd.Process.Pid, syscall.SIGTERM)
			select {
			case <-h.exited:
			case <-time.After(15 * time.Second):
			}
		}
	})
	deadline := time.Now().Add(20 * time.Second)
	for {
		if c, err := net.Dial("tcp", addr); err == nil {
			c.Close()
			return addr
		}
		if time.Now().After(deadline) {
			t.Fatal("herald did not start")
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func runArgs(addr string, extra ...string) []string {
	return append([]string{"run", "--target", "ws://" + addr, "--app-id", appID, "--app-key", appKey,
		"--app-secret", appSecret, "--workers", "2", "--progress", "lines", "--progress-every", "1s",
		"--log-level", "info"}, extra...)
}

func readReport(t *testing.T, path string) *loadgen.Report {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var r loadgen.Report
	if err := json.Unmarshal(b, &r); err != nil {
		t.Fatal(err)
	}
	return &r
}

func TestHelpListsEveryFlag(t *testing.T) {
	var spec loadgen.Spec
	var o runOpts
	fs := runFlags(&spec, &o, io.Discard)
	var out, errs bytes.Buffer
	if code := run([]string{"run", "--help"}, &out, &errs); code != exitOK {
		t.Fatalf("run --help: exit %d", code)
	}
	fs.VisitAll(func(f *flag.Flag) {
		if !strings.Contains(errs.String(), "-"+f.Name+" ") && !strings.Contains(errs.String(), "-"+f.Name+"\n") {
			t.Errorf("run --help does not list -%s", f.Name)
		}
	})
	for _, want := range []string{"(default 1)", "(default 5s)", "(default \"127.0.0.1:0\")"} {
		if !strings.Contains(errs.String(), want) {
			t.Errorf("run --help lacks %s", want)
		}
	}
	errs.Reset()
	if code := run([]string{"worker", "--help"}, &out, &errs); code != exitOK {
		t.Fatalf("worker --help: exit %d", code)
	}
	for _, f := range []string{"-join", "-source", "-join-timeout", "-log-level"} {
		if !strings.Contains(errs.String(), f) {
			t.Errorf("worker --help does not list %s", f)
		}
	}
	out.Reset()
	if code := run([]string{"--help"}, &out, &errs); code != exitOK || !strings.Contains(out.String(), "worker") {
		t.Errorf("--help: exit %d\n%s", code, out.String())
	}
}

func TestUsageErrorsExit2(t *testing.T) {
	cases := [][]string{
		{"run", "--target", "127.0.0.1:1", "--app-key", "k", "--threshold", "p99<<250ms"},
		{"run", "--target", "127.0.0.1:1", "--app-key", "k", "--threshold", "latency<1s"},
		{"run", "--no-such-flag"},
		{"run", "--app-key", "k"}, // no target
		{"run", "--target", "127.0.0.1:1", "--app-key", "k", "--scenario", "flood"},
		{"run", "--target", "127.0.0.1:1", "--app-key", "k", "--publish-rate", "fast"},
		{"run", "--target", "127.0.0.1:1", "--app-key", "k", "--publish-rate", "-5"},
		{"run", "--target", "127.0.0.1:1,127.0.0.1", "--app-key", "k"}, // the second has no port
		{"run", "--target", "127.0.0.1:1", "--app-id", "1", "--app-key", "k", "--app-secret", "s", "--scenario", "broadcast", "--publish-batch", "101"},
		{"run", "--target", "127.0.0.1:1", "--app-key", "k", "--sources-per-worker", "0"},
		{"run", "--target", "127.0.0.1:1", "--app-key", "k", "--read-batch", "-1ms"},
		{"worker"},
		{"frobnicate"},
	}
	for _, args := range cases {
		p := start(t, "loadgen", args...)
		if code := p.wait(t, 10*time.Second); code != exitUsage {
			_, errs := p.output()
			t.Errorf("%q: exit %d, want 2\n%s", args, code, errs)
		}
	}
}

func TestThresholdExitCodes(t *testing.T) {
	addr := startHerald(t)
	dir := t.TempDir()
	common := []string{"--scenario", "broadcast", "--connections", "100", "--channels", "4", "--publish-rate", "40",
		"--duration", "4s", "--drain", "1s"}

	out := filepath.Join(dir, "ok.json")
	html := filepath.Join(dir, "ok.html")
	p := start(t, "loadgen", runArgs(addr, append(common, "--out", out, "--html", html,
		"--threshold", "p99<10s", "--threshold", "missing==0", "--threshold", "errors<1%",
		"--threshold", "connections>=100", "--threshold", "connect_p95<5s")...)...)
	if code := p.wait(t, 30*time.Second); code != exitOK {
		stdout, errs := p.output()
		t.Fatalf("met thresholds: exit %d\n%s\n%s", code, stdout, errs)
	}
	r := readReport(t, out)
	if !r.Passed || len(r.Thresholds) != 5 || r.Totals.Delivered == 0 || r.Totals.Delivered != r.Totals.Expected {
		t.Errorf("report: passed %v thresholds %+v totals %+v", r.Passed, r.Thresholds, r.Totals)
	}
	if b, err := os.ReadFile(html); err != nil || !bytes.Contains(b, []byte("<html")) {
		t.Errorf("html report: %v (%d bytes)", err, len(b))
	}
	stdout, _ := p.output()
	for _, want := range []string{"CONNECTIONS", "LATENCY", "THRESHOLDS", "p99<10s", "✓ ok"} {
		if !strings.Contains(stdout, want) {
			t.Errorf("summary lacks %q:\n%s", want, stdout)
		}
	}

	out = filepath.Join(dir, "breach.json")
	p = start(t, "loadgen", runArgs(addr, append(common, "--out", out,
		"--threshold", "missing==0", "--threshold", "deliveries_per_sec>1e12")...)...)
	if code := p.wait(t, 30*time.Second); code != exitThresholds {
		stdout, errs := p.output()
		t.Fatalf("breached threshold: exit %d, want 99\n%s\n%s", code, stdout, errs)
	}
	_, errs := p.output()
	if !strings.Contains(errs, "threshold breached: deliveries_per_sec>1e12") || strings.Contains(errs, "breached: missing==0") {
		t.Errorf("stderr does not name exactly the breached threshold:\n%s", errs)
	}
	if r := readReport(t, out); r.Passed || r.Thresholds[0].OK != true || r.Thresholds[1].OK {
		t.Errorf("report thresholds: %+v passed %v", r.Thresholds, r.Passed)
	}
}

var (
	spawnedRE = regexp.MustCompile(`msg="spawned worker" pid=(\d+)`)
	rampRE    = regexp.MustCompile(`ramp (done|not done)`)
)

func alive(pid int) bool { return syscall.Kill(pid, 0) == nil }

func TestWorkerKilledIsReportedLost(t *testing.T) {
	addr := startHerald(t)
	out := filepath.Join(t.TempDir(), "r.json")
	p := start(t, "loadgen", runArgs(addr, "--connections", "200", "--duration", "6s", "--out", out,
		"--heartbeat-timeout", "2s")...)
	var pids []int
	for i := 0; i < 2; i++ {
		pid, _ := strconv.Atoi(p.waitLine(t, spawnedRE, 10*time.Second)[1])
		pids = append(pids, pid)
	}
	t.Cleanup(func() {
		for _, pid := range pids {
			if alive(pid) {
				_ = syscall.Kill(pid, syscall.SIGKILL)
			}
		}
	})
	p.waitLine(t, rampRE, 10*time.Second)
	if err := syscall.Kill(pids[0], syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	code := p.wait(t, 20*time.Second)
	stdout, errs := p.output()
	if code != exitError || !strings.Contains(errs, "1 of 2 workers lost") {
		t.Errorf("exit %d, want 1 with a lost-worker message\n%s", code, errs)
	}
	if took := time.Since(start); took > 12*time.Second {
		t.Errorf("coordinator took %v after the kill", took)
	}
	r := readReport(t, out)
	var lost, ok int
	for _, w := range r.Workers {
		switch {
		case w.State == "lost" && w.PID == pids[0]:
			lost++
		case w.State == "ok":
			ok++
		}
	}
	if lost != 1 || ok != 1 || r.Totals.Errors["worker_lost"] != 1 {
		t.Errorf("workers %+v errors %v", r.Workers, r.Totals.Errors)
	}
	if !strings.Contains(stdout, "WORKERS") || !strings.Contains(stdout, "lost") {
		t.Errorf("summary does not show the lost worker:\n%s", stdout)
	}
	time.Sleep(100 * time.Millisecond)
	for _, pid := range pids {
		if alive(pid) {
			t.Errorf("worker pid %d still running after the coordinator exited", pid)
		}
	}
}

func TestInterruptStopsCleanly(t *testing.T) {
	addr := startHerald(t)
	out := filepath.Join(t.TempDir(), "r.json")
	p := start(t, "loadgen", runArgs(addr, "--scenario", "broadcast", "--connections", "200",
		"--publish-rate", "20", "--duration", "60s", "--out", out)...)
	var pids []int
	for i := 0; i < 2; i++ {
		pid, _ := strconv.Atoi(p.waitLine(t, spawnedRE, 10*time.Second)[1])
		pids = append(pids, pid)
	}
	p.waitLine(t, rampRE, 10*time.Second)
	time.Sleep(time.Second)
	if err := p.cmd.Process.Signal(syscall.SIGINT); err != nil {
		t.Fatal(err)
	}
	code := p.wait(t, 15*time.Second)
	stdout, errs := p.output()
	if code != exitInterrupted {
		t.Errorf("exit %d, want 130\n%s", code, errs)
	}
	if !strings.Contains(stdout, "stopped: interrupted") || !strings.Contains(stdout, "CONNECTIONS") {
		t.Errorf("no summary:\n%s", stdout)
	}
	r := readReport(t, out)
	if r.Stopped != "interrupted" || r.Totals.Connected != 200 || r.Totals.Delivered == 0 || r.Seconds > 20 {
		t.Errorf("report: stopped %q totals %+v seconds %v", r.Stopped, r.Totals, r.Seconds)
	}
	for _, w := range r.Workers {
		if w.State != "ok" {
			t.Errorf("worker %+v", w)
		}
	}
	if r.Totals.Errors["close_timeout"] != 0 {
		t.Errorf("close handshakes timed out: %v", r.Totals.Errors)
	}
	time.Sleep(100 * time.Millisecond)
	for _, pid := range pids {
		if alive(pid) {
			t.Errorf("worker pid %d still running", pid)
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
	}
}

func TestRateFlag(t *testing.T) {
	var r rateFlag
	for in, want := range map[string]float64{"max": loadgen.PublishRateMax, "12.5": 12.5, "0": 0} {
		if err := r.Set(in); err != nil || float64(r) != want {
			t.Errorf("Set(%q) = %v, %v; want %v", in, float64(r), err, want)
		}
	}
	r = loadgen.PublishRateMax
	if r.String() != "max" {
		t.Errorf("String() = %q, want max", r.String())
	}
	for _, bad := range []string{"", "fast", "-1", "1e"} {
		if err := r.Set(bad); err == nil {
			t.Errorf("Set(%q) accepted", bad)
		}
	}
}

// TestJSONProgress follows a scheduled broadcast run through --progress json:
// stdout is JSON lines only (progress lines, then the verdict), and the broadcast
// thresholds decide the exit code.
func TestJSONProgress(t *testing.T) {
	addr := startHerald(t)
	out := filepath.Join(t.TempDir(), "r.json")
	args := runArgs(addr, "--scenario", "broadcast", "--connections", "60", "--channels", "1", "--spread", "one",
		"--publish-schedule", "3x400ms", "--duration", "5s", "--drain", "1s", "--out", out,
		"--threshold", "broadcast_incomplete==0", "--threshold", "broadcast_max<10s",
		"--threshold", "lost_connections==0", "--threshold", "missing==0", "--threshold", "duplicated==0",
		"--threshold", "error_count==0")
	for i, a := range args {
		if a == "lines" {
			args[i] = "json"
		}
	}
	p := start(t, "loadgen", args...)
	code := p.wait(t, 30*time.Second)
	stdout, errs := p.output()
	if code != exitOK {
		t.Fatalf("exit %d\n%s\n%s", code, stdout, errs)
	}
	var progress int
	var end map[string]any
	for _, l := range strings.Split(strings.TrimSpace(stdout), "\n") {
		var m map[string]any
		if err := json.Unmarshal([]byte(l), &m); err != nil {
			t.Fatalf("stdout line is not JSON: %q", l)
		}
		switch m["type"] {
		case "progress":
			progress++
			if _, ok := m["open"].(float64); !ok {
				t.Errorf("progress line without open: %q", l)
			}
		case "end":
			end = m
		default:
			t.Errorf("line of type %v: %q", m["type"], l)
		}
	}
	if progress < 3 || end == nil || end["passed"] != true {
		t.Errorf("%d progress lines, end %v", progress, end)
	}
	r := readReport(t, out)
	if r.Broadcasts == nil || r.Broadcasts.Count != 3 || r.Broadcasts.Complete != 3 || r.Totals.Delivered != 180 {
		t.Errorf("broadcasts %+v delivered %d", r.Broadcasts, r.Totals.Delivered)
	}
}
