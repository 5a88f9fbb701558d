package main

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"

	"github.com/herald-rt/herald/bench/proc"
)

var errMetrics = errors.New("benchrun: metric not found")

// build compiles the three programs into dir. A Herald build failure is returned
// separately so that the floor can still be measured.
func build(ctx context.Context, goBin, dir string) (heraldErr, err error) {
	root, err := proc.ModuleRoot(ctx, goBin)
	if err != nil {
		return nil, err
	}
	for _, b := range []struct{ out, pkg string }{
		{"rawfloor", "./bench/cmd/rawfloor"},
		{"loadgen", "./cmd/loadgen"},
		{"herald", "./cmd/herald"},
	} {
		if err := proc.Build(ctx, goBin, root, dir, b.out, b.pkg); err != nil {
			if b.out == "herald" {
				heraldErr = err
				continue
			}
			return nil, err
		}
	}
	return heraldErr, nil
}

// heapInuse asks Herald's admin port for a GC (pprof's gc=1) and then scrapes
// go_memstats_heap_inuse_bytes from /metrics.
func heapInuse(ctx context.Context, admin string) (int64, error) {
	_, _ = proc.Get(ctx, admin, "/debug/pprof/heap?gc=1") // best effort: only to collect garbage first
	b, err := proc.Get(ctx, admin, "/metrics")
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
