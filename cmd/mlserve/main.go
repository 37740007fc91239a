// Command mlserve is a drop-in replacement for Immich's machine-learning
// service. `mlserve serve` answers Immich's HTTP API; `mlserve version`
// prints the build's version. Settings come from the environment (see the
// config package and the README).
package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	"github.com/mlserve/mlserve/config"
)

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

const usage = `usage: mlserve <command>

commands:
  serve     serve Immich's machine-learning API on IMMICH_HOST:IMMICH_PORT
  bench     load-test an Immich-compatible ML server (mlserve bench -h)
  version   print the version
`

func run(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return 2
	}
	switch args[0] {
	case "version", "--version", "-v":
		fmt.Fprintln(stdout, "mlserve", config.Version)
		return 0
	case "serve":
	case "bench":
		ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
		defer stop()
		if err := runBench(ctx, args[1:], stdout, stderr); err != nil {
			fmt.Fprintln(stderr, "mlserve bench:", err)
			return 1
		}
		return 0
	case "help", "-h", "--help":
		fmt.Fprint(stdout, usage)
		return 0
	default:
		fmt.Fprintf(stderr, "mlserve: unknown command %q\n\n%s", args[0], usage)
		return 2
	}
	cfg, err := config.FromEnv()
	if err != nil {
		fmt.Fprintln(stderr, "mlserve:", err)
		return 2
	}
	logger := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: cfg.LogLevel}))
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := serve(ctx, cfg, logger); err != nil {
		logger.Error("mlserve stopped", "err", err)
		return 1
	}
	return 0
}
