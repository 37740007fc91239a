package api_test

import (
	"context"
	"io"
	"net"
	"net/http"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/gofiber/fiber/v2"

	"github.com/mlserve/mlserve/api"
)

// serveAPI runs a server without a predictor or a searcher on listen; the
// returned URL reaches it over loopback.
func serveAPI(t *testing.T, listen string, opts api.Options, mount func(*api.Server)) string {
	t.Helper()
	srv := api.New(opts, nil)
	if mount != nil {
		mount(srv)
	}
	ln, err := net.Listen("tcp", listen)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Go(func() { _ = srv.Serve(ctx, ln) })
	t.Cleanup(func() { cancel(); wg.Wait() })
	return "http://127.0.0.1:" + strconv.Itoa(ln.Addr().(*net.TCPAddr).Port)
}

func get(t *testing.T, url, key string) (int, http.Header, string) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, url, nil)
	if key != "" {
		req.Header.Set("Authorization", "Bearer "+key)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, resp.Header, string(b)
}

// TestPrivateRoutes: /search (and whatever is mounted with Private) needs
// the API key when one is set; without one it is served on a loopback
// listener only, unless opened on purpose; Immich's routes stay open.
func TestPrivateRoutes(t *testing.T) {
	ui := func(s *api.Server) {
		s.Private("/ui").Get("/", func(c *fiber.Ctx) error { return c.SendString("ui") })
	}
	t.Run("key set, loopback", func(t *testing.T) {
		base := serveAPI(t, "127.0.0.1:0", api.Options{APIKey: "s3cret"}, ui)
		code, h, body := get(t, base+"/search?q=dog", "")
		if code != 401 || !strings.Contains(h.Get("WWW-Authenticate"), "Bearer") || !strings.Contains(body, "MLSERVE_API_KEY") {
			t.Fatalf("no key: %d %q %s", code, h.Get("WWW-Authenticate"), body)
		}
		if code, _, _ := get(t, base+"/search?q=dog", "s3cre"); code != 401 {
			t.Fatalf("wrong key: %d", code)
		}
		// With the key, the route itself answers (no database here).
		if code, _, body := get(t, base+"/search?q=dog", "s3cret"); code != 503 || !strings.Contains(body, "MLSERVE_DATABASE_URL") {
			t.Fatalf("right key: %d %s", code, body)
		}
		if code, _, _ := get(t, base+"/ui/", ""); code != 401 {
			t.Fatalf("/ui without the key: %d", code)
		}
		if code, _, body := get(t, base+"/ui/", "s3cret"); code != 200 || body != "ui" {
			t.Fatalf("/ui with the key: %d %s", code, body)
		}
		if code, _, _ := get(t, base+"/metrics", ""); code != 200 {
			t.Fatalf("/metrics is open unless MetricsPrivate: %d", code)
		}
	})
	t.Run("no key, all interfaces", func(t *testing.T) {
		base := serveAPI(t, "0.0.0.0:0", api.Options{}, ui)
		for _, path := range []string{"/search?q=dog", "/ui/"} {
			code, _, body := get(t, base+path, "")
			if code != 403 || !strings.Contains(body, "MLSERVE_API_KEY") || !strings.Contains(body, "MLSERVE_SEARCH_PUBLIC=true") {
				t.Fatalf("%s: %d %s", path, code, body)
			}
		}
		for _, path := range []string{"/", "/ping", "/health/live", "/metrics"} {
			if code, _, _ := get(t, base+path, ""); code != 200 {
				t.Fatalf("%s: %d", path, code)
			}
		}
		// /predict stays open (here it has no models: 503, not 403).
		resp, err := http.Post(base+"/predict", "text/plain", strings.NewReader("x"))
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != 503 {
			t.Fatalf("/predict: %d", resp.StatusCode)
		}
	})
	t.Run("no key, loopback", func(t *testing.T) {
		base := serveAPI(t, "127.0.0.1:0", api.Options{}, ui)
		if code, _, _ := get(t, base+"/search?q=dog", ""); code != 503 {
			t.Fatalf("/search: %d", code)
		}
	})
	t.Run("no key, opened on purpose", func(t *testing.T) {
		base := serveAPI(t, "0.0.0.0:0", api.Options{PublicRoutes: true}, ui)
		if code, _, _ := get(t, base+"/search?q=dog", ""); code != 503 {
			t.Fatalf("/search: %d", code)
		}
	})
	t.Run("private metrics", func(t *testing.T) {
		base := serveAPI(t, "127.0.0.1:0", api.Options{APIKey: "s3cret", MetricsPrivate: true}, nil)
		if code, _, _ := get(t, base+"/metrics", ""); code != 401 {
			t.Fatalf("/metrics without the key: %d", code)
		}
		if code, _, body := get(t, base+"/metrics", "s3cret"); code != 200 || !strings.Contains(body, "mlserve_http_connections") {
			t.Fatalf("/metrics with the key: %d", code)
		}
	})
}

// TestAllowCIDRs: with MLSERVE_ALLOW_CIDRS, /predict refuses clients from
// elsewhere; the other Immich routes stay open.
func TestAllowCIDRs(t *testing.T) {
	post := func(base string) int {
		resp, err := http.Post(base+"/predict", "text/plain", strings.NewReader("x"))
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	base := serveAPI(t, "127.0.0.1:0", api.Options{AllowCIDRs: []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8")}}, nil)
	if code := post(base); code != 403 {
		t.Fatalf("/predict from outside the CIDRs: %d", code)
	}
	if code, _, _ := get(t, base+"/ping", ""); code != 200 {
		t.Fatalf("/ping: %d", code)
	}
	base = serveAPI(t, "127.0.0.1:0", api.Options{AllowCIDRs: []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8"), netip.MustParsePrefix("127.0.0.1/32")}}, nil)
	if code := post(base); code != 503 { // allowed; no models here
		t.Fatalf("/predict from an allowed address: %d", code)
	}
}
