// Package proc runs the processes of Herald's benchmarks: it builds the module's
// commands, starts a server and waits for its ready line, and stops it by PID; it
// reads a process's memory and CPU time from /proc (ReadRSS, ReadCPU) and finds its
// children (Children). Every
// wait is bounded, and a started process dies with its parent (Pdeathsig), so that a
// benchmark never leaves servers behind.
//
// Concurrency: a Process is safe to signal, stop and query from any goroutine. Start
// owns two goroutines per process (one copies its stdout to its log, one reaps it);
// both end when the process exits, which Stop waits for.
package proc

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// Errors, wrapped with the details.
var (
	ErrBuild = errors.New("proc: build failed")
	ErrStart = errors.New("proc: process did not start")
)

// ModuleRoot is the directory of the go.mod the go command sees from here.
func ModuleRoot(ctx context.Context, goBin string) (string, error) {
	gomod, err := exec.CommandContext(ctx, goBin, "env", "GOMOD").Output()
	if err != nil || !strings.HasSuffix(strings.TrimSpace(string(gomod)), "go.mod") {
		return "", fmt.Errorf("%w: run inside the herald module (go env GOMOD: %q, %v)", ErrBuild, gomod, err)
	}
	return filepath.Dir(strings.TrimSpace(string(gomod))), nil
}

// Build compiles package pkg (e.g. "./cmd/herald") of the module at root into
// dir/out, within 3 minutes.
func Build(ctx context.Context, goBin, root, dir, out, pkg string) error {
	bctx, cancel := context.WithTimeout(ctx, 3*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(bctx, goBin, "build", "-o", filepath.Join(dir, out), pkg)
	cmd.Dir = root
	if b, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("%w: %s: %w\n%s", ErrBuild, pkg, err, strings.TrimSpace(string(b)))
	}
	return nil
}

// Process is a started server.
type Process struct {
	Name string
	Log  string // file with its stdout and stderr

	cmd  *exec.Cmd
	done chan struct{} // closed once reaped
	err  error         // Wait's result, after done
}

// Start runs bin with args, its output going to logPath, and waits until a line of
// its stdout contains ready (at most timeout, or until ctx ends).
func Start(ctx context.Context, name, bin string, args []string, logPath, ready string, timeout time.Duration) (*Process, error) {
	logf, err := os.Create(logPath)
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(bin, args...)
	cmd.Stderr = logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		logf.Close()
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		logf.Close()
		return nil, fmt.Errorf("%w: %s: %w", ErrStart, name, err)
	}
	p := &Process{Name: name, Log: logPath, cmd: cmd, done: make(chan struct{})}
	readyc := make(chan struct{})
	var copied sync.WaitGroup
	copied.Add(1)
	go func() { // copies stdout to the log until the process closes it
		defer copied.Done()
		sc := bufio.NewScanner(stdout)
		signalled := false
		for sc.Scan() {
			fmt.Fprintln(logf, sc.Text())
			if !signalled && strings.Contains(sc.Text(), ready) {
				close(readyc)
				signalled = true
			}
		}
		_, _ = io.Copy(io.Discard, stdout)
	}()
	go func() { // reaps the process; Stop and Wait wait for done
		copied.Wait()
		p.err = cmd.Wait()
		logf.Close()
		close(p.done)
	}()
	t := time.NewTimer(timeout)
	defer t.Stop()
	select {
	case <-readyc:
		return p, nil
	case <-p.done:
		return nil, fmt.Errorf("%w: %s exited: %v (log %s)", ErrStart, name, p.err, logPath)
	case <-t.C:
		p.Stop(2 * time.Second)
		return nil, fmt.Errorf("%w: %s: no %q within %v (log %s)", ErrStart, name, ready, timeout, logPath)
	case <-ctx.Done():
		p.Stop(2 * time.Second)
		return nil, ctx.Err()
	}
}

// PID is the process id.
func (p *Process) PID() int { return p.cmd.Process.Pid }

// Exited reports whether the process has ended and been reaped.
func (p *Process) Exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// Err is how the process ended (valid once Exited).
func (p *Process) Err() error {
	if !p.Exited() {
		return nil
	}
	return p.err
}

// Signal sends sig by PID unless the process has been reaped.
func (p *Process) Signal(sig syscall.Signal) {
	if !p.Exited() {
		_ = p.cmd.Process.Signal(sig)
	}
}

// Wait waits up to d for the process to exit, then SIGKILLs it and waits for it.
func (p *Process) Wait(d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-p.done:
	case <-t.C:
		_ = p.cmd.Process.Kill()
		<-p.done
	}
}

// Stop sends SIGTERM, waits up to grace, then SIGKILLs, and waits for the process.
func (p *Process) Stop(grace time.Duration) {
	p.Signal(syscall.SIGTERM)
	p.Wait(grace)
}

// FreePort returns a TCP port that was free a moment ago on host (an IPv4 address).
func FreePort(host string) (int, error) {
	ln, err := net.Listen("tcp4", net.JoinHostPort(host, "0"))
	if err != nil {
		return 0, err
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port, nil
}

var httpClient = &http.Client{Timeout: 10 * time.Second}

// Get fetches http://addr+path (a server's admin endpoint) within 10 s and returns
// at most 16 MiB of its body; a status other than 200 is an error.
func Get(ctx context.Context, addr, path string) ([]byte, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+addr+path, nil)
	if err != nil {
		return nil, err
	}
	resp, err := httpClient.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 16<<20))
	if err == nil && resp.StatusCode != http.StatusOK {
		err = fmt.Errorf("proc: GET %s%s: %s", addr, path, resp.Status)
	}
	return b, err
}

// LoadAvg is the host's 1-minute load average (/proc/loadavg), -1 when unknown: the
// benchmarks print it at their start and end, so that a reader can tell figures
// taken on a busy host.
func LoadAvg() float64 {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return -1
	}
	var l float64
	if _, err := fmt.Sscan(string(b), &l); err != nil {
		return -1
	}
	return l
}

// EnvOr is the environment variable k, or def when it is unset or empty.
func EnvOr(k, def string) string {
	if v := os.Getenv(k); v != "" {
		return v
	}
	return def
}

// QuoteArgs renders args as they would be typed in a shell, each preceded by a space,
// for printing the command a benchmark ran.
func QuoteArgs(args []string) string {
	var b strings.Builder
	for _, a := range args {
		b.WriteByte(' ')
		if strings.ContainsAny(a, " \t'\"$") {
			b.WriteString("'" + strings.ReplaceAll(a, "'", `'\''`) + "'")
		} else {
			b.WriteString(a)
		}
	}
	return b.String()
}

// ReadRSS returns the VmRSS of process pid in bytes, from /proc/<pid>/status.
func ReadRSS(pid int) (int64, error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		return 0, fmt.Errorf("proc: rss: %w", err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			f := strings.Fields(v) // "12345 kB"
			if len(f) == 2 && f[1] == "kB" {
				n, err := strconv.ParseInt(f[0], 10, 64)
				if err == nil {
					return n << 10, nil
				}
			}
		}
	}
	return 0, fmt.Errorf("proc: rss: no VmRSS in /proc/%d/status", pid)
}

// ReadCPU returns the CPU time (user + system) process pid has used, from
// /proc/<pid>/stat, at the kernel's clock-tick resolution (usually 10 ms).
func ReadCPU(pid int) (time.Duration, error) {
	f, err := statFields(pid)
	if err != nil {
		return 0, fmt.Errorf("proc: cpu: %w", err)
	}
	var ticks int64
	for _, s := range f[11:13] { // utime, stime: fields 14 and 15
		n, err := strconv.ParseInt(s, 10, 64)
		if err != nil {
			return 0, fmt.Errorf("proc: cpu: %w", err)
		}
		ticks += n
	}
	return time.Duration(ticks) * time.Second / clockTicks, nil
}

// clockTicks is USER_HZ, 100 on every Linux architecture Go supports.
const clockTicks = 100

// statFields returns the fields of /proc/<pid>/stat after the command name (field
// 3, the state, first). The name may hold spaces; the fields count from after its
// closing parenthesis.
func statFields(pid int) ([]string, error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return nil, err
	}
	i := strings.LastIndexByte(string(b), ')')
	if i < 0 {
		return nil, fmt.Errorf("/proc/%d/stat: no command name", pid)
	}
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 13 {
		return nil, fmt.Errorf("/proc/%d/stat: short", pid)
	}
	return f, nil
}

// Children returns the processes whose parent is ppid and whose executable is exe
// (any executable when exe is ""), from /proc.
func Children(ppid int, exe string) []int {
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return nil
	}
	var out []int
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		f, err := statFields(pid)
		if err != nil || f[1] != strconv.Itoa(ppid) {
			continue
		}
		if exe != "" {
			if p, err := os.Readlink("/proc/" + e.Name() + "/exe"); err != nil || p != exe {
				continue
			}
		}
		out = append(out, pid)
	}
	return out
}
