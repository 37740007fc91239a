package imaging

import (
	"os"
	"path/filepath"
	"testing"
)

// formatCase is one entry of testdata/formats/formats.json, which
// scripts/golden_formats.py writes with PIL 9.4 and OpenCV 4.6 (the
// library and the flags of the decoding path these decoders replace; the
// former Go path gave exactly these OpenCV hashes).
type formatCase struct {
	Input        string
	W, H         int
	PILMode      string `json:"pil_mode"`
	PILSha256    string `json:"pil_sha256"`
	PILError     string `json:"pil_error"`
	OpenCVSha256 string `json:"opencv_sha256"`
	Follow       string // both, pil, opencv or error
	Reason       string
	WantSha256   string `json:"want_sha256"`
}

func formatCases(t testing.TB) []formatCase {
	var golden struct {
		Pillow, OpenCV string
		Cases          []formatCase
	}
	readJSON(t, filepath.Join("testdata", "formats", "formats.json"), &golden)
	if len(golden.Cases) < 60 {
		t.Fatalf("only %d format cases", len(golden.Cases))
	}
	return golden.Cases
}

// TestDecodeFormats decodes every PNG, WebP, BMP and TIFF layout of the
// corpus and compares with PIL and with the former OpenCV path: where the
// two agree (most cases) the pixels must equal both; where they disagree
// the case names which one is followed and why.
func TestDecodeFormats(t *testing.T) {
	counts := map[string]int{}
	for _, c := range formatCases(t) {
		t.Run(c.Input, func(t *testing.T) {
			data, err := os.ReadFile(filepath.Join("testdata", "formats", c.Input))
			if err != nil {
				t.Fatal(err)
			}
			im, err := Decode(data)
			if c.Follow == "error" {
				if err == nil {
					t.Fatalf("decoded %d×%d; the corpus expects an error (%s)", im.W, im.H, c.Reason)
				}
				counts["error"]++
				return
			}
			if err != nil {
				t.Fatalf("Decode: %v (PIL mode %s)", err, c.PILMode)
			}
			if im.W != c.W || im.H != c.H {
				t.Fatalf("size %d×%d, want %d×%d", im.W, im.H, c.W, c.H)
			}
			got := sum256(im.Pix)
			if got != c.WantSha256 {
				t.Fatalf("pixels differ from %s (PIL %s, OpenCV %s): %s", c.Follow,
					match(got, c.PILSha256), match(got, c.OpenCVSha256), c.Reason)
			}
			if c.Follow == "both" && (got != c.PILSha256 || got != c.OpenCVSha256) {
				t.Fatal("the corpus says PIL and OpenCV agree, but they do not")
			}
			counts[c.Follow]++
		})
	}
	t.Logf("same as PIL and OpenCV: %d; as PIL where OpenCV differs: %d; as OpenCV where PIL 9.4 errs: %d; refused: %d",
		counts["both"], counts["pil"], counts["opencv"], counts["error"])
}

func match(got, want string) string {
	switch {
	case want == "":
		return "failed"
	case got == want:
		return "equal"
	}
	return "differs"
}

// TestDecodeFormatsTruncated: every corpus file cut short decodes to a
// consistent image or fails with ErrDecode; none crashes.
func TestDecodeFormatsTruncated(t *testing.T) {
	for _, c := range formatCases(t) {
		data, err := os.ReadFile(filepath.Join("testdata", "formats", c.Input))
		if err != nil {
			t.Fatal(err)
		}
		for _, n := range []int{len(data) - 1, len(data) * 3 / 4, len(data) / 2, 60, 20} {
			if n <= 0 || n >= len(data) {
				continue
			}
			im, err := Decode(data[:n])
			if err == nil && (im.W <= 0 || len(im.Pix) != im.W*im.H*3) {
				t.Errorf("%s[:%d]: inconsistent image %d×%d", c.Input, n, im.W, im.H)
			}
		}
	}
}
