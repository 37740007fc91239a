package main

import (
	"bytes"
	"io"
	"strings"
	"testing"

	"github.com/spf13/cobra"
)

// allCommands lists every command path of the command line.
func allCommands() [][]string {
	a := &app{stdout: io.Discard, stderr: io.Discard, logs: &logSink{w: io.Discard}}
	var out [][]string
	var walk func(c *cobra.Command, path []string)
	walk = func(c *cobra.Command, path []string) {
		out = append(out, path)
		for _, sub := range c.Commands() {
			if sub.Hidden || sub.Name() == "help" {
				continue
			}
			walk(sub, append(append([]string(nil), path...), sub.Name()))
		}
	}
	walk(a.rootCommand(), nil)
	return out
}

// Every command: -h prints its help on stdout and exits 0 (no command
// runs: the environment here would make most of them fail); an unknown
// flag exits 2 with the command's name and a pointer to its help.
func TestEveryCommandHelpAndBadFlag(t *testing.T) {
	t.Setenv("MLSERVE_DATABASE_URL", "postgres://nobody@127.0.0.1:1/none")
	t.Setenv("MACHINE_LEARNING_MODEL_TTL", "-1") // would fail any command that loaded the configuration
	cmds := allCommands()
	if len(cmds) < 15 {
		t.Fatalf("only %d commands: %v", len(cmds), cmds)
	}
	for _, path := range cmds {
		name := strings.Join(append([]string{"mlserve"}, path...), " ")
		var out, errb bytes.Buffer
		if code := run(append(append([]string(nil), path...), "-h"), &out, &errb); code != 0 || !strings.Contains(out.String(), "Usage:") || errb.Len() != 0 {
			t.Errorf("%s -h: exit %d\nstdout:\n%s\nstderr:\n%s", name, code, out.String(), errb.String())
		}
		out.Reset()
		errb.Reset()
		if code := run(append(append([]string(nil), path...), "--no-such-flag"), &out, &errb); code != 2 ||
			!strings.Contains(errb.String(), name+": unknown flag: --no-such-flag") || !strings.Contains(errb.String(), "--help") {
			t.Errorf("%s --no-such-flag: exit %d\n%s", name, code, errb.String())
		}
	}
}

// Flags go anywhere among the arguments; "--" ends them.
func TestFlagsAnywhere(t *testing.T) {
	var got searchOptions
	a := &app{stdout: io.Discard, stderr: io.Discard, logs: &logSink{w: io.Discard}}
	root := a.rootCommand()
	search, _, err := root.Find([]string{"search"})
	if err != nil {
		t.Fatal(err)
	}
	search.RunE = func(cmd *cobra.Command, args []string) error {
		got.limit, _ = cmd.Flags().GetInt("limit")
		got.text = strings.Join(args, " ")
		return nil
	}
	for _, tc := range []struct {
		args  []string
		limit int
		text  string
	}{
		{[]string{"search", "a dog", "--limit", "2"}, 2, "a dog"},
		{[]string{"search", "--limit=3", "a", "dog"}, 3, "a dog"},
		{[]string{"search", "a", "-n", "4", "dog"}, 4, "a dog"},
		{[]string{"search", "--", "--limit", "2"}, 20, "--limit 2"},
	} {
		root.SetArgs(tc.args)
		if err := root.Execute(); err != nil {
			t.Fatalf("%v: %v", tc.args, err)
		}
		if got.limit != tc.limit || got.text != tc.text {
			t.Errorf("%v: limit %d text %q, want %d %q", tc.args, got.limit, got.text, tc.limit, tc.text)
		}
		if err := search.Flags().Set("limit", "20"); err != nil {
			t.Fatal(err)
		}
	}
}

func TestProgressLines(t *testing.T) {
	var buf bytes.Buffer
	a := &app{stdout: io.Discard, stderr: &buf, logs: &logSink{w: &buf}}
	pr := a.newProgress("indexing", false, 0)
	pr.Progress(0, 0, 0) // nothing known: nothing printed
	if buf.Len() != 0 {
		t.Fatalf("printed %q before anything was known", buf.String())
	}
	pr.Progress(5, 20, 1)
	pr.Progress(20, 20, 2)
	pr.Close()
	lines := strings.Split(strings.TrimSpace(buf.String()), "\n")
	if len(lines) < 2 || !strings.HasPrefix(lines[0], "indexing 5/20 (25%)") || !strings.Contains(lines[0], "1 failed") ||
		!strings.HasPrefix(lines[len(lines)-1], "indexing 20/20 (100%)") || strings.ContainsAny(buf.String(), "\r\x1b") {
		t.Fatalf("progress lines:\n%s", buf.String())
	}
	if got := size(10 << 20); got != "10.0 MiB" {
		t.Fatalf("size = %q", got)
	}
}
