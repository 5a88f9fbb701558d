package admin

import (
	"crypto/sha256"
	_ "embed"
	"encoding/base64"
	"net/http"
	"strings"
)

// dashboardHTML is the live dashboard served at /: one self-contained page (inline
// CSS, script and SVG) that reads /events, or /stats when the streams are all taken,
// by relative URLs, so that it works through an SSH tunnel or a path-prefixing proxy.
//
//go:embed dashboard.html
var dashboardHTML []byte

// dashboardCSP lets the page run its own inline script and style (by hash) and talk
// to this server only: the browser itself refuses anything fetched from elsewhere.
var dashboardCSP = "default-src 'none'; " +
	"script-src " + inlineHashes(dashboardHTML, "script") + "; " +
	"style-src " + inlineHashes(dashboardHTML, "style") + "; " +
	"connect-src 'self'; img-src data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"

// inlineHashes returns the CSP sources ('sha256-…') of the page's inline <tag>
// elements, or 'none' when it has none.
func inlineHashes(page []byte, tag string) string {
	var out []string
	rest := string(page)
	open, end := "<"+tag+">", "</"+tag+">"
	for {
		i := strings.Index(rest, open)
		if i < 0 {
			break
		}
		rest = rest[i+len(open):]
		j := strings.Index(rest, end)
		if j < 0 {
			break
		}
		sum := sha256.Sum256([]byte(rest[:j]))
		out = append(out, "'sha256-"+base64.StdEncoding.EncodeToString(sum[:])+"'")
		rest = rest[j+len(end):]
	}
	if len(out) == 0 {
		return "'none'"
	}
	return strings.Join(out, " ")
}

func serveDashboard(w http.ResponseWriter, _ *http.Request) {
	h := w.Header()
	h.Set("Content-Type", "text/html; charset=utf-8")
	h.Set("Content-Security-Policy", dashboardCSP)
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Referrer-Policy", "no-referrer")
	h.Set("Cache-Control", "no-cache")
	_, _ = w.Write(dashboardHTML)
}
