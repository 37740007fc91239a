// Command mlserve is a drop-in replacement for Immich's machine-learning
// service. `mlserve serve` answers Immich's HTTP API; `mlserve version`
// prints the build's version. Settings come from the environment (see the
// config package and the README).
package main

import (
	"context"
	"errors"
	"flag"
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
  index     embed a photo folder or an Immich library into pgvector (mlserve index -h)
  worker    process the Redis queue that mlserve index fills (mlserve worker -h)
  search    search indexed images by text or example image (mlserve search -h)
  version   print the version
`

// subcommands that need the configuration (index.go, worker.go, search.go).
var subcommands = map[string]func(context.Context, []string, io.Writer, *config.Config, *slog.Logger) error{
	"index": runIndex, "worker": runWorker, "search": runSearch,
}

func run(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return 2
	}
	switch args[0] {
	case "version", "--version", "-v":
		fmt.Fprintln(stdout, "mlserve", config.Version)
		return 0
	case "serve", "index", "worker", "search":
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
	// Every log line and printed error goes through the redactor: client
	// errors quote URLs with their passwords.
	redactor := cfg.Redactor()
	logger := slog.New(redactor.Handler(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: cfg.LogLevel})))
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if sub, ok := subcommands[args[0]]; ok {
		if err := sub(ctx, args[1:], stdout, cfg, logger); err != nil {
			if errors.Is(err, flag.ErrHelp) {
				return 0
			}
			fmt.Fprintf(stderr, "mlserve %s: %v\n", args[0], redactor.Error(err))
			return 1
		}
		return 0
	}
	if err := serve(ctx, cfg, logger); err != nil {
		logger.Error("mlserve stopped", "err", err)
		return 1
	}
	return 0
}
