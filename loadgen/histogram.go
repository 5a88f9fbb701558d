package loadgen

import (
	"fmt"
	"time"

	"github.com/HdrHistogram/hdrhistogram-go"
)

// Histogram geometry: microseconds from 1 µs to 1 hour with 3 significant digits
// (relative error at most 0.1%), about 190 KB of counters. Every Histogram of this
// package has the same geometry, so that Merge is exact: each counter adds to the
// counter of the same index.
const (
	histLowest  = 1
	histHighest = int64(time.Hour / time.Microsecond)
	histDigits  = 3
)

// Histogram is a latency distribution: an HdrHistogram of microseconds. It is not
// safe for concurrent use; each loop records into its own and they are merged.
//
// An empty Histogram holds no counters (h is nil until the first value): a worker
// sends a delta every second and most deltas are empty, so decoding, merging and
// subtracting them must not allocate and clear 190 KB each time.
type Histogram struct {
	h *hdrhistogram.Histogram // nil while empty
}

// NewHistogram returns an empty Histogram.
func NewHistogram() *Histogram { return &Histogram{} }

func newHdr() *hdrhistogram.Histogram { return hdrhistogram.New(histLowest, histHighest, histDigits) }

// Record adds one duration, clamped to [1 µs, 1 h].
func (h *Histogram) Record(d time.Duration) {
	v := int64(d / time.Microsecond)
	if v < histLowest {
		v = histLowest
	} else if v > histHighest {
		v = histHighest
	}
	if h.h == nil {
		h.h = newHdr()
	}
	_ = h.h.RecordValue(v) // in range by construction
}

func checkGeometry(o *hdrhistogram.Histogram) error {
	if o.LowestTrackableValue() != histLowest || o.HighestTrackableValue() != histHighest ||
		o.SignificantFigures() != histDigits {
		return fmt.Errorf("%w: geometry %d..%d/%d", ErrHistogram,
			o.LowestTrackableValue(), o.HighestTrackableValue(), o.SignificantFigures())
	}
	return nil
}

// Merge adds every count of o to h. Both have this package's geometry, so nothing is
// approximated or dropped; an error means o did not come from this package.
func (h *Histogram) Merge(o *Histogram) error {
	if o.h == nil {
		return nil
	}
	if err := checkGeometry(o.h); err != nil {
		return err
	}
	if o.h.TotalCount() == 0 {
		return nil
	}
	if h.h == nil {
		h.h = newHdr()
	}
	if dropped := h.h.Merge(o.h); dropped != 0 {
		return fmt.Errorf("%w: %d values dropped in merge", ErrHistogram, dropped)
	}
	return nil
}

// Count is the number of recorded values.
func (h *Histogram) Count() int64 {
	if h.h == nil {
		return 0
	}
	return h.h.TotalCount()
}

// Quantile returns the value at quantile q in [0, 1] (0 when empty).
func (h *Histogram) Quantile(q float64) time.Duration {
	if h.Count() == 0 {
		return 0
	}
	return time.Duration(h.h.ValueAtQuantile(q*100)) * time.Microsecond
}

// Max returns the largest recorded value (to the histogram's precision).
func (h *Histogram) Max() time.Duration {
	if h.Count() == 0 {
		return 0
	}
	return time.Duration(h.h.Max()) * time.Microsecond
}

// Reset empties h (keeping its counters for reuse).
func (h *Histogram) Reset() {
	if h.h != nil {
		h.h.Reset()
	}
}

// Equal reports whether both hold the same counts.
func (h *Histogram) Equal(o *Histogram) bool {
	if h.Count() == 0 || o.Count() == 0 {
		return h.Count() == o.Count()
	}
	return h.h.Equals(o.h)
}

// MarshalText encodes h in the HdrHistogram V2 compressed base64 format, which other
// HdrHistogram implementations read too. An empty histogram encodes as "": most
// per-second deltas of a hold are empty, and the compressed form costs a deflate
// compressor each time.
func (h *Histogram) MarshalText() ([]byte, error) {
	if h.Count() == 0 {
		return []byte{}, nil
	}
	b, err := h.h.Encode(hdrhistogram.V2CompressedEncodingCookieBase)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrHistogram, err)
	}
	return b, nil
}

// UnmarshalText decodes what MarshalText produced; the geometry must be this
// package's.
func (h *Histogram) UnmarshalText(b []byte) error {
	if len(b) == 0 {
		h.h = nil
		return nil
	}
	d, err := hdrhistogram.Decode(b)
	if err != nil {
		return fmt.Errorf("%w: %w", ErrHistogram, err)
	}
	// The decoded histogram has the encoder's geometry: used as it is once checked,
	// rather than copied into a new one.
	if err := checkGeometry(d); err != nil {
		return err
	}
	h.h = d
	return nil
}

// String summarizes the distribution.
func (h *Histogram) String() string {
	if h.Count() == 0 {
		return "n=0"
	}
	return fmt.Sprintf("n=%d p50=%v p99=%v max=%v", h.Count(), h.Quantile(0.5), h.Quantile(0.99), h.Max())
}

// Sub removes o's counts from h, where o is an earlier snapshot of h (h recorded
// everything o did), so that h becomes the exact difference: how cumulative
// snapshots become per-interval deltas without approximation.
func (h *Histogram) Sub(o *Histogram) error {
	if o.Count() == 0 {
		return nil
	}
	if h.Count() < o.Count() {
		return fmt.Errorf("%w: sub of a histogram that is not an earlier snapshot", ErrHistogram)
	}
	a, b := h.h.Export(), o.h.Export()
	if len(a.Counts) != len(b.Counts) {
		return fmt.Errorf("%w: sub of another geometry", ErrHistogram)
	}
	for i, n := range b.Counts {
		if a.Counts[i] < n {
			return fmt.Errorf("%w: sub of a histogram that is not an earlier snapshot", ErrHistogram)
		}
		a.Counts[i] -= n
	}
	h.h = hdrhistogram.Import(a)
	return nil
}

// Min returns the smallest recorded value (to the histogram's precision), 0 when
// empty.
func (h *Histogram) Min() time.Duration {
	if h.Count() == 0 {
		return 0
	}
	return time.Duration(h.h.Min()) * time.Microsecond
}

// Mean returns the mean of the recorded values, 0 when empty.
func (h *Histogram) Mean() time.Duration {
	if h.Count() == 0 {
		return 0
	}
	return time.Duration(h.h.Mean() * float64(time.Microsecond))
}

// Clone returns an independent copy of h.
func (h *Histogram) Clone() *Histogram {
	n := NewHistogram()
	_ = n.Merge(h) // same geometry by construction
	return n
}

// HistBucket is one non-empty bucket: Count values at most UpTo (and above the
// previous bucket's bound).
type HistBucket struct {
	UpTo  time.Duration
	Count int64
}

// Buckets returns the non-empty buckets in ascending order.
func (h *Histogram) Buckets() []HistBucket {
	var out []HistBucket
	if h.Count() == 0 {
		return nil
	}
	for _, b := range h.h.Distribution() {
		if b.Count > 0 {
			out = append(out, HistBucket{UpTo: time.Duration(b.To) * time.Microsecond, Count: b.Count})
		}
	}
	return out
}
