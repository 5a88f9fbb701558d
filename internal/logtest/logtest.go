// Package logtest records what a *slog.Logger logs, for tests that check log lines
// (rate-limited warnings, webhook endpoint failures).
package logtest

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"
)

// Line is one logged record.
type Line struct {
	At    time.Time
	Level slog.Level
	Msg   string
	Attrs map[string]any
}

// Recorder is a slog.Handler that keeps every record's message and attributes. The
// zero value is ready; it is safe for concurrent use.
type Recorder struct {
	mu    sync.Mutex
	lines []Line
}

// Logger returns a logger that records into r.
func (r *Recorder) Logger() *slog.Logger { return slog.New(r) }

func (r *Recorder) Enabled(context.Context, slog.Level) bool { return true }
func (r *Recorder) WithAttrs([]slog.Attr) slog.Handler       { return r }
func (r *Recorder) WithGroup(string) slog.Handler            { return r }
func (r *Recorder) Handle(_ context.Context, rec slog.Record) error {
	l := Line{At: rec.Time, Level: rec.Level, Msg: rec.Message, Attrs: map[string]any{}}
	rec.Attrs(func(a slog.Attr) bool {
		l.Attrs[a.Key] = a.Value.Any()
		return true
	})
	r.mu.Lock()
	r.lines = append(r.lines, l)
	r.mu.Unlock()
	return nil
}

// Lines returns a copy of what was logged so far.
func (r *Recorder) Lines() []Line {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]Line(nil), r.lines...)
}

// Matching returns the lines whose message starts with prefix.
func (r *Recorder) Matching(prefix string) []Line {
	var out []Line
	for _, l := range r.Lines() {
		if strings.HasPrefix(l.Msg, prefix) {
			out = append(out, l)
		}
	}
	return out
}

// Occurrences is how many occurrences lines of an internal/warnlimit.Limiter stand
// for: each line is one, and its "suppressed" counts the others held back before it.
// It is an error for a line not to be a warning, not to keep its occurrence's "err",
// or to carry a "suppressed" that is not positive.
func Occurrences(lines []Line) (int, error) {
	n := 0
	for _, l := range lines {
		if l.Level != slog.LevelWarn {
			return 0, fmt.Errorf("line at %v, want Warn: %+v", l.Level, l)
		}
		if _, ok := l.Attrs["err"]; !ok {
			return 0, fmt.Errorf("every line keeps its occurrence's details: %+v", l)
		}
		n++
		if v, ok := l.Attrs["suppressed"]; ok {
			s, _ := v.(int64)
			if s <= 0 {
				return 0, fmt.Errorf("suppressed=%v", v)
			}
			n += int(s)
		}
	}
	return n, nil
}
