package loadgen

import (
	"errors"
	"fmt"
	"io"
	"net/netip"
	"os"
	"os/exec"
	"sync"
	"syscall"
	"time"
)

// spawned is one worker process the coordinator started.
type spawned struct {
	cmd    *exec.Cmd
	pid    int
	exited chan struct{} // closed when Wait returned
	err    error         // valid once exited is closed
}

// procs owns the worker processes: it starts them, notices when they exit, and
// kills what is left by PID. Its Wait goroutines end when the processes do, which
// kill guarantees.
type procs struct {
	mu   sync.Mutex
	list []*spawned
	wg   sync.WaitGroup
}

// start runs argv with "--join addr" appended, in its own process group so that a
// Ctrl-C on the terminal reaches the coordinator only (which then stops the
// workers cleanly).
func (p *procs) start(argv []string, join string, out io.Writer) (*spawned, error) {
	if len(argv) == 0 {
		exe, err := os.Executable()
		if err != nil {
			return nil, fmt.Errorf("%w: cannot find this executable to spawn workers: %w", ErrConfig, err)
		}
		argv = []string{exe, "worker"}
	}
	args := append(append([]string(nil), argv[1:]...), "--join", join)
	cmd := exec.Command(argv[0], args...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if out == nil {
		out = io.Discard
	}
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("loadgen: spawn worker: %w", err)
	}
	s := &spawned{cmd: cmd, pid: cmd.Process.Pid, exited: make(chan struct{})}
	p.mu.Lock()
	p.list = append(p.list, s)
	p.mu.Unlock()
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		s.err = cmd.Wait()
		close(s.exited)
	}()
	return s, nil
}

// stop gives the processes until grace to exit on their own, then kills the rest
// (SIGKILL, by PID) and waits for them.
func (p *procs) stop(grace time.Duration) {
	p.mu.Lock()
	list := append([]*spawned(nil), p.list...)
	p.mu.Unlock()
	timer := time.NewTimer(grace)
	defer timer.Stop()
wait:
	for _, s := range list {
		select {
		case <-s.exited:
		case <-timer.C:
			break wait
		}
	}
	for _, s := range list {
		select {
		case <-s.exited:
		default:
			_ = syscall.Kill(s.pid, syscall.SIGKILL)
		}
	}
	p.wg.Wait()
}

// exitedEarly returns a process that exited, if any.
func (p *procs) exitedEarly() *spawned {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, s := range p.list {
		select {
		case <-s.exited:
			return s
		default:
		}
	}
	return nil
}

// SourceAddrs returns n distinct loopback source addresses starting at base and
// skipping .0 and .255 in the last octet: 127.0.1.1, 127.0.1.2, … 127.0.1.254,
// 127.0.2.1, …
func SourceAddrs(base netip.Addr, n int) ([]netip.Addr, error) {
	if !base.Is4() || !base.IsLoopback() {
		return nil, fmt.Errorf("%w: source base %v is not in 127.0.0.0/8", ErrConfig, base)
	}
	out := make([]netip.Addr, 0, n)
	a := base
	for len(out) < n {
		b := a.As4()
		if b[3] != 0 && b[3] != 255 {
			out = append(out, a)
		}
		a = a.Next()
		if !a.IsValid() || !a.IsLoopback() {
			return nil, errors.Join(ErrConfig, fmt.Errorf("loadgen: 127.0.0.0/8 has no room for %d sources from %v", n, base))
		}
	}
	return out, nil
}
