package search

import (
	"errors"
	"fmt"
	"path"
	"sort"
	"strings"
)

// ErrPath: a path cannot be mapped to the local library.
var ErrPath = errors.New("path mapping")

// PathMap turns the paths that Immich stores (as its server container sees
// them, e.g. /usr/src/app/upload/thumbs/…) into paths on this host (where
// the library is mounted, e.g. /mnt/immich/thumbs/…). The longest matching
// prefix wins; a prefix matches whole path components only. An empty map
// leaves paths as they are.
type PathMap struct {
	rules []pathRule // longest From first
}

type pathRule struct{ from, to string }

// ParsePathMap parses rules of the form FROM=TO (split at the first '=').
// Both sides must be absolute; they are cleaned.
func ParsePathMap(rules []string) (PathMap, error) {
	var m PathMap
	seen := map[string]bool{}
	for _, r := range rules {
		from, to, ok := strings.Cut(r, "=")
		if !ok {
			return PathMap{}, fmt.Errorf("%w: rule %q: want FROM=TO", ErrPath, r)
		}
		if !path.IsAbs(from) || !path.IsAbs(to) {
			return PathMap{}, fmt.Errorf("%w: rule %q: both sides must be absolute paths", ErrPath, r)
		}
		from, to = path.Clean(from), path.Clean(to)
		if seen[from] {
			return PathMap{}, fmt.Errorf("%w: prefix %q mapped twice", ErrPath, from)
		}
		seen[from] = true
		m.rules = append(m.rules, pathRule{from, to})
	}
	sort.SliceStable(m.rules, func(i, j int) bool { return len(m.rules[i].from) > len(m.rules[j].from) })
	return m, nil
}

// Map returns the local path of p. A relative p, one that matches no rule
// while rules exist, or one whose ".." would climb out of its mapped prefix
// is an ErrPath error: the database must never make us read outside the
// library.
func (m PathMap) Map(p string) (string, error) {
	if p == "" || strings.IndexByte(p, 0) >= 0 {
		return "", fmt.Errorf("%w: invalid path %q", ErrPath, p)
	}
	if !path.IsAbs(p) {
		return "", fmt.Errorf("%w: %q is not absolute", ErrPath, p)
	}
	clean := path.Clean(p)
	if len(m.rules) == 0 {
		return clean, nil
	}
	for _, r := range m.rules {
		rest, ok := under(clean, r.from)
		if !ok {
			continue
		}
		// Cleaning already resolved "..": a rest that still starts with
		// it would have escaped, but under() only matches inside from.
		return path.Join(r.to, rest), nil
	}
	return "", fmt.Errorf("%w: %q is under none of the mapped prefixes", ErrPath, p)
}

// under reports whether p is root or inside it, and returns the remainder.
func under(p, root string) (string, bool) {
	if root == "/" {
		return strings.TrimPrefix(p, "/"), true
	}
	if p == root {
		return "", true
	}
	if strings.HasPrefix(p, root) && p[len(root)] == '/' {
		return p[len(root)+1:], true
	}
	return "", false
}

// String lists the rules, for logs.
func (m PathMap) String() string {
	parts := make([]string, len(m.rules))
	for i, r := range m.rules {
		parts[i] = r.from + "=" + r.to
	}
	return strings.Join(parts, ",")
}
