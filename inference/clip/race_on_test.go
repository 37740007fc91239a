//go:build race

package clip

// raceEnabled: the race detector keeps shadow memory for what a test
// touches, which inflates resident-set measurements.
const raceEnabled = true
