package deploy

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
)

// nginx is not installed on the test machines (and is not installed for the tests):
// this parses the file as nginx's own parser splits it, and checks the directives.
// Where an nginx binary happens to be on PATH, nginx -t checks it too.

// ngxDirective is one nginx directive: its words and, for a block, its children.
type ngxDirective struct {
	Words   []string
	Block   []*ngxDirective // nil for a simple directive
	IsBlock bool
	Line    int
}

// parseNginx splits an nginx configuration into directives: words separated by
// blanks, quoted with ' or ", # comments to the end of the line, a directive ended by
// ";" or by a "{ … }" block.
func parseNginx(src string) ([]*ngxDirective, error) {
	toks, err := ngxTokens(src)
	if err != nil {
		return nil, err
	}
	i := 0
	var parse func(depth int) ([]*ngxDirective, error)
	parse = func(depth int) ([]*ngxDirective, error) {
		var out []*ngxDirective
		var cur *ngxDirective
		for i < len(toks) {
			tk := toks[i]
			i++
			switch {
			case tk.text == ";" && !tk.quoted:
				if cur == nil {
					return nil, fmt.Errorf("line %d: empty directive", tk.line)
				}
				out = append(out, cur)
				cur = nil
			case tk.text == "{" && !tk.quoted:
				if cur == nil {
					return nil, fmt.Errorf("line %d: block without a name", tk.line)
				}
				children, err := parse(depth + 1)
				if err != nil {
					return nil, err
				}
				cur.Block, cur.IsBlock = children, true
				out = append(out, cur)
				cur = nil
			case tk.text == "}" && !tk.quoted:
				if cur != nil {
					return nil, fmt.Errorf("line %d: %q not ended by ;", cur.Line, cur.Words[0])
				}
				if depth == 0 {
					return nil, fmt.Errorf("line %d: } without {", tk.line)
				}
				return out, nil
			default:
				if cur == nil {
					cur = &ngxDirective{Line: tk.line}
				}
				cur.Words = append(cur.Words, tk.text)
			}
		}
		if cur != nil {
			return nil, fmt.Errorf("line %d: %q not ended by ;", cur.Line, cur.Words[0])
		}
		if depth > 0 {
			return nil, fmt.Errorf("unclosed block at the end")
		}
		return out, nil
	}
	return parse(0)
}

type ngxToken struct {
	text   string
	quoted bool
	line   int
}

func ngxTokens(src string) ([]ngxToken, error) {
	var toks []ngxToken
	line := 1
	for i := 0; i < len(src); {
		ch := src[i]
		switch {
		case ch == '\n':
			line++
			i++
		case ch == ' ' || ch == '\t' || ch == '\r':
			i++
		case ch == '#':
			for i < len(src) && src[i] != '\n' {
				i++
			}
		case ch == ';' || ch == '{' || ch == '}':
			toks = append(toks, ngxToken{text: string(ch), line: line})
			i++
		case ch == '"' || ch == '\'':
			j := i + 1
			var b strings.Builder
			for j < len(src) && src[j] != ch {
				if src[j] == '\\' && j+1 < len(src) {
					j++
				}
				if src[j] == '\n' {
					line++
				}
				b.WriteByte(src[j])
				j++
			}
			if j == len(src) {
				return nil, fmt.Errorf("line %d: unterminated quote", line)
			}
			toks = append(toks, ngxToken{text: b.String(), quoted: true, line: line})
			i = j + 1
		default:
			j := i
			for j < len(src) && !strings.ContainsRune(" \t\r\n;{}#\"'", rune(src[j])) {
				j++
			}
			toks = append(toks, ngxToken{text: src[i:j], line: line})
			i = j
		}
	}
	return toks, nil
}

// all returns the directives named name among ds.
func ngxAll(ds []*ngxDirective, name string) []*ngxDirective {
	var out []*ngxDirective
	for _, d := range ds {
		if d.Words[0] == name {
			out = append(out, d)
		}
	}
	return out
}

// ngxOne returns the single directive named name among ds, failing otherwise.
func ngxOne(t *testing.T, where string, ds []*ngxDirective, name string) *ngxDirective {
	t.Helper()
	got := ngxAll(ds, name)
	if len(got) != 1 {
		t.Fatalf("%s: %d %q directives, want 1", where, len(got), name)
	}
	return got[0]
}

// ngxDuration parses an nginx time ("1h", "180s", "30m", "500ms", "10": seconds).
func ngxDuration(t *testing.T, v string) time.Duration {
	t.Helper()
	if n, err := strconv.Atoi(v); err == nil {
		return time.Duration(n) * time.Second
	}
	d, err := time.ParseDuration(v)
	if err != nil {
		t.Fatalf("nginx time %q: %v", v, err)
	}
	return d
}

const nginxFile = "nginx/herald.conf"

func TestNginx(t *testing.T) {
	src := string(readFile(t, nginxFile))
	top, err := parseNginx(src)
	if err != nil {
		t.Fatalf("%s: %v", nginxFile, err)
	}
	stream := ngxOne(t, nginxFile, top, "stream")
	if len(top) != 1 || !stream.IsBlock {
		t.Fatalf("%s: want exactly one stream { } block at the top (the file is included from nginx.conf's main context)", nginxFile)
	}
	if len(ngxAll(top, "http")) > 0 {
		t.Errorf("%s: an http block: herald is behind nginx at layer 4 (stream)", nginxFile)
	}

	upstreams := ngxAll(stream.Block, "upstream")
	if len(upstreams) != 1 {
		t.Fatalf("stream: %d upstream blocks, want 1", len(upstreams))
	}
	up := upstreams[0]
	name := up.Words[1]
	if len(ngxAll(up.Block, "least_conn")) != 1 {
		t.Errorf("upstream %s: no least_conn (WebSockets live long)", name)
	}
	if n := len(ngxAll(up.Block, "server")); n < 2 {
		t.Errorf("upstream %s: %d servers, want at least 2", name, n)
	}

	quiet := quietMax(t)
	var sawTLS, sawPlain bool
	for _, s := range ngxAll(stream.Block, "server") {
		where := fmt.Sprintf("%s: server block at line %d", nginxFile, s.Line)
		listen := ngxOne(t, where, s.Block, "listen")
		if v := ngxOne(t, where, s.Block, "proxy_pass").Words; len(v) != 2 || v[1] != name {
			t.Errorf("%s: proxy_pass %v, want %s", where, v[1:], name)
		}
		if v := ngxOne(t, where, s.Block, "proxy_protocol").Words; len(v) != 2 || v[1] != "on" {
			t.Errorf("%s: proxy_protocol %v, want on (herald runs with --proxy-protocol)", where, v[1:])
		}
		if v := ngxAll(s.Block, "proxy_next_upstream"); len(v) > 0 && v[0].Words[1] == "off" {
			t.Errorf("%s: proxy_next_upstream off: a connection refused by a draining node must go to another", where)
		}
		if v := ngxOne(t, where, s.Block, "proxy_timeout").Words; ngxDuration(t, v[1]) < quiet {
			t.Errorf("%s: proxy_timeout %s is shorter than a live connection may be quiet (%v)", where, v[1], quiet)
		}
		switch {
		case slices.Contains(listen.Words, "ssl"):
			sawTLS = true
			if listen.Words[1] != "443" {
				t.Errorf("%s: TLS on %s, want 443", where, listen.Words[1])
			}
			for _, d := range []string{"ssl_certificate", "ssl_certificate_key"} {
				if v := ngxOne(t, where, s.Block, d).Words; len(v) != 2 || !strings.HasPrefix(v[1], "/") {
					t.Errorf("%s: %s %v, want an absolute path", where, d, v[1:])
				}
			}
			if len(ngxAll(s.Block, "ssl_preread")) > 0 {
				t.Errorf("%s: ssl_preread: TLS is terminated here, not passed through", where)
			}
		default:
			sawPlain = true
			if listen.Words[1] != "80" {
				t.Errorf("%s: plain on %s, want 80", where, listen.Words[1])
			}
		}
	}
	if !sawTLS || !sawPlain {
		t.Errorf("%s: want a TLS server (listen 443 ssl) and a plain one (listen 80)", nginxFile)
	}
	if !strings.Contains(src, "--proxy-protocol --trusted-proxies") {
		t.Error("the file does not tell the operator to run herald with --proxy-protocol --trusted-proxies")
	}

	// Only where nginx is installed (it is not installed for the tests).
	if bin, err := exec.LookPath("nginx"); err == nil {
		t.Run("nginx -t", func(t *testing.T) { nginxCheck(t, bin, src) })
	}
}

// nginxCheck runs nginx -t on a main configuration that includes the file, with a
// test certificate in place of the real one.
func nginxCheck(t *testing.T, bin, src string) {
	dir := t.TempDir()
	pemFile := filepath.Join(dir, "herald.pem")
	writeTestPEM(t, pemFile)
	src = strings.NewReplacer("/etc/nginx/herald.crt", pemFile, "/etc/nginx/herald.key", pemFile).Replace(src)
	conf := filepath.Join(dir, "herald.conf")
	main := filepath.Join(dir, "nginx.conf")
	if err := os.WriteFile(conf, []byte(src), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(main, []byte("pid "+filepath.Join(dir, "nginx.pid")+";\nerror_log stderr;\n"+
		"events { worker_connections 1024; }\ninclude "+conf+";\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(bin, "-t", "-p", dir, "-c", main).CombinedOutput()
	if err != nil {
		t.Fatalf("nginx -t: %v\n%s", err, out)
	}
	t.Logf("nginx -t: %s", out)
}

func TestNginxParser(t *testing.T) {
	ds, err := parseNginx("a 1 '2 3'; b { c \"x;y\"; d { } } # e;\n")
	if err != nil {
		t.Fatal(err)
	}
	if len(ds) != 2 || !slices.Equal(ds[0].Words, []string{"a", "1", "2 3"}) || !ds[1].IsBlock ||
		len(ds[1].Block) != 2 || ds[1].Block[0].Words[1] != "x;y" || !ds[1].Block[1].IsBlock {
		t.Errorf("parsed wrong: %+v", ds)
	}
	for _, bad := range []string{"a", "a {", "}", "a 'b;", "{ }"} {
		if _, err := parseNginx(bad); err == nil {
			t.Errorf("%q parsed", bad)
		}
	}
}
