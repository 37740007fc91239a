package pool

import (
	"bytes"
	"encoding/json"
	"fmt"
)

// Request options are validated before any work, and the kind of each
// value is checked: Immich sends numbers for scores and resolutions and a
// string for the language, and never null (an option it has no value for
// is left out). An absent option takes the default; null, a value of the
// wrong kind, or one out of range is an ErrBadEntries (422).

// optRaw returns the option's JSON, whether it is present, and an error
// for null.
func optRaw(opts map[string]json.RawMessage, name, kind string) (json.RawMessage, bool, error) {
	raw, ok := opts[name]
	if !ok {
		return nil, false, nil
	}
	raw = bytes.TrimSpace(raw)
	if len(raw) == 0 || string(raw) == "null" {
		return nil, false, fmt.Errorf("%w: option %s must be %s, got null", ErrBadEntries, name, kind)
	}
	return raw, true, nil
}

func optFloat(opts map[string]json.RawMessage, name string, def, min, max float64) (float64, error) {
	raw, ok, err := optRaw(opts, name, "a number")
	if !ok {
		return def, err
	}
	var v float64
	if err := json.Unmarshal(raw, &v); err != nil {
		return 0, fmt.Errorf("%w: option %s must be a number, got %s", ErrBadEntries, name, raw)
	}
	if v < min || v > max {
		return 0, fmt.Errorf("%w: option %s must be between %g and %g, got %g", ErrBadEntries, name, min, max, v)
	}
	return v, nil
}

func optInt(opts map[string]json.RawMessage, name string, def, min, max int) (int, error) {
	f, err := optFloat(opts, name, float64(def), float64(min), float64(max))
	if err != nil {
		return 0, err
	}
	if f != float64(int(f)) {
		return 0, fmt.Errorf("%w: option %s must be an integer, got %g", ErrBadEntries, name, f)
	}
	return int(f), nil
}

func optString(opts map[string]json.RawMessage, name, def string, allowed ...string) (string, error) {
	raw, ok, err := optRaw(opts, name, "a string")
	if !ok {
		return def, err
	}
	var v string
	if err := json.Unmarshal(raw, &v); err != nil {
		return "", fmt.Errorf("%w: option %s must be a string, got %s", ErrBadEntries, name, raw)
	}
	if len(allowed) > 0 {
		for _, a := range allowed {
			if v == a {
				return v, nil
			}
		}
		return "", fmt.Errorf("%w: option %s must be one of %v, got %q", ErrBadEntries, name, allowed, v)
	}
	return v, nil
}
