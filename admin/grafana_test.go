package admin

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/herald-rt/herald/hub"
	"github.com/herald-rt/herald/transport"
	"github.com/herald-rt/herald/webhook"
)

const dashboardFile = "../deploy/grafana/herald.json"

// TestGrafanaDashboardMetricsExist checks that every metric the Grafana dashboard
// queries is exported by a real node: a hub with the memory engines and an app with
// a webhook, its metrics and the Go and process collectors registered as cmd/herald
// registers them, scraped through the admin server's /metrics. The metrics that
// exist only once something happened (closes, drops, refused handshakes) are made to
// happen first.
func TestGrafanaDashboardMetricsExist(t *testing.T) {
	raw, err := os.ReadFile(dashboardFile)
	if err != nil {
		t.Fatal(err)
	}
	exprs := dashboardExprs(t, raw)
	if n := strings.Count(string(raw), `"expr"`); len(exprs) < n || n < 30 {
		t.Fatalf("found %d PromQL expressions, the file has %d \"expr\" fields", len(exprs), n)
	}
	exported := scrapeRealNode(t)
	used := queried(exprs)
	for _, want := range []string{"herald_messages_sent_total", "herald_webhook_latency_seconds_bucket", "go_goroutines", "process_resident_memory_bytes"} {
		if !slices.Contains(used, want) {
			t.Fatalf("the dashboard's queries do not use %s: the expression walk is broken (it found %v)", want, used)
		}
	}
	if missing := missingMetrics(used, exported); len(missing) > 0 {
		t.Fatalf("%s queries metrics that a node does not export: %v", dashboardFile, missing)
	}
	t.Logf("%d expressions query %d metrics, all exported", len(exprs), len(used))
	var unused []string
	for name := range exported {
		covers := func(u string) bool {
			return u == name || u == name+"_bucket" || u == name+"_sum" || u == name+"_count"
		}
		if strings.HasPrefix(name, "herald_") && !slices.ContainsFunc(used, covers) {
			unused = append(unused, name)
		}
	}
	slices.Sort(unused)
	t.Logf("herald_ metrics not on the dashboard: %v", unused)

	// The check can fail: each misspelling is caught, and only it.
	for _, c := range []struct{ from, to string }{
		{"herald_messages_sent_total", "herald_message_sent_total"},
		{"go_goroutines", "go_goroutine"},
		{"herald_webhook_latency_seconds_bucket", "herald_webhooks_latency_seconds_bucket"},
		{"go_goroutines{", "go_goroutines_count{"}, // a gauge has no _count
		{"herald_connections_closed_total", "herald_connection_closed_total"},
	} {
		bad := strings.Replace(string(raw), c.from, c.to, 1)
		if bad == string(raw) {
			t.Fatalf("the dashboard has no %q to misspell", c.from)
		}
		want := strings.TrimSuffix(c.to, "{")
		if got := missingMetrics(queried(dashboardExprs(t, []byte(bad))), exported); !slices.Equal(got, []string{want}) {
			t.Errorf("with %s misspelt as %s the check reports %v, want [%s]", c.from, c.to, got, want)
		}
	}
}

// TestGrafanaDashboardShape checks what Grafana needs to import the dashboard and
// what the operators are promised: unique panel ids, every query on the chosen data
// source and nodes, and the $node and $app variables.
func TestGrafanaDashboardShape(t *testing.T) {
	raw, err := os.ReadFile(dashboardFile)
	if err != nil {
		t.Fatal(err)
	}
	var d struct {
		UID        string `json:"uid"`
		Templating struct {
			List []struct {
				Name, Type string
			} `json:"list"`
		} `json:"templating"`
		Panels []struct {
			ID         int    `json:"id"`
			Type       string `json:"type"`
			Title      string `json:"title"`
			Datasource struct {
				UID string `json:"uid"`
			} `json:"datasource"`
			Targets []struct {
				RefID string `json:"refId"`
				Expr  string `json:"expr"`
			} `json:"targets"`
		} `json:"panels"`
	}
	if err := json.Unmarshal(raw, &d); err != nil {
		t.Fatalf("%s: %v", dashboardFile, err)
	}
	vars := map[string]string{}
	for _, v := range d.Templating.List {
		vars[v.Name] = v.Type
	}
	if vars["datasource"] != "datasource" || vars["node"] != "query" || vars["app"] != "query" || d.UID == "" {
		t.Fatalf("variables %v, uid %q", vars, d.UID)
	}
	ids := map[int]string{}
	for _, p := range d.Panels {
		if prev, dup := ids[p.ID]; dup {
			t.Errorf("panels %q and %q share id %d", prev, p.Title, p.ID)
		}
		ids[p.ID] = p.Title
		if p.Type == "row" {
			continue
		}
		if p.Datasource.UID != "${datasource}" || len(p.Targets) == 0 {
			t.Errorf("panel %q: data source %q, %d queries", p.Title, p.Datasource.UID, len(p.Targets))
		}
		for _, q := range p.Targets {
			if q.RefID == "" || !strings.Contains(q.Expr, `instance=~"$node"`) {
				t.Errorf("panel %q: query %s %q is not limited to $node", p.Title, q.RefID, q.Expr)
			}
			// Go and process metrics come from every Go target: without the filter a
			// panel would mix in other jobs' processes.
		}
	}
}

// dashboardExprs returns every PromQL string of a Grafana dashboard: the targets'
// expr, and the template variables' query and definition, wherever they nest (rows).
func dashboardExprs(t *testing.T, raw []byte) []string {
	t.Helper()
	var doc any
	if err := json.Unmarshal(raw, &doc); err != nil {
		t.Fatalf("%s is not JSON: %v", dashboardFile, err)
	}
	var out []string
	var walk func(v any)
	walk = func(v any) {
		switch v := v.(type) {
		case map[string]any:
			for k, x := range v {
				if s, ok := x.(string); ok && (k == "expr" || k == "query" || k == "definition") {
					out = append(out, s)
					continue
				}
				walk(x)
			}
		case []any:
			for _, x := range v {
				walk(x)
			}
		}
	}
	walk(doc)
	return out
}

var metricRef = regexp.MustCompile(`\b(?:herald|go|process)_[A-Za-z0-9_]*[A-Za-z0-9]`)

// queried lists the metric names the expressions use, sorted and unique.
func queried(exprs []string) []string {
	var names []string
	for _, e := range exprs {
		names = append(names, metricRef.FindAllString(e, -1)...)
	}
	slices.Sort(names)
	return slices.Compact(names)
}

// missingMetrics returns the names not exported: a histogram's _bucket, _sum and
// _count and a summary's _sum and _count count as their base.
func missingMetrics(names []string, exported map[string]string) []string {
	var missing []string
	for _, n := range names {
		if _, ok := exported[n]; ok {
			continue
		}
		ok := false
		for suffix, kinds := range map[string][]string{"_bucket": {"histogram"}, "_sum": {"histogram", "summary"}, "_count": {"histogram", "summary"}} {
			if base, cut := strings.CutSuffix(n, suffix); cut && slices.Contains(kinds, exported[base]) {
				ok = true
			}
		}
		if !ok {
			missing = append(missing, n)
		}
	}
	return missing
}

// scrapeRealNode runs a hub and an admin server as cmd/herald wires them, makes a
// connection be closed and its work dropped (the app's authentication timeout) and a
// handshake be refused (its allowed origins), and returns the metric families of
// /metrics by name, with their types.
func scrapeRealNode(t *testing.T) map[string]string {
	t.Helper()
	sink := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { _, _ = io.Copy(io.Discard, r.Body) }))
	defer sink.Close()
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	h, err := hub.New(hub.Config{
		Apps: []hub.App{{ID: "1", Key: "dash-key", Secret: "dash-secret",
			AllowedOrigins:            []string{"https://allowed.example"},
			UserAuthenticationTimeout: hub.Duration(100 * time.Millisecond),
			Webhooks:                  []webhook.Hook{{URL: sink.URL}}}},
		Transport:      transport.Config{Addr: "127.0.0.1:0"},
		Registerer:     reg,
		Logger:         log,
		DepartureGrace: 50 * time.Millisecond,
		Webhooks:       webhook.Config{BatchWait: 10 * time.Millisecond},
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := h.Run(); err != nil {
		t.Fatal(err)
	}
	// As cmd/herald does: the hub drains first, the admin server (which reports the
	// drain) stops after it; defers run last first.
	s, err := New(Config{Addr: "127.0.0.1:0", Source: h, Gatherer: reg, Logger: log})
	if err != nil {
		_ = h.Shutdown(context.Background())
		t.Fatal(err)
	}
	s.Run()
	defer closeServer(t, s)
	defer func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := h.Shutdown(ctx); err != nil {
			t.Errorf("hub shutdown: %v", err)
		}
	}()

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	url := "ws://" + h.Addr() + "/app/dash-key?protocol=7"
	// Refused: an origin the app does not allow.
	if c, _, err := websocket.Dial(ctx, url, &websocket.DialOptions{HTTPHeader: http.Header{"Origin": {"https://other.example"}}}); err == nil {
		c.CloseNow()
		t.Fatal("a handshake from a disallowed origin was accepted")
	}
	// Closed and dropped: a connection that subscribes to a public channel (a
	// channel_occupied webhook) and never signs in.
	c, _, err := websocket.Dial(ctx, url, &websocket.DialOptions{HTTPHeader: http.Header{"Origin": {"https://allowed.example"}}})
	if err != nil {
		t.Fatal(err)
	}
	defer c.CloseNow()
	if err := c.Write(ctx, websocket.MessageText, []byte(`{"event":"pusher:subscribe","data":{"channel":"dashboard"}}`)); err != nil {
		t.Fatal(err)
	}
	for {
		if _, _, err := c.Read(ctx); err != nil {
			if code := websocket.CloseStatus(err); code != 4009 {
				t.Fatalf("the connection ended with %v, want close code 4009 (unauthorized)", err)
			}
			break
		}
	}

	need := []string{"herald_connections_closed_total", "herald_dropped_total", "herald_handshakes_rejected_total"}
	for {
		fams := scrape(t, "http://"+s.Addr()+"/metrics")
		if !slices.ContainsFunc(need, func(n string) bool { return fams[n] == "" }) {
			return fams
		}
		if ctx.Err() != nil {
			t.Fatalf("/metrics lacks some of %v after 10 s", need)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// scrape reads the families' names and types from the text exposition format.
func scrape(t *testing.T, url string) map[string]string {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("%s: %s", url, resp.Status)
	}
	fams := map[string]string{}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		if f := strings.Fields(sc.Text()); len(f) == 4 && f[0] == "#" && f[1] == "TYPE" {
			fams[f[2]] = f[3]
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	if len(fams) < 20 {
		t.Fatalf("%s has %d metric families: %v", url, len(fams), fmt.Sprint(fams))
	}
	return fams
}
