package api_test

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"mime/multipart"
	"net"
	"net/http"
	"net/textproto"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/mlserve/mlserve/api"
	"github.com/mlserve/mlserve/internal/testenv"
	"github.com/mlserve/mlserve/modelgen"
	"github.com/mlserve/mlserve/models"
	"github.com/mlserve/mlserve/models/hubtest"
	"github.com/mlserve/mlserve/pool"
)

// hardStack is a server as `mlserve serve` builds it: a real pool
// service behind an admission of workers + queue, on a loopback port.
type hardStack struct {
	url  string
	addr string
	svc  *pool.Service
	adm  *pool.Admission
	reg  *prometheus.Registry
	stop func() // ends Serve (as SIGTERM does) and waits for it
}

type hardOptions struct {
	// slow makes the visual tower a graph that takes tens of ms.
	slow    bool
	workers pool.WorkersOptions
	// api overrides; Predictor, Admission, Health, Registry and Metrics
	// are set by the helper.
	api    api.Options
	listen string // default 127.0.0.1:0
}

// repos caches the generated repositories (generating the graphs takes
// seconds under the race detector); the hub only reads them.
var repos struct {
	sync.Mutex
	m map[bool]map[string][]byte
}

func clipVisualRepo(t testing.TB, slow bool) map[string][]byte {
	t.Helper()
	repos.Lock()
	defer repos.Unlock()
	if r, ok := repos.m[slow]; ok {
		return r
	}
	g := loadGolden(t, "in/photo_28.jpg")
	repo, _, _ := clipRepo(t, g)
	if slow {
		repo["visual/model.onnx"] = modelgen.ViT{ImageSize: g.Size, Patch: 4, Width: 256, Layers: 8, Heads: 4, MLP: 1024, Dim: 512}.Model().Marshal()
	}
	if repos.m == nil {
		repos.m = map[bool]map[string][]byte{}
	}
	repos.m[slow] = repo
	return repo
}

func startHard(t testing.TB, o hardOptions) *hardStack {
	t.Helper()
	repo := clipVisualRepo(t, o.slow)
	rt := testenv.Runtime(t)
	hub := hubtest.New(t, hubtest.Options{})
	hub.AddRepo("immich-app/ViT-B-32__openai", repo)
	store, err := models.NewStore(models.StoreOptions{
		CacheDir: t.TempDir(), HFEndpoint: hub.URL(), HTTPClient: hub.Client(),
		MinBackoff: time.Millisecond, MaxBackoff: 10 * time.Millisecond,
	}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if o.workers.Workers == 0 {
		o.workers = pool.WorkersOptions{Workers: 2, Queue: 8}
	}
	reg := prometheus.NewRegistry()
	metrics := api.NewMetrics(reg)
	svc, err := pool.NewService(pool.ServiceOptions{Workers: o.workers, Metrics: metrics}, store, rt, nil)
	if err != nil {
		t.Fatal(err)
	}
	adm := pool.NewAdmission(pool.AdmissionOptions{Limit: o.workers.Workers + o.workers.Queue})
	opts := o.api
	opts.Predictor, opts.Admission, opts.Health, opts.Registry, opts.Metrics = svc, adm, svc, reg, metrics
	srv := api.New(opts, nil)
	listen := o.listen
	if listen == "" {
		listen = "127.0.0.1:0"
	}
	ln, err := net.Listen("tcp", listen)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ctx, ln) }()
	var once sync.Once
	st := &hardStack{svc: svc, adm: adm, reg: reg}
	st.stop = func() {
		once.Do(func() {
			cancel()
			if err := <-done; err != nil {
				t.Errorf("Serve: %v", err)
			}
			svc.Close()
		})
	}
	t.Cleanup(st.stop)
	port := ln.Addr().(*net.TCPAddr).Port
	st.addr = "127.0.0.1:" + strconv.Itoa(port)
	st.url = "http://" + st.addr
	return st
}

// metric reads a gauge or counter (the sum over all label values whose
// labels include want) from reg.
func metric(t testing.TB, reg *prometheus.Registry, name string, want map[string]string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	sum := 0.0
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	next:
		for _, m := range mf.GetMetric() {
			labels := map[string]string{}
			for _, l := range m.GetLabel() {
				labels[l.GetName()] = l.GetValue()
			}
			for k, v := range want {
				if labels[k] != v {
					continue next
				}
			}
			switch {
			case m.GetGauge() != nil:
				sum += m.GetGauge().GetValue()
			case m.GetCounter() != nil:
				sum += m.GetCounter().GetValue()
			case m.GetHistogram() != nil:
				sum += float64(m.GetHistogram().GetSampleCount())
			}
		}
	}
	return sum
}

// immichBody is a /predict body as the Immich server sends it.
func immichBody(t testing.TB, entries string, img []byte) ([]byte, string) {
	t.Helper()
	var buf bytes.Buffer
	w := multipart.NewWriter(&buf)
	_ = w.WriteField("entries", entries)
	h := textproto.MIMEHeader{}
	h.Set("Content-Disposition", `form-data; name="image"; filename="blob"`)
	h.Set("Content-Type", "application/octet-stream")
	p, _ := w.CreatePart(h)
	_, _ = p.Write(img)
	w.Close()
	return buf.Bytes(), w.FormDataContentType()
}

const visualEntries = `{"clip":{"visual":{"modelName":"ViT-B-32__openai"}}}`

// rawRequest writes a request's head on a new connection, and then body
// (which may be only a part of what the head declares).
func rawRequest(t testing.TB, addr, head string, body []byte) net.Conn {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.WriteString(c, head); err != nil {
		t.Fatal(err)
	}
	if len(body) > 0 {
		if _, err := c.Write(body); err != nil {
			t.Fatal(err)
		}
	}
	return c
}

func readReply(t testing.TB, c net.Conn, timeout time.Duration) (*http.Response, string) {
	t.Helper()
	_ = c.SetReadDeadline(time.Now().Add(timeout))
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatalf("reading the answer: %v", err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	return resp, string(b)
}

func rssBytes(t testing.TB) int64 {
	t.Helper()
	b, err := os.ReadFile("/proc/self/statm")
	if err != nil {
		t.Skipf("no /proc: %v", err)
	}
	f := strings.Fields(string(b))
	pages, _ := strconv.ParseInt(f[1], 10, 64)
	return pages * int64(os.Getpagesize())
}

// within is a latency bound from issue 13, ten times looser under the
// race detector.
func within(d time.Duration) time.Duration {
	if raceEnabled {
		return 10 * d
	}
	return d
}

func ping(t testing.TB, url string) time.Duration {
	t.Helper()
	start := time.Now()
	resp, err := http.Get(url + "/ping")
	if err != nil {
		t.Fatalf("/ping: %v", err)
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("/ping: %d", resp.StatusCode)
	}
	return time.Since(start)
}

// TestIdleConnections: 1,000 connections that send nothing neither slow
// /ping down nor stay open past the read timeout; a kept-alive
// connection is closed after the keep-alive timeout.
func TestIdleConnections(t *testing.T) {
	const readTimeout = 2 * time.Second
	st := startHard(t, hardOptions{api: api.Options{ReadTimeout: readTimeout, KeepAlive: time.Second}})
	conns := make([]net.Conn, 0, 1000)
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	opened := time.Now()
	for range 1000 {
		c, err := net.Dial("tcp", st.addr)
		if err != nil {
			t.Fatalf("connection %d: %v", len(conns), err)
		}
		conns = append(conns, c)
	}
	var worst time.Duration
	for range 20 {
		worst = max(worst, ping(t, st.url))
	}
	t.Logf("/ping with 1,000 idle connections open: worst of 20 %v", worst)
	if worst > within(50*time.Millisecond) {
		t.Errorf("/ping took %v with 1,000 idle connections", worst)
	}
	// Each idle connection is closed by the server once the read timeout
	// passes: a read sees the end of the stream (after fasthttp's 408).
	var wg sync.WaitGroup
	var mu sync.Mutex
	var last time.Duration
	stillOpen := 0
	for _, c := range conns {
		wg.Go(func() {
			_ = c.SetReadDeadline(opened.Add(readTimeout + 5*time.Second))
			_, err := io.Copy(io.Discard, c)
			mu.Lock()
			defer mu.Unlock()
			if errors.Is(err, os.ErrDeadlineExceeded) {
				stillOpen++
				return
			}
			last = max(last, time.Since(opened))
		})
	}
	wg.Wait()
	t.Logf("idle connections closed by the server within %v of opening (read timeout %v)", last.Round(10*time.Millisecond), readTimeout)
	if stillOpen > 0 {
		t.Fatalf("%d of 1,000 idle connections still open %v after the read timeout", stillOpen, 5*time.Second)
	}

	// Keep-alive: after one answered request the connection may stay idle
	// for the keep-alive timeout only.
	c := rawRequest(t, st.addr, "GET /ping HTTP/1.1\r\nHost: x\r\n\r\n", nil)
	defer c.Close()
	br := bufio.NewReader(c)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	idleFrom := time.Now()
	_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := br.ReadByte(); err != io.EOF {
		t.Fatalf("kept-alive connection: %v, want the server to close it", err)
	}
	if d := time.Since(idleFrom); d < 900*time.Millisecond || d > within(2*time.Second) {
		t.Fatalf("kept-alive connection closed after %v, keep-alive timeout 1s", d)
	}
}

// TestSlowHeaders: a client that sends its headers a line at a time
// (slowloris) is cut off at the read timeout.
func TestSlowHeaders(t *testing.T) {
	st := startHard(t, hardOptions{api: api.Options{ReadTimeout: time.Second}})
	c := rawRequest(t, st.addr, "GET /ping HTTP/1.1\r\n", nil)
	defer c.Close()
	start := time.Now()
	stop := make(chan struct{})
	defer close(stop)
	go func() {
		for {
			select {
			case <-stop:
				return
			case <-time.After(100 * time.Millisecond):
			}
			if _, err := io.WriteString(c, "X-A: b\r\n"); err != nil {
				return
			}
		}
	}()
	_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
	b, _ := io.ReadAll(c)
	t.Logf("cut off after %v: %.30q", time.Since(start).Round(time.Millisecond), b)
	if d := time.Since(start); d > within(2500*time.Millisecond) {
		t.Fatalf("a client trickling headers kept its connection %v (read timeout 1s)", d)
	}
}

// TestDeclaredBodyNotAllocated: ten clients that declare 100 MB bodies
// and send one byte reserve nothing: the process's RSS grows by less than
// 50 MB, /ping stays fast, and each is cut off at the read timeout.
func TestDeclaredBodyNotAllocated(t *testing.T) {
	st := startHard(t, hardOptions{api: api.Options{ReadTimeout: 2 * time.Second, MaxBodyBytes: 200 << 20}})
	before := rssBytes(t)
	var conns []net.Conn
	for range 10 {
		head := "POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: multipart/form-data; boundary=b\r\nContent-Length: 104857600\r\n\r\n"
		conns = append(conns, rawRequest(t, st.addr, head, []byte("-")))
	}
	// And ten that send 20 KiB of it, so that the handler runs and waits.
	body, ct := immichBody(t, visualEntries, bytes.Repeat([]byte{0xff}, 20<<10))
	for range 10 {
		head := "POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: " + ct + "\r\nContent-Length: 104857600\r\n\r\n"
		conns = append(conns, rawRequest(t, st.addr, head, body[:20<<10]))
	}
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	time.Sleep(500 * time.Millisecond)
	grew := rssBytes(t) - before
	worst := time.Duration(0)
	for range 10 {
		worst = max(worst, ping(t, st.url))
	}
	t.Logf("20 clients declaring 100 MB: RSS +%.1f MB, /ping worst of 10 %v", float64(grew)/(1<<20), worst)
	if grew > 50<<20 && !raceEnabled {
		t.Errorf("RSS grew by %d MB", grew>>20)
	}
	if worst > within(50*time.Millisecond) {
		t.Errorf("/ping took %v", worst)
	}
	// Each is answered (408, or a closed connection) at the read timeout.
	for i, c := range conns {
		_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
		b, err := io.ReadAll(c)
		if errors.Is(err, os.ErrDeadlineExceeded) {
			t.Fatalf("client %d still waiting 5 s after the read timeout", i)
		}
		if len(b) > 0 && !strings.HasPrefix(string(b), "HTTP/1.1 408") {
			t.Errorf("client %d: %.60q", i, b)
		}
	}
}

// chunkedUpload sends an endless chunked body until the server answers;
// it returns the answer and how many body bytes the client wrote.
func chunkedUpload(t testing.TB, addr string) (status int, written int64) {
	t.Helper()
	c := rawRequest(t, addr, "POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: multipart/form-data; boundary=b\r\nTransfer-Encoding: chunked\r\n\r\n", nil)
	defer c.Close()
	done := make(chan struct{})
	var n int64
	go func() {
		defer close(done)
		chunk := append([]byte(fmt.Sprintf("%x\r\n", 64<<10)), bytes.Repeat([]byte("x"), 64<<10)...)
		chunk = append(chunk, "\r\n"...)
		first := "--b\r\nContent-Disposition: form-data; name=\"image\"; filename=\"blob\"\r\n\r\n"
		if _, err := fmt.Fprintf(c, "%x\r\n%s\r\n", len(first), first); err != nil {
			return
		}
		for {
			if _, err := c.Write(chunk); err != nil {
				return
			}
			n += 64 << 10
		}
	}()
	_ = c.SetReadDeadline(time.Now().Add(30 * time.Second))
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatalf("no answer to an endless upload: %v", err)
	}
	resp.Body.Close()
	c.Close()
	<-done
	return resp.StatusCode, n
}

// TestChunkedOverLimit: endless chunked uploads are answered 413 once the
// limit has been read, ten at once without holding more than the limit
// each; at the default limit (100 MiB) and budget (128 MiB) the budget
// refuses most of the ten (503) before they reach the limit, and RSS
// stays under +200 MB. (Under the race detector, which makes pushing
// gigabytes slow and adds shadow memory, only the 8 MiB case runs, and
// RSS is not checked.)
func TestChunkedOverLimit(t *testing.T) {
	for _, c := range []struct {
		name  string
		limit int64
		all   bool // all ten get 413
	}{{"defaults", 100 << 20, false}, {"8 MiB limit", 8 << 20, true}} {
		t.Run(c.name, func(t *testing.T) {
			if raceEnabled && c.limit > 8<<20 {
				t.Skip("too slow under the race detector")
			}
			st := startHard(t, hardOptions{api: api.Options{MaxBodyBytes: c.limit}})
			before := rssBytes(t)
			var mu sync.Mutex
			codes := map[int]int{}
			var wg sync.WaitGroup
			for range 10 {
				wg.Go(func() {
					start := time.Now()
					code, n := chunkedUpload(t, st.addr)
					mu.Lock()
					codes[code]++
					mu.Unlock()
					if code != 413 && (c.all || code != 503) {
						t.Errorf("status %d", code)
					}
					// The client writes into socket buffers ahead of the server.
					if n > c.limit+16<<20 {
						t.Errorf("the client wrote %d MB before the answer (limit %d MB)", n>>20, c.limit>>20)
					}
					t.Logf("%d after %v, %.1f MB written by the client", code, time.Since(start).Round(time.Millisecond), float64(n)/(1<<20))
				})
			}
			wg.Wait()
			grew := rssBytes(t) - before
			t.Logf("ten endless chunked uploads, limit %d MiB: %v, RSS +%.1f MB", c.limit>>20, codes, float64(grew)/(1<<20))
			// At the defaults, which of the ten first reaches the limit or
			// is refused by the budget depends on how the machine shares
			// its time between them: any mix of 413 and 503 is right.
			if grew > 200<<20 && !raceEnabled {
				t.Errorf("RSS grew by %d MB", grew>>20)
			}
			deadline := time.Now().Add(10 * time.Second)
			for metric(t, st.reg, "mlserve_http_inflight_body_bytes", nil) != 0 {
				if time.Now().After(deadline) {
					t.Fatal("in-flight bytes never returned to 0 after the uploads ended")
				}
				time.Sleep(10 * time.Millisecond)
			}
		})
	}
}

// TestInflightByteBudget: a request whose bytes would pass the in-flight
// budget gets 503 with Retry-After; once the bytes held are released the
// next one is served.
func TestInflightByteBudget(t *testing.T) {
	st := startHard(t, hardOptions{api: api.Options{MaxBodyBytes: 1 << 20, MaxInflightBytes: 1 << 20}})
	img, _ := os.ReadFile(loadGolden(t, "in/photo_28.jpg").Input)
	// A client that sends 900 KiB of a 1000 KiB body and waits.
	big, ct := immichBody(t, visualEntries, append(bytes.Repeat([]byte{0}, 1000<<10), img...))
	head := fmt.Sprintf("POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: %s\r\nContent-Length: %d\r\n\r\n", ct, len(big))
	hog := rawRequest(t, st.addr, head, big[:900<<10])
	defer hog.Close()
	deadline := time.Now().Add(10 * time.Second)
	for metric(t, st.reg, "mlserve_http_inflight_body_bytes", nil) < 800<<10 {
		if time.Now().After(deadline) {
			t.Fatal("the server never read the first client's bytes")
		}
		time.Sleep(10 * time.Millisecond)
	}
	body, ct := immichBody(t, visualEntries, append(bytes.Repeat([]byte{1}, 200<<10), img...))
	r := post(t, st.url, ct, body)
	if r.code != 503 || r.header.Get("Retry-After") == "" || !strings.Contains(r.detail, "request bytes") {
		t.Fatalf("over the budget: %d %q %s", r.code, r.header.Get("Retry-After"), r.raw)
	}
	hog.Close()
	for metric(t, st.reg, "mlserve_http_inflight_body_bytes", nil) > 0 {
		if time.Now().After(deadline) {
			t.Fatal("the bytes of a client that left were never released")
		}
		time.Sleep(10 * time.Millisecond)
	}
	body, ct = immichBody(t, visualEntries, img)
	if r := post(t, st.url, ct, body); r.code != 200 {
		t.Fatalf("after the release: %d %s", r.code, r.raw)
	}
}

// TestAdmissionBeforeBody: when the service is full, a request is refused
// right after its headers: 503 with Retry-After in milliseconds, while
// its client has sent only the start of a 50 MB body.
func TestAdmissionBeforeBody(t *testing.T) {
	st := startHard(t, hardOptions{slow: true, workers: pool.WorkersOptions{Workers: 1, Queue: 0}})
	img, _ := os.ReadFile(loadGolden(t, "in/photo_28.jpg").Input)
	body, ct := immichBody(t, visualEntries, img)
	if r := post(t, st.url, ct, body); r.code != 200 { // loads the model
		t.Fatalf("%d %s", r.code, r.raw)
	}
	// Hold the only place with a request whose body never ends (past the
	// 8 KiB that fasthttp reads before it calls the handler).
	holdBody, holdCT := immichBody(t, visualEntries, make([]byte, 100<<10))
	holdHead := fmt.Sprintf("POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: %s\r\nContent-Length: %d\r\n\r\n", holdCT, len(holdBody))
	hold := rawRequest(t, st.addr, holdHead, holdBody[:50<<10])
	defer hold.Close()
	deadline := time.Now().Add(10 * time.Second)
	for st.adm.Stats().InUse == 0 {
		if time.Now().After(deadline) {
			t.Fatal("the first request was never admitted")
		}
		time.Sleep(5 * time.Millisecond)
	}
	head := fmt.Sprintf("POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: %s\r\nContent-Length: %d\r\n\r\n", ct, 50<<20)
	var worst time.Duration
	for range 20 {
		start := time.Now()
		c := rawRequest(t, st.addr, head, bytes.Repeat([]byte("-"), 8<<10))
		resp, b := readReply(t, c, 5*time.Second) //nolint:bodyclose // readReply has read and closed the body
		d := time.Since(start)
		c.Close()
		worst = max(worst, d)
		if resp.StatusCode != 503 || resp.Header.Get("Retry-After") == "" || !strings.Contains(b, "queue is full") {
			t.Fatalf("refusal: %d %q %s", resp.StatusCode, resp.Header.Get("Retry-After"), b)
		}
	}
	t.Logf("503 before the body: worst of 20 %v", worst)
	if worst > within(50*time.Millisecond) {
		t.Errorf("a refusal took %v", worst)
	}
}

// TestFieldCaps: every field is capped whether it comes as a plain part or
// as a file part; parts that /predict does not read are skipped up to a
// bound; Immich's own request still works with extra parts around it.
func TestFieldCaps(t *testing.T) {
	st := startHard(t, hardOptions{})
	img, _ := os.ReadFile(loadGolden(t, "in/photo_28.jpg").Input)
	type part struct {
		name, file string
		data       []byte
	}
	build := func(parts ...part) ([]byte, string) {
		var buf bytes.Buffer
		w := multipart.NewWriter(&buf)
		for _, p := range parts {
			var pw io.Writer
			if p.file != "" {
				pw, _ = w.CreateFormFile(p.name, p.file)
			} else {
				pw, _ = w.CreateFormField(p.name)
			}
			_, _ = pw.Write(p.data)
		}
		w.Close()
		return buf.Bytes(), w.FormDataContentType()
	}
	bigEntries := []byte(`{"clip":{"visual":{"modelName":"ViT-B-32__openai","options":{"pad":"` + strings.Repeat("x", 70<<10) + `"}}}}`)
	for _, c := range []struct {
		name     string
		parts    []part
		code     int
		contains string
	}{
		{"entries too large", []part{{"entries", "", bigEntries}, {"image", "blob", img}}, 413, "entries is larger than 65536 bytes"},
		{"entries as a file, too large", []part{{"entries", "entries.json", bigEntries}, {"image", "blob", img}}, 413, "entries"},
		{"text too large", []part{{"entries", "", []byte(`{"clip":{"textual":{"modelName":"ViT-B-32__openai"}}}`)}, {"text", "", bytes.Repeat([]byte("a "), 40<<10)}}, 413, "text"},
		{"unknown part too large", []part{{"entries", "", []byte(visualEntries)}, {"junk", "", make([]byte, 2<<20)}, {"image", "blob", img}}, 413, "junk"},
		{"too many parts", append([]part{{"entries", "", []byte(visualEntries)}}, func() []part {
			var ps []part
			for i := range 40 {
				ps = append(ps, part{fmt.Sprint("f", i), "", []byte("v")})
			}
			return ps
		}()...), 413, "too many form parts"},
		{"entries as a file part", []part{{"entries", "blob", []byte(visualEntries)}, {"image", "blob", img}}, 200, ""},
		{"image first", []part{{"image", "blob", img}, {"entries", "", []byte(visualEntries)}}, 200, ""},
		{"unknown parts skipped", []part{{"x", "", make([]byte, 1000)}, {"entries", "", []byte(visualEntries)}, {"y", "y.bin", make([]byte, 100<<10)}, {"image", "blob", img}}, 200, ""},
		{"first entries wins", []part{{"entries", "", []byte(visualEntries)}, {"entries", "", []byte("not json")}, {"image", "blob", img}}, 200, ""},
	} {
		t.Run(c.name, func(t *testing.T) {
			body, ct := build(c.parts...)
			r := post(t, st.url, ct, body)
			if r.code != c.code || !strings.Contains(r.detail+r.raw, c.contains) {
				t.Fatalf("%d %.300s", r.code, r.raw)
			}
		})
	}
}

// TestHangUpCancelsWork: 100 clients send a request and hang up. The
// service notices each hang-up and cancels the work: queued requests
// leave the queue, the running one is stopped, and (at most a batch's
// worth aside) none runs after its client left.
func TestHangUpCancelsWork(t *testing.T) {
	st := startHard(t, hardOptions{slow: true, workers: pool.WorkersOptions{Workers: 1, Queue: 128}})
	img, _ := os.ReadFile(loadGolden(t, "in/photo_28.jpg").Input)
	body, ct := immichBody(t, visualEntries, img)
	if r := post(t, st.url, ct, body); r.code != 200 { // loads the model
		t.Fatalf("%d %s", r.code, r.raw)
	}
	start := time.Now()
	if r := post(t, st.url, ct, body); r.code != 200 {
		t.Fatalf("%d %s", r.code, r.raw)
	}
	one := time.Since(start)
	start = time.Now()
	runs := func() float64 {
		return metric(t, st.reg, "mlserve_inference_seconds", map[string]string{"type": "visual"})
	}
	before := runs()
	head := fmt.Sprintf("POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: %s\r\nContent-Length: %d\r\n\r\n", ct, len(body))
	var conns []net.Conn
	for range 100 {
		conns = append(conns, rawRequest(t, st.addr, head, body))
	}
	// Let every request be read and queued, then hang up.
	deadline := time.Now().Add(20 * time.Second)
	for metric(t, st.reg, "mlserve_http_inflight_body_bytes", nil) < 50*float64(len(body)) && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	// What ran while the bodies were still being read is the machine's
	// speed (one worker, under -race and a busy machine many may); what
	// counts is what runs after the clients left.
	atHangUp := runs()
	for _, c := range conns {
		c.Close()
	}
	for st.adm.Stats().InUse > 0 {
		if time.Now().After(deadline) {
			t.Fatalf("%d requests still inside 20 s after their clients left", st.adm.Stats().InUse)
		}
		time.Sleep(10 * time.Millisecond)
	}
	ran, after := runs()-before, runs()-atHangUp
	gone := metric(t, st.reg, "mlserve_http_client_hangups_total", nil)
	t.Logf("100 clients hung up: %v inferences completed (%v after the hang-up), %v hang-ups seen, all gone after %v (one request takes %v)", ran, after, gone, time.Since(start).Round(time.Millisecond), one.Round(time.Millisecond))
	if after > 10 {
		t.Errorf("%v of the abandoned requests ran to completion after their clients left", after)
	}
	// A request that completed before its client left is no hang-up:
	// of the others, at most 10 may go unnoticed (as many as may run).
	if gone+ran < 90 {
		t.Errorf("only %v hang-ups noticed, with %v requests completed", gone, ran)
	}
}

// overloadSeconds is how long each phase of TestOverloadSheds runs: a few
// seconds under `make test`; MLSERVE_OVERLOAD_SECONDS=30 for the figures
// of issue 13.
func overloadSeconds(t *testing.T) time.Duration {
	if v := os.Getenv("MLSERVE_OVERLOAD_SECONDS"); v != "" {
		n, err := strconv.ParseFloat(v, 64)
		if err != nil {
			t.Fatalf("MLSERVE_OVERLOAD_SECONDS=%q", v)
		}
		return time.Duration(n * float64(time.Second))
	}
	return 3 * time.Second
}

type loadResult struct {
	ok, refused, other int
	okPerSec           float64
	refusals, pings    []time.Duration
}

func pct(ds []time.Duration, p float64) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	return s[int(p*float64(len(s)-1))]
}

// load runs clients that send Immich's image request back to back for d;
// a client refused with 503 waits for Retry-After (as a client should) when
// honour is set, else sends again at once. A pinger measures /ping
// meanwhile.
func load(t *testing.T, url string, clients int, d time.Duration, honour bool, body []byte, ct string) loadResult {
	tr := &http.Transport{MaxIdleConnsPerHost: clients, MaxConnsPerHost: 0}
	defer tr.CloseIdleConnections()
	client := &http.Client{Transport: tr, Timeout: time.Minute}
	var mu sync.Mutex
	var r loadResult
	end := time.Now().Add(d)
	var wg sync.WaitGroup
	for range clients {
		wg.Go(func() {
			for time.Now().Before(end) {
				start := time.Now()
				resp, err := client.Post(url+"/predict", ct, bytes.NewReader(body))
				if err != nil {
					mu.Lock()
					r.other++
					mu.Unlock()
					continue
				}
				_, _ = io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				took := time.Since(start)
				mu.Lock()
				switch resp.StatusCode {
				case 200:
					if time.Now().Before(end) {
						r.ok++
					}
				case 503:
					r.refused++
					r.refusals = append(r.refusals, took)
				default:
					r.other++
				}
				mu.Unlock()
				if resp.StatusCode == 503 && honour {
					// Retry-After: 1, with jitter, as independent clients
					// (Immich's job retries) do not all come back at once.
					wait := time.Second/2 + rand.N(time.Second)
					time.Sleep(min(time.Until(end), wait))
				}
			}
		})
	}
	pinger := &http.Client{Timeout: 10 * time.Second}
	for time.Now().Before(end) {
		start := time.Now()
		resp, err := pinger.Get(url + "/ping")
		if err != nil {
			t.Errorf("/ping: %v", err)
			break
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		r.pings = append(r.pings, time.Since(start))
		time.Sleep(20 * time.Millisecond)
	}
	wg.Wait()
	r.okPerSec = float64(r.ok) / d.Seconds()
	return r
}

// TestOverloadSheds: 128 clients against a service that takes 2 workers +
// 64 queued (the defaults on 2 cores). Under `make test` it runs 3 s a
// phase and checks what holds on any machine: the overload is shed with
// 503s (nothing else), each refusal far cheaper than a success, and /ping
// keeps answering. The figures of issue 13 (successful throughput at
// least 0.8× that of 8 clients, 503s and /ping under 50 ms at p99) are
// timings, checked only in the measuring run, on a quiet machine:
//
//	MLSERVE_OVERLOAD_SECONDS=30 go test -run TestOverloadSheds -v ./api/
//
// MLSERVE_OVERLOAD_HAMMER=1 makes refused clients send again at once
// instead of honouring Retry-After.
func TestOverloadSheds(t *testing.T) {
	d := overloadSeconds(t)
	measuring := os.Getenv("MLSERVE_OVERLOAD_SECONDS") != ""
	st := startHard(t, hardOptions{slow: true, workers: pool.WorkersOptions{Workers: 2, Queue: 64}})
	img, _ := os.ReadFile(loadGolden(t, "in/photo_28.jpg").Input)
	body, ct := immichBody(t, visualEntries, img)
	if r := post(t, st.url, ct, body); r.code != 200 { // loads the model
		t.Fatalf("%d %s", r.code, r.raw)
	}
	start := time.Now()
	if r := post(t, st.url, ct, body); r.code != 200 {
		t.Fatalf("%d %s", r.code, r.raw)
	}
	one := time.Since(start)
	honour := os.Getenv("MLSERVE_OVERLOAD_HAMMER") == ""
	base := load(t, st.url, 8, d, honour, body, ct)
	over := load(t, st.url, 128, d, honour, body, ct)
	ratio := over.okPerSec / base.okPerSec
	t.Logf("one request alone: %v; %v per phase", one.Round(time.Millisecond), d)
	t.Logf("8 clients: %.1f ok/s, /ping p99 %v", base.okPerSec, pct(base.pings, .99))
	t.Logf("128 clients (Retry-After honoured: %v): %.1f ok/s (%.2f×), %d refused, 503 p50 %v p99 %v max %v, /ping p99 %v max %v, other %d",
		honour, over.okPerSec, ratio, over.refused, pct(over.refusals, .5), pct(over.refusals, .99), pct(over.refusals, 1), pct(over.pings, .99), pct(over.pings, 1), over.other)
	if over.refused == 0 {
		t.Error("128 clients were never refused: the test did not overload the service")
	}
	if over.other > 0 || base.other > 0 {
		t.Errorf("%d + %d answers neither 200 nor 503 (or transport errors)", base.other, over.other)
	}
	if over.ok == 0 {
		t.Error("no request succeeded under overload")
	}
	if !measuring {
		return
	}
	if ratio < 0.8 {
		t.Errorf("throughput under overload is %.2f× that of 8 clients", ratio)
	}
	if p := pct(over.refusals, .99); p > 50*time.Millisecond {
		t.Errorf("503 p99 %v", p)
	}
	if p := pct(over.pings, .99); p > 50*time.Millisecond {
		t.Errorf("/ping p99 %v", p)
	}
}

// TestErrorBodiesHideInternals: a model that fails to load answers
// Immich's 500 "Failed to load model '<name>'" without the cause, which
// names the hub's URL or the cache folder; out-of-range options are 422.
func TestErrorBodiesHideInternals(t *testing.T) {
	st := startHard(t, hardOptions{})
	img, _ := os.ReadFile(loadGolden(t, "in/photo_28.jpg").Input)
	body, ct := immichBody(t, `{"clip":{"visual":{"modelName":"ViT-L-14__openai"}}}`, img)
	r := post(t, st.url, ct, body)
	if r.code != 500 || r.detail != "Failed to load model 'ViT-L-14__openai'" {
		t.Fatalf("%d %s", r.code, r.raw)
	}
	body, ct = immichBody(t, `{"facial-recognition":{"detection":{"modelName":"buffalo_l","options":{"minScore":7}},"recognition":{"modelName":"buffalo_l"}}}`, img)
	if r := post(t, st.url, ct, body); r.code != 422 || !strings.Contains(r.detail, "minScore") {
		t.Fatalf("minScore 7: %d %s", r.code, r.raw)
	}
}
