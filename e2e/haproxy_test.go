package e2e

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/binary"
	"encoding/csv"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/gobwas/ws"
	"github.com/gobwas/ws/wsutil"

	"github.com/herald-rt/herald/deploy"
	"github.com/herald-rt/herald/internal/redistest"
)

// The HAProxy instance: two herald nodes joined through a Redis of their own, behind a
// real HAProxy run from deploy/haproxy/haproxy.cfg (localized: loopback ports, a
// certificate from a throwaway CA, unprivileged, in the foreground; every other
// directive as shipped). The nodes run with --proxy-protocol and trust only 127.0.0.1,
// the address HAProxy connects from, so every client connection reaches them through
// HAProxy with a PROXY v2 header. TestHAProxy runs, one after another:
//
//	pusher-js  haproxy.test.mjs: wss:// with forceTLS, the SDK over https, both nodes
//	proxy      per-IP limits on the addresses PROXY v2 carries (Go clients bound to
//	           127.0.0.2 and 127.0.0.3), per node; PROXY headers sent to a node directly
//	handshakes WebSocket handshakes per second through HAProxy, plain against TLS
//	drain      1,000 clients; SIGTERM to the node holding most; 4200s over the window,
//	           every client back on the other node, an event reaches all of them
const (
	lbPerIP           = 2 // --max-connections-per-ip
	lbUpgradeRate     = 5 // --max-upgrades-per-ip-per-second
	lbDrainWindow     = 3 * time.Second
	lbShutdownTimeout = 8 * time.Second
	// lbMaxConn replaces the shipped maxconn (1,000,000): HAProxy sizes its file limit
	// from it, and a process here may open 20,000 files.
	lbMaxConn = 4000
)

// lbNodeIDs are the nodes' --node-id: the first part of their socket ids tells which
// node a client is on.
var lbNodeIDs = []uint32{101, 102}

// lb is the instance: the nodes, their Redis, and HAProxy.
type lb struct {
	dir     string
	redis   *redistest.Server
	nodes   []*herald
	app     app
	caFile  string
	tlsConf *tls.Config // trusts the test CA

	tlsAddr, plainAddr, statsAddr, socket string
	tlsFrontend, plainFrontend, backend   string
	servers                               []string // server names, in node order

	cmd     *exec.Cmd
	out     *logWriter
	exited  chan struct{}
	waitErr error
}

// TestHAProxy runs the HAProxy instance (see above).
func TestHAProxy(t *testing.T) {
	t.Parallel()
	l := startLB(t)
	t.Run("pusher-js", func(t *testing.T) { runNode(t, l.nodes, haproxyFile, l.env()...) })
	t.Run("proxy", func(t *testing.T) { testProxy(t, l) })
	t.Run("handshakes", func(t *testing.T) { testHandshakes(t, l) })
	t.Run("drain", func(t *testing.T) { testDrain(t, l) })
	l.stopHAProxy(t)
	for _, h := range l.nodes {
		h.stop(t)
	}
}

func startLB(t *testing.T) *lb {
	t.Helper()
	l := &lb{dir: t.TempDir(), redis: redistest.Start(t), app: mainApp}
	pemFile := l.makeCerts(t)
	cfg := writeApps(t, l.app)
	for i, id := range lbNodeIDs {
		l.nodes = append(l.nodes, startHerald(t, "lb"+strconv.Itoa(i+1), "--config", cfg,
			"--redis", l.redis.URL(), "--redis-prefix", "e2e-lb", "--node-lease", nodeLease.String(),
			"--node-id", strconv.Itoa(int(id)),
			"--proxy-protocol", "--trusted-proxies", "127.0.0.1/32",
			"--max-connections-per-ip", strconv.Itoa(lbPerIP), "--max-upgrades-per-ip-per-second", strconv.Itoa(lbUpgradeRate),
			"--drain-window", lbDrainWindow.String(), "--shutdown-timeout", lbShutdownTimeout.String()))
	}

	src, err := os.ReadFile("../deploy/haproxy/haproxy.cfg")
	if err != nil {
		t.Fatal(err)
	}
	c, err := deploy.ParseHAProxy(src)
	if err != nil {
		t.Fatal(err)
	}
	l.tlsAddr, l.plainAddr, l.statsAddr = "127.0.0.1:"+freePort(t), "127.0.0.1:"+freePort(t), "127.0.0.1:"+freePort(t)
	l.socket = filepath.Join(l.dir, "admin.sock")
	site := deploy.HAProxySite{TLSBind: l.tlsAddr, PlainBind: l.plainAddr, StatsBind: l.statsAddr, Cert: pemFile,
		StatsSocket: l.socket, MaxConn: lbMaxConn, Foreground: true}
	for i, h := range l.nodes {
		_, adminPort, _ := net.SplitHostPort(h.admin)
		p, _ := strconv.Atoi(adminPort)
		name := "node" + strconv.Itoa(i+1)
		site.Nodes = append(site.Nodes, deploy.HAProxyNode{Name: name, Addr: h.addr, AdminPort: p})
		l.servers = append(l.servers, name)
	}
	if err := c.Localize(site); err != nil {
		t.Fatal(err)
	}
	l.tlsFrontend, l.plainFrontend, l.backend = c.TLSFrontend().Name, c.PlainFrontend().Name, c.NodesBackend().Name
	cfgFile := filepath.Join(l.dir, "haproxy.cfg")
	if err := os.WriteFile(cfgFile, []byte(c.String()), 0o600); err != nil {
		t.Fatal(err)
	}
	l.startHAProxy(t, cfgFile)
	// Both nodes up, as HAProxy's health checks (GET /readyz on the admin ports) see them.
	l.waitServers(t, 20*time.Second, func(s map[string]string) bool { return s["status"] == "UP" && s["check_status"] == "L7OK" }, "UP (L7OK)", l.servers...)
	return l
}

// env is what haproxy.test.mjs needs besides the nodes (runNode sets those).
func (l *lb) env() []string {
	_, port, _ := net.SplitHostPort(l.plainAddr)
	_, tlsPort, _ := net.SplitHostPort(l.tlsAddr)
	var ids []string
	for _, id := range lbNodeIDs {
		ids = append(ids, strconv.Itoa(int(id)))
	}
	return append(appEnv("APP", l.app),
		"E2E_LB_HOST=127.0.0.1", "E2E_LB_PORT="+port, "E2E_LB_TLS_PORT="+tlsPort, "E2E_LB_STATS="+l.statsAddr,
		"E2E_LB_TLS_FRONTEND="+l.tlsFrontend, "E2E_LB_PLAIN_FRONTEND="+l.plainFrontend, "E2E_LB_BACKEND="+l.backend,
		"E2E_NODE_IDS="+strings.Join(ids, ","), "NODE_EXTRA_CA_CERTS="+l.caFile)
}

// --- certificates -----------------------------------------------------------------------

// makeCerts makes a throwaway CA and a server certificate for 127.0.0.1 and localhost
// signed by it, with openssl, in the test's directory. It returns the PEM HAProxy
// loads (the certificate, then its key); the CA is l.caFile and trusted by l.tlsConf.
func (l *lb) makeCerts(t *testing.T) string {
	t.Helper()
	openssl := func(args ...string) {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		cmd := exec.CommandContext(ctx, "openssl", args...)
		cmd.Dir = l.dir
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("openssl %s: %v\n%s", strings.Join(args, " "), err, out)
		}
	}
	if _, err := exec.LookPath("openssl"); err != nil {
		t.Fatal("openssl is not installed (make test installs it from Debian)")
	}
	ext := filepath.Join(l.dir, "server.ext")
	if err := os.WriteFile(ext, []byte("basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\n"+
		"extendedKeyUsage=serverAuth\nsubjectAltName=IP:127.0.0.1,DNS:localhost\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-days", "1",
		"-keyout", "ca.key", "-out", "ca.pem", "-subj", "/CN=herald e2e throwaway CA",
		"-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign")
	openssl("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
		"-keyout", "server.key", "-out", "server.csr", "-subj", "/CN=localhost")
	openssl("x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-set_serial", "2",
		"-days", "1", "-extfile", ext, "-out", "server.pem")
	var pemData []byte
	for _, f := range []string{"server.pem", "server.key"} {
		b, err := os.ReadFile(filepath.Join(l.dir, f))
		if err != nil {
			t.Fatal(err)
		}
		pemData = append(pemData, b...)
	}
	pemFile := filepath.Join(l.dir, "herald.pem")
	if err := os.WriteFile(pemFile, pemData, 0o600); err != nil {
		t.Fatal(err)
	}
	l.caFile = filepath.Join(l.dir, "ca.pem")
	ca, err := os.ReadFile(l.caFile)
	if err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM(ca) {
		t.Fatal("ca.pem: no certificate")
	}
	l.tlsConf = &tls.Config{RootCAs: roots, MinVersion: tls.VersionTLS12}
	return pemFile
}

// --- HAProxy ----------------------------------------------------------------------------

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

// startHAProxy runs HAProxy in the foreground (-db) on the config; it is stopped by
// its PID at the end of the test (stopHAProxy).
func (l *lb) startHAProxy(t *testing.T, cfgFile string) {
	t.Helper()
	bin := haproxyBinary(t)
	if out, err := exec.Command(bin, "-c", "-f", cfgFile).CombinedOutput(); err != nil {
		t.Fatalf("haproxy -c: %v\n%s", err, out)
	}
	l.out = &logWriter{t: t, prefix: "haproxy: "}
	l.exited = make(chan struct{})
	l.cmd = exec.Command(bin, "-db", "-f", cfgFile)
	l.cmd.Dir = l.dir
	l.cmd.Stdout, l.cmd.Stderr = l.out, l.out
	if err := l.cmd.Start(); err != nil {
		t.Fatalf("start haproxy: %v", err)
	}
	go func() {
		l.waitErr = l.cmd.Wait()
		close(l.exited)
	}()
	t.Cleanup(func() { l.stopHAProxy(t) })
}

// stopHAProxy stops HAProxy (SIGTERM, SIGKILL after 5 s) and waits for it; once.
func (l *lb) stopHAProxy(t *testing.T) {
	select {
	case <-l.exited:
		return
	default:
	}
	_ = l.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-l.exited:
	case <-time.After(5 * time.Second):
		t.Errorf("haproxy did not exit within 5 s of SIGTERM; killing it")
		_ = l.cmd.Process.Kill()
		<-l.exited
	}
	l.out.flush()
}

// stats reads HAProxy's stats (the stats page's CSV): one map per proxy and server.
func (l *lb) stats() ([]map[string]string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, "GET", "http://"+l.statsAddr+"/;csv", nil)
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, err
	}
	defer res.Body.Close()
	body, err := io.ReadAll(res.Body)
	if err != nil {
		return nil, err
	}
	recs, err := csv.NewReader(strings.NewReader(strings.TrimPrefix(string(body), "# "))).ReadAll()
	if err != nil || len(recs) < 2 {
		return nil, fmt.Errorf("HAProxy stats: %v: %q", err, body)
	}
	var out []map[string]string
	for _, r := range recs[1:] {
		m := map[string]string{}
		for i, col := range recs[0] {
			if i < len(r) {
				m[col] = r[i]
			}
		}
		out = append(out, m)
	}
	return out, nil
}

// server is the stats row of one server of the nodes' backend.
func (l *lb) server(name string) (map[string]string, error) {
	rows, err := l.stats()
	if err != nil {
		return nil, err
	}
	for _, r := range rows {
		if r["pxname"] == l.backend && r["svname"] == name {
			return r, nil
		}
	}
	return nil, fmt.Errorf("HAProxy has no server %s/%s", l.backend, name)
}

// waitServers waits until ok holds for each named server's stats row.
func (l *lb) waitServers(t *testing.T, within time.Duration, ok func(map[string]string) bool, what string, names ...string) {
	t.Helper()
	deadline := time.Now().Add(within)
	for _, name := range names {
		for {
			row, err := l.server(name)
			if err == nil && ok(row) {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("HAProxy: server %s not %s within %v: %v %v", name, what, within, row, err)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
}

// runtime sends one command to HAProxy's runtime API (the stats socket).
func (l *lb) runtime(t *testing.T, cmd string) string {
	t.Helper()
	c, err := net.DialTimeout("unix", l.socket, 3*time.Second)
	if err != nil {
		t.Fatalf("HAProxy runtime API: %v", err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(3 * time.Second))
	if _, err := io.WriteString(c, cmd+"\n"); err != nil {
		t.Fatal(err)
	}
	out, _ := io.ReadAll(c)
	return strings.TrimSpace(string(out))
}

// setState sets a server's administrative state through the runtime API, as an
// operator does before restarting a node: "drain" (no new connections) or "ready".
func (l *lb) setState(t *testing.T, server, state string) {
	t.Helper()
	if out := l.runtime(t, "set server "+l.backend+"/"+server+" state "+state); out != "" {
		t.Fatalf("set server %s state %s: %s", server, state, out)
	}
	want := map[string]string{"drain": "DRAIN", "ready": "UP"}[state]
	l.waitServers(t, 5*time.Second, func(r map[string]string) bool { return r["status"] == want }, want, server)
}

// --- herald's side ----------------------------------------------------------------------

// nodeStats is /stats of node n (1-based).
func (l *lb) nodeStats(t *testing.T, n int) heraldStats {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, "GET", "http://"+l.nodes[n-1].admin+"/stats", nil)
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("node %d /stats: %v", n, err)
	}
	defer res.Body.Close()
	var s heraldStats
	if err := json.NewDecoder(res.Body).Decode(&s); err != nil {
		t.Fatalf("node %d /stats: %v", n, err)
	}
	return s
}

// heraldStats is the part of /stats these tests read.
type heraldStats struct {
	Node struct {
		Connections int64 `json:"connections"`
		Transport   struct {
			Refused     map[string]uint64 `json:"refused"`
			DrainTotal  uint64            `json:"drain_total"`
			DrainClosed uint64            `json:"drain_closed"`
		} `json:"transport"`
	} `json:"node"`
}

// waitIdle waits until no node counts a connection (the clients of the step before
// are gone), so that counts and leastconn start from zero.
func (l *lb) waitIdle(t *testing.T) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for n := 1; n <= len(l.nodes); n++ {
		for {
			select {
			case <-l.nodes[n-1].exited:
			default:
				if c := l.nodeStats(t, n).Node.Connections; c != 0 {
					if time.Now().After(deadline) {
						t.Fatalf("node %d still counts %d connections", n, c)
					}
					time.Sleep(50 * time.Millisecond)
					continue
				}
			}
			break
		}
	}
}

// nodeOf is the node (1-based) whose id a socket id starts with; 0 for none.
func nodeOf(socketID string) int {
	id, _, _ := strings.Cut(socketID, ".")
	for i, n := range lbNodeIDs {
		if id == strconv.Itoa(int(n)) {
			return i + 1
		}
	}
	return 0
}

// --- a Pusher client in Go ---------------------------------------------------------------

// pconn is a Pusher connection driven from Go (gobwas/ws), for what pusher-js cannot
// do: bind a source address, send a PROXY header, open a thousand at once. Reads and
// writes belong to one goroutine; Close may come from any.
type pconn struct {
	conn     net.Conn
	rw       io.ReadWriter // reads through the handshake's buffered reader
	socketID string
	node     int  // 1-based, from the socket id
	resumed  bool // the TLS session was resumed
}

type pevent struct {
	Event   string          `json:"event"`
	Channel string          `json:"channel"`
	Data    json.RawMessage `json:"data"`
}

// errClosed is a close frame from the server.
type errClosed struct{ code int }

func (e errClosed) Error() string { return "closed by the server with " + strconv.Itoa(e.code) }

// dialVia opens a Pusher connection through HAProxy's TLS (useTLS) or plain frontend
// from the source address src, and reads pusher:connection_established.
func (l *lb) dialVia(ctx context.Context, useTLS bool, src netip.Addr, conf *tls.Config) (*pconn, error) {
	u := "ws://" + l.plainAddr
	if useTLS {
		u = "wss://" + l.tlsAddr
		if conf == nil {
			conf = l.tlsConf
		}
	}
	d := ws.Dialer{
		NetDial: func(ctx context.Context, network, addr string) (net.Conn, error) {
			nd := net.Dialer{LocalAddr: &net.TCPAddr{IP: src.AsSlice()}}
			return nd.DialContext(ctx, network, addr)
		},
		TLSConfig: conf,
	}
	conn, br, _, err := d.Dial(ctx, u+"/app/"+l.app.Key+"?protocol=7&client=herald-e2e-go&version=1.0")
	if err != nil {
		return nil, err
	}
	return l.established(ctx, conn, br)
}

// upgradeOn does the WebSocket handshake on a connection the caller opened (after a
// PROXY header it wrote itself).
func (l *lb) upgradeOn(ctx context.Context, conn net.Conn, addr string) (*pconn, error) {
	u, _ := url.Parse("ws://" + addr + "/app/" + l.app.Key + "?protocol=7&client=herald-e2e-go&version=1.0")
	if dl, ok := ctx.Deadline(); ok {
		_ = conn.SetDeadline(dl)
	}
	br, _, err := ws.Dialer{}.Upgrade(conn, u)
	if err != nil {
		conn.Close()
		return nil, err
	}
	_ = conn.SetDeadline(time.Time{})
	return l.established(ctx, conn, br)
}

func (l *lb) established(ctx context.Context, conn net.Conn, br *bufio.Reader) (*pconn, error) {
	p := &pconn{conn: conn, rw: conn}
	if br != nil {
		p.rw = struct {
			io.Reader
			io.Writer
		}{br, conn}
	}
	if tc, ok := conn.(*tls.Conn); ok {
		p.resumed = tc.ConnectionState().DidResume
	}
	ev, err := p.next(ctx)
	if err != nil {
		conn.Close()
		return nil, err
	}
	var est struct {
		SocketID string `json:"socket_id"`
	}
	var data string
	if ev.Event != "pusher:connection_established" || json.Unmarshal(ev.Data, &data) != nil || json.Unmarshal([]byte(data), &est) != nil {
		conn.Close()
		return nil, fmt.Errorf("first message %s %s, want pusher:connection_established", ev.Event, ev.Data)
	}
	p.socketID, p.node = est.SocketID, nodeOf(est.SocketID)
	return p, nil
}

// next reads the next Pusher message (answering pings); a close frame is errClosed.
func (p *pconn) next(ctx context.Context) (pevent, error) {
	dl, ok := ctx.Deadline()
	if !ok {
		dl = time.Time{}
	}
	_ = p.conn.SetReadDeadline(dl)
	data, _, err := wsutil.ReadServerData(p.rw)
	if err != nil {
		var ce wsutil.ClosedError
		if errors.As(err, &ce) {
			return pevent{}, errClosed{code: int(ce.Code)}
		}
		return pevent{}, err
	}
	var ev pevent
	if err := json.Unmarshal(data, &ev); err != nil {
		return pevent{}, fmt.Errorf("not JSON: %q", data)
	}
	return ev, nil
}

// subscribe subscribes to a public channel and waits for the confirmation.
func (p *pconn) subscribe(ctx context.Context, channel string) error {
	msg := `{"event":"pusher:subscribe","data":{"channel":"` + channel + `"}}`
	if err := wsutil.WriteClientText(p.conn, []byte(msg)); err != nil {
		return err
	}
	for {
		ev, err := p.next(ctx)
		if err != nil {
			return err
		}
		if ev.Event == "pusher_internal:subscription_succeeded" && ev.Channel == channel {
			return nil
		}
	}
}

// Close sends a close frame (best effort) and closes the socket.
func (p *pconn) Close() {
	_ = p.conn.SetWriteDeadline(time.Now().Add(time.Second))
	_ = wsutil.WriteClientMessage(p.conn, ws.OpClose, ws.NewCloseFrameBody(ws.StatusNormalClosure, ""))
	_ = p.conn.Close()
}

// httpStatus is the HTTP status of a refused handshake, or 0.
func httpStatus(err error) int {
	var se ws.StatusError
	if errors.As(err, &se) {
		return int(se)
	}
	return 0
}

// failure names why a connection attempt failed, for counting.
func failure(err error) string {
	var ce errClosed
	switch {
	case httpStatus(err) != 0:
		return "HTTP " + strconv.Itoa(httpStatus(err))
	case errors.As(err, &ce):
		return "close " + strconv.Itoa(ce.code)
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF), errors.Is(err, syscall.ECONNRESET):
		return "connection closed"
	case errors.Is(err, syscall.ECONNREFUSED):
		return "connection refused"
	case errors.Is(err, os.ErrDeadlineExceeded), errors.Is(err, context.DeadlineExceeded):
		return "timeout"
	}
	return err.Error()
}

// proxyV2 is a PROXY protocol v2 header (PROXY command, TCP over IPv4) from src to dst.
func proxyV2(src, dst netip.AddrPort) []byte {
	b := []byte("\r\n\r\n\x00\r\nQUIT\n")
	b = append(b, 0x21, 0x11, 0, 12)
	s4, d4 := src.Addr().As4(), dst.Addr().As4()
	b = append(b, s4[:]...)
	b = append(b, d4[:]...)
	b = binary.BigEndian.AppendUint16(b, src.Port())
	return binary.BigEndian.AppendUint16(b, dst.Port())
}

// --- proxy: client addresses, per-IP limits, headers from the wrong place ----------------

// testProxy checks that herald sees the addresses HAProxy's PROXY v2 headers carry:
// each client address gets --max-connections-per-ip connections on a node and a 429
// past them while another address still connects, though every connection comes from
// HAProxy's one address; the limit is per node. Then headers sent to a node directly:
// refused from an untrusted source, required from a trusted one.
func testProxy(t *testing.T, l *lb) {
	l.waitIdle(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var open []*pconn
	defer func() {
		for _, p := range open {
			p.Close()
		}
	}()
	// connect opens n connections from src through HAProxy and checks each lands on
	// node want; then one more, which must be refused with 429.
	connect := func(src string, useTLS bool, want int) {
		t.Helper()
		for i := 0; i < lbPerIP; i++ {
			p, err := l.dialVia(ctx, useTLS, netip.MustParseAddr(src), nil)
			if err != nil {
				t.Fatalf("%s, connection %d of %d: %v", src, i+1, lbPerIP, err)
			}
			open = append(open, p)
			if p.node != want {
				t.Fatalf("%s: connection %d is on node %d (socket %s), want %d: HAProxy's runtime state is not what this test set", src, i+1, p.node, p.socketID, want)
			}
		}
		p, err := l.dialVia(ctx, useTLS, netip.MustParseAddr(src), nil)
		if err == nil {
			open = append(open, p)
			t.Fatalf("%s: connection %d accepted (node %d), want 429 past --max-connections-per-ip %d", src, lbPerIP+1, p.node, lbPerIP)
		}
		if httpStatus(err) != http.StatusTooManyRequests {
			t.Fatalf("%s: connection %d: %v, want HTTP 429", src, lbPerIP+1, err)
		}
	}
	refused := func(n int, reason string) uint64 { return l.nodeStats(t, n).Node.Transport.Refused[reason] }
	const perIP = "too_many_connections_per_ip"

	// Node 2 out (as an operator takes a node out before a restart): every
	// connection goes to node 1.
	before := refused(1, perIP)
	l.setState(t, l.servers[1], "drain")
	connect("127.0.0.2", true, 1)  // wss://, through the TLS frontend
	connect("127.0.0.3", false, 1) // ws://, through the plain frontend
	if got := refused(1, perIP) - before; got != 2 {
		t.Errorf("node 1 counted %d refusals %s, want 2", got, perIP)
	}
	// The limit is per node: with node 1 out and node 2 back, 127.0.0.2 gets its
	// connections again, there.
	l.setState(t, l.servers[1], "ready")
	l.setState(t, l.servers[0], "drain")
	connect("127.0.0.2", true, 2)
	if c1, c2 := l.nodeStats(t, 1).Node.Connections, l.nodeStats(t, 2).Node.Connections; c1 != 2*lbPerIP || c2 != lbPerIP {
		t.Errorf("nodes count %d and %d connections, want %d and %d", c1, c2, 2*lbPerIP, lbPerIP)
	}

	// --max-upgrades-per-ip-per-second: connections opened and closed one after
	// another from 127.0.0.5, all to node 2, faster than the rate. Past the burst they
	// get 429 (counted too_many_upgrades_per_ip; one whose predecessor's close the
	// node has not seen yet may meet the connection limit instead).
	const tries = 2*lbUpgradeRate + 2
	upBefore, connBefore := refused(2, "too_many_upgrades_per_ip"), refused(2, perIP)
	var ok, got429 int
	rateStart := time.Now()
	for range tries {
		p, err := l.dialVia(ctx, false, netip.MustParseAddr("127.0.0.5"), nil)
		switch {
		case err == nil:
			ok++
			p.Close()
		case httpStatus(err) == http.StatusTooManyRequests:
			got429++
		default:
			t.Fatalf("127.0.0.5: %v, want 101 or 429", err)
		}
	}
	rateTook := time.Since(rateStart)
	up, conns := refused(2, "too_many_upgrades_per_ip")-upBefore, refused(2, perIP)-connBefore
	// The bucket holds lbUpgradeRate tokens and refills at lbUpgradeRate a second.
	allowed := lbUpgradeRate + int(rateTook.Seconds()*lbUpgradeRate) + 1
	if ok > allowed || up == 0 && tries > allowed || uint64(got429) != up+conns {
		t.Errorf("%d upgrades from 127.0.0.5 in %v: %d accepted, %d answered 429; node 2 counted %d too_many_upgrades_per_ip and %d %s: "+
			"want at most %d accepted (--max-upgrades-per-ip-per-second %d) and every 429 counted", tries, rateTook, ok, got429, up, conns, perIP,
			allowed, lbUpgradeRate)
	}
	l.setState(t, l.servers[0], "ready")
	t.Logf("measured: through HAProxy (all from its address 127.0.0.1), herald keyed its per-IP limits on the PROXY v2 addresses: "+
		"--max-connections-per-ip %d: 127.0.0.2 and 127.0.0.3 got %d each on node 1 and a 429 past them, and 127.0.0.2 %d more on node 2 (the limit is per node); "+
		"--max-upgrades-per-ip-per-second %d: %d upgrades from 127.0.0.5 in %v, %d accepted, %d answered 429 (%d counted as too many upgrades)",
		lbPerIP, lbPerIP, lbPerIP, lbUpgradeRate, tries, rateTook.Round(time.Millisecond), ok, got429, up)

	// Headers sent straight to node 1, bypassing HAProxy.
	node1 := l.nodes[0].addr
	dst := netip.MustParseAddrPort(node1)
	raw := func(src string, header []byte) net.Conn {
		t.Helper()
		nd := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}, Timeout: 3 * time.Second}
		c, err := nd.DialContext(ctx, "tcp", node1)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := c.Write(header); err != nil {
			t.Fatal(err)
		}
		return c
	}
	// refusedRaw expects the node to close the connection without a byte.
	refusedRaw := func(what string, c net.Conn, reason string, before uint64) {
		t.Helper()
		defer c.Close()
		req := "GET /app/" + l.app.Key + "?protocol=7 HTTP/1.1\r\nHost: " + node1 + "\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" +
			"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
		_, _ = io.WriteString(c, req) // may fail: the node may have closed already
		_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
		b, err := io.ReadAll(c)
		if len(b) > 0 || errors.Is(err, os.ErrDeadlineExceeded) {
			t.Errorf("%s: the node answered %q (%v), want the connection closed without a byte", what, b, err)
		}
		deadline := time.Now().Add(3 * time.Second)
		for refused(1, reason) == before && time.Now().Before(deadline) {
			time.Sleep(20 * time.Millisecond)
		}
		if got := refused(1, reason) - before; got != 1 {
			t.Errorf("%s: node 1 counted %d refusals %s, want 1", what, got, reason)
		}
	}
	spoofed := netip.MustParseAddrPort("198.51.100.7:40000")
	b := refused(1, "proxy_untrusted")
	refusedRaw("a PROXY v2 header from 127.0.0.4, which is not a trusted proxy", raw("127.0.0.4", proxyV2(spoofed, dst)), "proxy_untrusted", b)
	b = refused(1, "proxy_missing")
	refusedRaw("no PROXY header from 127.0.0.1, a trusted proxy", raw("127.0.0.1", nil), "proxy_missing", b)
	b = refused(1, "proxy_invalid")
	refusedRaw("a malformed PROXY v1 line from 127.0.0.1", raw("127.0.0.1", []byte("PROXY TCP4 not-an-address 127.0.0.1 1 2\r\n")), "proxy_invalid", b)

	// An untrusted source without a header is served, under its own address.
	p, err := l.upgradeOn(ctx, raw("127.0.0.4", nil), node1)
	if err != nil {
		t.Fatalf("127.0.0.4 without a PROXY header: %v, want it served", err)
	}
	open = append(open, p)
	// A trusted source's header is believed, v2 and v1 alike: the limit counts the
	// address it carries (127.0.0.9), not the sender's.
	for i := 0; i < lbPerIP; i++ {
		p, err := l.upgradeOn(ctx, raw("127.0.0.1", proxyV2(netip.MustParseAddrPort("127.0.0.9:5000"), dst)), node1)
		if err != nil {
			t.Fatalf("PROXY v2 for 127.0.0.9 from 127.0.0.1, connection %d: %v", i+1, err)
		}
		open = append(open, p)
	}
	if _, err := l.upgradeOn(ctx, raw("127.0.0.1", proxyV2(netip.MustParseAddrPort("127.0.0.9:5001"), dst)), node1); httpStatus(err) != 429 {
		t.Errorf("PROXY v2 for 127.0.0.9, connection %d: %v, want HTTP 429", lbPerIP+1, err)
	}
	// A v2 LOCAL header (what HAProxy sends on health checks with check-send-proxy,
	// and some cloud balancers on theirs): the connection stands for itself.
	local := append([]byte("\r\n\r\n\x00\r\nQUIT\n"), 0x20, 0x00, 0, 0)
	if p, err := l.upgradeOn(ctx, raw("127.0.0.1", local), node1); err != nil {
		t.Errorf("PROXY v2 LOCAL from 127.0.0.1: %v, want it served", err)
	} else {
		open = append(open, p)
	}
	v1 := fmt.Sprintf("PROXY TCP4 203.0.113.5 %s 5000 %d\r\n", dst.Addr(), dst.Port())
	if p, err := l.upgradeOn(ctx, raw("127.0.0.1", []byte(v1)), node1); err != nil {
		t.Errorf("PROXY v1 from 127.0.0.1: %v, want it served (nginx sends v1)", err)
	} else {
		open = append(open, p)
	}
}
