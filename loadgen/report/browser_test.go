package report

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"image"
	"image/png"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/herald-rt/herald/loadgen"
)

// chromiumPath is where Debian's chromium package puts the browser. The test fails,
// not skips, without it: a skipped browser test would let a report that renders
// nothing pass `make test`, whose test-deps install the package.
const chromiumPath = "/usr/bin/chromium"

// TestBrowser opens the report in headless Chromium and checks, by pixel colour in a
// screenshot, that the charts rendered; the empty report is the control that must
// show its placeholders and none of the series colours.
func TestBrowser(t *testing.T) {
	if _, err := os.Stat(chromiumPath); err != nil {
		t.Fatalf("headless Chromium is needed at %s (%v): run `make test`, which installs the Debian package chromium",
			chromiumPath, err)
	}
	for _, c := range []struct {
		name  string
		r     func(*testing.T) *loadgen.Report
		empty bool
	}{
		{"full", loadFixture, false},
		{"empty", func(*testing.T) *loadgen.Report {
			r := loadFixture(t)
			r.Series, r.Latency.Buckets, r.Connect.Buckets = nil, nil, nil
			return r
		}, true},
	} {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			dir := t.TempDir()
			page := writeTemp(t, dir, "report.html", c.r(t))
			shot := filepath.Join(dir, "screenshot.png")
			screenshot(t, dir, page, shot)
			t.Logf("screenshot: %s", shot)
			img := decodePNG(t, shot)
			checkPixels(t, img, c.empty)
		})
	}
}

// screenshot runs Chromium in its own process group and kills that group by PID on
// timeout or when done, so no renderer or zygote outlives the test.
func screenshot(t *testing.T, dir, page, out string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, chromiumPath,
		"--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
		"--disable-background-networking", "--disable-component-update", "--disable-sync",
		"--user-data-dir="+filepath.Join(dir, "profile"), "--window-size=1280,2000",
		"--screenshot="+out, "file://"+page)
	// A private HOME keeps Chromium's caches and crash dumps out of the real one.
	cmd.Env = append(os.Environ(), "HOME="+dir, "XDG_CONFIG_HOME="+dir, "XDG_CACHE_HOME="+dir)
	var log bytes.Buffer
	cmd.Stdout, cmd.Stderr = &log, &log
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	killGroup := func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	cmd.Cancel = killGroup
	cmd.WaitDelay = 5 * time.Second // children holding the output pipe must not hang Wait
	err := cmd.Run()
	if cmd.Process != nil {
		if kerr := killGroup(); kerr != nil && !errors.Is(kerr, syscall.ESRCH) {
			t.Logf("killing chromium's process group %d: %v", cmd.Process.Pid, kerr)
		}
	}
	if ctx.Err() != nil {
		t.Fatalf("chromium did not finish within 60 s; its output:\n%s", log.String())
	}
	if err != nil {
		t.Fatalf("chromium: %v; its output:\n%s", err, log.String())
	}
	if _, err := os.Stat(out); err != nil {
		t.Fatalf("chromium wrote no screenshot (%v); its output:\n%s", err, log.String())
	}
}

func decodePNG(t *testing.T, path string) image.Image {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	img, err := png.Decode(f)
	if err != nil {
		t.Fatalf("screenshot is not a PNG: %v", err)
	}
	if b := img.Bounds(); b.Dx() < 1000 || b.Dy() < 1500 {
		t.Fatalf("screenshot is %v, want about 1280x2000", b.Size())
	}
	return img
}

type rgb struct{ r, g, b int }

func hexColor(s string) rgb {
	v, err := strconv.ParseUint(s[1:], 16, 32)
	if err != nil || len(s) != 7 {
		panic(fmt.Sprintf("bad colour %q", s))
	}
	return rgb{int(v >> 16), int(v >> 8 & 0xff), int(v & 0xff)}
}

// inkFrom skips the dark page header (about 200 px), whose solid fill would make
// any page look busy.
const inkFrom = 400

// checkPixels counts "ink" (dark pixels below the header: text, axes, bars) and pixels of each chart
// colour. Anti-aliasing blends line edges, so colours match within a tolerance; the
// 2-unit strokes and filled bars still leave many exact-colour pixels.
func checkPixels(t *testing.T, img image.Image, empty bool) {
	t.Helper()
	watch := map[string]rgb{
		"series blue": hexColor(colorBlue), "series orange": hexColor(colorOrange),
		"errors red": hexColor(colorRed), "placeholder": hexColor(colorEmpty),
	}
	counts := map[string]int{}
	ink, all := 0, 0
	b := img.Bounds()
	for y := b.Min.Y; y < b.Max.Y; y++ {
		for x := b.Min.X; x < b.Max.X; x++ {
			r, g, bl, _ := img.At(x, y).RGBA()
			p := rgb{int(r >> 8), int(g >> 8), int(bl >> 8)}
			if y >= b.Min.Y+inkFrom {
				all++
				if (p.r*299+p.g*587+p.b*114)/1000 < 160 {
					ink++
				}
			}
			for name, c := range watch {
				tol := 14
				if name == "placeholder" {
					tol = 2 // a pale colour: only exact matches, not anti-aliased white
				}
				if abs(p.r-c.r) <= tol && abs(p.g-c.g) <= tol && abs(p.b-c.b) <= tol {
					counts[name]++
				}
			}
		}
	}
	share := float64(ink) / float64(all)
	t.Logf("ink %.2f%% of the pixels below the header; colour counts %v", 100*share, counts)
	// Tables, axis labels and bars give several percent; a blank page gives none.
	if share < 0.01 {
		t.Errorf("screenshot looks blank: %.1f%% dark pixels", 100*share)
	}
	if empty {
		for _, name := range []string{"series blue", "series orange", "errors red"} {
			if counts[name] > 50 {
				t.Errorf("empty report shows %d pixels of the %s chart colour", counts[name], name)
			}
		}
		// Six placeholders of about 600x240 each, four of them within the shot.
		if counts["placeholder"] < 200_000 {
			t.Errorf("no-data placeholders not visible: %d pixels of their fill", counts["placeholder"])
		}
		return
	}
	// Histogram bars alone cover tens of thousands of pixels; the lines thousands.
	for name, least := range map[string]int{"series blue": 20_000, "series orange": 1_000, "errors red": 200} {
		if counts[name] < least {
			t.Errorf("charts not rendered: %d pixels of the %s colour, want at least %d", counts[name], name, least)
		}
	}
	if counts["placeholder"] > 1000 {
		t.Errorf("full report shows a no-data placeholder (%d pixels)", counts["placeholder"])
	}
}

func abs(v int) int {
	if v < 0 {
		return -v
	}
	return v
}
