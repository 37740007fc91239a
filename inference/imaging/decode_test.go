package imaging

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"image"
	"image/png"
	"os"
	"path/filepath"
	"testing"

	"github.com/mlserve/mlserve/internal/testenv"
)

// readRGBPNG reads an 8-bit PNG with the standard library (not with the
// code under test) into an Image.
func readRGBPNG(t testing.TB, path string) *Image {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	m, err := png.Decode(f)
	if err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	b := m.Bounds()
	im := New(b.Dx(), b.Dy())
	for y := 0; y < im.H; y++ {
		for x := 0; x < im.W; x++ {
			r, g, bl, _ := m.At(b.Min.X+x, b.Min.Y+y).RGBA()
			i := (y*im.W + x) * 3
			im.Pix[i], im.Pix[i+1], im.Pix[i+2] = byte(r>>8), byte(g>>8), byte(bl>>8)
		}
	}
	return im
}

// maxDiff is the largest per-element difference of two same-size images.
func maxDiff(a, b *Image) (maxd, n int) {
	for i := range a.Pix {
		d := int(a.Pix[i]) - int(b.Pix[i])
		if d < 0 {
			d = -d
		}
		if d > 0 {
			n++
		}
		maxd = max(maxd, d)
	}
	return maxd, n
}

func sum256(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

func readJSON(t testing.TB, path string, v any) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, v); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
}

// TestDecodeMatchesPIL decodes every input scripts/golden_clip.py made and
// compares with what PIL's decode_pil produced.
func TestDecodeMatchesPIL(t *testing.T) {
	var golden struct {
		Pillow string
		Cases  []struct {
			Input, Want, Mode string
			W, H              int
			RGBSha256         string `json:"rgb_sha256"`
		}
	}
	dir := filepath.Join("testdata", "decode")
	readJSON(t, filepath.Join(dir, "decode.json"), &golden)
	if len(golden.Cases) < 20 {
		t.Fatalf("only %d decode cases", len(golden.Cases))
	}
	for _, c := range golden.Cases {
		t.Run(c.Input, func(t *testing.T) {
			data, err := os.ReadFile(filepath.Join(dir, c.Input))
			if err != nil {
				t.Fatal(err)
			}
			im, err := Decode(data)
			if err != nil {
				t.Fatalf("Decode (PIL mode %s): %v", c.Mode, err)
			}
			if im.W != c.W || im.H != c.H || len(im.Pix) != c.W*c.H*3 {
				t.Fatalf("size %d×%d (%d bytes), PIL %d×%d", im.W, im.H, len(im.Pix), c.W, c.H)
			}
			if got := sum256(im.Pix); got != c.RGBSha256 {
				want := readRGBPNG(t, filepath.Join(dir, c.Want))
				d, n := maxDiff(im, want)
				t.Fatalf("pixels differ from PIL %s (mode %s): max %d, %d of %d values", golden.Pillow, c.Mode, d, n, len(im.Pix))
			}
		})
	}
}

// TestDecodePhotos checks the real photos against PIL's hashes.
func TestDecodePhotos(t *testing.T) {
	var golden struct {
		Cases []struct {
			File              string
			W, H              int
			RGBSha256         string `json:"rgb_sha256"`
			LanczosHalfSha256 string `json:"lanczos_half_sha256"`
		}
	}
	readJSON(t, filepath.Join("testdata", "photos.json"), &golden)
	for i, c := range golden.Cases {
		t.Run(filepath.Base(c.File), func(t *testing.T) {
			data, err := os.ReadFile(testenv.TestData(t, c.File))
			if err != nil {
				t.Fatal(err)
			}
			im, err := Decode(data)
			if err != nil {
				t.Fatal(err)
			}
			if im.W != c.W || im.H != c.H {
				t.Fatalf("size %d×%d, PIL %d×%d", im.W, im.H, c.W, c.H)
			}
			if got := sum256(im.Pix); got != c.RGBSha256 {
				t.Errorf("decoded pixels differ from PIL")
			}
			if i >= 2 {
				return // a full-size Lanczos resize takes seconds under the race detector
			}
			if got := sum256(Resize(im, im.W/2, im.H/2, Lanczos).Pix); got != c.LanczosHalfSha256 {
				t.Errorf("Lanczos half-size resize differs from PIL")
			}
		})
	}
}

func TestDecodeErrors(t *testing.T) {
	pngHeader := func(w, h uint32) []byte {
		b := []byte("\x89PNG\r\n\x1a\n\x00\x00\x00\x0dIHDR")
		b = binary.BigEndian.AppendUint32(b, w)
		b = binary.BigEndian.AppendUint32(b, h)
		return append(b, 8, 2, 0, 0, 0, 0, 0, 0, 0)
	}
	jpegSOF := func(w, h uint16, comps byte) []byte {
		b := []byte{0xFF, 0xD8, 0xFF, 0xC0, 0, 11, 8}
		b = binary.BigEndian.AppendUint16(b, h)
		b = binary.BigEndian.AppendUint16(b, w)
		return append(b, comps, 1, 0x11, 0, 0xFF, 0xD9)
	}
	valid, err := os.ReadFile(filepath.Join("testdata", "decode", "jpeg420.jpg"))
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		data []byte
		opts DecodeOptions
		want []error
	}{
		{"nil", nil, DecodeOptions{}, []error{ErrDecode, ErrEmpty}},
		{"text", []byte("hello, world"), DecodeOptions{}, []error{ErrDecode}},
		{"png zero width", pngHeader(0, 10), DecodeOptions{}, []error{ErrEmpty}},
		{"png zero height", pngHeader(10, 0), DecodeOptions{}, []error{ErrEmpty}},
		{"png 1e9 pixels", pngHeader(40000, 25000), DecodeOptions{}, []error{ErrTooLarge, ErrDecode}},
		{"png 4G×4G", pngHeader(0xFFFFFFFF, 0xFFFFFFFF), DecodeOptions{}, []error{ErrTooLarge, ErrDecode}},
		{"png header only", pngHeader(10, 10), DecodeOptions{}, []error{ErrDecode}},
		{"jpeg 65535²", jpegSOF(65535, 65535, 3), DecodeOptions{}, []error{ErrTooLarge, ErrDecode}},
		{"jpeg cmyk 65535²", jpegSOF(65535, 65535, 4), DecodeOptions{}, []error{ErrTooLarge, ErrDecode}},
		{"jpeg zero height", jpegSOF(100, 0, 3), DecodeOptions{}, []error{ErrEmpty}},
		{"jpeg no frame", []byte{0xFF, 0xD8, 0xFF, 0xD9}, DecodeOptions{}, []error{ErrDecode}},
		{"jpeg truncated header", valid[:40], DecodeOptions{}, []error{ErrDecode}},
		{"jpeg over a small cap", valid, DecodeOptions{MaxPixels: 100}, []error{ErrTooLarge, ErrDecode}},
		{"gif 0×0 without a frame", []byte("GIF89a\x00\x00\x00\x00\x00\x00\x00;"), DecodeOptions{}, []error{ErrDecode}},
		{"bmp huge", append([]byte("BM"), make([]byte, 12)...), DecodeOptions{}, []error{ErrDecode}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			im, err := DecodeWith(tc.data, tc.opts)
			if err == nil {
				t.Fatalf("decoded %d×%d, want an error", im.W, im.H)
			}
			for _, w := range tc.want {
				if !errors.Is(err, w) {
					t.Errorf("error %q is not %v", err, w)
				}
			}
		})
	}
}

// TestDecodeTruncated: truncated files never crash and fail with
// ErrDecode (TestDecodeTruncatedLikePIL checks which ones PIL accepts).
func TestDecodeTruncated(t *testing.T) {
	for _, name := range []string{"jpeg420.jpg", "cmyk_adobe.jpg", "rgb8.png", "webp_lossy.webp", "gif_full.gif", "tiff_rgb.tiff", "bmp24.bmp"} {
		data, err := os.ReadFile(filepath.Join("testdata", "decode", name))
		if err != nil {
			t.Fatal(err)
		}
		for _, n := range []int{len(data) * 3 / 4, len(data) / 2, 30, 10} {
			im, err := Decode(data[:n])
			if err == nil {
				t.Errorf("%s[:%d]: decoded %d×%d", name, n, im.W, im.H)
			} else if !errors.Is(err, ErrDecode) {
				t.Errorf("%s[:%d]: error %v is not ErrDecode", name, n, err)
			}
		}
	}
}

func TestFromMatAndBack(t *testing.T) {
	data, err := os.ReadFile(filepath.Join("testdata", "decode", "rgb8.png"))
	if err != nil {
		t.Fatal(err)
	}
	im, err := Decode(data)
	if err != nil {
		t.Fatal(err)
	}
	bgr, err := im.BGRMat()
	if err != nil {
		t.Fatal(err)
	}
	defer bgr.Close()
	back, err := FromMat(bgr)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(back.Pix, im.Pix) {
		t.Fatal("BGRMat → FromMat changed the pixels")
	}
	if r, g, b := im.At(3, 2); [3]byte{r, g, b} != [3]byte(im.Pix[(2*im.W+3)*3:][:3]) {
		t.Fatal("At disagrees with Pix")
	}
	if im.Bounds() != image.Rect(0, 0, im.W, im.H) {
		t.Fatal("Bounds")
	}
}
