package face_test

import (
	"context"
	"testing"

	"github.com/mlserve/mlserve/inference/face"
	"github.com/mlserve/mlserve/modelgen"
)

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
// embedding) on the faces of sample5.jpg (5 faces).
func BenchmarkRecognize(b *testing.B) {
	p := photos(b)[4]
	for _, c := range []struct {
		name string
		opts face.RecognizerOptions
	}{{"mobilefacenet-batch1", face.RecognizerOptions{}}} {
		b.Run(c.name, func(b *testing.B) {
			det, rec := loadPack(b, packUltra, c.opts)
			d, err := det.Detect(context.Background(), p.img, 0.7)
			if err != nil || d.Len() == 0 {
				b.Fatalf("%d faces, %v", d.Len(), err)
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
