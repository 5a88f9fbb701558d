package admin

import (
	"io"
	"net/http"
	"regexp"
	"strings"
	"testing"
)

// externalRefs lists what in page could reach past the server that served it: any
// absolute URL (http://, https://, protocol-relative //host), and any reference in an
// attribute, EventSource or fetch that is not relative to the page (a leading slash
// would break the page under a proxy's path prefix). data: URLs are allowed.
func externalRefs(page string) []string {
	var bad []string
	lower := strings.ToLower(page)
	for _, s := range []string{"http://", "https://", "//cdn", "@import", "url("} {
		if strings.Contains(lower, s) {
			bad = append(bad, s)
		}
	}
	refs := regexp.MustCompile(`(?i)\b(?:href|src|action|xlink:href)\s*=\s*["']?([^"'\s>]*)`).FindAllStringSubmatch(page, -1)
	refs = append(refs, regexp.MustCompile(`(?:EventSource|fetch)\(\s*["'`+"`"+`]([^"'`+"`"+`]*)`).FindAllStringSubmatch(page, -1)...)
	for _, m := range refs {
		u := m[1]
		if strings.HasPrefix(u, "data:") {
			continue
		}
		if u == "" || strings.HasPrefix(u, "/") || strings.Contains(u, ":") {
			bad = append(bad, m[0])
		}
	}
	return bad
}

func TestExternalRefsFindsThem(t *testing.T) {
	for _, page := range []string{
		`<script src="https://cdn.example.com/chart.js"></script>`,
		`<link rel="stylesheet" href="//cdn.example.com/x.css">`,
		`<a href="/stats">stats</a>`,
		`<img src=/logo.png>`,
		`<style>@import "fonts.css";</style>`,
		`<script>new EventSource("/events")</script>`,
		`<script>fetch('ws://10.0.0.1:9601/stats')</script>`,
	} {
		if bad := externalRefs(page); len(bad) == 0 {
			t.Errorf("externalRefs found nothing in %s", page)
		}
	}
	if bad := externalRefs(`<a href="stats">s</a><link rel="icon" href="data:,"><script>fetch("stats")</script>`); len(bad) != 0 {
		t.Errorf("relative references taken for external: %v", bad)
	}
}

func TestDashboardPage(t *testing.T) {
	s := startServer(t, Config{Source: &setSource{st: busyStats()}})
	resp, err := http.Get("http://" + s.Addr() + "/")
	if err != nil {
		t.Fatal(err)
	}
	body := readAll(t, resp)
	if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != "text/html; charset=utf-8" {
		t.Fatalf("/: %s, %q", resp.Status, resp.Header.Get("Content-Type"))
	}
	if body != string(dashboardHTML) || !strings.Contains(body, `id="n-connections"`) {
		t.Fatal("/ does not serve the dashboard")
	}
	if bad := externalRefs(body); len(bad) != 0 {
		t.Fatalf("the dashboard refers outside the node's admin server: %q", bad)
	}
	for _, want := range []string{`new EventSource("events")`, `fetch("stats"`} {
		if !strings.Contains(body, want) {
			t.Errorf("the page lacks %s", want)
		}
	}
	csp := resp.Header.Get("Content-Security-Policy")
	for _, want := range []string{"default-src 'none'", "connect-src 'self'", "script-src 'sha256-", "style-src 'sha256-"} {
		if !strings.Contains(csp, want) {
			t.Errorf("CSP %q lacks %q", csp, want)
		}
	}
	if strings.Contains(csp, "unsafe") {
		t.Errorf("CSP allows unsafe sources: %q", csp)
	}
	if got := strings.Count(body, "<script>"); got != strings.Count(inlineHashes(dashboardHTML, "script"), "sha256-") {
		t.Errorf("%d inline scripts, hashed %s", got, inlineHashes(dashboardHTML, "script"))
	}
	// Only the root serves the page; other paths stay 404.
	if code, _ := get(t, "http://"+s.Addr()+"/nothing"); code != http.StatusNotFound {
		t.Errorf("/nothing: %d", code)
	}
}

func readAll(t *testing.T, resp *http.Response) string {
	t.Helper()
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}
