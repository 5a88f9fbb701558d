package deploy

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/herald-rt/herald/internal/redistest"
)

// The herald binary, built once per test process (without -race: these tests only
// start it and stop it).
var (
	buildOnce sync.Once
	buildDir  string
	buildErr  error
)

func TestMain(m *testing.M) {
	code := m.Run()
	if buildDir != "" {
		_ = os.RemoveAll(buildDir)
	}
	os.Exit(code)
}

func heraldBinary(t *testing.T) string {
	t.Helper()
	buildOnce.Do(func() {
		buildDir, buildErr = os.MkdirTemp("", "herald-deploy-")
		if buildErr != nil {
			return
		}
		out, err := exec.Command("go", "build", "-o", filepath.Join(buildDir, "herald"), "../cmd/herald").CombinedOutput()
		if err != nil {
			buildErr = fmt.Errorf("go build ../cmd/herald: %v\n%s", err, out)
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return filepath.Join(buildDir, "herald")
}

// heraldFlag is one flag of herald --help.
type heraldFlag struct {
	name   string
	isBool bool   // takes no value
	def    string // "(default …)" in its help, or ""
}

var (
	helpLine    = regexp.MustCompile(`^  -([a-z0-9-]+)(?: (\S+))?$`)
	helpDefault = regexp.MustCompile(`\(default ([^)]*)\)\s*$`)
)

var (
	flagsOnce sync.Once
	flagsOut  []byte
)

// heraldFlags lists the flags the built herald accepts, from its --help.
func heraldFlags(t *testing.T) map[string]heraldFlag {
	t.Helper()
	bin := heraldBinary(t)
	flagsOnce.Do(func() { flagsOut, _ = exec.Command(bin, "--help").CombinedOutput() })
	flags := map[string]heraldFlag{}
	var last string
	for _, line := range strings.Split(string(flagsOut), "\n") {
		if m := helpLine.FindStringSubmatch(line); m != nil {
			last = m[1]
			flags[last] = heraldFlag{name: last, isBool: m[2] == ""}
		} else if last != "" && strings.HasPrefix(line, "    \t") {
			if d := helpDefault.FindStringSubmatch(line); d != nil {
				f := flags[last]
				f.def = d[1]
				flags[last] = f
			}
		}
	}
	if len(flags) < 10 || flags["addr"].name == "" {
		t.Fatalf("herald --help lists %d flags, not --addr: the parser of its output is out of date\n%s", len(flags), flagsOut)
	}
	return flags
}

// heraldArgs is a herald command line split into flags, as Go's flag package reads
// it: -name or --name, with =value or (unless it is a bool flag) the next argument.
type heraldArgs struct {
	order  []string
	values map[string]string
}

func parseHeraldArgs(args []string, known map[string]heraldFlag) (*heraldArgs, error) {
	a := &heraldArgs{values: map[string]string{}}
	for i := 0; i < len(args); i++ {
		arg := args[i]
		if !strings.HasPrefix(arg, "-") {
			return nil, fmt.Errorf("%q is not a flag (herald takes no positional arguments)", arg)
		}
		name, value, hasValue := strings.Cut(strings.TrimLeft(arg, "-"), "=")
		f, ok := known[name]
		if !ok {
			return nil, fmt.Errorf("herald has no flag --%s (herald --help)", name)
		}
		if !hasValue && !f.isBool {
			if i+1 == len(args) {
				return nil, fmt.Errorf("--%s needs a value", name)
			}
			i++
			value = args[i]
		}
		if _, dup := a.values[name]; dup {
			return nil, fmt.Errorf("--%s given twice", name)
		}
		a.order = append(a.order, name)
		a.values[name] = value
	}
	return a, nil
}

func (a *heraldArgs) has(name string) bool { _, ok := a.values[name]; return ok }

func (a *heraldArgs) get(name string) string { return a.values[name] }

// duration is the value of a duration flag, or herald's default (its --help) when it
// is not given.
func (a *heraldArgs) duration(t *testing.T, name string) time.Duration {
	t.Helper()
	v, ok := a.values[name]
	if !ok {
		v = heraldFlags(t)[name].def
	}
	d, err := time.ParseDuration(v)
	if err != nil {
		t.Fatalf("--%s %q: %v", name, v, err)
	}
	return d
}

// serverPingAfter: herald pings a connection that has been silent for the activity
// timeout plus this (--activity-timeout's help).
const serverPingAfter = 30 * time.Second

// quietMax is the longest a live Pusher connection may be silent with herald's
// defaults: the activity timeout, herald's ping, and the pong timeout.
func quietMax(t *testing.T) time.Duration {
	t.Helper()
	none := &heraldArgs{values: map[string]string{}}
	return none.duration(t, "activity-timeout") + serverPingAfter + none.duration(t, "pong-timeout")
}

// startHeraldWith runs the built herald with a deploy file's arguments, changed only
// where this machine differs from production: both addresses become free loopback
// ports, --config the given file, --redis (or --redis-cluster) a redis-server of the
// test's own. It waits until herald serves, checks /healthz and /readyz, sends SIGTERM
// and expects exit status 0 within --shutdown-timeout (plus a second). So a
// misspelled flag, a bad value or an apps file herald refuses fails here rather
// than in production.
//
// With reload, it first sends SIGHUP, as systemctl reload does, and expects herald to
// reread its apps ("config reloaded" in its log) and stay ready.
func startHeraldWith(t *testing.T, a *heraldArgs, config string, reload bool) {
	t.Helper()
	var args []string
	for _, name := range a.order {
		v := a.values[name]
		switch name {
		case "addr", "admin-addr":
			v = "127.0.0.1:0"
		case "config":
			v = config
		case "redis":
			v = redistest.Start(t).URL()
		case "redis-cluster":
			t.Fatalf("--redis-cluster: these tests start a single Redis; add a Redis Cluster here")
		}
		if known := heraldFlags(t)[name]; known.isBool {
			args = append(args, "--"+name)
		} else {
			args = append(args, "--"+name, v)
		}
	}
	for _, name := range []string{"addr", "admin-addr"} {
		if !a.has(name) {
			args = append(args, "--"+name, "127.0.0.1:0")
		}
	}
	cmd := exec.Command(heraldBinary(t), args...)
	cmd.Env = cleanEnv()
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	stderr := &logBuf{}
	cmd.Stderr = stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	serving := make(chan string, 1)
	var out strings.Builder
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			out.WriteString(sc.Text() + "\n")
			if strings.Contains(sc.Text(), "serving") {
				select {
				case serving <- sc.Text():
				default:
				}
			}
		}
		_, _ = io.Copy(io.Discard, stdout)
		exited <- cmd.Wait()
	}()
	done := false
	defer func() {
		if !done {
			_ = cmd.Process.Kill()
			<-exited
		}
	}()
	var line string
	select {
	case line = <-serving:
	case err := <-exited:
		done = true
		t.Fatalf("herald %s exited before serving: %v\n%s%s", strings.Join(args, " "), err, out.String(), stderr.String())
	case <-time.After(30 * time.Second):
		t.Fatalf("herald %s did not serve within 30 s\n%s", strings.Join(args, " "), stderr.String())
	}
	m := regexp.MustCompile(`admin on (\S+?)[;,]`).FindStringSubmatch(line)
	if m == nil {
		t.Fatalf("no admin address in %q", line)
	}
	for _, path := range []string{"/healthz", "/readyz"} {
		if code := get(m[1] + path); code != 200 {
			t.Errorf("GET %s answered %d, want 200", path, code)
		}
	}
	if reload {
		_ = cmd.Process.Signal(syscall.SIGHUP)
		deadline := time.Now().Add(5 * time.Second)
		for !strings.Contains(stderr.String(), "config reloaded") {
			if time.Now().After(deadline) {
				t.Fatalf("no \"config reloaded\" in herald's log within 5 s of SIGHUP:\n%s", stderr.String())
			}
			time.Sleep(10 * time.Millisecond)
		}
		if code := get(m[1] + "/readyz"); code != 200 {
			t.Errorf("GET /readyz answered %d after SIGHUP, want 200", code)
		}
	}
	start := time.Now()
	_ = cmd.Process.Signal(syscall.SIGTERM)
	limit := a.duration(t, "shutdown-timeout") + time.Second
	select {
	case err := <-exited:
		done = true
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			t.Errorf("herald exited with %v after SIGTERM, want 0\n%s", ee.ProcessState, stderr.String())
		} else if err != nil {
			t.Error(err)
		}
		t.Logf("herald %s: served, then stopped %v after SIGTERM (no connections)", strings.Join(args, " "), time.Since(start).Round(time.Millisecond))
	case <-time.After(limit):
		t.Errorf("herald did not exit within %v of SIGTERM (--shutdown-timeout + 1 s)\n%s", limit, stderr.String())
	}
}

// get GETs http://hostPath and returns the status, 0 when there is no answer.
func get(hostPath string) int {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, "GET", "http://"+hostPath, nil)
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0
	}
	res.Body.Close()
	return res.StatusCode
}

// cleanEnv is this process's environment without HERALD_* variables.
func cleanEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "HERALD_") {
			env = append(env, kv)
		}
	}
	return env
}

// logBuf keeps a child's output; safe for its writer and a reader at once.
type logBuf struct {
	mu sync.Mutex
	b  strings.Builder
}

func (l *logBuf) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *logBuf) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// readFile reads a file of the repository (paths relative to deploy/).
func readFile(t *testing.T, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}
