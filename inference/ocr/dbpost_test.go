package ocr

import (
	"encoding/json"
	"image"
	"image/png"
	"os"
	"path/filepath"
	"testing"
)

// The goldens come from scripts/golden_ocr.py, an independent Python
// implementation of the reference steps on Debian's OpenCV, pyclipper and
// shapely.

func readJSON(t testing.TB, name string, v any) {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, v); err != nil {
		t.Fatalf("%s: %v", name, err)
	}
}

func readPNG(t testing.TB, path string) image.Image {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	im, err := png.Decode(f)
	if err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	return im
}

// readMap reads an 8-bit map as p = v/255 in float32, as the script does.
func readMap(t testing.TB, name string) probMap {
	t.Helper()
	im := readPNG(t, filepath.Join("testdata", "dbmaps", name))
	g, ok := im.(*image.Gray)
	if !ok {
		t.Fatalf("%s: %T, want grayscale", name, im)
	}
	b := g.Bounds()
	m := probMap{W: b.Dx(), H: b.Dy(), P: make([]float32, b.Dx()*b.Dy())}
	for y := range m.H {
		for x := range m.W {
			m.P[y*m.W+x] = float32(g.Pix[y*g.Stride+x]) / 255
		}
	}
	return m
}

func TestDBPostProcessGolden(t *testing.T) {
	var cases []struct {
		Map          string
		BoxThresh    float64
		ScoreMode    string
		DestW, DestH int
		Boxes        [][4][2]float32
		Scores       []float64
	}
	readJSON(t, "db_golden.json", &cases)
	total := 0
	for _, c := range cases {
		name := c.Map + "/" + c.ScoreMode + "/" + ftoa(c.BoxThresh) + "/" + itoa(c.DestW) + "x" + itoa(c.DestH)
		t.Run(name, func(t *testing.T) {
			m := readMap(t, c.Map)
			boxes, scores, err := dbBoxes(m, dbParams{boxThresh: c.BoxThresh, slowScore: c.ScoreMode == "slow"}, c.DestW, c.DestH)
			if err != nil {
				t.Fatal(err)
			}
			order := readingOrder(boxes)
			if len(order) != len(c.Boxes) {
				t.Fatalf("got %d boxes, want %d\ngot  %v\nwant %v", len(order), len(c.Boxes), boxes, c.Boxes)
			}
			for k, i := range order {
				if quad(c.Boxes[k]) != boxes[i] {
					t.Errorf("box %d = %v, want %v", k, boxes[i], c.Boxes[k])
				}
				if scores[i] != c.Scores[k] {
					t.Errorf("score %d = %v, want %v", k, scores[i], c.Scores[k])
				}
			}
		})
		total += len(c.Boxes)
	}
	t.Logf("%d cases, %d boxes", len(cases), total)
}

func TestUnclipGolden(t *testing.T) {
	var cases []struct {
		Contour  [][2]int32
		Box      [4][2]float32
		Distance float64
		Offset   [][2]int32
		Grown    [4][2]float32
		Side     float32
	}
	readJSON(t, "unclip_golden.json", &cases)
	for i, c := range cases {
		contour := make([]point, len(c.Contour))
		for k, p := range c.Contour {
			contour[k] = point{p[0], p[1]}
		}
		r, err := minAreaRect(contour)
		if err != nil {
			t.Fatal(err)
		}
		box := miniBox(r)
		if box != quad(c.Box) {
			t.Errorf("case %d: box %v, want %v", i, box, c.Box)
			continue
		}
		grown := unclip(box)
		if !sameSet(grown, c.Offset) {
			t.Errorf("case %d: offset\n got %v\nwant %v", i, grown, c.Offset)
			continue
		}
		r, err = minAreaRect(grown)
		if err != nil {
			t.Fatal(err)
		}
		if g := miniBox(r); g != quad(c.Grown) || min(r.W, r.H) != c.Side {
			t.Errorf("case %d: grown %v side %v, want %v side %v", i, g, min(r.W, r.H), c.Grown, c.Side)
		}
	}
}

// sameSet compares the offset vertices with pyclipper's, which come after
// Clipper's union: that may drop collinear or repeated vertices and start
// elsewhere, so every pyclipper vertex must be ours and each of ours must
// be one of theirs or lie on the polygon's boundary between two of them.
func sameSet(got []point, want [][2]int32) bool {
	have := map[point]bool{}
	for _, p := range got {
		have[p] = true
	}
	wantSet := map[point]bool{}
	for _, p := range want {
		q := point{p[0], p[1]}
		if !have[q] {
			return false
		}
		wantSet[q] = true
	}
	for _, p := range got {
		if wantSet[p] {
			continue
		}
		if !onBoundary(p, want) {
			return false
		}
	}
	return true
}

func onBoundary(p point, poly [][2]int32) bool {
	for i := range poly {
		a, b := poly[i], poly[(i+1)%len(poly)]
		cross := int64(b[0]-a[0])*int64(p.Y-a[1]) - int64(b[1]-a[1])*int64(p.X-a[0])
		if cross == 0 &&
			min(a[0], b[0]) <= p.X && p.X <= max(a[0], b[0]) &&
			min(a[1], b[1]) <= p.Y && p.Y <= max(a[1], b[1]) {
			return true
		}
	}
	return false
}

func TestReadingOrderGolden(t *testing.T) {
	var cases []struct {
		Boxes [][4][2]float32
		Order []int
	}
	readJSON(t, "order_golden.json", &cases)
	for i, c := range cases {
		boxes := make([]quad, len(c.Boxes))
		for k, b := range c.Boxes {
			boxes[k] = b
		}
		got := readingOrder(boxes)
		if len(got) != len(c.Order) {
			t.Fatalf("case %d: %v, want %v", i, got, c.Order)
		}
		for k := range got {
			if got[k] != c.Order[k] {
				t.Errorf("case %d: order %v, want %v", i, got, c.Order)
				break
			}
		}
	}
}

// FuzzDBBoxes feeds arbitrary probability maps (what a model returns is
// not trusted): no error, no panic, boxes inside the image, scores that
// are means of probabilities.
func FuzzDBBoxes(f *testing.F) {
	f.Add(uint8(16), uint8(12), uint16(40), []byte{0, 255, 255, 255, 0, 128, 200, 255, 255, 255, 255, 0, 0, 0, 255})
	f.Add(uint8(3), uint8(3), uint16(9), []byte{255, 255, 255, 255, 255, 255, 255, 255, 255})
	f.Add(uint8(40), uint8(1), uint16(1), []byte{255})
	f.Fuzz(func(t *testing.T, w, h uint8, dest uint16, pix []byte) {
		if w == 0 || h == 0 || len(pix) == 0 {
			return
		}
		m := probMap{W: int(w), H: int(h), P: make([]float32, int(w)*int(h))}
		for i := range m.P {
			m.P[i] = float32(pix[i%len(pix)]) / 255
		}
		dw, dh := int(dest%4000)+1, int(dest/16%3000)+1
		boxes, scores, err := dbBoxes(m, dbParams{boxThresh: 0.3, slowScore: dest%2 == 0}, dw, dh)
		if err != nil {
			t.Fatal(err)
		}
		for i, b := range boxes {
			for _, c := range b {
				if c[0] < 0 || c[0] > float32(dw-1) || c[1] < 0 || c[1] > float32(dh-1) {
					t.Fatalf("box %v outside %dx%d", b, dw, dh)
				}
			}
			if scores[i] < 0.3 || scores[i] > 1 {
				t.Fatalf("score %v", scores[i])
			}
		}
		readingOrder(boxes)
	})
}
