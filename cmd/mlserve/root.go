package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"sync"
	"syscall"

	"github.com/spf13/cobra"

	"github.com/mlserve/mlserve/config"
	"github.com/mlserve/mlserve/internal/redact"
)

// Exit codes.
const (
	exitOK      = 0
	exitFailure = 1
	exitUsage   = 2
)

// usageError is a mistake in the command line: exit 2.
type usageError struct{ err error }

func (e usageError) Error() string { return e.err.Error() }
func (e usageError) Unwrap() error { return e.err }

func usagef(format string, args ...any) error { return usageError{fmt.Errorf(format, args...)} }

// app is one run of the command line: its output streams, the global
// flags, and the configuration and logger once a command asks for them.
type app struct {
	stdout, stderr io.Writer
	verbose        int
	// started is set when a command's own code starts: an error before
	// that (an unknown command or flag, bad arguments) is a usage error.
	started bool

	// logs is where log lines go: stderr, or above a progress bar.
	logs   *logSink
	cfg    *config.Config
	logger *slog.Logger
}

// run executes the command line and returns the exit code.
func run(args []string, stdout, stderr io.Writer) int {
	a := &app{stdout: stdout, stderr: stderr, logs: &logSink{w: stderr}}
	root := a.rootCommand()
	root.SetArgs(args)
	root.SetOut(stdout)
	root.SetErr(stderr)
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	cmd, err := root.ExecuteContextC(ctx)
	if err == nil {
		return exitOK
	}
	code := exitFailure
	var ue usageError
	if !a.started || errors.As(err, &ue) || errors.Is(err, config.ErrInvalid) {
		code = exitUsage
	}
	msg := a.redact(err).Error()
	if cmd == nil {
		cmd = root
	}
	fmt.Fprintf(stderr, "%s: %s\n", cmd.CommandPath(), msg)
	if code == exitUsage && !errors.Is(err, config.ErrInvalid) {
		fmt.Fprintf(stderr, "Run '%s --help' for usage.\n", cmd.CommandPath())
	}
	return code
}

// redact masks secrets in an error: the configured ones once the
// configuration is loaded, anything that looks like one before.
func (a *app) redact(err error) error {
	if a.cfg != nil {
		return a.cfg.Redactor().Error(err)
	}
	return redact.Error(err)
}

func (a *app) rootCommand() *cobra.Command {
	root := &cobra.Command{
		Use:   "mlserve",
		Short: "Immich's machine-learning service in Go, with indexing and search",
		Long: `mlserve serves Immich's machine-learning API (CLIP, faces, OCR) on ONNX Runtime,
indexes photo folders or an Immich library into PostgreSQL/pgvector, searches
them, and manages the model cache. Settings come from the environment
(MACHINE_LEARNING_*, IMMICH_*, HF_*, MLSERVE_*; see the README).`,
		SilenceErrors: true,
		SilenceUsage:  true,
		// Bare `mlserve`: the help, as a usage error.
		Args: cobra.ArbitraryArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			return a.groupRun(cmd, args)
		},
		PersistentPreRun: func(*cobra.Command, []string) { a.started = true },
	}
	root.PersistentFlags().CountVarP(&a.verbose, "verbose", "v", "more log lines (-v: info, -vv: debug); one-shot commands log only warnings without it")
	root.Flags().Bool("version", false, "print the version")
	root.Version = config.Version
	root.SetVersionTemplate("mlserve {{.Version}}\n")
	root.SetFlagErrorFunc(func(_ *cobra.Command, err error) error { return usageError{err} })
	root.AddCommand(
		a.serveCommand(),
		a.indexCommand(),
		a.workerCommand(),
		a.searchCommand(),
		a.peopleCommand(),
		a.modelsCommand(),
		a.psCommand(),
		a.benchCommand(),
		&cobra.Command{
			Use:   "version",
			Short: "Print the version",
			Args:  cobra.NoArgs,
			Run:   func(cmd *cobra.Command, _ []string) { fmt.Fprintln(cmd.OutOrStdout(), "mlserve", config.Version) },
		},
	)
	return root
}

// groupRun is the RunE of a command that only groups others: without a
// subcommand it prints its help and fails as a usage error; an unknown
// subcommand is a usage error too.
func (a *app) groupRun(cmd *cobra.Command, args []string) error {
	a.started = false // what follows is a usage error
	if len(args) > 0 {
		return usagef("unknown command %q for %q", args[0], cmd.CommandPath())
	}
	cmd.SetOut(a.stderr)
	_ = cmd.Help()
	return usagef("a command is required")
}

// noArgs refuses positional arguments (as a usage error).
func noArgs(cmd *cobra.Command, args []string) error {
	if len(args) > 0 {
		return usagef("unexpected arguments %q", args)
	}
	return nil
}

// setup loads the configuration and makes the logger. oneShot commands
// (index, search, models…) log only warnings unless IMMICH_LOG_LEVEL is
// set or -v is given; serve and worker log at IMMICH_LOG_LEVEL. Unknown
// variables are warned about here.
func (a *app) setup(oneShot bool) (*config.Config, *slog.Logger, error) {
	if a.cfg != nil {
		return a.cfg, a.logger, nil
	}
	cfg, err := config.FromEnv()
	if err != nil {
		return nil, nil, err
	}
	a.cfg = cfg
	level := cfg.LogLevel
	if oneShot && !cfg.LogLevelSet {
		level = slog.LevelWarn
	}
	switch {
	case a.verbose >= 2:
		level = slog.LevelDebug
	case a.verbose == 1:
		level = min(level, slog.LevelInfo)
	}
	a.logger = newLogger(a.logs, level, cfg.LogFormat, cfg.Redactor())
	for _, u := range cfg.Unknown() {
		if u.Ignored {
			a.logger.Info(u.Message())
		} else {
			a.logger.Warn(u.Message())
		}
	}
	return cfg, a.logger, nil
}

// errNoDatabase is the error of a command that needs MLSERVE_DATABASE_URL
// without it (a configuration error: exit 2).
var errNoDatabase = fmt.Errorf("%w: MLSERVE_DATABASE_URL is not set (`make db` starts a local PostgreSQL with pgvector and prints it)", config.ErrInvalid)

// newLogger writes text (logfmt) or JSON lines to w, every line through
// the redactor.
func newLogger(w io.Writer, level slog.Level, format string, r *redact.Redactor) *slog.Logger {
	opts := &slog.HandlerOptions{Level: level}
	var h slog.Handler
	if strings.EqualFold(format, "json") {
		h = slog.NewJSONHandler(w, opts)
	} else {
		h = slog.NewTextHandler(w, opts)
	}
	return slog.New(r.Handler(h))
}

// logSink is the writer of the log handler. A progress bar redirects it
// so that log lines print above the bar instead of through it.
type logSink struct {
	mu sync.Mutex
	w  io.Writer
}

func (s *logSink) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.w.Write(p)
}

// redirect sends the lines to w until the returned function is called.
func (s *logSink) redirect(w io.Writer) (restore func()) {
	s.mu.Lock()
	old := s.w
	s.w = w
	s.mu.Unlock()
	return func() {
		s.mu.Lock()
		s.w = old
		s.mu.Unlock()
	}
}
