//go:build race

package main

// raceEnabled: the test builds mlserve with -race too, so that it reuses
// the packages `go test -race ./...` has just compiled.
const raceEnabled = true
