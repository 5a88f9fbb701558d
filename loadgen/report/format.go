package report

import (
	"encoding/json"
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"
)

// The formatters below are hand-rolled rather than locale-driven so that the report
// is byte-for-byte the same wherever it is rendered (the golden test relies on it).

const dash = "—" // shown where a value does not exist (no samples, zero time)

// fmtInt writes n with thousands separators: 1234567 → "1,234,567".
func fmtInt[T ~int | ~int64 | ~uint64](n T) string {
	s := strconv.FormatUint(uint64(absInt(n)), 10)
	var b strings.Builder
	if n < 0 {
		b.WriteByte('-')
	}
	for i, r := range s {
		if i > 0 && (len(s)-i)%3 == 0 {
			b.WriteByte(',')
		}
		b.WriteRune(r)
	}
	return b.String()
}

func absInt[T ~int | ~int64 | ~uint64](n T) T {
	if n < 0 {
		return -n
	}
	return n
}

// fmtFloat writes v with the given decimals and thousands separators.
func fmtFloat(v float64, decimals int) string {
	if !finite(v) {
		return strconv.FormatFloat(v, 'f', -1, 64)
	}
	s := strconv.FormatFloat(math.Abs(v), 'f', decimals, 64)
	intPart, frac, _ := strings.Cut(s, ".")
	n, err := strconv.ParseUint(intPart, 10, 64)
	if err != nil { // beyond uint64: no separators, still correct
		return strconv.FormatFloat(v, 'f', decimals, 64)
	}
	out := fmtInt(n)
	if frac != "" {
		out += "." + frac
	}
	if v < 0 && strings.Trim(out, "0.,") != "" {
		out = "-" + out
	}
	return out
}

// fmtNum is for values of unknown unit (threshold measurements): four significant
// digits below 1000, whole numbers with separators above.
func fmtNum(v float64) string {
	if !finite(v) {
		return strconv.FormatFloat(v, 'f', -1, 64)
	}
	if math.Abs(v) >= 1000 {
		return fmtFloat(v, 0)
	}
	return strconv.FormatFloat(v, 'g', 4, 64)
}

// fmtMs writes a latency with three significant digits: 0.123 ms, 4.56 ms, 78.9 ms,
// 1,234 ms.
func fmtMs(v float64) string {
	switch a := math.Abs(v); {
	case !finite(v):
		return dash
	case a == 0:
		return "0 ms"
	case a < 1:
		return fmtFloat(v, 3) + " ms"
	case a < 10:
		return fmtFloat(v, 2) + " ms"
	case a < 100:
		return fmtFloat(v, 1) + " ms"
	default:
		return fmtFloat(v, 0) + " ms"
	}
}

// fmtRate writes a per-second rate: whole numbers from 100 up, one decimal below.
func fmtRate(v float64) string {
	if math.Abs(v) >= 100 {
		return fmtFloat(v, 0) + "/s"
	}
	return fmtFloat(v, 1) + "/s"
}

// fmtPct writes a fraction in [0, 1] as a percentage with about three significant
// digits, keeping small nonzero rates visibly nonzero.
func fmtPct(f float64) string {
	p := 100 * f
	switch a := math.Abs(p); {
	case !finite(p):
		return dash
	case a == 0:
		return "0%"
	case a < 0.001:
		return "< 0.001%"
	case a < 1:
		return strconv.FormatFloat(p, 'f', 3, 64) + "%"
	case a < 10:
		return strconv.FormatFloat(p, 'f', 2, 64) + "%"
	default:
		return strconv.FormatFloat(p, 'f', 1, 64) + "%"
	}
}

// fmtSeconds writes a run's length: "42.3 s" under a minute, Go's "5m3.2s" above.
func fmtSeconds(s float64) string {
	if !finite(s) || s < 0 {
		return dash
	}
	if s < 60 {
		return strconv.FormatFloat(s, 'f', 1, 64) + " s"
	}
	return time.Duration(s * float64(time.Second)).Round(100 * time.Millisecond).String()
}

// fmtTime writes an instant in UTC: a report is read on other machines than the one
// that ran the test, so local time would be ambiguous.
func fmtTime(t time.Time) string {
	if t.IsZero() {
		return dash
	}
	return t.UTC().Format("2006-01-02 15:04:05 UTC")
}

// fmtParam writes a scenario parameter: strings as they are, everything else as JSON
// (which sorts map keys, keeping nested values deterministic).
func fmtParam(v any) string {
	if s, ok := v.(string); ok {
		return s
	}
	b, err := json.Marshal(v)
	if err != nil {
		return fmt.Sprint(v)
	}
	return string(b)
}

// axisLabel writes tick value v of an axis whose ticks are ticks: one SI suffix for
// the whole axis (chosen by its largest value) and as many decimals as the step needs.
func axisLabel(v float64, ticks []float64) string {
	if v == 0 {
		return "0" // not "0k": the origin needs no unit
	}
	top := 0.0
	for _, t := range ticks {
		top = max(top, math.Abs(t))
	}
	step := 1.0
	if len(ticks) > 1 {
		step = ticks[1] - ticks[0]
	}
	div, suffix := 1.0, ""
	switch {
	case top >= 1e9:
		div, suffix = 1e9, "G"
	case top >= 1e6:
		div, suffix = 1e6, "M"
	case top >= 1e4:
		div, suffix = 1e3, "k"
	}
	// As many decimals as the step needs to be exact: 0.25 → 2, 2.5 → 1, 2000 → 0.
	decimals, s := 0, step/div
	for decimals < 6 && math.Abs(s-math.Round(s)) > 1e-6*math.Max(1, s) {
		s *= 10
		decimals++
	}
	return fmtFloat(v/div, decimals) + suffix
}

// msTick labels a log-axis tick: milliseconds below one second, seconds above.
func msTick(v float64) string {
	if v >= 1000 {
		return strconv.FormatFloat(v/1000, 'f', -1, 64) + " s"
	}
	return strconv.FormatFloat(v, 'f', -1, 64)
}

// fmtBytes writes a memory size in binary units: "412.3 MiB".
func fmtBytes(n int64) string {
	if n <= 0 {
		return dash
	}
	v, units := float64(n), []string{"B", "KiB", "MiB", "GiB", "TiB"}
	i := 0
	for v >= 1024 && i < len(units)-1 {
		v /= 1024
		i++
	}
	if i == 0 {
		return fmtInt(n) + " B"
	}
	return strconv.FormatFloat(v, 'f', 1, 64) + " " + units[i]
}
