package face_test

import (
	"context"
	"os"
	"path/filepath"
	"testing"

	"github.com/mlserve/mlserve/inference/face"
	"github.com/mlserve/mlserve/internal/testenv"
	"github.com/mlserve/mlserve/modelgen"
	"github.com/mlserve/mlserve/onnx"
)

// benchPack returns a model folder holding a big generated model, written
// once into a shared temporary folder and linked into the folder.
func benchPack(b *testing.B, name string, build func() onnx.Model) string {
	b.Helper()
	p, err := modelgen.BenchFile(name+".onnx", build)
	if err != nil {
		b.Fatal(err)
	}
	dir := b.TempDir()
	if err := os.Symlink(p, filepath.Join(dir, face.ModelFile)); err != nil {
		b.Fatal(err)
	}
	return dir
}

// BenchmarkDetect is the per-image detection latency on the 1920-pixel
// sample photos (decoded once, outside the timing), landmarks included.
func BenchmarkDetect(b *testing.B) {
	ps := photos(b)
	type detector struct {
		name     string
		det      *face.Detector
		minScore float32
	}
	var dets []detector
	for _, pack := range []string{packUltra, packBlaze, packBlaze68} {
		det, _ := loadPack(b, pack, face.RecognizerOptions{})
		dets = append(dets, detector{pack, det, minScores[pack]})
	}
	dets = append(dets, detector{"generated-scrfd-640", scrfdDetector(b, modelgen.SCRFD{}), 0.5})
	// det_10g's architecture and cost with random weights: what Immich's
	// buffalo_l detection costs here (its faces are noise).
	r10g, err := face.LoadDetector(benchPack(b, "scrfd-10g", modelgen.SCRFD10G{}.Model), testenv.Runtime(b), face.DetectorOptions{}, nil)
	if err != nil {
		b.Fatal(err)
	}
	defer r10g.Close()
	dets = append(dets, detector{"scrfd-10g-sized", r10g, 0.7})
	for _, d := range dets {
		b.Run(d.name, func(b *testing.B) {
			faces := 0
			i := 0
			for b.Loop() {
				got, err := d.det.Detect(context.Background(), ps[i%len(ps)].img, d.minScore)
				if err != nil {
					b.Fatal(err)
				}
				faces += got.Len()
				i++
			}
			b.ReportMetric(float64(faces)/float64(i), "faces/op")
		})
	}
}

// BenchmarkRecognize is the per-face recognition latency (alignment and
// embedding) on the faces of sample5.jpg (5 faces): faceplugin's
// MobileFaceNet (fixed batch 1), and w600k_r50's architecture (random
// weights) one face a run and all five in one run.
func BenchmarkRecognize(b *testing.B) {
	p := photos(b)[4]
	det, _ := loadPack(b, packUltra, face.RecognizerOptions{})
	d, err := det.Detect(context.Background(), p.img, 0.7)
	if err != nil || d.Len() == 0 {
		b.Fatalf("%d faces, %v", d.Len(), err)
	}
	r50 := benchPack(b, "arcface-r50", modelgen.ArcFaceR50{}.Model)
	for _, c := range []struct {
		name string
		dir  string
		opts face.RecognizerOptions
	}{
		{"mobilefacenet-batch1", "", face.RecognizerOptions{}},
		{"r50-sized-batch1", r50, face.RecognizerOptions{MaxBatch: 1}},
		{"r50-sized-batch5", r50, face.RecognizerOptions{}},
	} {
		b.Run(c.name, func(b *testing.B) {
			var rec *face.Recognizer
			if c.dir == "" {
				_, rec = loadPack(b, packUltra, c.opts)
			} else {
				var err error
				if rec, err = face.LoadRecognizer(c.dir, testenv.Runtime(b), c.opts, nil); err != nil {
					b.Fatal(err)
				}
				defer rec.Close()
			}
			n := 0
			for b.Loop() {
				if _, err := rec.Recognize(context.Background(), p.img, d); err != nil {
					b.Fatal(err)
				}
				n += d.Len()
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(n)/1e6, "ms/face")
		})
	}
}
