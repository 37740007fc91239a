package face_test

import (
	"context"
	"image"
	"testing"

	"gocv.io/x/gocv"

	"github.com/mlserve/mlserve/inference/face"
	"github.com/mlserve/mlserve/inference/imaging"
	"github.com/mlserve/mlserve/inference/imaging/imagingtest"
	"github.com/mlserve/mlserve/modelgen"
)

// pipeline is a detector and recognizer pair under test.
type pipeline struct {
	name     string
	det      *face.Detector
	rec      *face.Recognizer
	minScore float32
}

func pipelines(t *testing.T) []pipeline {
	t.Helper()
	var ps []pipeline
	for _, pack := range []string{packUltra, packBlaze, packBlaze68} {
		det, rec := loadPack(t, pack, face.RecognizerOptions{})
		ps = append(ps, pipeline{pack, det, rec, minScores[pack]})
	}
	rec := arcFaceRecognizer(t, modelgen.ArcFace{Seed: 2}, "", 0)
	ps = append(ps, pipeline{"generated scrfd+arcface", scrfdDetector(t, modelgen.SCRFD{}), rec, 0.5})
	return ps
}

// run detects and recognises, and checks the result's consistency.
func (p pipeline) run(t *testing.T, what string, img *imaging.Image, minScore float32) int {
	t.Helper()
	ctx := context.Background()
	d, err := p.det.Detect(ctx, img, minScore)
	if err != nil {
		t.Fatalf("%s, %s: Detect: %v", p.name, what, err)
	}
	if len(d.Scores) != d.Len() || len(d.Landmarks) != d.Len() {
		t.Fatalf("%s, %s: inconsistent detections", p.name, what)
	}
	faces, err := p.rec.Recognize(ctx, img, d)
	if err != nil {
		t.Fatalf("%s, %s: Recognize: %v", p.name, what, err)
	}
	if len(faces) != d.Len() {
		t.Fatalf("%s, %s: %d embeddings for %d faces", p.name, what, len(faces), d.Len())
	}
	return d.Len()
}

func solid(w, h int, v byte) *imaging.Image {
	img := &imaging.Image{W: w, H: h, Pix: make([]byte, w*h*3)}
	for i := range img.Pix {
		img.Pix[i] = v
	}
	return img
}

// TestOddImages: tiny images, 1×1, extreme aspect ratios give answers
// (here: no faces), never errors or crashes.
func TestOddImages(t *testing.T) {
	ps := pipelines(t)
	for _, c := range []struct {
		w, h int
	}{{1, 1}, {2, 2}, {3, 7}, {17, 5}, {10000, 10}, {10, 10000}, {5000, 10}, {64, 1}, {1, 64}} {
		for _, v := range []byte{0, 128, 255} {
			img := solid(c.w, c.h, v)
			for _, p := range ps {
				if n := p.run(t, "odd image", img, p.minScore); n != 0 {
					t.Errorf("%s: %dx%d value %d: %d faces", p.name, c.w, c.h, v, n)
				}
			}
		}
	}
	// minScore 0 lets every anchor through NMS (and into the landmark
	// model): the worst case for the decoders. Recognising hundreds of
	// garbage faces one by one with the real fixed-batch model would only
	// cost time; the generated recognizer takes them in one batch.
	for _, img := range []*imaging.Image{solid(1, 1, 0), solid(10000, 10, 200)} {
		for _, p := range ps {
			d, err := p.det.Detect(context.Background(), img, 0)
			if err != nil {
				t.Fatalf("%s: %dx%d at minScore 0: %v", p.name, img.W, img.H, err)
			}
			if p.name == "generated scrfd+arcface" {
				p.run(t, "minScore 0", img, 0)
			}
			t.Logf("%s: %dx%d at minScore 0: %d faces", p.name, img.W, img.H, d.Len())
		}
	}
	for _, p := range ps {
		if _, err := p.det.Detect(context.Background(), &imaging.Image{}, 0.5); err == nil {
			t.Errorf("%s: a 0x0 image detects", p.name)
		}
	}
}

// TestGrayscalePhotos: grey photos (decoded to RGB with equal channels)
// still show their faces.
func TestGrayscalePhotos(t *testing.T) {
	ps := photos(t)
	for _, pack := range []string{packUltra, packBlaze} {
		det, rec := loadPack(t, pack, face.RecognizerOptions{})
		p := pipeline{pack, det, rec, minScores[pack]}
		found, extra := 0, 0
		for _, ph := range ps {
			img := grayscale(t, ph.img)
			d, err := det.Detect(context.Background(), img, p.minScore)
			if err != nil {
				t.Fatal(err)
			}
			idx, x := match(d, ph.faces)
			for _, j := range idx {
				if j >= 0 {
					found++
				}
			}
			extra += x
			p.run(t, ph.name, img, p.minScore)
		}
		t.Logf("%s on grey photos: %d/22 faces, %d false positives", pack, found, extra)
		if found < 20 || extra > 1 {
			t.Errorf("%s on grey photos: %d/22 faces, %d false positives", pack, found, extra)
		}
	}
}

// grayscale goes through an encoded grey JPEG, as a grey upload would.
func grayscale(t testing.TB, img *imaging.Image) *imaging.Image {
	t.Helper()
	src, err := img.Mat()
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	gray := gocv.NewMat()
	defer gray.Close()
	gocv.CvtColor(src, &gray, gocv.ColorRGBToGray)
	buf, err := imagingtest.JPEG(gray.ToBytes(), gray.Cols(), gray.Rows(), 1, 95) // imencode's default quality
	if err != nil {
		t.Fatal(err)
	}
	out, err := imaging.Decode(buf)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// crowd tiles the 22 sample faces into a cols×rows grid of side-pixel
// tiles (each face with some margin).
func crowd(t testing.TB, cols, rows, side int) *imaging.Image {
	t.Helper()
	var tiles []gocv.Mat
	defer func() {
		for _, m := range tiles {
			m.Close()
		}
	}()
	for _, p := range photos(t) {
		src, err := p.img.Mat()
		if err != nil {
			t.Fatal(err)
		}
		for _, f := range p.faces {
			r := int(f.W * 0.8)
			rect := image.Rect(int(f.X)-r, int(f.Y)-r, int(f.X)+r, int(f.Y)+r).Intersect(image.Rect(0, 0, p.img.W, p.img.H))
			roi := src.Region(rect)
			tile := gocv.NewMat()
			gocv.Resize(roi, &tile, image.Pt(side, side), 0, 0, gocv.InterpolationArea)
			roi.Close()
			tiles = append(tiles, tile)
		}
		src.Close()
	}
	out := &imaging.Image{W: cols * side, H: rows * side, Pix: make([]byte, cols*side*rows*side*3)}
	for i := range cols * rows {
		px, err := tiles[i%len(tiles)].DataPtrUint8()
		if err != nil {
			t.Fatal(err)
		}
		x0, y0 := (i%cols)*side, (i/cols)*side
		for y := range side {
			copy(out.Pix[((y0+y)*out.W+x0)*3:((y0+y)*out.W+x0+side)*3], px[y*side*3:(y+1)*side*3])
		}
	}
	return out
}

// TestCrowd: an image of 200 faces. The detectors here see the image at
// 320×240 (UltraFace) or 256×256 (BlazeFace), where such a crowd's faces
// are a dozen pixels wide, so they find only some; what matters is a sane
// answer: no error, at most 200 faces, every one recognised.
func TestCrowd(t *testing.T) {
	img := crowd(t, 20, 10, 96)
	for _, p := range pipelines(t) {
		n := p.run(t, "200 faces", img, p.minScore)
		t.Logf("%s: %d of 200 faces found", p.name, n)
		if n > 200 {
			t.Errorf("%s: %d faces in an image of 200", p.name, n)
		}
	}
	// A crowd the detectors can resolve: 40 faces of 160 pixels.
	img = crowd(t, 8, 5, 160)
	for _, p := range pipelines(t)[:3] {
		n := p.run(t, "40 faces", img, p.minScore)
		t.Logf("%s: %d of 40 faces found", p.name, n)
		if n > 40 {
			t.Errorf("%s: %d faces in an image of 40", p.name, n)
		}
	}
}
