package main

import (
	"bytes"
	"errors"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestHelpListsEveryFlag(t *testing.T) {
	var out bytes.Buffer
	_, err := parseFlags([]string{"--help"}, &out)
	if !errors.Is(err, flag.ErrHelp) {
		t.Fatalf("got %v", err)
	}
	for _, f := range []string{"addr", "admin-addr", "app-id", "app-key", "app-secret", "client-events", "config", "reuseport",
		"redis", "redis-cluster", "redis-prefix", "node-lease", "shutdown-timeout", "drain-window", "proxy-protocol",
		"trusted-proxies", "max-connections-per-ip", "max-upgrades-per-ip-per-second"} {
		if !strings.Contains(out.String(), "-"+f+" ") && !strings.Contains(out.String(), "-"+f+"\n") {
			t.Errorf("--help does not list --%s", f)
		}
	}
	if !strings.Contains(out.String(), "HERALD_") {
		t.Error("--help does not mention the environment variables")
	}
}

func TestEnvironmentAndFlags(t *testing.T) {
	t.Setenv("HERALD_ADDR", "127.0.0.1:7001")
	t.Setenv("HERALD_CLIENT_EVENTS", "true")
	t.Setenv("HERALD_ACTIVITY_TIMEOUT", "30s")
	t.Setenv("HERALD_ADMIN_ADDR", "127.0.0.1:1")
	o, err := parseFlags([]string{"--admin-addr", "127.0.0.1:9999"}, os.Stderr)
	if err != nil {
		t.Fatal(err)
	}
	if o.addr != "127.0.0.1:7001" || !o.clientEvents || o.activityTimeout != 30*time.Second {
		t.Fatalf("environment not applied: %+v", o)
	}
	if o.adminAddr != "127.0.0.1:9999" {
		t.Fatalf("command line must win over the environment: %s", o.adminAddr)
	}
	t.Setenv("HERALD_MAX_CONNECTIONS", "lots")
	if _, err := parseFlags(nil, os.Stderr); err == nil || !strings.Contains(err.Error(), "HERALD_MAX_CONNECTIONS") {
		t.Fatalf("bad env value: %v", err)
	}
}

func TestDrainAndProxyFlags(t *testing.T) {
	o, err := parseFlags(nil, os.Stderr)
	if err != nil {
		t.Fatal(err)
	}
	if o.drainWindow != 10*time.Second || o.shutdownTimeout != 15*time.Second || o.proxyProtocol ||
		len(o.trustedProxies) != 0 || o.maxConnsPerIP != 0 || o.maxUpgradesPerIP != 0 {
		t.Fatalf("defaults: %+v", o)
	}

	t.Setenv("HERALD_PROXY_PROTOCOL", "true")
	t.Setenv("HERALD_TRUSTED_PROXIES", "10.0.0.0/8, 192.168.1.7,fd00::/8,::1,172.16.5.4/12")
	t.Setenv("HERALD_MAX_CONNECTIONS_PER_IP", "50")
	t.Setenv("HERALD_MAX_UPGRADES_PER_IP_PER_SECOND", "5")
	t.Setenv("HERALD_DRAIN_WINDOW", "20s")
	t.Setenv("HERALD_SHUTDOWN_TIMEOUT", "30s")
	o, err = parseFlags(nil, os.Stderr)
	if err != nil {
		t.Fatal(err)
	}
	if got := o.trustedProxies.String(); got != "10.0.0.0/8,192.168.1.7/32,fd00::/8,::1/128,172.16.0.0/12" {
		t.Errorf("trusted proxies %s", got)
	}
	if !o.proxyProtocol || o.maxConnsPerIP != 50 || o.maxUpgradesPerIP != 5 || o.drainWindow != 20*time.Second || o.shutdownTimeout != 30*time.Second {
		t.Errorf("environment not applied: %+v", o)
	}
	o, err = parseFlags([]string{"--trusted-proxies", "127.0.0.1", "--drain-window", "5s"}, os.Stderr)
	if err != nil {
		t.Fatal(err)
	}
	if got := o.trustedProxies.String(); got != "127.0.0.1/32" || o.drainWindow != 5*time.Second {
		t.Errorf("the command line must replace the environment's list: %s %v", got, o.drainWindow)
	}

	for _, tc := range []struct {
		env  [2]string
		args []string
		want string
	}{
		{args: []string{"--drain-window", "30s"}, want: "--drain-window 30s must be less than --shutdown-timeout 30s"},
		{args: []string{"--drain-window", "10s", "--shutdown-timeout", "5s"}, want: "must be less than --shutdown-timeout 5s"},
		{env: [2]string{"HERALD_SHUTDOWN_TIMEOUT", "20s"}, want: "--drain-window 20s must be less than --shutdown-timeout 20s"},
		{args: []string{"--drain-window", "-1s"}, want: "--drain-window -1s must be positive"},
		{args: []string{"--trusted-proxies", "10.0.0.0/33"}, want: `invalid value "10.0.0.0/33" for flag -trusted-proxies: "10.0.0.0/33" is not a CIDR prefix`},
		{args: []string{"--trusted-proxies", "10.0.0.1,lb.internal"}, want: `"lb.internal" is neither an IP address nor a CIDR prefix`},
		{args: []string{"--trusted-proxies", "fe80::1%eth0"}, want: "neither an IP address"},
		{env: [2]string{"HERALD_TRUSTED_PROXIES", "10.0.0.0/8,nope/8"}, want: `HERALD_TRUSTED_PROXIES: "nope/8" is not a CIDR prefix`},
		{args: []string{"--proxy-protocol=false", "--trusted-proxies", "10.0.0.1"}, want: "--trusted-proxies is for --proxy-protocol"},
		{args: []string{"--max-connections-per-ip", "-1"}, want: "--max-connections-per-ip -1 is negative"},
		{args: []string{"--max-upgrades-per-ip-per-second", "-2"}, want: "--max-upgrades-per-ip-per-second -2 is negative"},
	} {
		if tc.env[0] != "" {
			t.Setenv(tc.env[0], tc.env[1])
		}
		var out bytes.Buffer
		_, err := parseFlags(tc.args, &out)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%v %v: %v, want an error with %q", tc.env, tc.args, err, tc.want)
		}
		if tc.env[0] != "" {
			t.Setenv(tc.env[0], map[string]string{"HERALD_SHUTDOWN_TIMEOUT": "30s", "HERALD_TRUSTED_PROXIES": "10.0.0.1"}[tc.env[0]])
		}
	}
	// Without --drain-window, a short --shutdown-timeout brings the window down with it
	// (two thirds), so that setting only the timeout keeps working.
	t.Setenv("HERALD_DRAIN_WINDOW", "")
	os.Unsetenv("HERALD_DRAIN_WINDOW")
	if o, err := parseFlags([]string{"--shutdown-timeout", "3s"}, os.Stderr); err != nil || o.drainWindow != 2*time.Second {
		t.Errorf("--shutdown-timeout 3s alone: window %v, %v; want 2s", o.drainWindow, err)
	}
	if o, err := parseFlags([]string{"--shutdown-timeout", "60s"}, os.Stderr); err != nil || o.drainWindow != 10*time.Second {
		t.Errorf("--shutdown-timeout 60s alone: window %v, %v; want the 10s default", o.drainWindow, err)
	}
	// And run refuses them at start.
	var out, errOut bytes.Buffer
	if err := run([]string{"--drain-window", "40s"}, &out, &errOut); err == nil || !strings.Contains(err.Error(), "--drain-window") {
		t.Fatalf("run: %v", err)
	}
}

func TestRedisFlags(t *testing.T) {
	o, err := parseFlags(nil, os.Stderr)
	if err != nil {
		t.Fatal(err)
	}
	if rc, err := o.redisClient(); rc != nil || err != nil {
		t.Fatalf("no Redis flag: %v %v, want the in-memory engines", rc, err)
	}
	if o.nodeLease != 15*time.Second || o.redisPrefix != "herald" {
		t.Fatalf("defaults: lease %v prefix %q", o.nodeLease, o.redisPrefix)
	}
	t.Setenv("HERALD_REDIS", "redis://user:pw@127.0.0.1:1/2")
	o, err = parseFlags(nil, os.Stderr)
	if err != nil {
		t.Fatal(err)
	}
	rc, err := o.redisClient()
	if err != nil || rc == nil {
		t.Fatalf("HERALD_REDIS: %v", err)
	}
	rc.Close()
	if got := o.clusterMode(); strings.Contains(got, "pw") || !strings.Contains(got, "user:***@127.0.0.1:1") {
		t.Fatalf("start-up line shows %q: the password must be hidden", got)
	}
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--redis-cluster", "127.0.0.1:1"}, "exclusive"},
		{[]string{"--redis", "http://x"}, "--redis"},
		{[]string{"--redis", "redis://127.0.0.1:1", "--node-lease", "100ms"}, "--node-lease"},
		{[]string{"--redis", "", "--redis-cluster", " , "}, "no address"},
	} {
		o, err := parseFlags(tc.args, os.Stderr)
		if err != nil {
			t.Fatal(err)
		}
		if rc, err := o.redisClient(); err == nil || !strings.Contains(err.Error(), tc.want) {
			if rc != nil {
				rc.Close()
			}
			t.Errorf("%v: got %v, want an error about %s", tc.args, err, tc.want)
		}
	}
	o, _ = parseFlags([]string{"--redis", "", "--redis-cluster", "127.0.0.1:1, 127.0.0.1:2"}, os.Stderr)
	rc, err = o.redisClient()
	if err != nil || rc == nil {
		t.Fatalf("--redis-cluster: %v", err)
	}
	rc.Close()
}

func TestApps(t *testing.T) {
	// No app: a demo app with a fresh secret.
	apps, demo, err := (&options{}).apps()
	if err != nil || !demo || len(apps) != 1 || len(apps[0].Secret) != 32 {
		t.Fatalf("demo: %+v %v %v", apps, demo, err)
	}
	// Partial flags are an error.
	if _, _, err := (&options{appID: "1"}).apps(); err == nil {
		t.Fatal("want an error for --app-id alone")
	}
	// Config file plus flags.
	dir := t.TempDir()
	cfg := filepath.Join(dir, "apps.json")
	if err := os.WriteFile(cfg, []byte(`{"apps":[{"id":"2","key":"k2","secret":"s2","max_connections":5}]}`), 0o600); err != nil {
		t.Fatal(err)
	}
	apps, demo, err = (&options{configFile: cfg, appID: "1", appKey: "k1", appSecret: "s1", clientEvents: true}).apps()
	if err != nil || demo || len(apps) != 2 || apps[0].MaxConnections != 5 || !apps[1].ClientEvents {
		t.Fatalf("config: %+v %v %v", apps, demo, err)
	}
	// Unknown fields are refused, so a typo in a limit does not pass silently.
	if err := os.WriteFile(cfg, []byte(`{"apps":[{"id":"2","key":"k2","secret":"s2","max_conections":5}]}`), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, _, err := (&options{configFile: cfg}).apps(); err == nil || !strings.Contains(err.Error(), "max_conections") {
		t.Fatalf("typo: %v", err)
	}
	if _, _, err := (&options{configFile: filepath.Join(dir, "missing.json")}).apps(); err == nil {
		t.Fatal("missing file accepted")
	}
}

func TestRunRejectsBadConfig(t *testing.T) {
	var out, errOut bytes.Buffer
	if err := run([]string{"--log-format", "xml"}, &out, &errOut); err == nil {
		t.Fatal("bad log format accepted")
	}
	if err := run([]string{"stray"}, &out, &errOut); err == nil {
		t.Fatal("stray argument accepted")
	}
	// Webhooks are checked at start, with a message naming the problem.
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--app-id", "1", "--app-key", "k", "--app-secret", "s", "--webhook-url", "ftp://x/hook", "--addr", "127.0.0.1:0", "--admin-addr", "127.0.0.1:0"}, "webhooks[0]"},
		{[]string{"--webhook-url", "http://127.0.0.1:1/hook"}, "--webhook-url"},
	} {
		err := run(tc.args, &out, &errOut)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("run %v: %v, want an error about %s", tc.args, err, tc.want)
		}
	}
	dir := t.TempDir()
	cfg := filepath.Join(dir, "apps.json")
	for _, doc := range []string{
		`{"apps":[{"id":"1","key":"k","secret":"s","webhooks":[{"url":"http://127.0.0.1:1/h","event_typs":["member_added"]}]}]}`,
		`{"apps":[{"id":"1","key":"k","secret":"s","webhooks":[{"url":"http://127.0.0.1:1/h","event_types":["member_joined"]}]}]}`,
		`{"apps":[{"id":"1","key":"k","secret":"s","user_authentication_timeout":"soon"}]}`,
	} {
		if err := os.WriteFile(cfg, []byte(doc), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := run([]string{"--config", cfg, "--addr", "127.0.0.1:0", "--admin-addr", "127.0.0.1:0"}, &out, &errOut); err == nil {
			t.Errorf("config %s accepted", doc)
		}
	}
}
