package deploy

import (
	"debug/elf"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
)

// There is no Docker engine on the test machines: the image is not built here. These
// tests check the Dockerfile's shape, build the binary the way it does and check that
// the result is static, and start herald with the image's CMD.

const dockerfile = "../Dockerfile"

// instruction is one Dockerfile instruction, continuation lines joined.
type instruction struct {
	cmd  string // upper case: FROM, RUN, …
	args string
	line int
}

func parseDockerfile(t *testing.T) []instruction {
	t.Helper()
	var out []instruction
	var cur strings.Builder
	start := 0
	for i, line := range strings.Split(string(readFile(t, dockerfile)), "\n") {
		trimmed := strings.TrimSpace(line)
		if strings.HasPrefix(trimmed, "#") || (trimmed == "" && cur.Len() == 0) {
			continue
		}
		if cur.Len() == 0 {
			start = i + 1
		}
		if strings.HasSuffix(trimmed, "\\") {
			cur.WriteString(strings.TrimSuffix(trimmed, "\\") + " ")
			continue
		}
		cur.WriteString(trimmed)
		cmd, args, _ := strings.Cut(cur.String(), " ")
		out = append(out, instruction{cmd: strings.ToUpper(cmd), args: strings.TrimSpace(args), line: start})
		cur.Reset()
	}
	return out
}

// stage is one FROM … of a multi-stage build and its instructions.
type stage struct {
	image, name string
	ins         []instruction
}

func dockerStages(t *testing.T) []stage {
	t.Helper()
	var stages []stage
	for _, in := range parseDockerfile(t) {
		if in.cmd == "FROM" {
			f := strings.Fields(in.args)
			s := stage{image: f[0]}
			if len(f) == 3 && strings.EqualFold(f[1], "AS") {
				s.name = f[2]
			}
			stages = append(stages, s)
			continue
		}
		if len(stages) == 0 {
			if in.cmd != "ARG" {
				t.Fatalf("Dockerfile line %d: %s before FROM", in.line, in.cmd)
			}
			continue
		}
		stages[len(stages)-1].ins = append(stages[len(stages)-1].ins, in)
	}
	if len(stages) < 2 {
		t.Fatalf("Dockerfile: %d stages, want a build stage and a runtime stage", len(stages))
	}
	return stages
}

func (s stage) all(cmd string) []instruction {
	var out []instruction
	for _, in := range s.ins {
		if in.cmd == cmd {
			out = append(out, in)
		}
	}
	return out
}

// execForm parses a JSON-array (exec form) instruction argument.
func execForm(t *testing.T, in instruction) []string {
	t.Helper()
	var v []string
	if err := json.Unmarshal([]byte(in.args), &v); err != nil {
		t.Fatalf("Dockerfile line %d: %s %s is not exec form (a JSON array): the image has no shell to run it", in.line, in.cmd, in.args)
	}
	return v
}

var goVersionRe = regexp.MustCompile(`^golang:(\d+)\.(\d+)(?:\.(\d+))?`)

func TestDockerfile(t *testing.T) {
	stages := dockerStages(t)
	build, final := stages[0], stages[len(stages)-1]

	// The build stage: Go of go.mod's version or newer, a static binary of ./cmd/herald.
	m := goVersionRe.FindStringSubmatch(build.image)
	if m == nil {
		t.Fatalf("build stage FROM %s: want golang:<version>", build.image)
	}
	want := goModVersion(t)
	got := [3]int{}
	for i := range 3 {
		got[i], _ = strconv.Atoi(m[i+1])
	}
	if slices.Compare(got[:], want[:]) < 0 {
		t.Errorf("build stage FROM %s is older than go.mod's go %d.%d.%d", build.image, want[0], want[1], want[2])
	}
	var goBuild *instruction
	for _, in := range build.all("RUN") {
		if strings.Contains(in.args, "go build") {
			goBuild = &in
		}
	}
	if goBuild == nil {
		t.Fatal("build stage: no RUN … go build")
	}
	if !strings.Contains(goBuild.args, "CGO_ENABLED=0") || !strings.Contains(goBuild.args, "./cmd/herald") {
		t.Errorf("Dockerfile line %d: %q: want CGO_ENABLED=0 … go build … ./cmd/herald (a static binary)", goBuild.line, goBuild.args)
	}

	// The runtime stage: distroless static (or scratch), non-root, no shell needed.
	if !strings.HasPrefix(final.image, "gcr.io/distroless/static") && final.image != "scratch" {
		t.Errorf("runtime stage FROM %s: want gcr.io/distroless/static… or scratch", final.image)
	}
	if r := final.all("RUN"); len(r) > 0 {
		t.Errorf("Dockerfile line %d: RUN in the runtime stage: there is no shell there", r[0].line)
	}
	users := final.all("USER")
	if len(users) == 0 {
		t.Fatal("runtime stage: no USER (it would run as root)")
	}
	user, _, _ := strings.Cut(users[len(users)-1].args, ":")
	if user == "root" || user == "0" || user == "" {
		t.Errorf("runtime stage: USER %s is root", users[len(users)-1].args)
	}
	var binary string
	for _, in := range final.all("COPY") {
		if strings.HasPrefix(in.args, "--from="+build.name+" ") {
			f := strings.Fields(in.args)
			binary = f[len(f)-1]
		}
	}
	eps := final.all("ENTRYPOINT")
	cmds := final.all("CMD")
	if len(eps) != 1 || len(cmds) != 1 {
		t.Fatalf("runtime stage: want one ENTRYPOINT (the binary) and one CMD (its default flags)")
	}
	if ep := execForm(t, eps[0]); len(ep) != 1 || ep[0] != binary {
		t.Errorf("ENTRYPOINT %v, want [%q] (the binary copied from the build stage)", ep, binary)
	}
	a, err := parseHeraldArgs(execForm(t, cmds[0]), heraldFlags(t))
	if err != nil {
		t.Fatalf("CMD: %v", err)
	}
	var exposed []int
	for _, in := range final.all("EXPOSE") {
		for _, p := range strings.Fields(in.args) {
			n, _ := strconv.Atoi(strings.TrimSuffix(p, "/tcp"))
			exposed = append(exposed, n)
		}
	}
	for _, flag := range []string{"addr", "admin-addr"} {
		if !a.has(flag) {
			t.Errorf("CMD: no --%s", flag)
			continue
		}
		if p := portOf(t, flag, a.get(flag)); !slices.Contains(exposed, p) {
			t.Errorf("--%s %s: port %d is not EXPOSEd (%v)", flag, a.get(flag), p, exposed)
		}
	}
	if host, _, _ := strings.Cut(a.get("admin-addr"), ":"); host == "127.0.0.1" || host == "localhost" {
		t.Errorf("CMD --admin-addr %s: probes from outside the container cannot reach loopback", a.get("admin-addr"))
	}

	t.Run("static binary", func(t *testing.T) {
		bin := filepath.Join(t.TempDir(), "herald")
		cmd := exec.Command("go", "build", "-trimpath", "-ldflags=-s -w", "-o", bin, "../cmd/herald")
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux")
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("CGO_ENABLED=0 go build ./cmd/herald: %v\n%s", err, out)
		}
		f, err := elf.Open(bin)
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		for _, p := range f.Progs {
			if p.Type == elf.PT_INTERP || p.Type == elf.PT_DYNAMIC {
				t.Errorf("the CGO_ENABLED=0 binary is dynamically linked (%v): it would not run on distroless static", p.Type)
			}
		}
	})
	t.Run("CMD starts herald", func(t *testing.T) { startHeraldWith(t, a, "", false) })
}

// goModVersion is go.mod's go line.
func goModVersion(t *testing.T) [3]int {
	t.Helper()
	m := regexp.MustCompile(`(?m)^go (\d+)\.(\d+)(?:\.(\d+))?$`).FindStringSubmatch(string(readFile(t, "../go.mod")))
	if m == nil {
		t.Fatal("go.mod has no go line")
	}
	var v [3]int
	for i := range 3 {
		v[i], _ = strconv.Atoi(m[i+1])
	}
	return v
}

// TestDockerignore: the build context keeps every source folder.
func TestDockerignore(t *testing.T) {
	var patterns []string
	for _, line := range strings.Split(string(readFile(t, "../.dockerignore")), "\n") {
		if line = strings.TrimSpace(line); line != "" && !strings.HasPrefix(line, "#") {
			patterns = append(patterns, line)
		}
	}
	out, err := exec.Command("go", "list", "-f", "{{.Dir}}", "github.com/herald-rt/herald/...").Output()
	if err != nil {
		t.Fatal(err)
	}
	root, err := filepath.Abs("..")
	if err != nil {
		t.Fatal(err)
	}
	for _, dir := range strings.Fields(string(out)) {
		rel, _ := filepath.Rel(root, dir)
		for _, p := range patterns {
			// A pattern excludes a folder if it matches the folder or one above it.
			for d := rel; d != "."; d = filepath.Dir(d) {
				if ok, _ := filepath.Match(p, d); ok {
					t.Errorf(".dockerignore: %q leaves the package %s out of the build context", p, rel)
				}
			}
		}
	}
	for _, f := range []string{"go.mod", "go.sum"} {
		for _, p := range patterns {
			if ok, _ := filepath.Match(p, f); ok {
				t.Errorf(".dockerignore: %q leaves %s out", p, f)
			}
		}
	}
}
