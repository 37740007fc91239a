package search

import (
	"errors"
	"path"
	"strings"
	"testing"
)

func TestPathMap(t *testing.T) {
	m, err := ParsePathMap([]string{
		"/usr/src/app/upload=/mnt/immich",
		"/usr/src/app/upload/thumbs=/fast/thumbs/",
		"/external=/mnt/nas/photos",
	})
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		in, want string
		err      bool
	}{
		{"/usr/src/app/upload/library/a.jpg", "/mnt/immich/library/a.jpg", false},
		{"/usr/src/app/upload/thumbs/ab/cd-preview.jpeg", "/fast/thumbs/ab/cd-preview.jpeg", false}, // longest prefix
		{"/usr/src/app/upload", "/mnt/immich", false},
		{"/usr/src/app/uploads/x.jpg", "", true}, // not a whole component
		{"/external/2020/x.heic", "/mnt/nas/photos/2020/x.heic", false},
		{"/usr/src/app/upload/../../../etc/passwd", "", true}, // climbs out
		{"/usr/src/app/upload/a/../b.jpg", "/mnt/immich/b.jpg", false},
		{"relative/x.jpg", "", true},
		{"", "", true},
		{"/usr/src/app/upload/a\x00b", "", true},
		{"/elsewhere/x.jpg", "", true},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			got, err := m.Map(tt.in)
			if tt.err {
				if !errors.Is(err, ErrPath) {
					t.Fatalf("Map(%q) = %q, %v; want ErrPath", tt.in, got, err)
				}
				return
			}
			if err != nil || got != tt.want {
				t.Fatalf("Map(%q) = %q, %v; want %q", tt.in, got, err, tt.want)
			}
		})
	}
	// No rules: absolute paths pass through, cleaned.
	if got, err := (PathMap{}).Map("/a/./b//c.jpg"); err != nil || got != "/a/b/c.jpg" {
		t.Errorf("empty map: %q, %v", got, err)
	}
	if got := m.String(); !strings.Contains(got, "/external=/mnt/nas/photos") {
		t.Errorf("String() = %q", got)
	}
}

func TestParsePathMapErrors(t *testing.T) {
	for _, rules := range [][]string{
		{"no-equals"},
		{"relative=/x"},
		{"/x=relative"},
		{"/x=/a", "/x/=/b"}, // same prefix twice
	} {
		t.Run(strings.Join(rules, ","), func(t *testing.T) {
			if _, err := ParsePathMap(rules); !errors.Is(err, ErrPath) {
				t.Fatalf("ParsePathMap(%q): %v, want ErrPath", rules, err)
			}
		})
	}
}

// FuzzPathMap checks the one property that matters for safety: whatever
// path the database holds, a mapped path lies inside one of the targets.
func FuzzPathMap(f *testing.F) {
	for _, s := range []string{
		"/usr/src/app/upload/a.jpg", "/usr/src/app/upload/../x", "/", "//", "/usr/src/app/upload/thumbs/../../../x",
		"relative", "", "/usr/src/app/uploadx", "/x/\x00",
	} {
		f.Add("/usr/src/app/upload=/mnt/immich", s)
	}
	f.Add("/=/root", "/a/../../b")
	f.Fuzz(func(t *testing.T, rule, p string) {
		m, err := ParsePathMap([]string{rule})
		if err != nil {
			return
		}
		got, err := m.Map(p)
		if err != nil {
			if !errors.Is(err, ErrPath) {
				t.Fatalf("Map(%q): error %v is not ErrPath", p, err)
			}
			return
		}
		to := path.Clean(rule[strings.IndexByte(rule, '=')+1:])
		if got != to && !strings.HasPrefix(got, strings.TrimSuffix(to, "/")+"/") {
			t.Fatalf("rule %q maps %q to %q, outside %q", rule, p, got, to)
		}
	})
}
