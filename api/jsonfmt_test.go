package api

import (
	"math"
	"strconv"
	"testing"
)

func TestFloatFormatMatchesOrjson(t *testing.T) {
	f32 := []struct {
		in   float32
		want string
	}{
		{690, "690.0"},
		{-89, "-89.0"},
		{-0.013126737, "-0.013126737"},
		{-0.43665668, "-0.43665668"},
		{0, "0.0"},
		{float32(math.Copysign(0, -1)), "-0.0"},
		{43210.1, "43210.1"},
		{10000, "10000.0"},
		{1.342178e+08, "134217800.0"},
		{1.3421781e+08, "134217810.0"},
		{6.62607e-34, "6.62607e-34"},
		{math.SmallestNonzeroFloat32, "1e-45"},
		{1.5e-6, "0.0000015"},
		{1.5e-7, "1.5e-7"},
		{3.4e38, "3.4e+38"},
		{1e13, "1e+13"},
		{float32(math.NaN()), "null"},
		{float32(math.Inf(1)), "null"},
	}
	for _, c := range f32 {
		if got := string(appendFloat32(nil, c.in)); got != c.want {
			t.Errorf("float32 %v: got %s, want %s", c.in, got, c.want)
		}
	}
	f64 := []struct {
		in   float64
		want string
	}{
		// Immich's fixture prints this score as 0.035756170749664307; that is
		// the same double, and Python's repr (and orjson) print it shorter.
		{float64(float32(0.03575617)), "0.03575617074966431"},
		{0.99, "0.99"},
		{1, "1.0"},
		{6.62607015e-34, "6.62607015e-34"},
		{5.444310685350916e+14, "544431068535091.6"},
		{3.439070283483335e+35, "3.439070283483335e+35"},
		{1e-5, "0.00001"},
		{1e-6, "1e-6"},
		{1e16, "1e+16"},
	}
	for _, c := range f64 {
		if got := string(appendFloat64(nil, c.in)); got != c.want {
			t.Errorf("float64 %v: got %s, want %s", c.in, got, c.want)
		}
	}
}

// FuzzFloatRoundTrip: every finite float32 written parses back to itself.
func FuzzFloatRoundTrip(f *testing.F) {
	for _, seed := range []uint32{0, 1, 0x3f800000, 0x7f7fffff, 0x00800000, 0xbc570000} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, bits uint32) {
		x := math.Float32frombits(bits)
		s := string(appendFloat32(nil, x))
		if math.IsNaN(float64(x)) || math.IsInf(float64(x), 0) {
			if s != "null" {
				t.Fatalf("%v → %s", x, s)
			}
			return
		}
		back, err := strconv.ParseFloat(s, 32)
		if err != nil || float32(back) != x {
			t.Fatalf("%v (%#x) → %s → %v, %v", x, bits, s, back, err)
		}
	})
}
