package config

import (
	"sort"
	"strings"
)

// Unknown is a variable of the environment that looks like one of
// mlserve's or Immich's (MACHINE_LEARNING_*, MLSERVE_*) but that mlserve
// does not read.
type Unknown struct {
	Name string
	// Suggestion is the known variable nearest to Name, when one is near
	// enough to be a likely typo ("" otherwise).
	Suggestion string
	// Ignored marks a variable of Immich's service that mlserve accepts
	// and ignores (ARM NN, RKNN, ROCm settings; removed legacy names).
	Ignored bool
}

// Message is a one-line explanation for the log.
func (u Unknown) Message() string {
	switch {
	case u.Ignored:
		return u.Name + " is an Immich setting that mlserve ignores"
	case u.Suggestion != "" && strings.EqualFold(u.Suggestion, u.Name):
		return "unknown variable " + u.Name + "; did you mean " + u.Suggestion + "? (names are case-sensitive)"
	case u.Suggestion != "":
		return "unknown variable " + u.Name + "; did you mean " + u.Suggestion + "?"
	}
	return "unknown variable " + u.Name + " (mlserve does not read it)"
}

// Unknown lists the variables of the environment given to [LoadEnviron]
// (or [FromEnv]) that look like mlserve's or Immich's but are not read,
// sorted by name.
func (c *Config) Unknown() []Unknown {
	if c == nil {
		return nil
	}
	return c.unknown
}

// immichIgnored are Immich's machine-learning variables that have no
// meaning here: other execution backends, test switches and names Immich
// itself removed.
var immichIgnored = map[string]bool{
	"MACHINE_LEARNING_ANN":                              true,
	"MACHINE_LEARNING_ANN_FP16_TURBO":                   true,
	"MACHINE_LEARNING_ANN_TUNING_LEVEL":                 true,
	"MACHINE_LEARNING_RKNN":                             true,
	"MACHINE_LEARNING_RKNN_THREADS":                     true,
	"MACHINE_LEARNING_ROCM_PRECISION":                   true,
	"MACHINE_LEARNING_TEST_FULL":                        true,
	"MACHINE_LEARNING_PRELOAD__CLIP":                    true,
	"MACHINE_LEARNING_PRELOAD__FACIAL_RECOGNITION":      true,
	"MACHINE_LEARNING_MAX_BATCH_SIZE__TEXT_RECOGNITION": true,
}

// devVariables are read by mlserve's scripts and tests, not by the
// binary.
var devVariables = map[string]bool{
	"MLSERVE_TESTDATA": true, "MLSERVE_DEPS_DIR": true, "MLSERVE_SERVICES_DIR": true,
	"MLSERVE_PGLITE_DATA": true, "MLSERVE_EXPECT_GPU": true, "MLSERVE_SOAK_CYCLES": true,
	"MLSERVE_OVERLOAD_SECONDS": true, "MLSERVE_OVERLOAD_HAMMER": true,
}

// findUnknown picks the unknown names of environ among those with
// mlserve's or Immich's prefixes (in any case: Immich reads its names
// without regard to case, mlserve does not).
func findUnknown(names []string, table []Entry) []Unknown {
	known := make(map[string]bool, len(table))
	for _, e := range table {
		known[e.Name] = true
	}
	var out []Unknown
	for _, name := range names {
		up := strings.ToUpper(name)
		if !strings.HasPrefix(up, "MACHINE_LEARNING_") && !strings.HasPrefix(up, "MLSERVE_") {
			continue
		}
		if known[name] || devVariables[up] || strings.Contains(up, "_TEST") && !strings.HasPrefix(up, "MACHINE_LEARNING_") {
			continue
		}
		if immichIgnored[up] {
			if name == up {
				out = append(out, Unknown{Name: name, Ignored: true})
				continue
			}
		}
		out = append(out, Unknown{Name: name, Suggestion: suggest(name, table)})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

// suggest is the known name nearest to name (compared in upper case),
// when the distance is small for the name's length.
func suggest(name string, table []Entry) string {
	up := strings.ToUpper(name)
	best, bestD := "", 1<<30
	for _, e := range table {
		if d := editDistance(up, e.Name); d < bestD {
			best, bestD = e.Name, d
		}
	}
	// A few edits, more for long names (a dropped word is a typo too).
	if bestD <= max(2, len(up)/6) {
		return best
	}
	return ""
}

// editDistance is the Levenshtein distance between a and b, in bytes.
func editDistance(a, b string) int {
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}
