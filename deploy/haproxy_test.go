package deploy

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
)

const haproxyFile = "haproxy/haproxy.cfg"

func parseHAProxyFile(t *testing.T) *HAProxyConfig {
	t.Helper()
	c, err := ParseHAProxy(readFile(t, haproxyFile))
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// haproxyDuration parses an HAProxy time: a number with an optional unit (us, ms,
// s, m, h, d; milliseconds without one).
func haproxyDuration(t *testing.T, v string) time.Duration {
	t.Helper()
	i := strings.IndexFunc(v, func(r rune) bool { return r < '0' || r > '9' })
	if i < 0 {
		i = len(v)
	}
	n, err := strconv.Atoi(v[:i])
	if err != nil {
		t.Fatalf("haproxy time %q", v)
	}
	unit, ok := map[string]time.Duration{"": time.Millisecond, "us": time.Microsecond, "ms": time.Millisecond,
		"s": time.Second, "m": time.Minute, "h": time.Hour, "d": 24 * time.Hour}[v[i:]]
	if !ok {
		t.Fatalf("haproxy time %q: unit %q", v, v[i:])
	}
	return time.Duration(n) * unit
}

// TestHAProxyShape checks what the file's comments promise.
func TestHAProxyShape(t *testing.T) {
	c := parseHAProxyFile(t)
	defs := c.SectionsOf("defaults")
	if len(defs) != 1 {
		t.Fatalf("%d defaults sections, want 1", len(defs))
	}
	d := defs[0]
	if m, _ := d.Value("mode"); m != "tcp" {
		t.Errorf("defaults: mode %q, want tcp (layer 4: herald speaks WebSocket and HTTP itself)", m)
	}

	// Timeouts: never cut a live, quiet WebSocket.
	quiet := quietMax(t)
	for _, name := range []string{"client", "server"} {
		v, ok := d.Value("timeout", name)
		if !ok {
			t.Errorf("defaults: no timeout %s", name)
		} else if haproxyDuration(t, v) < quiet {
			t.Errorf("defaults: timeout %s %s is shorter than a live connection may be quiet (%v)", name, v, quiet)
		}
	}
	if v, ok := d.Value("timeout", "tunnel"); !ok || haproxyDuration(t, v) < 10*time.Minute {
		t.Errorf("defaults: timeout tunnel %q, want a long one (at least 10 minutes)", v)
	}

	// Many sockets.
	g := c.Section("global", "")
	if g == nil {
		t.Fatal("no global section")
	}
	gmax, _ := g.Value("maxconn")
	dmax, _ := d.Value("maxconn")
	for what, v := range map[string]string{"global": gmax, "defaults": dmax} {
		if n, _ := strconv.Atoi(v); n < 100_000 {
			t.Errorf("%s: maxconn %q, want at least 100,000", what, v)
		}
	}

	// The frontends: TLS on :443 with the documented certificate, plain on :80.
	var tls, plain *HAProxySection
	for _, f := range c.SectionsOf("frontend") {
		for _, b := range f.Find("bind") {
			switch {
			case slices.Contains(b.Words, "ssl"):
				tls = f
				want := []string{"bind", ":443", "ssl", "crt", "/etc/haproxy/herald.pem"}
				if !slices.Equal(b.Words[:min(len(b.Words), len(want))], want) {
					t.Errorf("frontend %s: %q, want it to start with %q", f.Name, strings.Join(b.Words, " "), strings.Join(want, " "))
				}
				if i := slices.Index(b.Words, "alpn"); i < 0 || b.Words[i+1] != "http/1.1" {
					t.Errorf("frontend %s: bind without alpn http/1.1: a browser could pick h2, which herald does not speak", f.Name)
				}
			case c.mode(f) == "tcp":
				plain = f
				if b.Words[1] != ":80" {
					t.Errorf("frontend %s: bind %s, want :80", f.Name, b.Words[1])
				}
			}
		}
	}
	if tls == nil || plain == nil {
		t.Fatal("want a TLS frontend (bind :443 ssl crt …) and a plain one (bind :80)")
	}

	// The backend: leastconn, health checks on /readyz at the admin port, PROXY v2.
	beName, _ := tls.Value("default_backend")
	if p, _ := plain.Value("default_backend"); p != beName {
		t.Errorf("the TLS frontend uses backend %q, the plain one %q: want the same nodes", beName, p)
	}
	be := c.Section("backend", beName)
	if be == nil {
		t.Fatalf("no backend %q", beName)
	}
	if v, _ := be.Value("balance"); v != "leastconn" {
		t.Errorf("backend %s: balance %q, want leastconn (WebSockets live long)", be.Name, v)
	}
	if got := be.Find("option", "httpchk"); len(got) != 1 || strings.Join(got[0].Words, " ") != "option httpchk GET /readyz" {
		t.Errorf("backend %s: want option httpchk GET /readyz, have %v", be.Name, got)
	}
	// Drains rely on retries with redispatch: a draining herald refuses connections.
	retries, _ := d.Value("retries")
	if n, _ := strconv.Atoi(retries); n < 1 || len(d.Find("option", "redispatch")) == 0 {
		t.Errorf("defaults: retries %q and option redispatch: a connection refused by a draining node must go to another", retries)
	}
	if got := be.Find("on-marked-down"); len(got) > 0 {
		t.Errorf("backend %s: on-marked-down cuts a draining node's sockets at once", be.Name)
	}
	var defaultServer []string
	for _, ds := range be.Find("default-server") {
		defaultServer = append(defaultServer, ds.Words[1:]...)
	}
	servers := be.Find("server")
	if len(servers) < 2 {
		t.Errorf("backend %s: %d servers, want at least 2", be.Name, len(servers))
	}
	for _, s := range servers {
		opts := append(slices.Clone(defaultServer), s.Words[3:]...)
		for _, want := range []string{"send-proxy-v2", "check"} {
			if !slices.Contains(opts, want) {
				t.Errorf("line %d: server %s without %s", s.Line, s.Words[1], want)
			}
		}
		if i := slices.Index(opts, "port"); i < 0 || i+1 == len(opts) {
			t.Errorf("line %d: server %s is checked on its public port: want check port <admin port>", s.Line, s.Words[1])
		}
		if slices.Contains(opts, "check-send-proxy") {
			t.Errorf("line %d: check-send-proxy: the admin port takes no PROXY header", s.Line)
		}
	}
	if !strings.Contains(string(readFile(t, haproxyFile)), "--proxy-protocol --trusted-proxies") {
		t.Error("the file does not tell the operator to run herald with --proxy-protocol --trusted-proxies")
	}
}

// TestHAProxyCheck runs haproxy -c on the file as it is, with a certificate of the
// test's own in place of /etc/haproxy/herald.pem; then on the loopback version e2e
// runs. Either must be valid without a warning.
func TestHAProxyCheck(t *testing.T) {
	bin := haproxyBinary(t)
	dir := t.TempDir()
	pemFile := filepath.Join(dir, "herald.pem")
	writeTestPEM(t, pemFile)

	c := parseHAProxyFile(t)
	if err := c.Localize(HAProxySite{Cert: pemFile}); err != nil {
		t.Fatal(err)
	}
	check := func(name string, c *HAProxyConfig) {
		path := filepath.Join(dir, name)
		if err := os.WriteFile(path, []byte(c.String()), 0o600); err != nil {
			t.Fatal(err)
		}
		out, err := exec.Command(bin, "-c", "-f", path).CombinedOutput()
		if err != nil || !strings.Contains(string(out), "Configuration file is valid") {
			t.Fatalf("haproxy -c -f %s: %v\n%s\n--- the file:\n%s", name, err, out, c)
		}
		if strings.Contains(string(out), "[WARNING]") || strings.Contains(string(out), "[ALERT]") {
			t.Errorf("haproxy -c -f %s warns:\n%s", name, out)
		}
		t.Logf("haproxy -c -f %s: %s", name, strings.TrimSpace(string(out)))
	}
	check("as-shipped.cfg", c)

	loop := parseHAProxyFile(t)
	err := loop.Localize(HAProxySite{
		TLSBind: "127.0.0.1:18443", PlainBind: "127.0.0.1:18080", StatsBind: "127.0.0.1:18404",
		Cert: pemFile, StatsSocket: filepath.Join(dir, "admin.sock"), MaxConn: 4000, Foreground: true,
		Nodes: []HAProxyNode{{"node1", "127.0.0.1:16001", 19601}, {"node2", "127.0.0.1:16002", 19602}},
	})
	if err != nil {
		t.Fatal(err)
	}
	check("loopback.cfg", loop)
	s := loop.String()
	for _, want := range []string{
		"bind 127.0.0.1:18443 ssl crt " + pemFile + " alpn http/1.1",
		"server node1 127.0.0.1:16001 port 19601",
		"server node2 127.0.0.1:16002 port 19602",
		"option httpchk GET /readyz",
		"send-proxy-v2",
	} {
		if !strings.Contains(s, want) {
			t.Errorf("the loopback config has no %q:\n%s", want, s)
		}
	}
	for _, gone := range []string{"chroot", "daemon", "user haproxy", "10.0.0.11", "/dev/log"} {
		if strings.Contains(s, gone) {
			t.Errorf("the loopback config still has %q", gone)
		}
	}
}

// TestHAProxyLocalizeRefuses: a file without the pieces the e2e test replaces is an
// error, not a config that quietly runs something else.
func TestHAProxyLocalizeRefuses(t *testing.T) {
	for name, src := range map[string]string{
		"no TLS frontend": "global\n    maxconn 10\nfrontend f\n    bind :80\n    default_backend b\nbackend b\n    server n 10.0.0.1:1\n",
		"no servers":      "global\n    maxconn 10\nfrontend f\n    bind :443 ssl crt x\n    bind :80\nbackend b\n    balance leastconn\n",
		"two TLS binds":   "frontend f\n    bind :443 ssl crt x\nfrontend g\n    bind :8443 ssl crt y\n",
	} {
		c, err := ParseHAProxy([]byte(src))
		if err != nil {
			t.Fatal(err)
		}
		err = c.Localize(HAProxySite{TLSBind: "127.0.0.1:1", Nodes: []HAProxyNode{{"n", "127.0.0.1:2", 3}}})
		if err == nil {
			t.Errorf("%s: Localize accepted it:\n%s", name, c)
		}
	}
	if _, err := ParseHAProxy([]byte("    bind :80\n")); err == nil {
		t.Error("a directive outside any section was accepted")
	}
	c, err := ParseHAProxy([]byte("frontend \"a b\"\n    http-request set-header X \"v w\" # comment\n    acl x path '/a#b'\n"))
	if err != nil {
		t.Fatal(err)
	}
	if got := c.Sections[0].Directives[0].Words; !slices.Equal(got, []string{"http-request", "set-header", "X", "v w"}) {
		t.Errorf("quotes and comment: %q", got)
	}
	if got := c.Sections[0].Directives[1].Words[3]; got != "/a#b" {
		t.Errorf("# inside quotes: %q", got)
	}
	if again, err := ParseHAProxy([]byte(c.String())); err != nil || again.String() != c.String() {
		t.Errorf("String does not parse back to itself: %v\n%s", err, c)
	}
}

// haproxyBinary finds HAProxy (make test installs Debian's).
func haproxyBinary(t *testing.T) string {
	t.Helper()
	for _, p := range []string{"haproxy", "/usr/sbin/haproxy"} {
		if bin, err := exec.LookPath(p); err == nil {
			return bin
		}
	}
	t.Fatal("haproxy is not installed (make test installs it from Debian: apt-get install haproxy)")
	return ""
}

// writeTestPEM writes a self-signed certificate for localhost and its key into one
// PEM file, as HAProxy's crt takes it.
func writeTestPEM(t *testing.T, path string) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		Subject:      pkix.Name{CommonName: "localhost"},
		DNSNames:     []string{"localhost"},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	out := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
	out = append(out, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: keyDER})...)
	if err := os.WriteFile(path, out, 0o600); err != nil {
		t.Fatal(err)
	}
}
