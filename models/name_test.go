package models

import (
	"errors"
	"strings"
	"testing"
)

func TestCleanName(t *testing.T) {
	tests := []struct {
		raw, want string
		err       error
	}{
		{"ViT-B-32__openai", "ViT-B-32__openai", nil},
		{"ViT-B-32::openai", "ViT-B-32__openai", nil}, // Immich's legacy form
		{"immich-app/ViT-B-32__openai", "ViT-B-32__openai", nil},
		{"org/sub/buffalo_l", "buffalo_l", nil},
		{`ViT-B-32\openai`, "ViT-B-32_openai", nil},
		{"ViT-B-16-plus-240__laion400m_e31", "ViT-B-16-plus-240__laion400m_e31", nil},
		{"XLM-Roberta-Large-Vit-B-16Plus", "XLM-Roberta-Large-Vit-B-16Plus", nil},
		{"nllb.clip", "nllbclip", nil}, // "." is deleted
		{"EN__PP-OCRv5_mobile", "EN__PP-OCRv5_mobile", nil},
		{"a+b", "a+b", nil},
		{"/etc/passwd", "passwd", nil}, // Immich keeps the last element; harmless
		{"../x", "", ErrInvalidName},
		{"a/../../b", "", ErrInvalidName},
		{`..\..\b`, "", ErrInvalidName},
		{"..", "", ErrInvalidName},
		{"...", "", ErrInvalidName}, // empty after deleting dots
		{".", "", ErrInvalidName},
		{"", "", ErrInvalidName},
		{"org/", "", ErrInvalidName},
		{"a\x00b", "", ErrInvalidName},
		{"a\nb", "", ErrInvalidName},
		{"a\x7fb", "", ErrInvalidName},
		{"a\u0085b", "", ErrInvalidName},
		{"\xff\xfe", "", ErrInvalidName},
		{"ViT\u2010B\u201032__openai", "", ErrInvalidName}, // unicode hyphens
		{"ViT-B-32__оpenai", "", ErrInvalidName},           // Cyrillic "о"
		{"ViT-B-32__openai\u200b", "", ErrInvalidName},     // zero-width space
		{"a b", "", ErrInvalidName},
		{"a%2Fb", "", ErrInvalidName},
		{"a*", "", ErrInvalidName},
		{"~root", "", ErrInvalidName},
		{strings.Repeat("a", 128), strings.Repeat("a", 128), nil},
		{strings.Repeat("a", 129), "", ErrInvalidName},
		{strings.Repeat("x/", 200) + "buffalo_l", "buffalo_l", nil},
		{strings.Repeat("a", 513), "", ErrInvalidName},
	}
	for _, tt := range tests {
		t.Run(tt.raw, func(t *testing.T) {
			got, err := CleanName(tt.raw)
			if tt.err != nil {
				if !errors.Is(err, tt.err) {
					t.Fatalf("CleanName(%q) = %q, %v; want error %v", tt.raw, got, err, tt.err)
				}
				return
			}
			if err != nil || got != tt.want {
				t.Fatalf("CleanName(%q) = %q, %v; want %q", tt.raw, got, err, tt.want)
			}
		})
	}
}

// FuzzCleanName: a cleaned name is valid or an error; never contains a
// separator, "..", NUL or a byte outside the allowed set; cleaning is
// idempotent.
func FuzzCleanName(f *testing.F) {
	for _, s := range []string{"ViT-B-32::openai", "immich-app/buffalo_l", "../x", "/etc/passwd",
		"a/../../b", "a\x00b", `C:\x\y`, "ViT\u2010B", "...", "PP-OCRv5_mobile"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, raw string) {
		name, err := CleanName(raw)
		if err != nil {
			if !errors.Is(err, ErrInvalidName) {
				t.Fatalf("CleanName(%q): error %v does not wrap ErrInvalidName", raw, err)
			}
			return
		}
		if name == "" || len(name) > MaxNameLen || strings.Contains(name, "..") ||
			strings.ContainsAny(name, "/\\:.\x00") {
			t.Fatalf("CleanName(%q) = %q: unsafe", raw, name)
		}
		for i := 0; i < len(name); i++ {
			if !nameByte(name[i]) {
				t.Fatalf("CleanName(%q) = %q: byte %q", raw, name, name[i])
			}
		}
		again, err := CleanName(name)
		if err != nil || again != name {
			t.Fatalf("CleanName(CleanName(%q)) = %q, %v; want %q", raw, again, err, name)
		}
	})
}
