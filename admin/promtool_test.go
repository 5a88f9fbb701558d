package admin

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

const prometheusFile = "../deploy/prometheus/prometheus.yml"

// TestPromtool has Prometheus's own checker read the scrape configuration and parse
// every PromQL expression of the Grafana dashboard (as recording rules, with the
// dashboard's variables filled in), which the metric-name check cannot: a stray
// bracket passes it. promtool comes with Debian's prometheus package.
func TestPromtool(t *testing.T) {
	promtool, err := exec.LookPath("promtool")
	if err != nil {
		t.Fatal("promtool is not on PATH: run `make test` (it installs Debian's prometheus package, which has promtool) or apt-get install prometheus")
	}
	if out, err := exec.Command(promtool, "check", "config", "--syntax-only", prometheusFile).CombinedOutput(); err != nil {
		t.Errorf("promtool check config %s: %v\n%s", prometheusFile, err, out)
	}
	raw, err := os.ReadFile(dashboardFile)
	if err != nil {
		t.Fatal(err)
	}
	var exprs []string
	for _, e := range dashboardExprs(t, raw) {
		if strings.Contains(e, "label_values(") || e == "prometheus" {
			continue // Grafana's variable queries, not PromQL
		}
		exprs = append(exprs, e)
	}
	if err := checkRules(t, promtool, exprs); err != nil {
		t.Errorf("the dashboard's PromQL: %v", err)
	}
	// The check can fail.
	if err := checkRules(t, promtool, []string{`sum(rate(herald_messages_sent_total{instance=~"$node"}[$__rate_interval])`}); err == nil {
		t.Error("promtool accepted an expression with an unclosed parenthesis")
	}
}

func checkRules(t *testing.T, promtool string, exprs []string) error {
	fill := strings.NewReplacer("$__rate_interval", "1m", "$node", ".*", "$app", ".*")
	type rule struct {
		Record string `json:"record"`
		Expr   string `json:"expr"`
	}
	var rules []rule
	for i, e := range exprs {
		rules = append(rules, rule{fmt.Sprintf("dashboard:expr_%d", i), fill.Replace(e)})
	}
	doc, _ := json.Marshal(map[string]any{"groups": []any{map[string]any{"name": "dashboard", "rules": rules}}})
	path := filepath.Join(t.TempDir(), "rules.yml") // YAML is a superset of JSON
	if err := os.WriteFile(path, doc, 0o600); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command(promtool, "check", "rules", path).CombinedOutput(); err != nil {
		return fmt.Errorf("%v\n%s", err, out)
	}
	return nil
}
