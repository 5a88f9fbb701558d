package loadgen

import (
	"fmt"
	"regexp"
	"strconv"
	"strings"
)

// Threshold is one k6-style pass/fail criterion, such as "p99<250ms",
// "errors<0.1%", "missing==0" or "deliveries_per_sec>1000".
//
// Metrics:
//   - p50 p90 p95 p99 p999 max mean min: publish-to-receive latency; units ms
//     (the default), s, us.
//   - connect_p50 … connect_min: connect latency (socket() to
//     connection_established); same units.
//   - member_p50 … member_min: presence join-to-member_added latency in the
//     load phase (Report.Presence.MemberLatencyLoad); same units.
//   - errors: Totals.ErrorRate; with % it is a percentage, without a fraction
//     ("errors<0.1%" is "errors<0.001").
//   - error_count, missing, duplicated, delivered, published, connections (peak
//     open), connected, deliveries_per_sec, publishes_per_sec: plain numbers, no
//     unit.
//
// Operators: < <= > >= ==. A latency threshold over a histogram with no values
// fails: it cannot be shown to hold.
type Threshold struct {
	Expr   string  // as given
	Metric string  // e.g. "p99"
	Op     string  // "<", "<=", ">", ">=", "=="
	Limit  float64 // in Unit
	Unit   string  // "ms", "s", "us", "%" or ""
}

var thresholdRE = regexp.MustCompile(`^([a-z][a-z0-9_]*)\s*(<=|>=|==|<|>)\s*([0-9]+(?:\.[0-9]+)?(?:[eE][-+]?[0-9]+)?)\s*(ms|us|µs|s|%)?$`)

type metricKind int

const (
	kindTime metricKind = iota
	kindRate
	kindCount
)

func metricOf(name string) (metricKind, bool) {
	base := strings.TrimPrefix(strings.TrimPrefix(strings.TrimPrefix(name, "connect_"), "member_"), "broadcast_")
	switch base {
	case "p50", "p90", "p95", "p99", "p999", "max", "mean", "min":
		return kindTime, true
	}
	switch name {
	case "errors":
		return kindRate, true
	case "error_count", "missing", "duplicated", "delivered", "published", "connections", "connected",
		"deliveries_per_sec", "publishes_per_sec", "lost_connections", "broadcast_incomplete":
		return kindCount, true
	}
	return 0, false
}

// ParseThreshold parses one expression; an error wraps ErrThreshold and says what
// is wrong.
func ParseThreshold(expr string) (Threshold, error) {
	m := thresholdRE.FindStringSubmatch(strings.TrimSpace(expr))
	if m == nil {
		return Threshold{}, fmt.Errorf("%w: %q: want <metric><op><number>[unit], e.g. p99<250ms", ErrThreshold, expr)
	}
	t := Threshold{Expr: expr, Metric: m[1], Op: m[2], Unit: m[4]}
	if t.Unit == "µs" {
		t.Unit = "us"
	}
	v, err := strconv.ParseFloat(m[3], 64)
	if err != nil {
		return Threshold{}, fmt.Errorf("%w: %q: %w", ErrThreshold, expr, err)
	}
	t.Limit = v
	kind, ok := metricOf(t.Metric)
	if !ok {
		return Threshold{}, fmt.Errorf("%w: %q: unknown metric %q", ErrThreshold, expr, t.Metric)
	}
	switch kind {
	case kindTime:
		if t.Unit == "%" {
			return Threshold{}, fmt.Errorf("%w: %q: %s is a latency: use ms, s or us", ErrThreshold, expr, t.Metric)
		}
		if t.Unit == "" {
			t.Unit = "ms"
		}
	case kindRate:
		if t.Unit != "" && t.Unit != "%" {
			return Threshold{}, fmt.Errorf("%w: %q: errors is a rate: use %% or a fraction", ErrThreshold, expr)
		}
	case kindCount:
		if t.Unit != "" {
			return Threshold{}, fmt.Errorf("%w: %q: %s takes no unit", ErrThreshold, expr, t.Metric)
		}
	}
	return t, nil
}

// ParseThresholds parses every expression.
func ParseThresholds(exprs []string) ([]Threshold, error) {
	out := make([]Threshold, 0, len(exprs))
	for _, e := range exprs {
		t, err := ParseThreshold(e)
		if err != nil {
			return nil, err
		}
		out = append(out, t)
	}
	return out, nil
}

// Measure returns the report's value of t's metric in t's unit, and false when there
// is nothing to measure (a latency without values).
func (t Threshold) Measure(r *Report) (float64, bool) {
	kind, _ := metricOf(t.Metric)
	switch kind {
	case kindTime:
		d := r.Latency
		name := t.Metric
		if strings.HasPrefix(name, "connect_") {
			d, name = r.Connect, strings.TrimPrefix(name, "connect_")
		}
		if strings.HasPrefix(name, "broadcast_") {
			d, name = Distribution{}, strings.TrimPrefix(name, "broadcast_")
			if r.Broadcasts != nil {
				d = r.Broadcasts.Completion
			}
		}
		if strings.HasPrefix(name, "member_") {
			d, name = Distribution{}, strings.TrimPrefix(name, "member_")
			if r.Presence != nil {
				d = r.Presence.MemberLatencyLoad
			}
		}
		if d.Count == 0 {
			return 0, false
		}
		v := map[string]float64{"p50": d.P50Ms, "p90": d.P90Ms, "p95": d.P95Ms, "p99": d.P99Ms,
			"p999": d.P999Ms, "max": d.MaxMs, "mean": d.MeanMs, "min": d.MinMs}[name]
		switch t.Unit {
		case "s":
			v /= 1000
		case "us":
			v *= 1000
		}
		return v, true
	case kindRate:
		if t.Unit == "%" {
			return r.Totals.ErrorRate * 100, true
		}
		return r.Totals.ErrorRate, true
	}
	tot := &r.Totals
	var errs uint64
	for _, v := range tot.Errors {
		errs += v
	}
	switch t.Metric {
	case "error_count":
		return float64(errs), true
	case "missing":
		return float64(tot.Missing), true
	case "duplicated":
		return float64(tot.Duplicated), true
	case "delivered":
		return float64(tot.Delivered), true
	case "published":
		return float64(tot.Published), true
	case "connections":
		return float64(tot.ConnectionsPeak), true
	case "connected":
		return float64(tot.Connected), true
	case "deliveries_per_sec":
		return tot.DeliveriesPerSec, true
	case "publishes_per_sec":
		return tot.PublishesPerSec, true
	case "lost_connections":
		return float64(tot.LostConnections), true
	case "broadcast_incomplete":
		if r.Broadcasts == nil {
			return 0, true
		}
		return float64(r.Broadcasts.Incomplete), true
	}
	return 0, false
}

// Holds reports whether value meets t.
func (t Threshold) Holds(v float64) bool {
	switch t.Op {
	case "<":
		return v < t.Limit
	case "<=":
		return v <= t.Limit
	case ">":
		return v > t.Limit
	case ">=":
		return v >= t.Limit
	case "==":
		return v == t.Limit
	}
	return false
}

// EvaluateThresholds fills r.Thresholds and r.Passed.
func EvaluateThresholds(r *Report, ts []Threshold) {
	r.Thresholds = nil
	r.Passed = true
	for _, t := range ts {
		v, ok := t.Measure(r)
		res := ThresholdResult{Expr: t.Expr, Value: v, OK: ok && t.Holds(v)}
		if !res.OK {
			r.Passed = false
		}
		r.Thresholds = append(r.Thresholds, res)
	}
}
