package deploy

import (
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"
)

const (
	systemdFile = "systemd/herald.service"
	sysctlFile  = "sysctl.conf"
)

// unit is a systemd unit file: section → key → values (a key may repeat).
type unit map[string]map[string][]string

// parseUnit reads a systemd unit: [Section] headers, Key=Value lines, # and ;
// comments, a trailing backslash continuing the line.
func parseUnit(t *testing.T, src string) unit {
	t.Helper()
	u := unit{}
	var section string
	var cont strings.Builder
	for i, line := range strings.Split(src, "\n") {
		trimmed := strings.TrimSpace(line)
		if cont.Len() == 0 && (trimmed == "" || trimmed[0] == '#' || trimmed[0] == ';') {
			continue
		}
		if strings.HasSuffix(trimmed, "\\") {
			cont.WriteString(strings.TrimSuffix(trimmed, "\\") + " ")
			continue
		}
		cont.WriteString(trimmed)
		line = cont.String()
		cont.Reset()
		if strings.HasPrefix(line, "[") && strings.HasSuffix(line, "]") {
			section = line[1 : len(line)-1]
			u[section] = map[string][]string{}
			continue
		}
		k, v, ok := strings.Cut(line, "=")
		if !ok || section == "" {
			t.Fatalf("%s: line %d: %q is not Key=Value in a section", systemdFile, i+1, line)
		}
		u[section][strings.TrimSpace(k)] = append(u[section][strings.TrimSpace(k)], strings.TrimSpace(v))
	}
	return u
}

func (u unit) get(section, key string) string {
	v := u[section][key]
	if len(v) == 0 {
		return ""
	}
	return v[len(v)-1]
}

// systemdSeconds parses a systemd time span: "30", "30s", "1min 30s", "2min", "500ms".
func systemdSeconds(t *testing.T, v string) time.Duration {
	t.Helper()
	if n, err := strconv.Atoi(v); err == nil {
		return time.Duration(n) * time.Second
	}
	d, err := time.ParseDuration(strings.NewReplacer(" ", "", "min", "m", "sec", "s").Replace(v))
	if err != nil {
		t.Fatalf("systemd time %q: %v", v, err)
	}
	return d
}

func TestSystemd(t *testing.T) {
	u := parseUnit(t, string(readFile(t, systemdFile)))
	exec := strings.Fields(u.get("Service", "ExecStart"))
	if len(exec) == 0 || !strings.HasSuffix(exec[0], "/herald") {
		t.Fatalf("ExecStart %q does not run herald", exec)
	}
	a, err := parseHeraldArgs(exec[1:], heraldFlags(t))
	if err != nil {
		t.Fatalf("ExecStart: %v", err)
	}
	drain := a.duration(t, "drain-window")
	shutdown := a.duration(t, "shutdown-timeout")
	stop := systemdSeconds(t, u.get("Service", "TimeoutStopSec"))
	if drain >= shutdown || shutdown >= stop {
		t.Errorf("want --drain-window (%v) < --shutdown-timeout (%v) < TimeoutStopSec (%v): systemd's SIGKILL must not cut a drain", drain, shutdown, stop)
	}
	if ks := u.get("Service", "KillSignal"); ks != "" && ks != "SIGTERM" {
		t.Errorf("KillSignal %s: herald drains on SIGTERM", ks)
	}
	if r := u.get("Service", "ExecReload"); !strings.Contains(r, "-HUP") || !strings.Contains(r, "$MAINPID") {
		t.Errorf("ExecReload %q: want kill -HUP $MAINPID (herald reloads its apps on SIGHUP)", r)
	}
	if a.has("proxy-protocol") && !a.has("trusted-proxies") {
		t.Error("ExecStart: --proxy-protocol without --trusted-proxies trusts a PROXY header from anyone")
	}
	if host, _, _ := strings.Cut(a.get("admin-addr"), ":"); host == "127.0.0.1" || host == "localhost" {
		t.Errorf("ExecStart: --admin-addr %s: the load balancer's health checks cannot reach loopback", a.get("admin-addr"))
	}

	nofile, err := strconv.Atoi(u.get("Service", "LimitNOFILE"))
	if err != nil || nofile < 500_000 {
		t.Errorf("LimitNOFILE %q: want at least 500,000 (one file per connection)", u.get("Service", "LimitNOFILE"))
	}
	if nrOpen := sysctlInt(t, "fs.nr_open"); nofile > nrOpen {
		t.Errorf("LimitNOFILE %d exceeds fs.nr_open %d of %s: systemd could not set it", nofile, nrOpen, sysctlFile)
	}
	if u.get("Service", "DynamicUser") != "yes" && (u.get("Service", "User") == "" || u.get("Service", "User") == "root") {
		t.Error("herald runs as root: set DynamicUser=yes or User=")
	}
	if u.get("Service", "NoNewPrivileges") != "yes" {
		t.Error("NoNewPrivileges=yes is missing")
	}

	t.Run("ExecStart starts herald, ExecReload reloads it", func(t *testing.T) {
		startHeraldWith(t, a, "apps.example.json", true)
	})
}

// sysctl is one setting of sysctl.conf.
type sysctl struct {
	key, value string
	optional   bool // "-key": skipped where the kernel lacks it
	line       int
}

func readSysctl(t *testing.T) []sysctl {
	t.Helper()
	var out []sysctl
	commented := false
	for i, line := range strings.Split(string(readFile(t, sysctlFile)), "\n") {
		line = strings.TrimSpace(line)
		switch {
		case line == "":
			commented = false
			continue
		case line[0] == '#' || line[0] == ';':
			commented = true
			continue
		}
		k, v, ok := strings.Cut(line, "=")
		if !ok {
			t.Fatalf("%s: line %d: %q is not key = value", sysctlFile, i+1, line)
		}
		s := sysctl{key: strings.TrimSpace(k), value: strings.Join(strings.Fields(v), " "), line: i + 1}
		s.key, s.optional = strings.CutPrefix(s.key, "-")
		if !commented {
			t.Errorf("%s: line %d: %s is not explained by a comment above it", sysctlFile, i+1, s.key)
		}
		out = append(out, s)
	}
	return out
}

func sysctlValue(t *testing.T, key string) (string, bool) {
	t.Helper()
	for _, s := range readSysctl(t) {
		if s.key == key {
			return s.value, true
		}
	}
	return "", false
}

// sysctlInt is a one-number setting of sysctl.conf, or the kernel's default for
// fs.nr_open when the file leaves it out.
func sysctlInt(t *testing.T, key string) int {
	t.Helper()
	v, ok := sysctlValue(t, key)
	if !ok && key == "fs.nr_open" {
		return 1 << 20
	}
	n, err := strconv.Atoi(v)
	if err != nil {
		t.Fatalf("%s: %s = %q is not a number", sysctlFile, key, v)
	}
	return n
}

func sysctlInts(t *testing.T, key string, n int) []int {
	t.Helper()
	v, ok := sysctlValue(t, key)
	if !ok {
		t.Fatalf("%s: no %s", sysctlFile, key)
	}
	f := strings.Fields(v)
	if len(f) != n {
		t.Fatalf("%s: %s = %q: want %d numbers", sysctlFile, key, v, n)
	}
	var out []int
	for _, x := range f {
		i, err := strconv.Atoi(x)
		if err != nil {
			t.Fatalf("%s: %s = %q: %v", sysctlFile, key, v, err)
		}
		out = append(out, i)
	}
	return out
}

func TestSysctl(t *testing.T) {
	settings := readSysctl(t)
	seen := map[string]bool{}
	for _, s := range settings {
		if seen[s.key] {
			t.Errorf("%s: %s set twice", sysctlFile, s.key)
		}
		seen[s.key] = true
		// A misspelt name is silently useless: every one that is not optional must
		// exist in this kernel.
		if _, err := os.Stat(filepath.Join("/proc/sys", strings.ReplaceAll(s.key, ".", "/"))); err != nil && !s.optional {
			t.Errorf("%s: line %d: this kernel has no %s (/proc/sys): misspelt? (prefix it with - if it is module-dependent)", sysctlFile, s.line, s.key)
		}
	}

	atLeast := func(key string, min int, why string) {
		if v := sysctlInt(t, key); v < min {
			t.Errorf("%s = %d, want at least %d: %s", key, v, min, why)
		}
	}
	atLeast("fs.file-max", 1_048_576, "500,000 sockets on a node, twice that on the load balancer")
	atLeast("net.core.somaxconn", 65535, "herald listens with a backlog of 65,535, capped by this")
	atLeast("net.ipv4.tcp_max_syn_backlog", sysctlInt(t, "net.core.somaxconn"), "no less than the accept queue")
	atLeast("net.core.netdev_max_backlog", 10_000, "reconnect storms")

	// The file limits that the unit and HAProxy ask for fit under fs.nr_open.
	c := parseHAProxyFile(t)
	gmax, _ := c.Section("global", "").Value("maxconn")
	hmax, _ := strconv.Atoi(gmax)
	atLeast("fs.nr_open", 2*hmax+1000, fmt.Sprintf("HAProxy's maxconn %d needs two files a connection", hmax))

	ports := sysctlInts(t, "net.ipv4.ip_local_port_range", 2)
	if ports[1]-ports[0] < 60_000 || ports[0] < 1024 {
		t.Errorf("net.ipv4.ip_local_port_range %v: want about 64,000 ports, none privileged", ports)
	}
	for _, key := range []string{"net.ipv4.tcp_mem", "net.ipv4.tcp_rmem", "net.ipv4.tcp_wmem"} {
		v := sysctlInts(t, key, 3)
		if v[0] > v[1] || v[1] > v[2] {
			t.Errorf("%s %v: want three rising values", key, v)
		}
	}
	if v := sysctlInts(t, "net.ipv4.tcp_rmem", 3); v[0] < 4096 {
		t.Errorf("net.ipv4.tcp_rmem minimum %d: want at least a page", v[0])
	}
}

// TestREADME: the README points at every deploy file, and explains every sysctl.
func TestREADME(t *testing.T) {
	readme := string(readFile(t, "../README.md"))
	if !strings.Contains(readme, "## Running in production") {
		t.Fatal("README.md has no \"Running in production\" section")
	}
	prod := readme[strings.Index(readme, "## Running in production"):]
	if i := strings.Index(prod[3:], "\n## "); i >= 0 {
		prod = prod[:i+3]
	}
	for _, f := range []string{haproxyFile, nginxFile, "k8s/", systemdFile, sysctlFile, "apps.example.json"} {
		if !strings.Contains(prod, "deploy/"+f) {
			t.Errorf("README's \"Running in production\" does not mention deploy/%s", f)
		}
	}
	if !strings.Contains(prod, "Dockerfile") {
		t.Error("README's \"Running in production\" does not mention the Dockerfile")
	}
	for _, s := range readSysctl(t) {
		if !strings.Contains(prod, s.key) {
			t.Errorf("README's \"Running in production\" does not explain %s", s.key)
		}
	}
	// Every deploy/ path the README names exists, but for the notes on files that
	// moved, which must name the new place too.
	moved := map[string]string{"deploy/herald.service": "deploy/" + systemdFile}
	for _, m := range regexp.MustCompile("deploy/[A-Za-z0-9_./-]*[A-Za-z0-9_/]").FindAllString(readme, -1) {
		if to, ok := moved[m]; ok {
			if !strings.Contains(readme, to) {
				t.Errorf("README.md says %s moved, but not where (%s)", m, to)
			}
			continue
		}
		if _, err := os.Stat(filepath.Join("..", m)); err != nil {
			t.Errorf("README.md names %s, which does not exist", m)
		}
	}
}
