package worker

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os/exec"
	"sync"
	"syscall"
	"time"
)

// Worker is a running worker process as the orchestrator sees it.
type Worker struct {
	cmd  *exec.Cmd
	in   io.WriteCloser
	done chan struct{} // closed when the reader goroutine returns

	mu      sync.Mutex // guards pending, nextID, readErr, and serializes writes to in
	pending map[uint64]chan Response
	nextID  uint64
	readErr error
}

// Start runs bin with args as a worker; its stderr goes to stderr.
func Start(bin string, args []string, stderr io.Writer) (*Worker, error) {
	cmd := exec.Command(bin, args...)
	cmd.Stderr = stderr
	// If the orchestrator dies, so does the worker.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	in, err := cmd.StdinPipe()
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrWorker, err)
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrWorker, err)
	}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrWorker, err)
	}
	w := &Worker{cmd: cmd, in: in, done: make(chan struct{}), pending: map[uint64]chan Response{}}
	go w.read(out) // returns when the process's stdout closes; Close waits for it
	return w, nil
}

// Pid is the worker's process id.
func (w *Worker) Pid() int { return w.cmd.Process.Pid }

func (w *Worker) read(out io.Reader) {
	defer close(w.done)
	sc := bufio.NewScanner(out)
	sc.Buffer(make([]byte, 64<<10), 16<<20)
	var err error
	for sc.Scan() {
		var r Response
		if err = json.Unmarshal(sc.Bytes(), &r); err != nil {
			err = fmt.Errorf("%w: %w", ErrProtocol, err)
			break
		}
		w.mu.Lock()
		ch := w.pending[r.ID]
		delete(w.pending, r.ID)
		w.mu.Unlock()
		if ch != nil {
			ch <- r // buffered
		}
	}
	if err == nil {
		err = sc.Err()
	}
	if err == nil {
		err = io.EOF
	}
	w.mu.Lock()
	w.readErr = fmt.Errorf("%w: worker %d output ended: %w", ErrWorker, w.cmd.Process.Pid, err)
	w.mu.Unlock()
}

// Call sends r and waits for its answer, an error answer being an error.
func (w *Worker) Call(ctx context.Context, r Request) (Response, error) {
	ch := make(chan Response, 1)
	w.mu.Lock()
	if w.readErr != nil {
		err := w.readErr
		w.mu.Unlock()
		return Response{}, err
	}
	w.nextID++
	r.ID = w.nextID
	w.pending[r.ID] = ch
	b, _ := json.Marshal(r)
	_, err := w.in.Write(append(b, '\n'))
	w.mu.Unlock()
	if err != nil {
		return Response{}, fmt.Errorf("%w: %w", ErrWorker, err)
	}
	select {
	case resp := <-ch:
		if resp.Err != "" {
			return resp, fmt.Errorf("%w: %s: %s", ErrWorker, r.Op, resp.Err)
		}
		return resp, nil
	case <-w.done:
		select {
		case resp := <-ch:
			return resp, nil
		default:
		}
		w.mu.Lock()
		defer w.mu.Unlock()
		return Response{}, w.readErr
	case <-ctx.Done():
		w.mu.Lock()
		delete(w.pending, r.ID)
		w.mu.Unlock()
		return Response{}, fmt.Errorf("%w: %s: %w", ErrTimeout, r.Op, ctx.Err())
	}
}

// Close ends the worker: its stdin is closed, which makes it exit; if it has not
// exited after grace, it is killed (SIGKILL, by PID). Close waits for the process and
// the reader goroutine.
func (w *Worker) Close(grace time.Duration) error {
	w.mu.Lock()
	_ = w.in.Close()
	w.mu.Unlock()
	exited := make(chan error, 1)
	go func() { exited <- w.cmd.Wait() }()
	var err error
	select {
	case err = <-exited:
	case <-time.After(grace):
		_ = w.cmd.Process.Kill()
		err = <-exited
	}
	<-w.done
	return err
}
