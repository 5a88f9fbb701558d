package deploy

import (
	"io/fs"
	"path/filepath"
	"strings"
	"testing"
)

// checked says which test checks each file of deploy/ (besides this package's Go
// files and the folders other people maintain).
var checked = map[string]string{
	"haproxy/haproxy.cfg":    "TestHAProxyShape, TestHAProxyCheck; e2e/haproxy_test.go runs it",
	"nginx/herald.conf":      "TestNginx",
	"k8s/":                   "TestKubernetes, TestKubernetesLabels (every file of the folder)",
	"systemd/herald.service": "TestSystemd",
	"sysctl.conf":            "TestSysctl",
	"apps.example.json":      "TestSystemd starts herald with it",
}

// notOurs are maintained beside these files and checked elsewhere.
var notOurs = []string{"grafana", "prometheus"}

// TestEveryFileIsChecked fails when a file is added to deploy/ without a test.
func TestEveryFileIsChecked(t *testing.T) {
	err := filepath.WalkDir(".", func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			for _, n := range notOurs {
				if path == n {
					return filepath.SkipDir
				}
			}
			return nil
		}
		if strings.HasSuffix(path, ".go") {
			return nil
		}
		if _, ok := checked[path]; ok {
			return nil
		}
		if _, ok := checked[filepath.Dir(path)+"/"]; ok {
			return nil
		}
		t.Errorf("deploy/%s is checked by no test: add one (and list it in deploy_test.go)", path)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}
