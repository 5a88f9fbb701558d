// Command benchclient is a client worker process of `make bench`: one loadgen.Pool
// driven by the orchestrator (bench/cmd/benchrun) over stdin and stdout with the
// line protocol of package worker. It exits when its stdin closes.
package main

import (
	"context"
	"flag"
	"fmt"
	"net/netip"
	"os"
	"os/signal"
	"runtime/pprof"
	"strings"
	"syscall"

	"github.com/herald-rt/herald/bench/worker"
)

func main() {
	if err := run(os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "benchclient:", err)
		os.Exit(1)
	}
}

func run(args []string) error {
	var cfg worker.Config
	var sources string
	fs := flag.NewFlagSet("benchclient", flag.ContinueOnError)
	fs.StringVar(&cfg.Addr, "addr", "127.0.0.1:6001", "server ip:port; a comma-separated list spreads the connections round-robin over several servers (connection i to server i mod n)")
	fs.StringVar(&cfg.Key, "key", "", "app key")
	fs.StringVar(&cfg.Secret, "secret", "", "app secret (private and presence channels)")
	fs.StringVar(&cfg.Channel, "channel", "", "channel every connection subscribes to (none if empty)")
	fs.StringVar(&sources, "src", "", "comma-separated source IPv4 addresses to bind")
	fs.IntVar(&cfg.Loops, "loops", 0, "epoll loops (0: one per CPU)")
	fs.IntVar(&cfg.MaxHandshakes, "handshakes", 512, "connections in their handshake at most")
	cpuprofile := fs.String("cpuprofile", "", "write a CPU profile of the whole run to this file")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if strings.Contains(cfg.Addr, ",") {
		for _, a := range strings.Split(cfg.Addr, ",") {
			if a = strings.TrimSpace(a); a != "" {
				cfg.Addrs = append(cfg.Addrs, a)
			}
		}
	}
	for _, s := range strings.Split(sources, ",") {
		if s == "" {
			continue
		}
		a, err := netip.ParseAddr(strings.TrimSpace(s))
		if err != nil {
			return fmt.Errorf("--src: %w", err)
		}
		cfg.Sources = append(cfg.Sources, a)
	}
	if *cpuprofile != "" {
		f, err := os.Create(*cpuprofile)
		if err != nil {
			return err
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			return err
		}
		defer pprof.StopCPUProfile()
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	return worker.Serve(ctx, cfg, os.Stdin, os.Stdout)
}
