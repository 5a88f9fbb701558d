package main

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

var (
	errBuild   = errors.New("benchrun: build failed")
	errStart   = errors.New("benchrun: server did not start")
	errMetrics = errors.New("benchrun: metric not found")
)

// build compiles the three programs into dir. A Herald build failure is returned
// separately so that the floor can still be measured.
func build(ctx context.Context, goBin, dir string) (heraldErr, err error) {
	gomod, err := exec.CommandContext(ctx, goBin, "env", "GOMOD").Output()
	if err != nil || !strings.HasSuffix(strings.TrimSpace(string(gomod)), "go.mod") {
		return nil, fmt.Errorf("%w: run benchrun inside the herald module (go env GOMOD: %q, %v)", errBuild, gomod, err)
	}
	root := filepath.Dir(strings.TrimSpace(string(gomod)))
	for _, b := range []struct{ out, pkg string }{
		{"rawfloor", "./bench/cmd/rawfloor"},
		{"benchclient", "./bench/cmd/benchclient"},
		{"herald", "./cmd/herald"},
	} {
		bctx, cancel := context.WithTimeout(ctx, 3*time.Minute)
		cmd := exec.CommandContext(bctx, goBin, "build", "-o", filepath.Join(dir, b.out), b.pkg)
		cmd.Dir = root
		out, berr := cmd.CombinedOutput()
		cancel()
		if berr != nil {
			e := fmt.Errorf("%w: %s: %w\n%s", errBuild, b.pkg, berr, strings.TrimSpace(string(out)))
			if b.out == "herald" {
				heraldErr = e
				continue
			}
			return nil, e
		}
	}
	return heraldErr, nil
}

// server is a server process (herald or rawfloor) under test.
type server struct {
	name  string
	cmd   *exec.Cmd
	addr  string // public ip:port
	admin string // herald's admin ip:port, "" for the floor
	log   string // file with its stdout and stderr
	done  chan struct{}
	err   error // after done: Wait's result
}

func (s *server) pid() int { return s.cmd.Process.Pid }

// startServer runs bin and waits (at most 20 s) for its ready line.
func startServer(ctx context.Context, name, bin string, args []string, addr, admin, logPath, ready string) (*server, error) {
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
		return nil, fmt.Errorf("%w: %s: %w", errStart, name, err)
	}
	s := &server{name: name, cmd: cmd, addr: addr, admin: admin, log: logPath, done: make(chan struct{})}
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
	go func() { // reaps the process; stop waits for done
		copied.Wait()
		s.err = cmd.Wait()
		logf.Close()
		close(s.done)
	}()
	t := time.NewTimer(20 * time.Second)
	defer t.Stop()
	select {
	case <-readyc:
		return s, nil
	case <-s.done:
		return nil, fmt.Errorf("%w: %s exited: %v (log %s)", errStart, name, s.err, logPath)
	case <-t.C:
		s.stop(2 * time.Second)
		return nil, fmt.Errorf("%w: %s: no %q within 20s (log %s)", errStart, name, ready, logPath)
	case <-ctx.Done():
		s.stop(2 * time.Second)
		return nil, ctx.Err()
	}
}

// stop sends SIGTERM to the process, waits up to grace, then SIGKILLs it, and waits
// for it.
func (s *server) stop(grace time.Duration) {
	select {
	case <-s.done:
		return
	default:
	}
	_ = s.cmd.Process.Signal(syscall.SIGTERM)
	t := time.NewTimer(grace)
	defer t.Stop()
	select {
	case <-s.done:
	case <-t.C:
		_ = s.cmd.Process.Kill()
		<-s.done
	}
}

// freePort returns a port that was free a moment ago on 127.0.0.1.
func freePort() (int, error) {
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port, nil
}

// heapInuse asks Herald's admin port for a GC (pprof's gc=1) and then scrapes
// go_memstats_heap_inuse_bytes from /metrics.
func heapInuse(ctx context.Context, admin string) (int64, error) {
	c := &http.Client{Timeout: 10 * time.Second}
	get := func(path string) ([]byte, error) {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+admin+path, nil)
		if err != nil {
			return nil, err
		}
		resp, err := c.Do(req)
		if err != nil {
			return nil, err
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(io.LimitReader(resp.Body, 16<<20))
		if err == nil && resp.StatusCode != http.StatusOK {
			err = fmt.Errorf("benchrun: %s: %s", path, resp.Status)
		}
		return b, err
	}
	_, _ = get("/debug/pprof/heap?gc=1") // best effort: only to collect garbage first
	b, err := get("/metrics")
	if err != nil {
		return 0, err
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "go_memstats_heap_inuse_bytes "); ok {
			f, err := strconv.ParseFloat(strings.TrimSpace(v), 64)
			if err != nil {
				return 0, fmt.Errorf("%w: %w", errMetrics, err)
			}
			return int64(f), nil
		}
	}
	return 0, errMetrics
}
