package api

import (
	"math"
	"strconv"
)

// Immich's service serialises with orjson, which prints floats with the
// shortest digits that round-trip (zmij): float32 values (numpy float32
// arrays and scalars) as float32, Python floats as float64. Values whose
// decimal exponent is in a fixed window are written in positional notation
// with at least one fractional digit ("690.0", "0.000123"); others in
// scientific notation with an explicit exponent sign ("1e-45", "3.4e+38").
// Non-finite values become null. The window is [-6, 12] for float32 and
// [-5, 15] for float64.

func appendFloat32(b []byte, f float32) []byte {
	return appendShortest(b, float64(f), 32, -6, 12)
}

func appendFloat64(b []byte, f float64) []byte {
	return appendShortest(b, f, 64, -5, 15)
}

func appendShortest(b []byte, f float64, bits, lo, hi int) []byte {
	if math.IsNaN(f) || math.IsInf(f, 0) {
		return append(b, "null"...)
	}
	var buf [32]byte
	s := strconv.AppendFloat(buf[:0], f, 'e', -1, bits) // -d.ddde±XX
	neg := false
	if s[0] == '-' {
		neg = true
		s = s[1:]
	}
	e := 0
	for i := len(s) - 1; i >= 0; i-- {
		if s[i] == 'e' {
			n, _ := strconv.Atoi(string(s[i+1:]))
			e = n
			s = s[:i]
			break
		}
	}
	var digits [24]byte
	nd := 0
	for _, c := range s {
		if c != '.' {
			digits[nd] = c
			nd++
		}
	}
	d := digits[:nd]
	if neg {
		b = append(b, '-')
	}
	if e < lo || e > hi {
		b = append(b, d[0])
		if len(d) > 1 {
			b = append(b, '.')
			b = append(b, d[1:]...)
		}
		b = append(b, 'e')
		if e >= 0 {
			b = append(b, '+')
		}
		return strconv.AppendInt(b, int64(e), 10)
	}
	if e < 0 {
		b = append(b, '0', '.')
		for i := 0; i < -e-1; i++ {
			b = append(b, '0')
		}
		return append(b, d...)
	}
	if len(d) <= e+1 {
		b = append(b, d...)
		for i := len(d); i < e+1; i++ {
			b = append(b, '0')
		}
		return append(b, '.', '0')
	}
	b = append(b, d[:e+1]...)
	b = append(b, '.')
	return append(b, d[e+1:]...)
}

// appendEmbedding writes a vector as Immich does: a JSON string holding
// the JSON array of float32 values, with no spaces.
func appendEmbedding(b []byte, v []float32) []byte {
	b = append(b, '"', '[')
	for i, x := range v {
		if i > 0 {
			b = append(b, ',')
		}
		b = appendFloat32(b, x)
	}
	return append(b, ']', '"')
}

// appendString writes a JSON string. orjson escapes only what JSON
// requires and writes other characters as UTF-8.
func appendString(b []byte, s string) []byte {
	b = append(b, '"')
	for i := 0; i < len(s); {
		c := s[i]
		switch {
		case c == '"':
			b = append(b, '\\', '"')
		case c == '\\':
			b = append(b, '\\', '\\')
		case c == '\n':
			b = append(b, '\\', 'n')
		case c == '\r':
			b = append(b, '\\', 'r')
		case c == '\t':
			b = append(b, '\\', 't')
		case c == '\b':
			b = append(b, '\\', 'b')
		case c == '\f':
			b = append(b, '\\', 'f')
		case c < 0x20:
			b = append(b, '\\', 'u', '0', '0', hexDigit(c>>4), hexDigit(c&0xf))
		default:
			b = append(b, c)
		}
		i++
	}
	return append(b, '"')
}

func hexDigit(c byte) byte { return "0123456789abcdef"[c] }
