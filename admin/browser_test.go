package admin

import (
	"bufio"
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/herald-rt/herald/hub"
	"github.com/herald-rt/herald/presence"
)

// chromiumPath is where Debian's chromium package puts the browser. The test fails,
// not skips, without it (as loadgen/report's does): `make test` installs it.
const chromiumPath = "/usr/bin/chromium"

// browserTimeout bounds each browser session, from start to the last check.
const browserTimeout = 60 * time.Second

// TestDashboardInBrowser loads the dashboard from a running admin server in headless
// Chromium, reads the numbers off the page, changes the source's figures and waits
// for the page to show the new ones, without reloading it. The DOM is read through
// the DevTools protocol on a pipe: --dump-dom prints the page at its load event,
// before the first server-sent event, and --virtual-time-budget never runs out while
// the event stream is open.
func TestDashboardInBrowser(t *testing.T) {
	needChromium(t)
	start := time.Now()
	src := &setSource{st: busyStats()}
	s := startServer(t, Config{Source: src, Interval: 200 * time.Millisecond})
	b := startBrowser(t, "http://"+s.Addr()+"/")

	p := b.waitPage(t, "the first figures", func(p page) bool { return p.ID["n-connections"] == "1,234" })
	for id, want := range map[string]string{
		"node-id": "42", "n-channels": "56", "n-subscriptions": "789", "n-slow": "2", "n-errors": "5",
		"n-in": "0", "n-out": "0", "b-engine": "memory", "b-up": "up", "b-reconnects": "0", "c-count": "1",
		"c-nodes": "42.a1  (this node)", "w-sent": "17", "w-failed": "3", "w-dropped": "4", "w-queued": "6",
		"w-latency": "10 ms", "t-bytes-out": "7 GiB", "status": "live",
	} {
		if p.ID[id] != want {
			t.Errorf("#%s shows %q, want %q", id, p.ID[id], want)
		}
	}
	if p.Draining {
		t.Error("the draining badge shows on a node that is not draining")
	}
	wantApps := map[string]map[string]string{
		"alpha": {"connections": "1,000", "channels": "50", "slow": "2", "errors": "5", "drops": "8", "wh-sent": "17", "wh-queued": "6"},
		"beta":  {"connections": "234", "subscriptions": "89", "wh-sent": "–"},
	}
	checkApps(t, p, wantApps)

	// Change the figures under the open page: it must follow without a reload.
	src.set(func(st *hub.Stats) {
		st.Node.Connections, st.Node.SlowConsumers, st.Node.Draining = 2345, 7, true
		st.Node.Broker.Up, st.Node.Broker.Reconnects = false, 3
		st.Node.Nodes = append(st.Node.Nodes, presence.Node{ID: 43, Name: "43.b2"})
		w := st.Node.Webhooks["alpha"]
		w.Sent = 18
		st.Node.Webhooks["alpha"] = w
		st.Apps["gamma"] = hub.AppStats{Connections: 11}
		delete(st.Apps, "beta")
	})
	src.setStep(100) // 100 in and 300 out per sample: about 500 and 1,500 per second
	p = b.waitPage(t, "the changed figures", func(p page) bool {
		return p.ID["n-connections"] == "2,345" && p.ID["n-out"] != "0" && len(p.Apps) == 2 && p.Apps["gamma"] != nil
	})
	for id, want := range map[string]string{"n-slow": "7", "b-up": "down", "b-reconnects": "3", "c-count": "2", "w-sent": "18"} {
		if p.ID[id] != want {
			t.Errorf("after the change #%s shows %q, want %q", id, p.ID[id], want)
		}
	}
	if !p.Draining || !strings.Contains(p.Title, "draining") {
		t.Errorf("a draining node shows no draining badge (title %q)", p.Title)
	}
	checkApps(t, p, map[string]map[string]string{"alpha": {"connections": "1,000"}, "gamma": {"connections": "11", "wh-sent": "–"}})
	// The chart has a point per sample since the page opened (and the server's history).
	if n := len(strings.Fields(p.Chart)); n < 3 {
		t.Errorf("the deliveries chart has %d points: %q", n, p.Chart)
	}
	b.screenshot(t)
	b.checkErrors(t)
	t.Logf("dashboard browser test: %v (chromium start to the changed figures)", time.Since(start).Round(time.Millisecond))
}

// TestDashboardInBrowserEdgeCases: a node without apps, webhooks or other nodes, and
// documents with fields missing or null, render without a script error.
func TestDashboardInBrowserEdgeCases(t *testing.T) {
	needChromium(t)
	t.Run("no apps", func(t *testing.T) {
		src := &setSource{st: hub.Stats{Node: hub.NodeStats{NodeID: 9}}}
		src.st.Node.Broker.Engine, src.st.Node.Broker.Up = "memory", true
		s := startServer(t, Config{Source: src, Interval: 100 * time.Millisecond})
		b := startBrowser(t, "http://"+s.Addr()+"/")
		p := b.waitPage(t, "an empty node", func(p page) bool { return p.ID["node-id"] == "9" })
		for id, want := range map[string]string{"n-connections": "0", "c-count": "0", "w-sent": "none configured", "b-up": "up", "apps": "no apps"} {
			if p.ID[id] != want {
				t.Errorf("#%s shows %q, want %q", id, p.ID[id], want)
			}
		}
		b.checkErrors(t)
	})
	t.Run("streams full", func(t *testing.T) {
		// The one stream allowed is taken: the page gets 503 from /events and polls /stats.
		src := &setSource{st: busyStats()}
		s := startServer(t, Config{Source: src, Interval: 100 * time.Millisecond, MaxStreams: 1})
		if st, resp := openStream(t, "http://"+s.Addr()+"/events"); st == nil {
			t.Fatalf("events: %s", resp.Status)
		}
		b := startBrowser(t, "http://"+s.Addr()+"/")
		b.waitPage(t, "the figures from /stats", func(p page) bool {
			return p.ID["n-connections"] == "1,234" && p.ID["status"] == "polling stats"
		})
		src.set(func(st *hub.Stats) { st.Node.Connections = 4321 })
		b.waitPage(t, "the changed figures from /stats", func(p page) bool { return p.ID["n-connections"] == "4,321" })
		b.mu.Lock()
		var rest []string
		for _, e := range b.errs { // the refused stream is logged as a failed load; nothing else may be
			if !strings.Contains(e, "503") {
				rest = append(rest, e)
			}
		}
		b.errs = rest
		b.mu.Unlock()
		b.checkErrors(t)
	})
	t.Run("sparse documents", func(t *testing.T) {
		// A stand-in server whose stream sends whatever a broken or older node might.
		docs := []string{`{}`, `null`, `[]`, `not json`, `{"node":null,"apps":null,"rates":null}`,
			`{"node":{"broker":null,"nodes":[null,{"id":1}],"webhooks":{"x":null},"transport":"?"},"apps":{"x":null,"y":{"dropped":null}},"rates":{"apps":{"x":null}}}`,
			`{"node":{"node_id":5,"connections":77}}`}
		mux := http.NewServeMux()
		mux.HandleFunc("GET /{$}", serveDashboard)
		mux.HandleFunc("GET /events", func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "text/event-stream")
			fmt.Fprint(w, "event: history\ndata: {\"points\":[null,{\"connections\":\"x\"},{}]}\n\n")
			for i, d := range docs {
				fmt.Fprintf(w, "id: %d\ndata: %s\n\n", i+1, d)
			}
			w.(http.Flusher).Flush()
			<-r.Context().Done()
		})
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		srv := &http.Server{Handler: mux}
		go func() { _ = srv.Serve(ln) }()
		t.Cleanup(func() { _ = srv.Close() })
		b := startBrowser(t, "http://"+ln.Addr().String()+"/")
		p := b.waitPage(t, "the last document", func(p page) bool { return p.ID["n-connections"] == "77" })
		if p.ID["node-id"] != "5" || p.ID["apps"] != "no apps" {
			t.Errorf("node %q, apps %q", p.ID["node-id"], p.ID["apps"])
		}
		b.checkErrors(t)
	})
}

func needChromium(t *testing.T) {
	t.Helper()
	if _, err := os.Stat(chromiumPath); err != nil {
		t.Fatalf("headless Chromium is needed at %s (%v): run `make test`, which installs the Debian package chromium",
			chromiumPath, err)
	}
}

// page is what the test reads off the dashboard.
type page struct {
	Title    string                       `json:"title"`
	ID       map[string]string            `json:"id"`   // text of every element with an id
	Apps     map[string]map[string]string `json:"apps"` // app id → column → text
	Chart    string                       `json:"chart"`
	Draining bool                         `json:"draining"`
}

const readPage = `JSON.stringify({
  title: document.title,
  id: Object.fromEntries(Array.from(document.querySelectorAll("[id]"), e => [e.id, e.textContent.trim()])),
  apps: Object.fromEntries(Array.from(document.querySelectorAll("#apps tr[data-app]"), tr =>
    [tr.dataset.app, Object.fromEntries(Array.from(tr.querySelectorAll("td[data-k]"), td => [td.dataset.k, td.textContent.trim()]))])),
  chart: (document.querySelector("#spark-out polyline") || {getAttribute: () => ""}).getAttribute("points") || "",
  draining: !(document.getElementById("draining") || {hidden: true}).hidden
})`

func checkApps(t *testing.T, p page, want map[string]map[string]string) {
	t.Helper()
	if len(p.Apps) != len(want) {
		t.Errorf("the apps table has %d rows (%v), want %d", len(p.Apps), p.Apps, len(want))
	}
	for id, cols := range want {
		for c, v := range cols {
			if got := p.Apps[id][c]; got != v {
				t.Errorf("app %s column %s shows %q, want %q", id, c, got, v)
			}
		}
	}
}

// browser is a headless Chromium driven through the DevTools protocol on a pipe
// (--remote-debugging-pipe: JSON messages ended by NUL on its fds 3 and 4).
type browser struct {
	cmd     *exec.Cmd
	w       *os.File
	session string
	log     *bytes.Buffer
	ctx     context.Context

	mu      sync.Mutex
	nextID  int
	pending map[int]chan cdpMsg
	errs    []string // script exceptions and console/log errors
	done    chan struct{}
}

type cdpMsg struct {
	ID        int             `json:"id,omitempty"`
	Method    string          `json:"method,omitempty"`
	SessionID string          `json:"sessionId,omitempty"`
	Params    json.RawMessage `json:"params,omitempty"`
	Result    json.RawMessage `json:"result,omitempty"`
	Error     *struct {
		Message string `json:"message"`
	} `json:"error,omitempty"`
}

// startBrowser starts Chromium in its own process group, opens url in a new tab and
// registers the cleanup that kills the group (no renderer or zygote outlives the test).
func startBrowser(t *testing.T, url string) *browser {
	t.Helper()
	dir := t.TempDir()
	ctx, cancel := context.WithTimeout(context.Background(), browserTimeout)
	toChrome, ourW, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	ourR, fromChrome, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(chromiumPath,
		"--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
		"--disable-background-networking", "--disable-component-update", "--disable-sync",
		"--user-data-dir="+filepath.Join(dir, "profile"), "--window-size=1280,1000",
		"--remote-debugging-pipe", "about:blank")
	cmd.Env = append(os.Environ(), "HOME="+dir, "XDG_CONFIG_HOME="+dir, "XDG_CACHE_HOME="+dir)
	b := &browser{cmd: cmd, w: ourW, log: &bytes.Buffer{}, ctx: ctx, pending: map[int]chan cdpMsg{}, done: make(chan struct{})}
	out := &lockedWriter{w: b.log} // one lock for both: they write to one buffer
	cmd.Stdout, cmd.Stderr = out, out
	cmd.ExtraFiles = []*os.File{toChrome, fromChrome} // its fds 3 (reads) and 4 (writes)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.WaitDelay = 5 * time.Second
	if err := cmd.Start(); err != nil {
		t.Fatalf("starting chromium: %v", err)
	}
	toChrome.Close()
	fromChrome.Close() // ours closed, the reader sees EOF when Chromium's end goes
	go b.read(ourR)
	stop := context.AfterFunc(ctx, func() { _ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) })
	t.Cleanup(func() {
		stop()
		if err := syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL); err != nil && !errors.Is(err, syscall.ESRCH) {
			t.Logf("killing chromium's process group %d: %v", cmd.Process.Pid, err)
		}
		_ = cmd.Wait()
		ourW.Close()
		<-b.done
		ourR.Close()
		cancel()
	})

	var target struct {
		TargetID string `json:"targetId"`
	}
	b.call(t, "", "Target.createTarget", map[string]any{"url": "about:blank"}, &target)
	var att struct {
		SessionID string `json:"sessionId"`
	}
	b.call(t, "", "Target.attachToTarget", map[string]any{"targetId": target.TargetID, "flatten": true}, &att)
	b.session = att.SessionID
	b.call(t, b.session, "Runtime.enable", nil, nil)
	b.call(t, b.session, "Log.enable", nil, nil)
	var nav struct {
		ErrorText string `json:"errorText"`
	}
	b.call(t, b.session, "Page.navigate", map[string]any{"url": url}, &nav)
	if nav.ErrorText != "" {
		t.Fatalf("navigating to %s: %s", url, nav.ErrorText)
	}
	return b
}

// lockedWriter lets Chromium's stdout and stderr share a buffer that the test reads.
type lockedWriter struct {
	mu sync.Mutex
	w  *bytes.Buffer
}

func (l *lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}

func (b *browser) read(r *os.File) {
	defer close(b.done)
	br := bufio.NewReader(r)
	for {
		raw, err := br.ReadBytes(0)
		if err != nil {
			return
		}
		var m cdpMsg
		if json.Unmarshal(raw[:len(raw)-1], &m) != nil {
			continue
		}
		b.mu.Lock()
		if m.ID != 0 {
			if ch := b.pending[m.ID]; ch != nil {
				ch <- m
				delete(b.pending, m.ID)
			}
		} else if e := eventError(m); e != "" {
			b.errs = append(b.errs, e)
		}
		b.mu.Unlock()
	}
}

// eventError describes a script exception, a console.error or an error-level log
// entry (a CSP refusal, a failed load); "" for any other event.
func eventError(m cdpMsg) string {
	switch m.Method {
	case "Runtime.exceptionThrown":
		var p struct {
			Details struct {
				Text      string `json:"text"`
				Exception struct {
					Description string `json:"description"`
				} `json:"exception"`
			} `json:"exceptionDetails"`
		}
		_ = json.Unmarshal(m.Params, &p)
		return "exception: " + p.Details.Text + " " + p.Details.Exception.Description
	case "Runtime.consoleAPICalled":
		var p struct {
			Type string `json:"type"`
			Args []struct {
				Value any `json:"value"`
			} `json:"args"`
		}
		_ = json.Unmarshal(m.Params, &p)
		if p.Type == "error" || p.Type == "assert" {
			return fmt.Sprintf("console.%s: %v", p.Type, p.Args)
		}
	case "Log.entryAdded":
		var p struct {
			Entry struct {
				Level, Source, Text, URL string
			} `json:"entry"`
		}
		_ = json.Unmarshal(m.Params, &p)
		if p.Entry.Level == "error" {
			return fmt.Sprintf("log %s: %s %s", p.Entry.Source, p.Entry.Text, p.Entry.URL)
		}
	}
	return ""
}

// call sends one command and waits for its answer, within the browser's deadline.
func (b *browser) call(t *testing.T, session, method string, params any, out any) {
	t.Helper()
	if params == nil {
		params = map[string]any{}
	}
	ch := make(chan cdpMsg, 1)
	b.mu.Lock()
	b.nextID++
	id := b.nextID
	b.pending[id] = ch
	b.mu.Unlock()
	req := map[string]any{"id": id, "method": method, "params": params}
	if session != "" {
		req["sessionId"] = session
	}
	msg, _ := json.Marshal(req)
	if _, err := b.w.Write(append(msg, 0)); err != nil {
		t.Fatalf("%s: writing to chromium: %v\n%s", method, err, b.output())
	}
	select {
	case m := <-ch:
		if m.Error != nil {
			t.Fatalf("%s: %s", method, m.Error.Message)
		}
		if out != nil {
			if err := json.Unmarshal(m.Result, out); err != nil {
				t.Fatalf("%s: %v in %s", method, err, m.Result)
			}
		}
	case <-b.done:
		t.Fatalf("%s: chromium went away; its output:\n%s", method, b.output())
	case <-b.ctx.Done():
		t.Fatalf("%s: no answer within the browser's %v; chromium's output:\n%s", method, browserTimeout, b.output())
	}
}

func (b *browser) output() string {
	lw := b.cmd.Stderr.(*lockedWriter)
	lw.mu.Lock()
	defer lw.mu.Unlock()
	return lw.w.String()
}

// readPage evaluates the readPage script in the tab.
func (b *browser) readPage(t *testing.T) page {
	t.Helper()
	var res struct {
		Result struct {
			Value string `json:"value"`
		} `json:"result"`
		Exception *struct {
			Text string `json:"text"`
		} `json:"exceptionDetails"`
	}
	b.call(t, b.session, "Runtime.evaluate", map[string]any{"expression": readPage, "returnByValue": true}, &res)
	if res.Exception != nil {
		t.Fatalf("reading the page: %s", res.Exception.Text)
	}
	var p page
	if err := json.Unmarshal([]byte(res.Result.Value), &p); err != nil {
		t.Fatalf("reading the page: %v in %q", err, res.Result.Value)
	}
	return p
}

// waitPage reads the page every 50 ms until ok accepts it, for at most 15 s.
func (b *browser) waitPage(t *testing.T, what string, ok func(page) bool) page {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for {
		p := b.readPage(t)
		if ok(p) {
			return p
		}
		if time.Now().After(deadline) {
			b.checkErrors(t)
			t.Fatalf("the page did not show %s within 15 s; it shows %v\napps %v", what, p.ID, p.Apps)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func (b *browser) checkErrors(t *testing.T) {
	t.Helper()
	b.mu.Lock()
	defer b.mu.Unlock()
	for _, e := range b.errs {
		t.Errorf("in the page: %s", e)
	}
}

// screenshot saves a PNG of the page to $HERALD_DASHBOARD_SCREENSHOT when it is set,
// for a person to look at.
func (b *browser) screenshot(t *testing.T) {
	path := os.Getenv("HERALD_DASHBOARD_SCREENSHOT")
	if path == "" {
		return
	}
	var shot struct {
		Data string `json:"data"`
	}
	b.call(t, b.session, "Page.captureScreenshot", map[string]any{"format": "png", "captureBeyondViewport": true}, &shot)
	png, err := base64.StdEncoding.DecodeString(shot.Data)
	if err == nil {
		err = os.WriteFile(path, png, 0o644)
	}
	if err != nil {
		t.Errorf("screenshot: %v", err)
		return
	}
	t.Logf("screenshot: %s", path)
}
