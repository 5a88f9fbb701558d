package cluster

import (
	"context"
	"math"
	"slices"
	"strconv"
	"strings"

	"github.com/herald-rt/herald/bench/proc"
)

// Series is one line of a Prometheus text exposition: a metric name, its labels and
// its value.
type Series struct {
	Name   string
	Labels map[string]string
	Value  float64
}

// ScrapeSeries reads a herald node's /metrics, keeping every series with its labels.
func ScrapeSeries(ctx context.Context, admin string) ([]Series, error) {
	b, err := proc.Get(ctx, admin, "/metrics")
	if err != nil {
		return nil, err
	}
	return parseSeries(string(b)), nil
}

// SumBy reads metric name on every node and sums it by the value of one label
// (herald_webhooks_sent_total by "event": member_added → 123, ...).
func (c *Cluster) SumBy(ctx context.Context, name, label string) (map[string]float64, error) {
	out := map[string]float64{}
	for _, n := range c.Nodes {
		ss, err := ScrapeSeries(ctx, n.Admin)
		if err != nil {
			return nil, err
		}
		for _, s := range ss {
			if s.Name == name {
				out[s.Labels[label]] += s.Value
			}
		}
	}
	return out, nil
}

// Histogram is a Prometheus histogram summed over its other labels and over nodes:
// cumulative counts by upper bound ("le"), the +Inf bucket being Count.
type Histogram struct {
	Bounds []float64 // ascending, +Inf excluded
	Cum    []uint64  // cumulative count at each bound
	Count  uint64
	Sum    float64
}

// Histogram reads histogram name (name_bucket, name_count, name_sum) on every node
// and sums it.
func (c *Cluster) Histogram(ctx context.Context, name string) (Histogram, error) {
	var all []Series
	for _, n := range c.Nodes {
		ss, err := ScrapeSeries(ctx, n.Admin)
		if err != nil {
			return Histogram{}, err
		}
		all = append(all, ss...)
	}
	return histogramOf(all, name), nil
}

// histogramOf sums histogram name out of ss, whatever their other labels.
func histogramOf(ss []Series, name string) Histogram {
	cum := map[float64]float64{}
	var h Histogram
	var count float64
	for _, s := range ss {
		switch s.Name {
		case name + "_bucket":
			le, err := strconv.ParseFloat(s.Labels["le"], 64)
			if err != nil || math.IsInf(le, 1) {
				continue
			}
			cum[le] += s.Value
		case name + "_count":
			count += s.Value
		case name + "_sum":
			h.Sum += s.Value
		}
	}
	for le := range cum {
		h.Bounds = append(h.Bounds, le)
	}
	slices.Sort(h.Bounds)
	for _, le := range h.Bounds {
		h.Cum = append(h.Cum, uint64(cum[le]+0.5))
	}
	h.Count = uint64(count + 0.5)
	return h
}

// Quantile estimates the q-quantile (0 < q < 1) as Prometheus's histogram_quantile
// does: linearly within the bucket that holds it, from 0 for the first bucket. A
// quantile in the +Inf bucket is the highest finite bound; with no observation, NaN.
func (h Histogram) Quantile(q float64) float64 {
	if h.Count == 0 || len(h.Bounds) == 0 {
		return math.NaN()
	}
	return h.quantileOf(q, h.Count)
}

// QuantileBelow estimates, as Quantile does, the q-quantile of the n lowest
// observations (a population known to lie below the others). NaN when n is 0 or more
// than Count.
func (h Histogram) QuantileBelow(q float64, n uint64) float64 {
	if n == 0 || n > h.Count {
		return math.NaN()
	}
	return h.quantileOf(q, n)
}

func (h Histogram) quantileOf(q float64, total uint64) float64 {
	rank := q * float64(total)
	lo, prev := 0.0, uint64(0)
	for i, up := range h.Bounds {
		c := h.Cum[i]
		if float64(c) >= rank {
			if c == prev {
				return up
			}
			return lo + (up-lo)*(rank-float64(prev))/float64(c-prev)
		}
		lo, prev = up, c
	}
	return h.Bounds[len(h.Bounds)-1]
}

// CountAtMost is the cumulative count at bound le (an exact bucket bound), or -1 when
// le is not one.
func (h Histogram) CountAtMost(le float64) int64 {
	for i, b := range h.Bounds {
		if b == le {
			return int64(h.Cum[i])
		}
	}
	return -1
}

// SumAtMost bounds the sum of the observations at most le (an exact bucket bound):
// each lies between its bucket's lower and upper bound. With the total Sum, it bounds
// the mean of the observations above le too.
func (h Histogram) SumAtMost(le float64) (lo, hi float64) {
	lower, prev := 0.0, uint64(0)
	for i, up := range h.Bounds {
		if up > le {
			break
		}
		n := float64(h.Cum[i] - prev)
		lo, hi = lo+n*lower, hi+n*up
		lower, prev = up, h.Cum[i]
	}
	return lo, hi
}

// parseSeries reads a text exposition; lines it cannot read are skipped.
func parseSeries(text string) []Series {
	var out []Series
	for _, line := range strings.Split(text, "\n") {
		if line == "" || line[0] == '#' {
			continue
		}
		i := strings.IndexAny(line, "{ ")
		if i <= 0 {
			continue
		}
		s := Series{Name: line[:i]}
		rest := line[i:]
		if rest[0] == '{' {
			labels, n, ok := parseLabels(rest[1:])
			if !ok {
				continue
			}
			s.Labels, rest = labels, rest[1+n:]
		}
		f := strings.Fields(rest) // value [timestamp]
		if len(f) == 0 {
			continue
		}
		v, err := strconv.ParseFloat(f[0], 64)
		if err != nil {
			continue
		}
		s.Value = v
		out = append(out, s)
	}
	return out
}

// parseLabels reads `a="x",b="y\"z"}` and returns the labels and the bytes read,
// the closing brace included.
func parseLabels(s string) (map[string]string, int, bool) {
	labels := map[string]string{}
	i := 0
	for {
		for i < len(s) && (s[i] == ',' || s[i] == ' ') {
			i++
		}
		if i < len(s) && s[i] == '}' {
			return labels, i + 1, true
		}
		eq := strings.IndexByte(s[i:], '=')
		if eq <= 0 || i+eq+1 >= len(s) || s[i+eq+1] != '"' {
			return nil, 0, false
		}
		name := strings.TrimSpace(s[i : i+eq])
		i += eq + 2
		var v strings.Builder
		for {
			if i >= len(s) {
				return nil, 0, false
			}
			c := s[i]
			i++
			if c == '"' {
				break
			}
			if c == '\\' && i < len(s) {
				switch s[i] {
				case 'n':
					c = '\n'
				default:
					c = s[i]
				}
				i++
			}
			v.WriteByte(c)
		}
		labels[name] = v.String()
	}
}
