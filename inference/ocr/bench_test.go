package ocr

import (
	"bufio"
	"context"
	"image"
	"os"
	"runtime"
	"runtime/debug"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/mlserve/mlserve/inference/imaging"
)

// Benchmarks with the real PP-OCRv4 models on rendered pages. Per-line
// recognition cost is reported as ms/line.

// page renders n lines of 36-pixel text on a w×h white page.
func page(b testing.TB, w, h, n int) *imaging.Image {
	lines := make([]line, n)
	words := []string{"Receipt total 42.50", "Invoice number 2026-0117", "Thank you for shopping", "Open every day", "Main street 12"}
	for i := range lines {
		lines[i] = line{text: words[i%len(words)], x: 60, y: 80 + i*(h-120)/max(1, n), size: 36, ink: black}
	}
	src, _ := render(b, plain(w, h, white), lines)
	return toImage(src)
}

func BenchmarkDetect(b *testing.B) {
	det, _ := realModels(b)
	img := page(b, 1440, 1080, 12)
	ctx := context.Background()
	b.ResetTimer()
	for b.Loop() {
		if _, err := det.Detect(ctx, img, DefaultDetectOptions()); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkRecognize(b *testing.B) {
	det, rec := realModels(b)
	ctx := context.Background()
	for _, n := range []int{1, 12} {
		b.Run("lines="+strconv.Itoa(n), func(b *testing.B) {
			img := page(b, 1440, 1080, n)
			boxes, err := det.Detect(ctx, img, DefaultDetectOptions())
			if err != nil || len(boxes.Boxes) != n {
				b.Fatalf("%d boxes, %v", len(boxes.Boxes), err)
			}
			b.ResetTimer()
			start := time.Now()
			for b.Loop() {
				if _, err := rec.Recognize(ctx, img, boxes, 0.8); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(time.Since(start).Milliseconds())/float64(b.N)/float64(n), "ms/line")
		})
	}
}

func BenchmarkDBPostProcess(b *testing.B) {
	det, _ := realModels(b)
	img := page(b, 1440, 1080, 12)
	w, h := detectSize(img.W, img.H, 736)
	out, err := det.sess.Run(context.Background(), detectTensor(imaging.Resize(img, w, h, imaging.Lanczos)))
	if err != nil {
		b.Fatal(err)
	}
	m, err := mapFromOutput(out[0])
	if err != nil {
		b.Fatal(err)
	}
	b.ResetTimer()
	for b.Loop() {
		if _, _, err := dbBoxes(m, dbParams{boxThresh: 0.5}, img.W, img.H); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkCrop(b *testing.B) {
	img := page(b, 1440, 1080, 1)
	q := quad{{50, 40}, {600, 52}, {598, 100}, {48, 88}}
	for b.Loop() {
		cropText(img, q)
	}
}

// BenchmarkBigImage runs OCR on an 8000×6000 page and reports the peak
// resident memory of the process during OCR (VmHWM, reset after the
// input is built, so it includes the 144 MB input image itself and the
// loaded models).
func BenchmarkBigImage(b *testing.B) {
	det, rec := realModels(b)
	img := bigPage(b)
	ctx := context.Background()
	runtime.GC()
	debug.FreeOSMemory()
	resetPeakRSS(b)
	base := rss(b, "VmRSS")
	b.ResetTimer()
	var n int
	for b.Loop() {
		boxes, err := det.Detect(ctx, img, DefaultDetectOptions())
		if err != nil {
			b.Fatal(err)
		}
		res, err := rec.Recognize(ctx, img, boxes, 0.8)
		if err != nil {
			b.Fatal(err)
		}
		n = len(res.Text)
	}
	b.StopTimer()
	b.ReportMetric(float64(n), "texts")
	b.ReportMetric(base/1024, "MiB-rss-before")
	b.ReportMetric(rss(b, "VmHWM")/1024, "MiB-peak-rss")
}

// bigPage is an 8000×6000 white page with text lines from 60 to 400 px.
func bigPage(b testing.TB) *imaging.Image {
	const w, h = 8000, 6000
	img := &imaging.Image{W: w, H: h, Pix: make([]byte, w*h*3)}
	for i := range img.Pix {
		img.Pix[i] = 255
	}
	y := 200
	for i, size := range []float64{400, 200, 120, 80, 60} {
		src, _ := render(b, plain(w, int(size*1.6), white), []line{{text: "Big page line " + strconv.Itoa(i+1), x: 300, y: int(size * 1.2), size: size, ink: black}})
		paste(img, toImage(src), image.Pt(0, y))
		y += int(size*1.6) + 400
	}
	return img
}

func paste(dst, src *imaging.Image, at image.Point) {
	for y := range src.H {
		if at.Y+y >= dst.H {
			return
		}
		copy(dst.Pix[((at.Y+y)*dst.W+at.X)*3:], src.Pix[y*src.W*3:(y+1)*src.W*3])
	}
}

// resetPeakRSS resets VmHWM (Linux: write 5 to /proc/self/clear_refs).
func resetPeakRSS(b testing.TB) {
	if err := os.WriteFile("/proc/self/clear_refs", []byte("5"), 0); err != nil {
		b.Skipf("cannot reset peak RSS: %v", err)
	}
}

// rss reads a /proc/self/status field in KiB.
func rss(b testing.TB, field string) float64 {
	f, err := os.Open("/proc/self/status")
	if err != nil {
		b.Skip(err)
	}
	defer f.Close()
	s := bufio.NewScanner(f)
	for s.Scan() {
		if v, ok := strings.CutPrefix(s.Text(), field+":"); ok {
			kb, err := strconv.ParseFloat(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 64)
			if err != nil {
				b.Fatal(err)
			}
			return kb
		}
	}
	b.Skipf("no %s in /proc/self/status", field)
	return 0
}
