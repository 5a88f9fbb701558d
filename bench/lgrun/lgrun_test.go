package lgrun

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/herald-rt/herald/bench/cluster"
	"github.com/herald-rt/herald/bench/proc"
	"github.com/herald-rt/herald/loadgen"
)

// Against a real Herald with real loadgen workers: a run with during holds its
// connections while during runs (the server counts them), then stops; a second run
// gets other source addresses.
func TestRunHoldsWhileDuring(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	dir := t.TempDir()
	root, err := proc.ModuleRoot(ctx, "go")
	if err != nil {
		t.Fatal(err)
	}
	for _, b := range [][2]string{{"loadgen", "./cmd/loadgen"}, {"herald", "./cmd/herald"}} {
		if err := proc.Build(ctx, "go", root, dir, b[0], b[1]); err != nil {
			t.Fatal(err)
		}
	}
	app := cluster.App{ID: "1", Key: "k", Secret: "s"}
	n, err := cluster.StartHerald(ctx, filepath.Join(dir, "herald"), dir, "herald", app, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer n.Stop(5 * time.Second)

	r := &Runner{Loadgen: filepath.Join(dir, "loadgen"), Log: os.Stderr}
	spec := loadgen.Spec{Target: "ws://" + n.Addr, AppID: app.ID, Key: app.Key, Secret: app.Secret,
		Connections: 20, Ramp: 1e9, Spread: loadgen.SpreadOne, Duration: loadgen.Duration(time.Minute)}
	var held float64
	rep, err := r.Run(ctx, spec, 2, func(ctx context.Context) error {
		m, err := cluster.Scrape(ctx, n.Admin)
		held = m["herald_connections"]
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	if held != 20 {
		t.Errorf("the server held %v connections during the run, want 20", held)
	}
	if rep.Stopped != "interrupted" || rep.Totals.Connected != 20 || len(rep.Workers) != 2 {
		t.Errorf("stopped %q, connected %d, %d workers", rep.Stopped, rep.Totals.Connected, len(rep.Workers))
	}
	first := rep.Workers[0].Source

	// RunNotify tells of the load phase and lets the run go on to its end.
	spec.Duration = loadgen.Duration(3 * time.Second)
	notified := 0
	rep, err = r.RunNotify(ctx, spec, 1, func(context.Context) error { notified++; return nil })
	if err != nil {
		t.Fatal(err)
	}
	if rep.Stopped != "duration" || rep.Totals.Connected != 20 || notified != 1 {
		t.Errorf("stopped %q, connected %d, notified %d times", rep.Stopped, rep.Totals.Connected, notified)
	}
	if first != "127.0.10.1" || rep.Workers[0].Source != "127.0.11.1" {
		t.Errorf("sources %q then %q, want 127.0.10.1 then 127.0.11.1", first, rep.Workers[0].Source)
	}
}
