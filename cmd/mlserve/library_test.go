package main

import (
	"bytes"
	"context"
	"encoding/json"
	"image"
	"image/color"
	"image/jpeg"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/mlserve/mlserve/internal/testenv"
	"github.com/mlserve/mlserve/search"
)

// library is a served, indexed folder with people and text in photos:
// the face-api sample photos (sample1 three times: as it is, mirrored and
// brightened, so that each of its three people has three faces; sample4's
// four people once each, too few to be shown), and two pages of rendered
// text. Everything is real: the face models, PP-OCRv4, PGlite; only CLIP
// is a generated graph (its neighbours are arbitrary, but an image is
// nearest to itself).
type library struct {
	dir    string
	schema string
	base   string
	stop   func()
	// people are the three people of sample1, most faces first.
	people []personJSON
}

type personJSON struct {
	ID          int64  `json:"id"`
	Name        string `json:"name"`
	FaceCount   int    `json:"faceCount"`
	AssetCount  int    `json:"assetCount"`
	CoverFaceID int64  `json:"coverFaceId"`
	Thumbnail   string `json:"thumbnail"`
}

// libraryPhotos writes the library's files into dir.
func libraryPhotos(t *testing.T, dir string) {
	t.Helper()
	copyFile := func(name string) []byte {
		b, err := os.ReadFile(testenv.TestData(t, "photos/"+name))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, name), b, 0o644); err != nil {
			t.Fatal(err)
		}
		return b
	}
	s1, err := jpeg.Decode(bytes.NewReader(copyFile("sample1.jpg")))
	if err != nil {
		t.Fatal(err)
	}
	copyFile("sample4.jpg")
	b := s1.Bounds()
	mirror := image.NewRGBA(b)
	bright := image.NewRGBA(b)
	lift := func(v uint32) uint8 { return uint8(min(int(v>>8)+40, 255)) }
	for y := b.Min.Y; y < b.Max.Y; y++ {
		for x := b.Min.X; x < b.Max.X; x++ {
			c := s1.At(x, y)
			mirror.Set(b.Max.X-1-(x-b.Min.X), y, c)
			r, g, bl, _ := c.RGBA()
			bright.Set(x, y, color.RGBA{lift(r), lift(g), lift(bl), 255})
		}
	}
	for name, im := range map[string]image.Image{"sample1-mirrored.jpg": mirror, "sample1-bright.jpg": bright} {
		var buf bytes.Buffer
		if err := jpeg.Encode(&buf, im, &jpeg.Options{Quality: 92}); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, name), buf.Bytes(), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	writeTextPNG(t, filepath.Join(dir, "note.png"), "Meet at the lighthouse")
	writeTextPNG(t, filepath.Join(dir, "receipt.png"), "Receipt 42\nTotal 9.50")
}

// newLibrary indexes the library with faces and text, groups the faces
// into people, and serves it (in process, on loopback, no API key).
func newLibrary(t *testing.T) *library {
	t.Helper()
	cliEnv(t, "")
	installAnalysisModels(t)
	l := &library{dir: t.TempDir(), schema: cliSchema(t)}
	libraryPhotos(t, l.dir)
	start := time.Now()
	out := runCLI(t, "index", "--schema", l.schema, "--faces", "buffalo_l", "--ocr", "PP-OCRv5_mobile", l.dir)
	if !strings.Contains(out, "indexed 6 of 6 images (0 failed)") {
		t.Fatalf("index output:\n%s", out)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	st, err := search.Open(ctx, search.Options{URL: testenv.DatabaseURL(t), Schema: l.schema}, nil)
	if err != nil {
		t.Fatal(err)
	}
	res, err := st.ClusterFaces(ctx, search.ClusterOptions{})
	st.Close()
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("indexed and clustered in %s: %+v", time.Since(start).Round(time.Millisecond), res)

	t.Setenv("MLSERVE_SEARCH_SCHEMA", l.schema)
	l.base, l.stop = serveInProcess(t)
	l.waitDatabase(t, "")
	var list struct{ People []personJSON }
	if code, body := l.call(t, "GET", "/people", "", nil, &list); code != 200 {
		t.Fatalf("GET /people: %d %s", code, body)
	}
	l.people = list.People
	if len(l.people) != 3 {
		t.Fatalf("people %+v; want sample1's three, with 3 faces each (sample4's four have one face each)", l.people)
	}
	for _, p := range l.people {
		if p.FaceCount != 3 || p.AssetCount != 3 || p.Name != "" || p.Thumbnail != "/faces/"+strconv.FormatInt(p.CoverFaceID, 10)+"/crop" {
			t.Fatalf("person %+v", p)
		}
	}
	return l
}

// restart serves the library again with the environment as it is now.
func (l *library) restart(t *testing.T, key string) {
	t.Helper()
	l.stop()
	l.base, l.stop = serveInProcess(t)
	l.waitDatabase(t, key)
}

// waitDatabase waits until the server has connected to the database.
func (l *library) waitDatabase(t *testing.T, key string) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		code, body := l.call(t, "GET", "/people?limit=1", key, nil, nil)
		if code == 200 {
			return
		}
		if code != 503 || time.Now().After(deadline) {
			t.Fatalf("GET /people: %d %s", code, body)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// call sends a request (body: JSON of a value, or raw bytes) and decodes a
// 2xx JSON answer into out.
func (l *library) call(t *testing.T, method, path, key string, body any, out any) (int, string) {
	t.Helper()
	code, _, b := l.request(t, method, path, key, body, nil)
	if out != nil && code/100 == 2 {
		if err := json.Unmarshal(b, out); err != nil {
			t.Fatalf("%s %s: %v in %s", method, path, err, b)
		}
	}
	return code, string(b)
}

func (l *library) request(t *testing.T, method, path, key string, body any, header http.Header) (int, http.Header, []byte) {
	t.Helper()
	var rd io.Reader
	ctype := ""
	switch b := body.(type) {
	case nil:
	case []byte:
		rd, ctype = bytes.NewReader(b), "application/octet-stream"
	default:
		j, err := json.Marshal(b)
		if err != nil {
			t.Fatal(err)
		}
		rd, ctype = bytes.NewReader(j), "application/json"
	}
	req, err := http.NewRequest(method, l.base+path, rd)
	if err != nil {
		t.Fatal(err)
	}
	if ctype != "" {
		req.Header.Set("Content-Type", ctype)
	}
	for k, v := range header {
		req.Header[k] = v
	}
	if key != "" {
		req.Header.Set("Authorization", "Bearer "+key)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, resp.Header, b
}

// image fetches an image route and decodes it.
func (l *library) image(t *testing.T, path string) (image.Image, http.Header) {
	t.Helper()
	code, h, b := l.request(t, "GET", path, "", nil, nil)
	if code != 200 || h.Get("Content-Type") != "image/jpeg" {
		t.Fatalf("GET %s: %d %s %.200s", path, code, h.Get("Content-Type"), b)
	}
	im, err := jpeg.Decode(bytes.NewReader(b))
	if err != nil {
		t.Fatalf("GET %s: %v", path, err)
	}
	return im, h
}

// TestLibrary serves an indexed library and checks the library routes
// over HTTP, then the web page in headless Chromium (ui_test.go), on one
// server.
func TestLibrary(t *testing.T) {
	l := newLibrary(t)
	t.Run("api", func(t *testing.T) { testLibraryAPI(t, l) })
	t.Run("browser", func(t *testing.T) { testBrowser(t, l) })
}

type searchHits struct {
	Results []struct {
		AssetID   string
		Path      string
		Distance  float64
		Thumbnail string
	}
}

type ocrHits struct {
	Results []struct {
		AssetID   int64
		Path      string
		Score     float64
		Thumbnail string
		Lines     []struct {
			Index int
			Text  string
			Box   [8]float32
			Score float64
		}
	}
}

type personAssets struct {
	Assets []struct {
		AssetID int64
		Path    string
		Face    struct {
			ID                      int64
			ImageWidth, ImageHeight int
			Box                     [4]float32
			Thumbnail               string
		}
		Thumbnail string
	}
}

func testLibraryAPI(t *testing.T, l *library) {
	p := l.people[0]
	pid := strconv.FormatInt(p.ID, 10)

	t.Run("search results carry thumbnails", func(t *testing.T) {
		var r searchHits
		if code, body := l.call(t, "GET", "/search?limit=10&q=people+at+a+table", "", nil, &r); code != 200 || len(r.Results) != 6 {
			t.Fatalf("%d %s", code, body)
		}
		for _, h := range r.Results {
			if h.Thumbnail != "/thumbs/"+h.AssetID || strings.HasPrefix(h.Path, "/") {
				t.Fatalf("hit %+v", h)
			}
		}
		im, hdr := l.image(t, r.Results[0].Thumbnail+"?size=128")
		if b := im.Bounds(); max(b.Dx(), b.Dy()) != 128 {
			t.Fatalf("size=128 thumbnail is %v", b)
		}
		if hdr.Get("ETag") == "" || !strings.Contains(hdr.Get("Cache-Control"), "max-age=") {
			t.Fatalf("thumbnail headers %v", hdr)
		}
		// The client's copy is current: 304, no body.
		code, _, b := l.request(t, "GET", r.Results[0].Thumbnail+"?size=128", "", nil, http.Header{"If-None-Match": {hdr.Get("ETag")}})
		if code != 304 || len(b) != 0 {
			t.Fatalf("If-None-Match: %d, %d bytes", code, len(b))
		}
		// Sizes are rounded up to 128, 256, 512, 1024.
		if im, _ := l.image(t, r.Results[0].Thumbnail+"?size=300"); max(im.Bounds().Dx(), im.Bounds().Dy()) != 512 {
			t.Fatalf("size=300 thumbnail is %v, want 512 on the long side", im.Bounds())
		}
	})

	t.Run("people", func(t *testing.T) {
		var got personJSON
		if code, body := l.call(t, "GET", "/people/"+pid, "", nil, &got); code != 200 || got != p {
			t.Fatalf("GET /people/%s: %d %s, want %+v", pid, code, body, p)
		}
		face, hdr := l.image(t, p.Thumbnail)
		if b := face.Bounds(); b.Dx() != b.Dy() || b.Dx() > 256 || b.Dx() < 32 {
			t.Fatalf("face crop %v: want a square of at most 256", b)
		}
		if hdr.Get("X-Content-Type-Options") != "nosniff" {
			t.Fatalf("face crop headers %v", hdr)
		}
		var pa personAssets
		if code, body := l.call(t, "GET", "/people/"+pid+"/assets", "", nil, &pa); code != 200 || len(pa.Assets) != 3 {
			t.Fatalf("GET /people/%s/assets: %d %s", pid, code, body)
		}
		for _, a := range pa.Assets {
			if !strings.HasPrefix(a.Path, "sample1") || a.Thumbnail != "/thumbs/"+strconv.FormatInt(a.AssetID, 10) ||
				a.Face.Thumbnail != "/faces/"+strconv.FormatInt(a.Face.ID, 10)+"/crop" || a.Face.ImageWidth == 0 || a.Face.Box[2] <= a.Face.Box[0] {
				t.Fatalf("asset %+v", a)
			}
		}
		// Text search inside one person's photos: only theirs.
		var r searchHits
		if code, body := l.call(t, "GET", "/search?person="+pid+"&q=a+smile", "", nil, &r); code != 200 || len(r.Results) != 3 {
			t.Fatalf("person search: %d %s", code, body)
		}
		for _, h := range r.Results {
			if !strings.HasPrefix(h.Path, "sample1") || h.Thumbnail == "" {
				t.Fatalf("person search hit %+v", h)
			}
		}
		// Rename (PUT and PATCH), read back, clear.
		if code, body := l.call(t, "PUT", "/people/"+pid, "", map[string]string{"name": "  Grace Hopper "}, &got); code != 200 || got.Name != "Grace Hopper" {
			t.Fatalf("PUT: %d %s", code, body)
		}
		if code, body := l.call(t, "GET", "/people/"+pid, "", nil, &got); code != 200 || got.Name != "Grace Hopper" {
			t.Fatalf("GET after PUT: %d %s", code, body)
		}
		if code, body := l.call(t, "PATCH", "/people/"+pid, "", map[string]string{"name": ""}, &got); code != 200 || got.Name != "" {
			t.Fatalf("PATCH: %d %s", code, body)
		}
	})

	t.Run("text in photos", func(t *testing.T) {
		var r ocrHits
		if code, body := l.call(t, "GET", "/search?ocr=LIGHTHOUSE", "", nil, &r); code != 200 || len(r.Results) != 1 {
			t.Fatalf("%d %s", code, body)
		}
		h := r.Results[0]
		if h.Path != "note.png" || h.Score != 1 || h.Thumbnail != "/thumbs/"+strconv.FormatInt(h.AssetID, 10) ||
			len(h.Lines) != 1 || !strings.Contains(h.Lines[0].Text, "lighthouse") {
			t.Fatalf("hit %+v", h)
		}
		for _, v := range h.Lines[0].Box {
			if v < 0 || v > 1 || h.Lines[0].Box == [8]float32{} {
				t.Fatalf("box %v: want corners normalised to 0..1", h.Lines[0].Box)
			}
		}
		// The words are on two lines: both lines come back.
		if code, body := l.call(t, "GET", "/search?ocr=42+total", "", nil, &r); code != 200 || len(r.Results) != 1 || len(r.Results[0].Lines) != 2 {
			t.Fatalf("two lines: %d %s", code, body)
		}
		if code, body := l.call(t, "GET", "/search?ocr=zebra+crossing", "", nil, &r); code != 200 || len(r.Results) != 0 {
			t.Fatalf("no match: %d %s", code, body)
		}
	})

	t.Run("status", func(t *testing.T) {
		var st struct {
			Status  string
			Models  []struct{ Task, Type, Model, Provider string }
			Library struct {
				Available                        bool
				Mode                             string
				Assets, Faces, People, TextLines int
				FuzzyText, Unaccent              bool
			}
		}
		if code, body := l.call(t, "GET", "/status", "", nil, &st); code != 200 {
			t.Fatalf("%d %s", code, body)
		}
		lib := st.Library
		if st.Status != "ready" || !lib.Available || lib.Mode != "mlserve" || lib.Assets != 6 || lib.Faces != 13 || lib.People != 3 ||
			lib.TextLines < 3 || !lib.FuzzyText || !lib.Unaccent || len(st.Models) == 0 || st.Models[0].Provider != "CPU" {
			t.Fatalf("status %+v", st)
		}
	})

	t.Run("refusals", func(t *testing.T) {
		for _, c := range []struct {
			method, path string
			body         any
			code         int
		}{
			{"GET", "/people/999999", nil, 404},
			{"GET", "/people/abc", nil, 400},
			{"GET", "/people/0", nil, 400},
			{"GET", "/people/999999/assets", nil, 404},
			{"GET", "/people?limit=0", nil, 400},
			{"GET", "/people?offset=-1", nil, 400},
			{"GET", "/thumbs/999999", nil, 404},
			{"GET", "/thumbs/..%2F..%2Fetc%2Fpasswd", nil, 400},
			{"GET", "/thumbs/1?size=0", nil, 400},
			{"GET", "/thumbs/1?size=4096", nil, 400},
			{"GET", "/faces/999999/crop", nil, 404},
			{"GET", "/search?person=999999&q=x", nil, 404},
			{"GET", "/search?person=x&q=x", nil, 400},
			{"GET", "/search?ocr=", nil, 400},
			{"GET", "/search?ocr=a&q=b", nil, 400},
			{"GET", "/search?ocr=" + strings.Repeat("a", 300), nil, 400},
			{"PUT", "/people/" + pid, map[string]string{"name": strings.Repeat("n", 101)}, 422},
			{"PUT", "/people/" + pid, map[string]string{"nom": "x"}, 422},
			{"PUT", "/people/" + pid, map[string]any{}, 422},
			{"PUT", "/people/" + pid, []byte(`{"name": "x"}`), 415},
			{"PUT", "/people/" + pid, map[string]string{"name": "x\x07"}, 422},
			{"PUT", "/people/999999", map[string]string{"name": "x"}, 404},
			{"POST", "/people/" + pid + "/merge", map[string]any{"ids": []int64{p.ID}}, 422},
			{"POST", "/people/" + pid + "/merge", map[string]any{"ids": []int64{}}, 422},
			{"POST", "/people/" + pid + "/merge", map[string]any{"ids": []int64{999999}}, 404},
		} {
			code, _, b := l.request(t, c.method, c.path, "", c.body, nil)
			if code != c.code || !bytes.Contains(b, []byte(`"detail"`)) {
				t.Errorf("%s %s: %d %s; want %d with a detail", c.method, c.path, code, b, c.code)
			}
		}
		big := map[string]string{"name": strings.Repeat("x", 20<<10)}
		if code, _, _ := l.request(t, "PUT", "/people/"+pid, "", big, nil); code != 413 {
			t.Errorf("a 20 KiB body: %d, want 413", code)
		}
		// Nothing changed.
		var got personJSON
		if l.call(t, "GET", "/people/"+pid, "", nil, &got); got != p {
			t.Fatalf("after refusals: %+v, want %+v", got, p)
		}
	})
}
