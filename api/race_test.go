//go:build race

package api_test

// raceEnabled: the race detector slows every goroutine several times and
// adds shadow memory to RSS, so tests check timings and RSS loosely.
const raceEnabled = true
