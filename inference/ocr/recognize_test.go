package ocr

import (
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"math"
	"path/filepath"
	"testing"

	"github.com/mlserve/mlserve/inference/imaging"
)

func TestRecTensorGolden(t *testing.T) {
	var g struct {
		Tensors []struct {
			PNG        string
			MaxWHRatio float64
			Shape      []int64
			SHA256     string
		}
	}
	readJSON(t, "rec_golden.json", &g)
	for _, c := range g.Tensors {
		crop := readRGB(t, filepath.Join("testdata", "crops", c.PNG))
		in, err := recTensor([]*imaging.Image{crop}, c.MaxWHRatio)
		if err != nil {
			t.Fatal(err)
		}
		if len(in.Shape) != 4 || in.Shape[1] != c.Shape[0] || in.Shape[2] != c.Shape[1] || in.Shape[3] != c.Shape[2] {
			t.Fatalf("%s @%g: shape %v, want %v", c.PNG, c.MaxWHRatio, in.Shape, c.Shape)
		}
		h := sha256.New()
		var b [4]byte
		for _, v := range in.Float32 {
			binary.LittleEndian.PutUint32(b[:], math.Float32bits(v))
			h.Write(b[:])
		}
		if got := hex.EncodeToString(h.Sum(nil)); got != c.SHA256 {
			t.Errorf("%s @%g: tensor differs from RapidOCR's resize_norm_img", c.PNG, c.MaxWHRatio)
		}
	}
}

func TestCTCDecodeGolden(t *testing.T) {
	var g struct {
		Dictionary []string
		Decode     []struct {
			Probs [][]float32
			Text  string
			Score float64
		}
	}
	readJSON(t, "rec_golden.json", &g)
	chars := characters(g.Dictionary)
	for i, c := range g.Decode {
		steps, classes := len(c.Probs), len(c.Probs[0])
		flat := make([]float32, 0, steps*classes)
		for _, row := range c.Probs {
			flat = append(flat, row...)
		}
		text, score, err := ctcDecode(flat, steps, classes, chars)
		if err != nil {
			t.Fatal(err)
		}
		if text != c.Text || score != c.Score {
			t.Errorf("case %d: %q %v, want %q %v", i, text, score, c.Text, c.Score)
		}
	}
}

func TestCTCDecode(t *testing.T) {
	chars := characters([]string{"a", "b"}) // blank a b " "
	for _, tc := range []struct {
		name  string
		probs [][]float32
		text  string
		score float64
		err   bool
	}{
		{"empty", nil, "", 0, false},
		{"all blank", [][]float32{{1, 0, 0, 0}, {0.9, 0.1, 0, 0}}, "", 0, false},
		{"repeat collapsed", [][]float32{{0, 0.5, 0.5, 0}, {0, 0.7, 0.3, 0}, {0.9, 0.1, 0, 0}, {0, 0.25, 0, 0}}, "aa", 0.375, false},
		{"tie takes first", [][]float32{{0, 0.5, 0.5, 0}}, "a", 0.5, false},
		{"space last", [][]float32{{0, 0, 0, 1}}, " ", 1, false},
		{"rounding", [][]float32{{0, 0.123456, 0, 0}, {0, 0, 0.654321, 0}}, "ab", 0.38889, false},
		{"class beyond dictionary", [][]float32{{0, 0, 0, 0, 1}}, "", 0, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := 4
			if len(tc.probs) > 0 {
				c = len(tc.probs[0])
			}
			var flat []float32
			for _, r := range tc.probs {
				flat = append(flat, r...)
			}
			text, score, err := ctcDecode(flat, len(tc.probs), c, chars)
			if tc.err {
				if err == nil {
					t.Fatal("no error")
				}
				return
			}
			if err != nil || text != tc.text || score != tc.score {
				t.Errorf("got %q %v %v, want %q %v", text, score, err, tc.text, tc.score)
			}
		})
	}
}

func TestPairwiseSum(t *testing.T) {
	// numpy: np.sum([0.1]*200) == 20.0, where a plain loop gives
	// 20.000000000000014.
	a := make([]float64, 200)
	for i := range a {
		a[i] = 0.1
	}
	if got := pairwiseSum(a); got != 20.0 {
		t.Errorf("pairwise sum of 200×0.1 = %v, want numpy's 20.0", got)
	}
	if got := pairwiseSum(a[:3]); got != 0.30000000000000004 {
		t.Errorf("sum of 3×0.1 = %v", got)
	}
}
