package proc

import "testing"

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
