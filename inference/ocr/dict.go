package ocr

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"unicode/utf8"
)

// The character dictionary of a recognition model. RapidOCR reads it from
// the model's metadata ("character", split with Python's str.splitlines)
// and otherwise from a text file (one entry per line, \r and \n trimmed
// at both ends); CTC class 0 is the blank and a space is appended last.

// metadataKey is the ONNX metadata entry that holds the dictionary.
const metadataKey = "character"

// ErrDictionary: the recognition model has no usable character dictionary.
var ErrDictionary = errors.New("no character dictionary")

// splitLines is Python's str.splitlines: it breaks at \n, \r, \r\n, \v,
// \f, \x1c, \x1d, \x1e, \x85, U+2028 and U+2029, and a trailing break
// does not make an empty last line.
func splitLines(s string) []string {
	var out []string
	start := 0
	for i := 0; i < len(s); {
		r, n := utf8.DecodeRuneInString(s[i:])
		switch r {
		case '\n', '\r', '\v', '\f', 0x1c, 0x1d, 0x1e, 0x85, 0x2028, 0x2029:
			out = append(out, s[start:i])
			if r == '\r' && i+1 < len(s) && s[i+1] == '\n' {
				n++
			}
			start = i + n
		}
		i += n
	}
	if start < len(s) {
		out = append(out, s[start:])
	}
	return out
}

// parseDictFile reads a dictionary file as RapidOCR's read_character_file:
// lines split after \n, each trimmed of \r and \n at both ends.
func parseDictFile(b []byte) ([]string, error) {
	if !utf8.Valid(b) {
		return nil, fmt.Errorf("%w: dictionary is not UTF-8", ErrDictionary)
	}
	s := string(b)
	var out []string
	for len(s) > 0 {
		line := s
		if i := strings.IndexByte(s, '\n'); i >= 0 {
			line, s = s[:i+1], s[i+1:]
		} else {
			s = ""
		}
		out = append(out, strings.Trim(line, "\r\n"))
	}
	return out, nil
}

// characters returns the CTC class table: "blank", the dictionary, " ".
func characters(dict []string) []string {
	out := make([]string, 0, len(dict)+2)
	out = append(out, "blank")
	out = append(out, dict...)
	return append(out, " ")
}

// findDictFile looks for a dictionary next to the model: dict.txt, or else
// the first ppocr_keys*.txt by name.
func findDictFile(dir string) (string, error) {
	p := filepath.Join(dir, "dict.txt")
	if _, err := os.Stat(p); err == nil {
		return p, nil
	}
	m, err := filepath.Glob(filepath.Join(dir, "ppocr_keys*.txt"))
	if err != nil {
		return "", err
	}
	if len(m) == 0 {
		return "", fmt.Errorf("%w: no %q in the model's metadata and no dict.txt or ppocr_keys*.txt in %s", ErrDictionary, metadataKey, dir)
	}
	slices.Sort(m)
	return m[0], nil
}
