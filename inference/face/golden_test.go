package face

import (
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"image/png"
	"math"
	"os"
	"path/filepath"
	"testing"

	"github.com/mlserve/mlserve/inference/imaging"
)

// The goldens come from scripts/golden_face.py (numpy, cv2 and skimage as
// Immich's ML service uses them). The inputs are rebuilt here bit for bit.

type goldenFile struct {
	Letterbox []struct {
		W, H, NewW, NewH int
		Scale            float64
		CanvasSHA256     string
		BlobSHA256       string
	}
	SCRFD []struct {
		W, H      int
		Threshold float32
		Scale     float64
		Boxes     [][4]float32
		Scores    []float32
		Landmarks [][5][2]float32
	}
	Align []struct {
		Name      string
		Landmarks [5][2]float32
		M         [2][3]float64
		NaN       bool
		PNG       string
	}
	Blob map[string]string
}

func loadGolden(t *testing.T) *goldenFile {
	t.Helper()
	data, err := os.ReadFile(filepath.Join("testdata", "golden_face.json"))
	if err != nil {
		t.Fatal(err)
	}
	var g goldenFile
	if err := json.Unmarshal(data, &g); err != nil {
		t.Fatal(err)
	}
	return &g
}

// pattern is golden_face.py's pattern(w, h).
func pattern(w, h int) *imaging.Image {
	img := &imaging.Image{W: w, H: h, Pix: make([]byte, w*h*3)}
	for y := range h {
		for x := range w {
			for c := range 3 {
				img.Pix[(y*w+x)*3+c] = byte((x*5 + y*3 + (x*y)>>6 + c*85) & 255)
			}
		}
	}
	return img
}

func hash32(g, k int64) int64 { return (g*2654435761 + k*40503 + 12345) % (1 << 32) }

// scrfdOutputs is golden_face.py's scrfd_outputs().
func scrfdOutputs() [][]float32 {
	const total = 16800
	regions := [][3]int{{200, 150, 60}, {450, 300, 90}, {100, 500, 40}}
	var scores, boxes, kps [][]float32
	base := int64(0)
	for _, s := range []int{8, 16, 32} {
		n := 640 / s
		k := n * n * 2
		sc := make([]float32, k)
		bb := make([]float32, 4*k)
		kp := make([]float32, 10*k)
		for i := range k {
			g := base + int64(i)
			cell := i / 2
			cx, cy := (cell%n)*s, (cell/n)*s
			inside := false
			for _, r := range regions {
				if (cx-r[0])*(cx-r[0])+(cy-r[1])*(cy-r[1]) <= r[2]*r[2] {
					inside = true
				}
			}
			p := (float64((g*7919)%total) + 0.5) / total
			if inside {
				sc[i] = float32(0.5 + p/2)
			} else {
				sc[i] = float32(p / 2)
			}
			for j := range 4 {
				bb[4*i+j] = float32(float64(hash32(g, int64(j))%1000) / 250.0)
			}
			for j := range 10 {
				kp[10*i+j] = float32(float64(hash32(g, int64(4+j))%2001-1000) / 250.0)
			}
		}
		scores, boxes, kps = append(scores, sc), append(boxes, bb), append(kps, kp)
		base += int64(k)
	}
	return append(append(scores, boxes...), kps...)
}

func sha(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

func floatBytes(v []float32) []byte {
	b := make([]byte, 4*len(v))
	for i, f := range v {
		binary.LittleEndian.PutUint32(b[4*i:], math.Float32bits(f))
	}
	return b
}

func TestLetterboxGolden(t *testing.T) {
	for _, c := range loadGolden(t).Letterbox {
		lb := planLetterbox(c.W, c.H, 640, 640)
		if lb.newW != c.NewW || lb.newH != c.NewH || lb.scale != c.Scale {
			t.Errorf("%dx%d: letterbox %dx%d scale %v, want %dx%d scale %v", c.W, c.H, lb.newW, lb.newH, lb.scale, c.NewW, c.NewH, c.Scale)
			continue
		}
		if c.CanvasSHA256 == "" {
			if !lb.empty() {
				t.Errorf("%dx%d: want an empty letterbox", c.W, c.H)
			}
			continue
		}
		canvas, err := lb.draw(pattern(c.W, c.H), 640, 640)
		if err != nil {
			t.Fatal(err)
		}
		if got := sha(canvas); got != c.CanvasSHA256 {
			t.Errorf("%dx%d: canvas differs from cv2.resize's", c.W, c.H)
		}
		blob := make([]float32, 3*640*640)
		planarBlob(blob, canvas, scrfdMean, scrfdStd)
		if got := sha(floatBytes(blob)); got != c.BlobSHA256 {
			t.Errorf("%dx%d: blob differs from cv2.dnn.blobFromImage's", c.W, c.H)
		}
	}
}

func TestSCRFDDecodeGolden(t *testing.T) {
	outs := scrfdOutputs()
	layout, _ := layoutFor(9)
	for _, c := range loadGolden(t).SCRFD {
		lb := planLetterbox(c.W, c.H, 640, 640)
		if lb.scale != c.Scale {
			t.Fatalf("scale %v, golden %v", lb.scale, c.Scale)
		}
		d, err := scrfdPostprocess(outs, layout, 640, 640, lb.scale, c.Threshold)
		if err != nil {
			t.Fatal(err)
		}
		if d.Len() != len(c.Boxes) {
			t.Fatalf("%dx%d@%v: %d faces, golden %d", c.W, c.H, c.Threshold, d.Len(), len(c.Boxes))
		}
		for i := range c.Boxes {
			if d.Boxes[i] != c.Boxes[i] || d.Scores[i] != c.Scores[i] {
				t.Fatalf("%dx%d@%v face %d: box %v score %v, golden %v %v", c.W, c.H, c.Threshold, i, d.Boxes[i], d.Scores[i], c.Boxes[i], c.Scores[i])
			}
			if d.Landmarks[i] != c.Landmarks[i] {
				t.Fatalf("%dx%d@%v face %d: landmarks %v, golden %v", c.W, c.H, c.Threshold, i, d.Landmarks[i], c.Landmarks[i])
			}
		}
	}
}

func readPNG(t *testing.T, name string) []byte {
	t.Helper()
	f, err := os.Open(filepath.Join("testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	im, err := png.Decode(f)
	if err != nil {
		t.Fatal(err)
	}
	b := im.Bounds()
	out := make([]byte, 0, b.Dx()*b.Dy()*3)
	for y := b.Min.Y; y < b.Max.Y; y++ {
		for x := b.Min.X; x < b.Max.X; x++ {
			r, g, bl, _ := im.At(x, y).RGBA()
			out = append(out, byte(r>>8), byte(g>>8), byte(bl>>8))
		}
	}
	return out
}

func TestAlignGolden(t *testing.T) {
	g := loadGolden(t)
	img := pattern(640, 480)
	src, err := img.Mat()
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	for _, c := range g.Align {
		t.Run(c.Name, func(t *testing.T) {
			m, ok := Similarity(c.Landmarks, ArcFaceTemplate)
			if c.NaN {
				if ok {
					t.Fatalf("skimage gives NaN, Similarity gives %v", m)
				}
				if _, err := alignCrop(src, c.Landmarks); err == nil {
					t.Fatal("alignCrop of coincident points: no error")
				}
				return
			}
			if !ok {
				t.Fatal("no transform")
			}
			// skimage computes in float32 (the landmarks' precision).
			for r := range 2 {
				for k := range 3 {
					if d := math.Abs(m[r][k] - c.M[r][k]); d > 1e-5*max(1, math.Abs(c.M[r][k])) {
						t.Errorf("M[%d][%d] = %v, skimage %v", r, k, m[r][k], c.M[r][k])
					}
				}
			}
			want := readPNG(t, c.PNG)
			// The warp itself is bit-exact with cv2's for the same matrix.
			got, err := warpAffine(src, c.M, alignSize)
			if err != nil {
				t.Fatal(err)
			}
			if sha(got) != sha(want) {
				t.Errorf("warpAffine with the golden matrix differs from cv2.warpAffine")
			}
			// The whole crop: the float64 and float32 transforms differ in
			// the last bits, which can move a few samples by one 1/32-pixel
			// step of OpenCV's fixed-point interpolation.
			crop, err := alignCrop(src, c.Landmarks)
			if err != nil {
				t.Fatal(err)
			}
			same, maxDiff := 0, 0
			for i := range crop {
				d := int(crop[i]) - int(want[i])
				if d == 0 {
					same++
				}
				maxDiff = max(maxDiff, d, -d)
			}
			if frac := float64(same) / float64(len(crop)); frac < 0.99 {
				t.Errorf("aligned crop: %.4f of the bytes equal cv2's (max diff %d), want ≥ 0.99", frac, maxDiff)
			}
			t.Logf("aligned crop: %d/%d bytes equal, max diff %d", same, len(crop), maxDiff)
		})
	}
}

func TestBlobGolden(t *testing.T) {
	g := loadGolden(t)
	crop := readPNG(t, "align_shift_scale.png")
	for _, c := range []struct {
		key       string
		mean, std float64
	}{{"arcface", 127.5, 127.5}, {"mxnet", 0, 1}, {"mobilefacenet", 127, 128}} {
		blob := make([]float32, len(crop))
		planarBlob(blob, crop, c.mean, c.std)
		if got := sha(floatBytes(blob)); got != g.Blob[c.key] {
			t.Errorf("%s blob differs from cv2.dnn.blobFromImages'", c.key)
		}
	}
}
