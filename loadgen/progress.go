package loadgen

import (
	"encoding/json"
	"fmt"
	"io"
	"time"

	"github.com/schollz/progressbar/v3"
)

// ProgressPrinter shows a run's Progress as it goes. Both implementations render on
// the caller's goroutine (no goroutine of their own).
type ProgressPrinter interface {
	Update(Progress)
	Finish()
}

// NewProgressPrinter returns a live bar (github.com/schollz/progressbar/v3) of
// connections open against the target, with rates, latency and errors beside it,
// when terminal is true; otherwise plain lines, one every `every` (default 5 s) and
// one at the end, which suit logs and CI.
func NewProgressPrinter(w io.Writer, terminal bool, every time.Duration) ProgressPrinter {
	if !terminal {
		if every <= 0 {
			every = 5 * time.Second
		}
		return &lineProgress{w: w, every: every}
	}
	return &barProgress{w: w}
}

func progressText(p Progress) string {
	lost := ""
	if p.Lost > 0 {
		lost = fmt.Sprintf(" lost %d/%d workers", p.Lost, p.Workers)
	}
	return fmt.Sprintf("%-8s %5.0fs/%.0fs | %s deliv/s %s pub/s | p50 %s p99 %s | errors %d%s",
		p.Phase, p.Elapsed.Seconds(), p.Duration.Seconds(), human(p.DeliveriesPerSec), human(p.PublishesPerSec),
		shortDur(p.P50), shortDur(p.P99), p.Errors, lost)
}

type barProgress struct {
	w   io.Writer
	bar *progressbar.ProgressBar
}

func (b *barProgress) Update(p Progress) {
	if b.bar == nil {
		b.bar = progressbar.NewOptions64(int64(max(p.Target, 1)),
			progressbar.OptionSetWriter(b.w),
			progressbar.OptionSetWidth(24),
			progressbar.OptionShowCount(),
			progressbar.OptionSetPredictTime(false),
			progressbar.OptionShowDescriptionAtLineEnd(),
			progressbar.OptionSetRenderBlankState(true),
			progressbar.OptionThrottle(0),
		)
	}
	_ = b.bar.Set64(p.Open)
	b.bar.Describe("conns " + progressText(p))
}

func (b *barProgress) Finish() {
	if b.bar != nil {
		_ = b.bar.Exit()
		fmt.Fprintln(b.w)
	}
}

type lineProgress struct {
	w     io.Writer
	every time.Duration
	last  time.Time
	p     Progress
	shown bool // l.p was printed
}

func (l *lineProgress) Update(p Progress) {
	l.p, l.shown = p, false
	if now := time.Now(); now.Sub(l.last) >= l.every {
		l.last = now
		l.print()
	}
}

func (l *lineProgress) print() {
	fmt.Fprintf(l.w, "loadgen: conns %d/%d (failed %d) %s\n", l.p.Open, l.p.Target, l.p.Failed, progressText(l.p))
	l.shown = true
}

func (l *lineProgress) Finish() {
	if !l.shown && l.p.Phase != "" {
		l.print()
	}
}

// human prints a rate with k/M suffixes.
func human(v float64) string {
	switch {
	case v >= 1e6:
		return fmt.Sprintf("%.2fM", v/1e6)
	case v >= 1e4:
		return fmt.Sprintf("%.1fk", v/1e3)
	}
	return fmt.Sprintf("%.0f", v)
}

func shortDur(d time.Duration) string {
	switch {
	case d == 0:
		return "-"
	case d < time.Millisecond:
		return fmt.Sprintf("%dµs", d.Microseconds())
	case d < time.Second:
		return fmt.Sprintf("%.1fms", float64(d)/1e6)
	}
	return fmt.Sprintf("%.2fs", d.Seconds())
}

// NewJSONProgress writes every Progress as one JSON object per line (JSON lines),
// for wrappers that follow a run: fields as in ProgressLine.
func NewJSONProgress(w io.Writer) ProgressPrinter { return &jsonProgress{enc: json.NewEncoder(w)} }

// ProgressLine is one line of the JSON progress stream (loadgen run --progress
// json), about one a second. The field names are a stable interface.
type ProgressLine struct {
	Type             string  `json:"type"` // "progress"
	Time             string  `json:"time"` // RFC 3339, UTC
	Elapsed          float64 `json:"elapsed_s"`
	Duration         float64 `json:"duration_s"`
	Phase            string  `json:"phase"`
	Target           int     `json:"target"`
	Open             int64   `json:"open"`
	Established      int64   `json:"established"`
	Failed           int64   `json:"failed"`
	DeliveriesPerSec float64 `json:"deliveries_per_sec"`
	PublishesPerSec  float64 `json:"publishes_per_sec"`
	P50Ms            float64 `json:"p50_ms"`
	P99Ms            float64 `json:"p99_ms"`
	Errors           uint64  `json:"errors"`
	Workers          int     `json:"workers"`
	Lost             int     `json:"lost"`
}

type jsonProgress struct{ enc *json.Encoder }

func (j *jsonProgress) Update(p Progress) {
	_ = j.enc.Encode(ProgressLine{Type: "progress", Time: time.Now().UTC().Format(time.RFC3339Nano),
		Elapsed: p.Elapsed.Seconds(), Duration: p.Duration.Seconds(), Phase: p.Phase, Target: p.Target,
		Open: p.Open, Established: p.Established, Failed: p.Failed,
		DeliveriesPerSec: p.DeliveriesPerSec, PublishesPerSec: p.PublishesPerSec,
		P50Ms: ms(p.P50), P99Ms: ms(p.P99), Errors: p.Errors, Workers: p.Workers, Lost: p.Lost})
}

func (j *jsonProgress) Finish() {}
