package ocr

import (
	"context"
	"os"
	"runtime"
	"runtime/debug"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/mlserve/mlserve/inference"
	"github.com/mlserve/mlserve/inference/imaging"
)

// immichDetectSize is Immich's TextDetector._transform geometry, without
// any cap on the long side.
func immichDetectSize(w, h, maxRes int) (int, int) {
	ratio := float64(maxRes) / float64(min(w, h))
	if h < w {
		ratio = float64(maxRes) / float64(h)
	}
	ratio = min(ratio, 1)
	round32 := func(v int) int {
		q := float64(v) / 32
		r := float64(int(q))
		if f := q - r; f > 0.5 || (f == 0.5 && int(r)%2 == 1) {
			r++
		}
		return int(r) * 32
	}
	return round32(int(float64(w) * ratio)), round32(int(float64(h) * ratio))
}

// TestDetectSizeBounds: Immich's geometry for every image Immich sends at
// its default maxResolution (previews of up to 2160 pixels, any aspect up
// to 5.4:1), and bounded inputs for panoramas and raised maxResolutions.
func TestDetectSizeBounds(t *testing.T) {
	for _, long := range []int{720, 1080, 1440, 2160, 3000} {
		for _, aspect := range []float64{1, 4.0 / 3, 16.0 / 9, 2, 3, 5.4} {
			for _, portrait := range []bool{false, true} {
				w, h := long, int(float64(long)/aspect)
				if portrait {
					w, h = h, w
				}
				gw, gh := detectSize(w, h, 736)
				iw, ih := immichDetectSize(w, h, 736)
				if gw != iw || gh != ih {
					t.Errorf("%d×%d: %d×%d, Immich %d×%d", w, h, gw, gh, iw, ih)
				}
			}
		}
	}
	for _, c := range []struct{ w, h, maxRes int }{
		{24000, 400, 736}, {400, 24000, 736}, {65535, 32, 736}, {8000, 6000, 4000}, {4000, 4000, 4000},
		{20000, 1600, 736}, {6000, 6000, 1}, {5000, 5000, 2000},
	} {
		w, h := detectSize(c.w, c.h, c.maxRes)
		if max(w, h) > DetectMaxSide+16 || w*h > DetectMaxPixels+16*(w+h) || w < 0 || h < 0 {
			t.Errorf("%d×%d at maxResolution %d: input %d×%d", c.w, c.h, c.maxRes, w, h)
		}
		t.Logf("%d×%d at %d: %d×%d (Immich %d×%d)", c.w, c.h, c.maxRes, w, h, func() int { a, _ := immichDetectSize(c.w, c.h, c.maxRes); return a }(), func() int { _, b := immichDetectSize(c.w, c.h, c.maxRes); return b }())
	}
}

func procStatus(t testing.TB, key string) int64 {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		t.Skipf("no /proc: %v", err)
	}
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, key+":"); ok {
			n, _ := strconv.ParseInt(strings.Fields(v)[0], 10, 64)
			return n << 10
		}
	}
	t.Skipf("no %s", key)
	return 0
}

// TestDetectPanoramaMemory runs the real PP-OCR detector on a 24000×400
// strip, which Immich would feed to the model at 24000×384 (about 1 GB of
// activations): with the long side capped, detection costs a fraction of
// that.
func TestDetectPanoramaMemory(t *testing.T) {
	det, _ := realModels(t)
	ctx := context.Background()
	// A first run sets up the session's arena at an ordinary size.
	if _, err := det.Detect(ctx, imaging.New(736, 552), DefaultDetectOptions()); err != nil {
		t.Fatal(err)
	}
	// White, written before the baseline: the decoded image is the
	// request's, not detection's.
	strip := imaging.New(24000, 400)
	strip.Pix[0], strip.Pix[1], strip.Pix[2] = 255, 255, 255
	for n := 3; n < len(strip.Pix); n *= 2 {
		copy(strip.Pix[n:], strip.Pix[:n])
	}
	runtime.GC()
	debug.FreeOSMemory()
	inference.ReleaseMemory()
	if err := os.WriteFile("/proc/self/clear_refs", []byte("5"), 0); err != nil {
		t.Skipf("cannot reset the peak RSS: %v", err)
	}
	base := procStatus(t, "VmRSS")
	start := time.Now()
	if _, err := det.Detect(ctx, strip, DefaultDetectOptions()); err != nil {
		t.Fatal(err)
	}
	took := time.Since(start)
	grew := procStatus(t, "VmHWM") - base
	w, h := detectSize(strip.W, strip.H, 736)
	t.Logf("24000×400: input %d×%d, %v, peak RSS +%d MiB", w, h, took, grew>>20)
	if grew > 200<<20 {
		t.Errorf("peak RSS +%d MiB", grew>>20)
	}
}
