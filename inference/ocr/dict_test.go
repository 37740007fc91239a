package ocr

import (
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"unicode/utf8"
)

func TestSplitLinesLikePython(t *testing.T) {
	// Expected values from Python 3.11's str.splitlines.
	for _, tc := range []struct {
		in   string
		want []string
	}{
		{"a\nb", []string{"a", "b"}},
		{"a\r\nb\r", []string{"a", "b"}},
		{"a\vb\fc", []string{"a", "b", "c"}},
		{"\u2028x\u2029", []string{"", "x"}},
		{"a\n\nb\n", []string{"a", "", "b"}},
		{"", nil},
		{"\n", []string{""}},
		{"x\u0085y", []string{"x", "y"}},
		{"\r\r\n", []string{"", ""}},
		{"\x1cq\x1dr\x1es", []string{"", "q", "r", "s"}},
		{"tab\tsp ace", []string{"tab\tsp ace"}},
	} {
		if got := splitLines(tc.in); !slices.Equal(got, tc.want) {
			t.Errorf("splitLines(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}

func TestParseDictFile(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want []string
	}{
		{"a\nb\r\n c \n\r\nlast", []string{"a", "b", " c ", "", "last"}},
		{"a\n", []string{"a"}},
		{"", nil},
		{" \n", []string{" "}},
		{"\ra\r\n", []string{"a"}},
		{"\u2028\n", []string{"\u2028"}}, // only \n splits a file
	} {
		got, err := parseDictFile([]byte(tc.in))
		if err != nil || !slices.Equal(got, tc.want) {
			t.Errorf("parseDictFile(%q) = %q, %v; want %q", tc.in, got, err, tc.want)
		}
	}
	if _, err := parseDictFile([]byte("a\n\xff\n")); !errors.Is(err, ErrDictionary) {
		t.Errorf("invalid UTF-8: err %v, want ErrDictionary", err)
	}
}

func TestFindDictFile(t *testing.T) {
	dir := t.TempDir()
	if _, err := findDictFile(dir); !errors.Is(err, ErrDictionary) {
		t.Fatalf("empty folder: %v, want ErrDictionary", err)
	}
	for _, n := range []string{"ppocr_keys_v2.txt", "ppocr_keys_v1.txt"} {
		if err := os.WriteFile(filepath.Join(dir, n), []byte("a\n"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if p, err := findDictFile(dir); err != nil || filepath.Base(p) != "ppocr_keys_v1.txt" {
		t.Fatalf("got %s %v, want ppocr_keys_v1.txt", p, err)
	}
	if err := os.WriteFile(filepath.Join(dir, "dict.txt"), []byte("a\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if p, err := findDictFile(dir); err != nil || filepath.Base(p) != "dict.txt" {
		t.Fatalf("got %s %v, want dict.txt first", p, err)
	}
}

func isPyLineBreak(r rune) bool {
	switch r {
	case '\n', '\r', '\v', '\f', 0x1c, 0x1d, 0x1e, 0x85, 0x2028, 0x2029:
		return true
	}
	return false
}

func FuzzSplitLines(f *testing.F) {
	for _, s := range []string{"", "a\nb", "a\r\nb\r", "\u2028\u2029\u0085", "\r\r\n\n", "\xff\n\xc2", "中\n文\n"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		lines := splitLines(s)
		kept := 0
		for _, l := range lines {
			if strings.IndexFunc(l, isPyLineBreak) >= 0 && utf8.ValidString(l) {
				t.Fatalf("line %q holds a break", l)
			}
			kept += len(l)
		}
		// Only break characters are removed.
		n := 0
		for _, r := range s {
			if !isPyLineBreak(r) {
				n += utf8.RuneLen(r)
			}
		}
		if utf8.ValidString(s) && kept != n {
			t.Fatalf("%q: kept %d bytes, want %d", s, kept, n)
		}
	})
}

func FuzzParseDictFile(f *testing.F) {
	for _, s := range []string{"", "a\n", "a\r\nb", "\r\n\r\n", " \n  \n", "\xff", "中\n文"} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		lines, err := parseDictFile(b)
		if !utf8.Valid(b) {
			if err == nil {
				t.Fatal("invalid UTF-8 accepted")
			}
			return
		}
		if err != nil {
			t.Fatal(err)
		}
		want := strings.Count(string(b), "\n")
		if len(b) > 0 && b[len(b)-1] != '\n' {
			want++
		}
		if len(lines) != want {
			t.Fatalf("%d lines, want %d", len(lines), want)
		}
		for _, l := range lines {
			if strings.ContainsAny(l, "\n") || strings.HasPrefix(l, "\r") || strings.HasSuffix(l, "\r") {
				t.Fatalf("line %q not trimmed", l)
			}
		}
	})
}
