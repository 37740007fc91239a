package api_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/mlserve/mlserve/api"
)

// downSearcher is a Searcher whose database is unreachable: the state
// serve is in until its background connect succeeds.
type downSearcher struct{}

func (downSearcher) SearchText(context.Context, string, api.SearchQuery) ([]api.SearchHit, error) {
	return nil, fmt.Errorf("%w: connecting to the database", api.ErrSearchUnavailable)
}

func (downSearcher) SearchImage(context.Context, []byte, api.SearchQuery) ([]api.SearchHit, error) {
	return nil, fmt.Errorf("%w: connecting to the database", api.ErrSearchUnavailable)
}

// TestWebPage: the embedded page at /ui/ (with its security headers and
// revalidation), served only with search configured; its access rule;
// the library routes answer 503 with the reason when their part is
// missing. (The page itself is tested in Chromium in cmd/mlserve.)
func TestWebPage(t *testing.T) {
	base := serveAPI(t, "127.0.0.1:0", api.Options{Searcher: downSearcher{}}, nil)
	client := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	resp, err := client.Get(base + "/ui")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 301 || resp.Header.Get("Location") != "/ui/" {
		t.Fatalf("/ui: %d %q", resp.StatusCode, resp.Header.Get("Location"))
	}
	code, h, page := get(t, base+"/ui/", "")
	if code != 200 || !strings.HasPrefix(h.Get("Content-Type"), "text/html") || !strings.Contains(page, "<main") {
		t.Fatalf("/ui/: %d %v", code, h)
	}
	for k, want := range map[string]string{
		"Content-Security-Policy": "script-src 'self'",
		"X-Content-Type-Options":  "nosniff",
		"X-Frame-Options":         "DENY",
		"Cache-Control":           "no-cache",
	} {
		if !strings.Contains(h.Get(k), want) {
			t.Errorf("%s: %q, want %q", k, h.Get(k), want)
		}
	}
	req, _ := http.NewRequest("GET", base+"/ui/", nil)
	req.Header.Set("If-None-Match", h.Get("ETag"))
	if resp, err := http.DefaultClient.Do(req); err != nil || resp.StatusCode != 304 {
		t.Fatalf("revalidation: %v %v", resp, err)
	} else {
		resp.Body.Close()
	}
	// Everything the page loads is there, from /ui/ only.
	refs := regexp.MustCompile(`(?:src|href)="([^"#]+)"`).FindAllStringSubmatch(page, -1)
	if len(refs) < 3 {
		t.Fatalf("page references %v", refs)
	}
	for _, r := range refs {
		if !strings.HasPrefix(r[1], "/ui/") {
			t.Errorf("the page loads %s from outside /ui/", r[1])
			continue
		}
		if code, h, _ := get(t, base+r[1], ""); code != 200 || h.Get("Content-Type") == "" {
			t.Errorf("%s: %d %q", r[1], code, h.Get("Content-Type"))
		}
	}
	if code, _, _ := get(t, base+"/ui/nothing.js", ""); code != 404 {
		t.Errorf("/ui/nothing.js: %d", code)
	}
	// No library behind the search: 503 saying what to configure.
	for _, path := range []string{"/people", "/people/1", "/people/1/assets", "/thumbs/1", "/faces/1/crop", "/search?ocr=x"} {
		if code, _, body := get(t, base+path, ""); code != 503 || !strings.Contains(body, "MLSERVE_DATABASE_URL") {
			t.Errorf("%s: %d %s", path, code, body)
		}
	}
	code, _, body := get(t, base+"/search?q=x", "")
	if code != 503 || !strings.Contains(body, "connecting to the database") {
		t.Errorf("/search with the database down: %d %s", code, body)
	}
	var st struct {
		Status     string
		Models     []any
		Thumbnails struct{ MaxBytes int64 }
	}
	code, _, body = get(t, base+"/status", "")
	if err := json.Unmarshal([]byte(body), &st); err != nil || code != 200 || st.Status != "ready" || st.Models == nil || st.Thumbnails.MaxBytes != api.DefaultThumbCacheBytes {
		t.Errorf("/status: %d %s", code, body)
	}

	t.Run("with a key, the page opens and asks for it", func(t *testing.T) {
		base := serveAPI(t, "127.0.0.1:0", api.Options{Searcher: downSearcher{}, APIKey: "s3cret"}, nil)
		if code, _, _ := get(t, base+"/ui/", ""); code != 200 {
			t.Fatalf("/ui/ without the key: %d", code)
		}
		for _, path := range []string{"/status", "/people", "/thumbs/1", "/faces/1/crop"} {
			if code, _, _ := get(t, base+path, ""); code != 401 {
				t.Fatalf("%s without the key: %d", path, code)
			}
		}
		if code, _, _ := get(t, base+"/status", "s3cret"); code != 200 {
			t.Fatalf("/status with the key: %d", code)
		}
	})
	t.Run("no key, all interfaces: closed", func(t *testing.T) {
		base := serveAPI(t, "0.0.0.0:0", api.Options{Searcher: downSearcher{}}, nil)
		for _, path := range []string{"/ui/", "/status", "/people"} {
			if code, _, body := get(t, base+path, ""); code != 403 || !strings.Contains(body, "MLSERVE_SEARCH_PUBLIC") {
				t.Fatalf("%s: %d %s", path, code, body)
			}
		}
	})
	t.Run("no search configured: no page", func(t *testing.T) {
		base := serveAPI(t, "127.0.0.1:0", api.Options{}, nil)
		if code, _, _ := get(t, base+"/ui/", ""); code != 404 {
			t.Fatalf("/ui/ without search: %d", code)
		}
	})
}

// memLibrary is a library of two people in memory, for the fuzz target:
// it stands in for the database so that the request parsing can be
// fuzzed at thousands of requests a second (the real library is tested
// end to end on PGlite in cmd/mlserve).
type memLibrary struct{}

func (memLibrary) ListPeople(_ context.Context, q api.PeopleQuery) ([]api.Person, error) {
	return []api.Person{{ID: 1, Name: "a", FaceCount: 3, AssetCount: 3, CoverFaceID: 7}}, nil
}

func (memLibrary) Person(_ context.Context, id int64) (api.Person, error) {
	if id > 2 {
		return api.Person{}, fmt.Errorf("%w: person %d", api.ErrNotFound, id)
	}
	return api.Person{ID: id, FaceCount: 3}, nil
}

func (m memLibrary) RenamePerson(ctx context.Context, id int64, name string) (api.Person, error) {
	if len([]rune(name)) > 100 {
		return api.Person{}, fmt.Errorf("%w: name too long", api.ErrInvalid)
	}
	p, err := m.Person(ctx, id)
	p.Name = name
	return p, err
}

func (m memLibrary) MergePeople(ctx context.Context, into int64, from []int64) (api.Person, error) {
	for _, id := range from {
		if _, err := m.Person(ctx, id); err != nil {
			return api.Person{}, err
		}
	}
	return m.Person(ctx, into)
}

func (m memLibrary) PersonAssets(ctx context.Context, id int64, limit, offset int) ([]api.PersonAsset, error) {
	if _, err := m.Person(ctx, id); err != nil {
		return nil, err
	}
	return []api.PersonAsset{{AssetID: 5, Path: "/p/a.jpg", RelPath: "a.jpg", Face: api.Face{ID: 7, AssetID: 5, ImageWidth: 10, ImageHeight: 10, Box: [4]float32{1, 1, 5, 5}}}}, nil
}

func (memLibrary) SearchOCR(_ context.Context, text string, q api.SearchQuery) ([]api.OCRHit, error) {
	return []api.OCRHit{{AssetID: 5, Path: "/p/a.jpg", Score: 1, Lines: []api.OCRLine{{Text: text}}}}, nil
}

func (memLibrary) AssetFile(_ context.Context, id int64) (string, error) {
	return "", fmt.Errorf("%w: asset %d", api.ErrNotFound, id)
}

func (memLibrary) FaceFile(_ context.Context, id int64) (string, api.Face, error) {
	return "", api.Face{}, fmt.Errorf("%w: face %d", api.ErrNotFound, id)
}

// FuzzLibraryRequest sends arbitrary methods, paths, queries and bodies to
// the library routes: every answer is a JSON document with a 2xx, 3xx or
// 4xx status (never a 5xx, a hang or a crash).
func FuzzLibraryRequest(f *testing.F) {
	srv := api.New(api.Options{Searcher: downSearcher{}, People: memLibrary{}, TextSearcher: memLibrary{}, Files: memLibrary{},
		PublicRoutes: true, RequestTimeout: 5 * time.Second}, nil)
	for _, s := range []struct{ method, target, body string }{
		{"PUT", "/people/1", `{"name": "Ada"}`},
		{"PATCH", "/people/2", `{"name": ""}`},
		{"PUT", "/people/1", `{"name": "x", "y": 1}`},
		{"PUT", "/people/1", `{"name": 5}`},
		{"PUT", "/people/1", `{"name": "a"} {}`},
		{"POST", "/people/1/merge", `{"ids": [2, 2, 3]}`},
		{"POST", "/people/1/merge", `{"ids": [1]}`},
		{"POST", "/people/9223372036854775807/merge", `{"ids": [-1]}`},
		{"GET", "/people?limit=5&offset=2&minFaces=1", ``},
		{"GET", "/people/1/assets?limit=1001", ``},
		{"GET", "/search?ocr=caf%C3%A9&limit=3", ``},
		{"GET", "/search?ocr=%FF", ``},
		{"GET", "/thumbs/3?size=64", ``},
		{"GET", "/faces/18446744073709551616/crop", ``},
	} {
		f.Add(s.method, s.target, s.body)
	}
	f.Fuzz(func(t *testing.T, method, target, body string) {
		switch method {
		case "GET", "PUT", "PATCH", "POST":
		default:
			return
		}
		if !strings.HasPrefix(target, "/people") && !strings.HasPrefix(target, "/search?ocr=") &&
			!strings.HasPrefix(target, "/thumbs/") && !strings.HasPrefix(target, "/faces/") {
			return
		}
		u, err := url.ParseRequestURI(target)
		if err != nil {
			return
		}
		// A request line cannot hold whitespace in its target (it would
		// be another request line): httptest refuses to build one.
		if strings.ContainsAny(u.String(), " \t\r\n") {
			return
		}
		req := httptest.NewRequest(method, u.String(), bytes.NewReader([]byte(body)))
		req.Header.Set("Content-Length", strconv.Itoa(len(body)))
		if method != "GET" {
			req.Header.Set("Content-Type", "application/json")
		}
		resp, err := srv.App().Test(req, int((5 * time.Second).Milliseconds()))
		if err != nil {
			t.Fatalf("%s %q %q: no answer: %v", method, target, body, err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode >= 500 {
			t.Fatalf("%s %q %q: %d %s", method, target, body, resp.StatusCode, b)
		}
		if resp.StatusCode != 304 && !json.Valid(b) {
			t.Fatalf("%s %q %q: %d, not JSON: %q", method, target, body, resp.StatusCode, b)
		}
	})
}
