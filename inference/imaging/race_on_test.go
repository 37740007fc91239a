//go:build race

package imaging

// raceEnabled: the race detector keeps shadow memory for what a test
// touches, which inflates resident-set measurements.
const raceEnabled = true
