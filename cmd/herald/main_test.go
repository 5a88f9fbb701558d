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
		"redis", "redis-cluster", "redis-prefix", "node-lease"} {
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
