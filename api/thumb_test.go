package api

import (
	"bytes"
	"context"
	"errors"
	"image"
	"image/jpeg"
	"math"
	"testing"
	"time"

	"github.com/mlserve/mlserve/inference/imaging"
)

func TestByteLRU(t *testing.T) {
	c := newByteLRU(800)
	val := func(n int) []byte { return bytes.Repeat([]byte{1}, n) }
	c.add("a", val(99)) // 100 bytes with its key
	c.add("b", val(99))
	if _, ok := c.get("a"); !ok {
		t.Fatal("a missing")
	}
	for _, k := range []string{"c", "d", "e", "f", "g", "h", "i"} {
		c.add(k, val(99))
	}
	// 800 bytes: b (least recently used) went first, a was read.
	if _, ok := c.get("b"); ok {
		t.Fatal("b kept past the cap")
	}
	if _, ok := c.get("a"); !ok {
		t.Fatal("a was used recently and dropped")
	}
	st := c.stats()
	if st.Bytes > 800 || st.Entries != 8 || st.Hits != 2 || st.Misses != 1 {
		t.Fatalf("stats %+v", st)
	}
	// Replacing a value keeps the count right.
	c.add("a", val(9))
	if st := c.stats(); st.Bytes != 710 {
		t.Fatalf("after replacing a: %+v", st)
	}
	// A value over an eighth of the cap is not kept.
	c.add("big", val(200))
	if _, ok := c.get("big"); ok {
		t.Fatal("a value over an eighth of the cap was kept")
	}
	// A cache of 0 bytes keeps nothing.
	z := newByteLRU(0)
	z.add("a", val(1))
	if _, ok := z.get("a"); ok {
		t.Fatal("a zero cache kept a value")
	}
}

func TestETagMatch(t *testing.T) {
	for _, c := range []struct {
		header string
		want   bool
	}{
		{`"abc"`, true},
		{`W/"abc"`, true},
		{`"x", "abc"`, true},
		{`*`, true},
		{`"abcd"`, false},
		{``, false},
		{`abc`, false},
	} {
		if got := etagMatch(c.header, `"abc"`); got != c.want {
			t.Errorf("etagMatch(%q) = %v", c.header, got)
		}
	}
}

func TestFaceRect(t *testing.T) {
	f := Face{ImageWidth: 1000, ImageHeight: 800, Box: [4]float32{400, 300, 500, 420}}
	// 1.6 × 120 = 192, centred on (450, 360).
	if r := faceRect(f, 1000, 800); r != image.Rect(354, 264, 546, 456) {
		t.Errorf("centred: %v", r)
	}
	// The image was decoded at half the size the face was found in.
	if r := faceRect(f, 500, 400); r != image.Rect(177, 132, 273, 228) {
		t.Errorf("scaled: %v", r)
	}
	// At the edge: moved inside.
	edge := Face{ImageWidth: 1000, ImageHeight: 800, Box: [4]float32{0, 700, 100, 800}}
	if r := faceRect(edge, 1000, 800); r != image.Rect(0, 640, 160, 800) {
		t.Errorf("edge: %v", r)
	}
	// Larger than the image: the image's shorter side.
	huge := Face{ImageWidth: 100, ImageHeight: 50, Box: [4]float32{-500, -500, 600, 600}}
	if r := faceRect(huge, 100, 50); r.Dx() != 50 || r.Dy() != 50 || !r.In(image.Rect(0, 0, 100, 50)) {
		t.Errorf("huge: %v", r)
	}
	// Nonsense boxes still give a pixel inside the image.
	nan := float32(math.NaN())
	for _, b := range [][4]float32{{nan, nan, nan, nan}, {5, 5, 5, 5}, {10, 10, 0, 0}} {
		r := faceRect(Face{ImageWidth: 20, ImageHeight: 20, Box: b}, 20, 20)
		if r.Empty() || !r.In(image.Rect(0, 0, 20, 20)) {
			t.Errorf("box %v: %v", b, r)
		}
	}
}

func TestEncodeThumb(t *testing.T) {
	im := imaging.New(600, 300)
	for i := range im.Pix {
		im.Pix[i] = byte(i % 251)
	}
	for _, c := range []struct {
		r    image.Rectangle
		size int
		w, h int
	}{
		{im.Bounds(), 256, 256, 128},
		{im.Bounds(), 1024, 600, 300}, // never enlarged
		{image.Rect(100, 50, 200, 150), 64, 64, 64},
	} {
		b, err := encodeThumb(im, c.r, c.size)
		if err != nil {
			t.Fatal(err)
		}
		out, err := jpeg.Decode(bytes.NewReader(b))
		if err != nil {
			t.Fatal(err)
		}
		if out.Bounds().Dx() != c.w || out.Bounds().Dy() != c.h {
			t.Errorf("%v at %d: %v, want %dx%d", c.r, c.size, out.Bounds(), c.w, c.h)
		}
	}
}

// TestRenderBounded: a render waits for a slot; past thumbWaitMax waiting
// renders it is refused at once, and a waiting render leaves when its
// context ends.
func TestRenderBounded(t *testing.T) {
	th := newThumbnails(imaging.DecodeOptions{}, 0)
	for range cap(th.slots) {
		th.slots <- struct{}{} // every slot busy
	}
	th.waiting.Store(thumbWaitMax)
	if _, err := th.render(context.Background(), thumbJob{path: "/nonexistent"}); !errors.Is(err, errThumbBusy) {
		t.Fatalf("with the queue full: %v", err)
	}
	th.waiting.Store(0)
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if _, err := th.render(ctx, thumbJob{path: "/nonexistent"}); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("waiting for a slot: %v", err)
	}
	if n := th.waiting.Load(); n != 0 {
		t.Fatalf("%d still counted as waiting", n)
	}
	<-th.slots
	if _, err := th.render(context.Background(), thumbJob{path: "/nonexistent"}); !errors.Is(err, errFileGone) {
		t.Fatalf("a missing file: %v", err)
	}
}

func TestRates(t *testing.T) {
	now := time.Unix(1_000_000, 0)
	r := newRates()
	r.now = func() time.Time { return now }
	r.start = now.Add(-time.Hour)
	for range 30 {
		r.add("x")
	}
	now = now.Add(30 * time.Second)
	for range 30 {
		r.add("x")
	}
	got, span := r.perSecond()
	if span != rateWindow || got["x"] != 1 {
		t.Fatalf("%v over %v s, want 1/s over %d s", got, span, rateWindow)
	}
	// A minute later the first 30 are out of the window; later still, all.
	now = now.Add(31 * time.Second)
	if got, _ := r.perSecond(); got["x"] != 0.5 {
		t.Fatalf("after 61 s: %v", got)
	}
	now = now.Add(time.Hour)
	r.add("y")
	if got, _ := r.perSecond(); got["x"] != 0 || math.Abs(got["y"]-1.0/60) > 1e-9 {
		t.Fatalf("an hour later: %v", got)
	}
	// Just started: the span is the time since the start.
	r2 := newRates()
	r2.add("z")
	if got, span := r2.perSecond(); span != 1 || got["z"] != 1 {
		t.Fatalf("at start: %v over %v", got, span)
	}
}
