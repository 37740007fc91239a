// Command mlserve is a drop-in replacement for Immich's machine-learning
// service, with a command line for indexing and searching photo libraries
// and for managing models.
//
// The commands are built with cobra (root.go): flags may come anywhere
// among the arguments, unknown flags are refused, -h on any command prints
// its help and does nothing else, and `mlserve completion` writes shell
// completion scripts. Exit codes: 0 success, 1 failure, 2 usage (a bad
// flag or argument, an invalid setting).
//
// Settings come from the environment (the config package, the README);
// this package only wires the packages that do the work: it holds no use
// case of its own.
package main

import (
	"os"
)

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}
