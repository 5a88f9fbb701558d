package redistest

import (
	"os"
	"strings"
	"testing"
)

func TestMain(m *testing.M) { os.Exit(Main(m).Run()) }

func TestServerLifecycle(t *testing.T) {
	s := Start(t)
	if _, err := s.Do("SET", "k", "v"); err != nil {
		t.Fatal(err)
	}
	if v, err := s.Do("GET", "k"); err != nil || v != "v" {
		t.Fatalf("GET k = %q, %v", v, err)
	}
	s.Kill()
	if _, err := s.Do("PING"); err == nil {
		t.Fatal("PING answered after Kill")
	}
	s.Restart(t)
	if v, err := s.Do("GET", "k"); err != nil || v != "" {
		t.Fatalf("after Restart, GET k = %q, %v; want an empty server", v, err)
	}
}

func TestCluster(t *testing.T) {
	c := SharedCluster(t)
	info, err := c.Servers[0].Do("CLUSTER", "INFO")
	if err != nil || !strings.Contains(info, "cluster_known_nodes:3") {
		t.Fatalf("CLUSTER INFO: %v\n%s", err, info)
	}
}
