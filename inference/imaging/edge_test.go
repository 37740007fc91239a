package imaging

import (
	"errors"
	"os"
	"path/filepath"
	"testing"
)

// TestDecodeEdgeCasesMatchPIL decodes the inputs of
// scripts/golden_decode_edges.py (GIF canvases, palettes and LZW streams,
// damaged or cut PNG and JPEG files...) and compares with PIL: the same
// refusal or the same pixels.
func TestDecodeEdgeCasesMatchPIL(t *testing.T) {
	var golden struct {
		Pillow string
		Cases  []struct {
			Input, Error string
			W, H         int
			RGBSha256    string `json:"rgb_sha256"`
		}
	}
	dir := filepath.Join("testdata", "edge")
	readJSON(t, filepath.Join(dir, "edge.json"), &golden)
	if len(golden.Cases) < 30 {
		t.Fatalf("only %d edge cases", len(golden.Cases))
	}
	for _, c := range golden.Cases {
		t.Run(c.Input, func(t *testing.T) {
			data, err := os.ReadFile(filepath.Join(dir, c.Input))
			if err != nil {
				t.Fatal(err)
			}
			im, err := Decode(data)
			if c.Error != "" {
				if err == nil {
					t.Fatalf("decoded %d×%d; PIL %s raises %s", im.W, im.H, golden.Pillow, c.Error)
				}
				if !errors.Is(err, ErrDecode) && !errors.Is(err, ErrEmpty) {
					t.Fatalf("error %v is not ErrDecode", err)
				}
				return
			}
			if err != nil {
				t.Fatalf("%v; PIL %s decodes it", err, golden.Pillow)
			}
			if im.W != c.W || im.H != c.H {
				t.Fatalf("size %d×%d, PIL %d×%d", im.W, im.H, c.W, c.H)
			}
			if sum256(im.Pix) != c.RGBSha256 {
				t.Fatalf("pixels differ from PIL %s", golden.Pillow)
			}
		})
	}
}

// TestDecodeTruncatedLikePIL cuts every golden input at many lengths and
// checks that the decoder accepts exactly the prefixes PIL 9.4 accepts
// (with LOAD_TRUNCATED_IMAGES off, as in Immich), with PIL's pixels, and
// refuses the others with ErrDecode: a JPEG without its end, a PNG whose
// rows are incomplete, a GIF whose frame is not filled. Lengths near both
// ends are all tried, the middle is sampled.
func TestDecodeTruncatedLikePIL(t *testing.T) {
	var golden struct {
		Pillow string
		Files  map[string]struct {
			Len            int
			OK             [][2]int
			FirstRGBSha256 string `json:"first_rgb_sha256"`
		}
	}
	readJSON(t, filepath.Join("testdata", "truncated.json"), &golden)
	if len(golden.Files) < 60 {
		t.Fatalf("only %d files", len(golden.Files))
	}
	for name, f := range golden.Files {
		t.Run(name, func(t *testing.T) {
			data, err := os.ReadFile(filepath.Join("testdata", name))
			if err != nil {
				t.Fatal(err)
			}
			if len(data) != f.Len {
				t.Fatalf("%d bytes, golden says %d", len(data), f.Len)
			}
			pilOK := func(n int) bool {
				for _, r := range f.OK {
					if n >= r[0] && n < r[1] {
						return true
					}
				}
				return false
			}
			first := -1
			if len(f.OK) > 0 {
				first = f.OK[0][0]
			}
			for n := 0; n <= len(data); n++ {
				if n > 48 && n < len(data)-48 && n%29 != 0 && n != first && n != first-1 {
					continue
				}
				im, err := Decode(data[:n])
				switch {
				case pilOK(n) && err != nil:
					t.Errorf("[:%d] of %d: %v; PIL %s decodes it", n, len(data), err, golden.Pillow)
				case !pilOK(n) && err == nil:
					t.Errorf("[:%d] of %d: decoded %d×%d; PIL %s refuses it", n, len(data), im.W, im.H, golden.Pillow)
				case err != nil && !errors.Is(err, ErrDecode) && !errors.Is(err, ErrEmpty):
					t.Errorf("[:%d]: error %v is not ErrDecode", n, err)
				case n == first && sum256(im.Pix) != f.FirstRGBSha256:
					t.Errorf("[:%d]: pixels differ from PIL's", n)
				}
			}
		})
	}
}
