package proc

import (
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

func TestQuoteArgs(t *testing.T) {
	got := QuoteArgs([]string{"--conns", "1000", "--threshold", "p99<250ms", "it's", "a b"})
	want := ` --conns 1000 --threshold p99<250ms 'it'\''s' 'a b'`
	if got != want {
		t.Fatalf("got %q, want %q", got, want)
	}
}

func TestEnvOr(t *testing.T) {
	t.Setenv("PROC_TEST_X", "")
	if EnvOr("PROC_TEST_X", "def") != "def" {
		t.Fatal("empty variable must give the default")
	}
	t.Setenv("PROC_TEST_X", "v")
	if EnvOr("PROC_TEST_X", "def") != "v" {
		t.Fatal("set variable ignored")
	}
}

func TestLoadAvg(t *testing.T) {
	if l := LoadAvg(); l < 0 {
		t.Fatalf("LoadAvg = %v on Linux", l)
	}
}

// The readings of this process and of a child it started are real and found.
func TestReadAndChildren(t *testing.T) {
	if rss, err := ReadRSS(os.Getpid()); err != nil || rss < 1<<20 {
		t.Errorf("ReadRSS(self) = %d, %v", rss, err)
	}
	if _, err := ReadCPU(os.Getpid()); err != nil {
		t.Errorf("ReadCPU(self): %v", err)
	}
	sleep, err := exec.LookPath("sleep")
	if err != nil {
		t.Skip("no sleep(1)")
	}
	cmd := exec.Command(sleep, "30")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = cmd.Process.Kill(); _ = cmd.Wait() }()
	exe, _ := filepath.EvalSymlinks(sleep)
	got := Children(os.Getpid(), exe)
	if len(got) != 1 || got[0] != cmd.Process.Pid {
		t.Errorf("Children = %v, want [%d]", got, cmd.Process.Pid)
	}
	if got := Children(os.Getpid(), "/nonexistent"); len(got) != 0 {
		t.Errorf("Children with another executable = %v", got)
	}
	if _, err := ReadRSS(-1); err == nil {
		t.Error("ReadRSS(-1) succeeded")
	}
}
