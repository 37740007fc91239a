package models

import (
	"fmt"
	"strings"
	"unicode/utf8"
)

const (
	// MaxNameLen is the longest cleaned model name accepted. Immich's
	// longest is 52 bytes ("XLM-Roberta-Large-ViT-H-14__frozen_laion5b_s13b_b90k").
	MaxNameLen = 128
	// maxRawNameLen bounds the raw input, which may carry an
	// "organization/" prefix that cleaning drops.
	maxRawNameLen = 512
)

// CleanName applies Immich's clean_name and then validates the result.
//
// Immich (immich_ml/config.py) keeps the part after the last "/", maps ":"
// and "\" to "_" and deletes ".", so the legacy "ViT-B-32::openai" becomes
// "ViT-B-32__openai" and "immich-app/buffalo_l" becomes "buffalo_l".
//
// Validation is stricter than Immich, whose names reach the file system
// unchecked: the raw name must be valid UTF-8 without control bytes, at most
// 512 bytes, without a ".." path element; the cleaned name must be 1..128
// bytes of [A-Za-z0-9_+-]. A cleaned name is therefore always one path
// component that cannot leave the cache folder. Errors wrap ErrInvalidName.
func CleanName(raw string) (string, error) {
	if raw == "" {
		return "", fmt.Errorf("%w: empty", ErrInvalidName)
	}
	if len(raw) > maxRawNameLen {
		return "", fmt.Errorf("%w: %d bytes is too long", ErrInvalidName, len(raw))
	}
	if !utf8.ValidString(raw) {
		return "", fmt.Errorf("%w: not valid UTF-8", ErrInvalidName)
	}
	for _, r := range raw {
		if r < 0x20 || r == 0x7f || (r >= 0x80 && r < 0xa0) {
			return "", fmt.Errorf("%w: control character %U", ErrInvalidName, r)
		}
	}
	// A ".." element is never part of a real name; cleaning would hide it
	// ("a/../../b" → "b"), so refuse it outright rather than guess.
	for _, el := range strings.FieldsFunc(raw, func(r rune) bool { return r == '/' || r == '\\' }) {
		if el == ".." {
			return "", fmt.Errorf("%w: %q has a \"..\" element", ErrInvalidName, raw)
		}
	}

	name := raw
	if i := strings.LastIndexByte(name, '/'); i >= 0 {
		name = name[i+1:]
	}
	name = strings.Map(func(r rune) rune {
		switch r {
		case ':', '\\', '/':
			return '_'
		case '.':
			return -1
		}
		return r
	}, name)

	if name == "" {
		return "", fmt.Errorf("%w: %q is empty after cleaning", ErrInvalidName, raw)
	}
	if len(name) > MaxNameLen {
		return "", fmt.Errorf("%w: %d bytes is too long", ErrInvalidName, len(name))
	}
	for i := 0; i < len(name); i++ {
		if !nameByte(name[i]) {
			return "", fmt.Errorf("%w: %q has a character outside [A-Za-z0-9_+-]", ErrInvalidName, raw)
		}
	}
	return name, nil
}

// nameByte reports whether c may appear in a cleaned name.
func nameByte(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' ||
		c == '_' || c == '-' || c == '+'
}
