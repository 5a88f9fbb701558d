package archtest

import (
	"encoding/json"
	"errors"
	"io"
	"os/exec"
	"strings"
	"testing"
)

const module = "github.com/herald-rt/herald"

// forbidden maps a package (and the packages below it) to what it must not import:
// packages of this module neither directly nor through others; other modules (Redis)
// not directly (the hub reaches Redis through the engines' packages, which hold the
// memory engines too, so it depends on go-redis without knowing its types).
var forbidden = map[string][]string{
	"transport": {"hub", "pubsub", "presence", "github.com/redis/go-redis"},
	"hub":       {"github.com/redis/go-redis", "admin", "cmd", "loadgen", "bench"},
	"pubsub":    {"hub", "transport", "presence"},
	"presence":  {"hub", "transport", "pubsub"},
	"loadgen":   {"hub", "transport", "pubsub", "presence"},
	"admin":     {"github.com/redis/go-redis"},
	"webhook":   {"hub", "transport", "pubsub", "presence", "github.com/redis/go-redis"},
}

type pkg struct {
	ImportPath                         string
	Doc                                string
	Name                               string
	Deps                               []string
	Imports                            []string
	TestGoFiles, XTestGoFiles, GoFiles []string
}

func list(t *testing.T) []pkg {
	t.Helper()
	cmd := exec.Command("go", "list", "-json", module+"/...")
	cmd.Dir = "../.."
	out, err := cmd.Output()
	if err != nil {
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			t.Fatalf("go list: %v\n%s", err, ee.Stderr)
		}
		t.Fatalf("go list: %v", err)
	}
	var pkgs []pkg
	dec := json.NewDecoder(strings.NewReader(string(out)))
	for {
		var p pkg
		if err := dec.Decode(&p); errors.Is(err, io.EOF) {
			break
		} else if err != nil {
			t.Fatal(err)
		}
		pkgs = append(pkgs, p)
	}
	if len(pkgs) < 10 {
		t.Fatalf("go list found only %d packages", len(pkgs))
	}
	return pkgs
}

// rel is the import path below the module, or the path itself for another module.
func rel(path string) string {
	if r, ok := strings.CutPrefix(path, module+"/"); ok {
		return r
	}
	return path
}

func under(path, root string) bool { return path == root || strings.HasPrefix(path, root+"/") }

func TestForbiddenImports(t *testing.T) {
	checked := 0
	for _, p := range list(t) {
		for root, bad := range forbidden {
			if !under(rel(p.ImportPath), root) || strings.HasSuffix(p.ImportPath, "test") {
				continue
			}
			checked++
			for _, b := range bad {
				deps, how := p.Deps, "through its imports"
				if strings.HasPrefix(b, "github.com/") {
					deps, how = p.Imports, "directly"
				}
				for _, d := range deps {
					if under(rel(d), b) {
						t.Errorf("%s imports %s (%s): %s must not know about %s", rel(p.ImportPath), rel(d), how, root, b)
					}
				}
			}
		}
	}
	if checked < len(forbidden) {
		t.Fatalf("checked %d packages, fewer than the %d rules: a rule names no package", checked, len(forbidden))
	}
}

func TestEveryPackageHasADoc(t *testing.T) {
	for _, p := range list(t) {
		if len(p.GoFiles) == 0 {
			continue // test-only folders
		}
		if strings.TrimSpace(p.Doc) == "" {
			t.Errorf("%s has no package doc comment (doc.go: what it does, entry points, concurrency, invariants)", rel(p.ImportPath))
		}
	}
}
