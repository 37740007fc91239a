package models

import (
	"bytes"
	"context"
	"errors"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mlserve/mlserve/modelgen"
	"github.com/mlserve/mlserve/models/hubtest"
)

// N concurrent first requests for both CLIP types: one snapshot, one
// request per file.
func TestConcurrentFirstRequests(t *testing.T) {
	const repo = "immich-app/" + clipName
	hub := hubtest.New(t, hubtest.Options{})
	files := clipRepo()
	hub.AddRepo(repo, files)
	// Slow the big file so that every caller joins while it runs.
	hub.Fail(hubtest.CDNKey(repo, "visual/model.onnx"), hubtest.Fault{Times: 1, Delay: 200 * time.Millisecond})
	s := newStore(t, hub, nil)

	const n = 16
	var wg sync.WaitGroup
	errs := make([]error, n)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			typ := TypeVisual
			if i%2 == 1 {
				typ = TypeTextual
			}
			_, errs[i] = s.Ensure(context.Background(), TaskCLIP, typ, clipName)
		}()
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Fatalf("caller %d: %v", i, err)
		}
	}
	if got := hub.Requests("api/models/" + repo + "/revision/main"); got != 1 {
		t.Errorf("revision requests = %d, want 1", got)
	}
	for f := range files {
		if ignoredRepoFile(f) {
			if got := hub.Requests(hubtest.FileKey(repo, f)); got != 0 {
				t.Errorf("%s: %d requests for an ignored file", f, got)
			}
			continue
		}
		if got := hub.Requests(hubtest.FileKey(repo, f)); got != 1 {
			t.Errorf("%s: %d resolve requests, want 1", f, got)
		}
	}
}

// A caller that gives up stops waiting at once; the download goes on for
// the callers still waiting.
func TestCallerCancelDoesNotStopSharedDownload(t *testing.T) {
	const repo = "immich-app/buffalo_l"
	hub := hubtest.New(t, hubtest.Options{})
	hub.AddRepo(repo, faceRepo())
	hub.Fail(hubtest.CDNKey(repo, "detection/model.onnx"), hubtest.Fault{Times: 1, Delay: 500 * time.Millisecond})
	s := newStore(t, hub, nil)

	done := make(chan error, 1)
	go func() {
		_, err := s.Ensure(context.Background(), TaskFacialRecognition, TypeDetection, "buffalo_l")
		done <- err
	}()
	// The patient caller's flight is running before the impatient one joins.
	waitFor(t, func() bool { return hub.Requests("api/models/"+repo+"/revision/main") == 1 })
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	start := time.Now()
	_, err := s.Ensure(ctx, TaskFacialRecognition, TypeDetection, "buffalo_l")
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("impatient caller: err = %v, want DeadlineExceeded", err)
	}
	if el := time.Since(start); el > 400*time.Millisecond {
		t.Fatalf("impatient caller waited %v", el)
	}
	if err := <-done; err != nil {
		t.Fatalf("patient caller: %v", err)
	}
	if got := hub.Requests("api/models/" + repo + "/revision/main"); got != 1 {
		t.Errorf("revision requests = %d, want 1", got)
	}
}

// A slow hub and a caller deadline: the caller gets its deadline, the
// download (with no one left waiting) stops, nothing complete-looking is
// left, and a later call succeeds.
func TestSlowResponseDeadline(t *testing.T) {
	const repo = "immich-app/" + clipName
	hub := hubtest.New(t, hubtest.Options{})
	files := clipRepo()
	hub.AddRepo(repo, files)
	hub.Fail(hubtest.CDNKey(repo, "visual/model.onnx"), hubtest.Fault{Times: 1, Stall: 30 * time.Second, StallAt: 4096})
	s := newStore(t, hub, nil)

	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	start := time.Now()
	if _, err := s.Ensure(ctx, TaskCLIP, TypeVisual, clipName); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("err = %v, want DeadlineExceeded", err)
	}
	if el := time.Since(start); el > 5*time.Second {
		t.Fatalf("Ensure returned after %v", el)
	}
	model := filepath.Join(s.cacheDir, "clip", clipName)
	// The abandoned flight ends (no one waits): its .partial stays for resume.
	waitFor(t, func() bool {
		s.mu.Lock()
		defer s.mu.Unlock()
		return len(s.flights) == 0
	})
	if _, err := os.Stat(filepath.Join(model, "visual", ModelFile)); err == nil {
		t.Fatal("model.onnx exists after an aborted download")
	}

	dir, err := s.Ensure(context.Background(), TaskCLIP, TypeVisual, clipName)
	if err != nil {
		t.Fatal(err)
	}
	mustEqualFile(t, filepath.Join(dir, "visual", ModelFile), files["visual/model.onnx"])
}

func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not met in 10 s")
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// A .partial left by a crash is resumed with a Range request: only the
// missing tail crosses the network.
func TestResumeAfterCrash(t *testing.T) {
	const repo = "immich-app/" + clipName
	hub := hubtest.New(t, hubtest.Options{})
	files := clipRepo()
	hub.AddRepo(repo, files)
	s := newStore(t, hub, nil)
	vis := files["visual/model.onnx"]
	half := len(vis) / 2
	p := filepath.Join(s.cacheDir, "clip", clipName, "visual", ModelFile+".partial")
	_ = os.MkdirAll(filepath.Dir(p), 0o755)
	if err := os.WriteFile(p, vis[:half], 0o644); err != nil {
		t.Fatal(err)
	}
	dir, err := s.Ensure(context.Background(), TaskCLIP, TypeVisual, clipName)
	if err != nil {
		t.Fatal(err)
	}
	mustEqualFile(t, filepath.Join(dir, "visual", ModelFile), vis)
	if got, want := hub.BytesServed(hubtest.CDNKey(repo, "visual/model.onnx")), int64(len(vis)-half); got != want {
		t.Fatalf("served %d bytes of visual/model.onnx, want only the missing %d", got, want)
	}

	// A corrupt .partial (wrong prefix) is detected and fetched again from zero.
	hub2 := hubtest.New(t, hubtest.Options{})
	hub2.AddRepo(repo, files)
	s2 := newStore(t, hub2, nil)
	p2 := filepath.Join(s2.cacheDir, "clip", clipName, "visual", ModelFile+".partial")
	_ = os.MkdirAll(filepath.Dir(p2), 0o755)
	if err := os.WriteFile(p2, bytes.Repeat([]byte{0xAB}, half), 0o644); err != nil {
		t.Fatal(err)
	}
	dir, err = s2.Ensure(context.Background(), TaskCLIP, TypeVisual, clipName)
	if err != nil {
		t.Fatal(err)
	}
	mustEqualFile(t, filepath.Join(dir, "visual", ModelFile), vis)
}

func TestOCRDownload(t *testing.T) {
	det := modelgen.Busy{Steps: 1, Size: 4}.Model().Marshal()
	rec := modelgen.Busy{Steps: 3, Size: 4}.Model().Marshal()
	hub := hubtest.New(t, hubtest.Options{})
	hub.AddFile("ocr/onnx/PP-OCRv5/det/ch_PP-OCRv5_det_mobile.onnx", det)
	hub.AddFile("ocr/onnx/PP-OCRv5/rec/en_PP-OCRv5_rec_mobile.onnx", rec)
	hub.Fail("ocr/onnx/PP-OCRv5/rec/en_PP-OCRv5_rec_mobile.onnx", hubtest.Fault{Times: 1, Status: 503})

	// The real pins reject the generated files.
	s := newStore(t, hub, nil)
	_, err := s.Ensure(context.Background(), TaskOCR, TypeDetection, "EN__PP-OCRv5_mobile")
	if !errors.Is(err, ErrChecksum) {
		t.Fatalf("generated file against the real sha256: err = %v, want ErrChecksum", err)
	}
	if files := listFiles(t, filepath.Join(s.cacheDir, "ocr")); len(files) != 0 {
		t.Fatalf("files left after a checksum failure: %v", files)
	}

	// With pins of the generated files (what a mirror of other builds would need).
	table := map[string]OCRFile{}
	for k, v := range ocrFiles {
		table[k] = v
	}
	table["ch_PP-OCRv5_det_mobile"] = OCRFile{Path: "onnx/PP-OCRv5/det/ch_PP-OCRv5_det_mobile.onnx", SHA256: hubtest.SHA256(det)}
	table["en_PP-OCRv5_rec_mobile"] = OCRFile{Path: "onnx/PP-OCRv5/rec/en_PP-OCRv5_rec_mobile.onnx", SHA256: hubtest.SHA256(rec)}
	s.ocrFiles = table
	detDir, err := s.Ensure(context.Background(), TaskOCR, TypeDetection, "EN__PP-OCRv5_mobile")
	if err != nil {
		t.Fatal(err)
	}
	recDir, err := s.Ensure(context.Background(), TaskOCR, TypeRecognition, "EN__PP-OCRv5_mobile")
	if err != nil {
		t.Fatal(err)
	}
	if want := filepath.Join(s.cacheDir, "ocr", "PP-OCRv5_mobile", "detection"); detDir != want {
		t.Fatalf("detection dir %s, want %s", detDir, want)
	}
	if want := filepath.Join(s.cacheDir, "ocr", "EN__PP-OCRv5_mobile", "recognition"); recDir != want {
		t.Fatalf("recognition dir %s, want %s", recDir, want)
	}
	mustEqualFile(t, filepath.Join(detDir, ModelFile), det)
	mustEqualFile(t, filepath.Join(recDir, ModelFile), rec)
	// Detection is shared: another language needs no new download.
	before := hub.Requests("ocr/onnx/PP-OCRv5/det/ch_PP-OCRv5_det_mobile.onnx")
	if _, err := s.Ensure(context.Background(), TaskOCR, TypeDetection, "PP-OCRv5_mobile"); err != nil {
		t.Fatal(err)
	}
	if hub.Requests("ocr/onnx/PP-OCRv5/det/ch_PP-OCRv5_det_mobile.onnx") != before {
		t.Fatal("shared detection model downloaded again")
	}
	// A language the source lacks.
	if _, err := s.Ensure(context.Background(), TaskOCR, TypeRecognition, "TH__PP-OCRv5_mobile"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("missing file: err = %v, want ErrNotFound", err)
	}
}

// Hostile names never reach the disk or the network.
func TestHostileNamesRejected(t *testing.T) {
	hub := hubtest.New(t, hubtest.Options{})
	s := newStore(t, hub, func(o *StoreOptions) { o.CacheDir = filepath.Join(t.TempDir(), "cache") })
	names := []string{"../x", "/etc/passwd", "a/../../b", "..", "a\x00b", strings.Repeat("A", 600),
		"ViT\u2010B\u201032__openai", "ViT-B-32__openai/..", "..\\..\\etc", "%2e%2e%2f", "buffalo_l\n", ""}
	for _, name := range names {
		for _, task := range []Task{TaskCLIP, TaskFacialRecognition, TaskOCR} {
			for _, typ := range []Type{TypeVisual, TypeDetection} {
				_, err := s.Ensure(context.Background(), task, typ, name)
				if !errors.Is(err, ErrInvalidName) && !errors.Is(err, ErrUnknownModel) && !errors.Is(err, ErrUnsupported) {
					t.Errorf("Ensure(%s, %s, %q): err = %v", task, typ, name, err)
				}
			}
		}
		if err := s.Clear(TaskCLIP, name); err == nil {
			t.Errorf("Clear(%q) accepted", name)
		}
	}
	if hub.Total() != 0 {
		t.Fatalf("%d requests for hostile names", hub.Total())
	}
	if _, err := os.Stat(s.cacheDir); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("cache folder created for hostile names: %v", err)
	}
}

// A hub that lists paths outside the model folder gets them ignored.
func TestHostileRepoPaths(t *testing.T) {
	top := t.TempDir()
	cache := filepath.Join(top, "cache")
	hub := hubtest.New(t, hubtest.Options{})
	files := faceRepo()
	for _, p := range []string{"../../../escape.txt", "detection/../../escape2.txt", "/abs.txt", `detection\..\..\x.txt`, "a//b", "./c"} {
		files[p] = []byte("evil")
	}
	hub.AddRepo("immich-app/buffalo_m", files)
	s := newStore(t, hub, func(o *StoreOptions) { o.CacheDir = cache })
	dir, err := s.Ensure(context.Background(), TaskFacialRecognition, TypeDetection, "buffalo_m")
	if err != nil {
		t.Fatal(err)
	}
	got := listFiles(t, filepath.Dir(dir))
	if want := []string{ManifestFile, "detection/model.onnx", "recognition/model.onnx"}; strings.Join(got, ",") != strings.Join(want, ",") {
		t.Fatalf("model folder holds %v, want %v", got, want)
	}
	if all := listFiles(t, top); len(all) != 3 {
		t.Fatalf("files written outside the model folder: %v", all)
	}

	// A symlink planted inside the model folder does not lead writes out.
	outside := filepath.Join(top, "outside")
	_ = os.MkdirAll(outside, 0o755)
	model := filepath.Join(cache, "facial-recognition", "buffalo_s")
	_ = os.MkdirAll(model, 0o755)
	if err := os.Symlink(outside, filepath.Join(model, "detection")); err != nil {
		t.Fatal(err)
	}
	hub.AddRepo("immich-app/buffalo_s", faceRepo())
	_, err = s.Ensure(context.Background(), TaskFacialRecognition, TypeRecognition, "buffalo_s")
	if err == nil {
		t.Log("download succeeded without following the symlink")
	}
	if got := listFiles(t, outside); len(got) != 0 {
		t.Fatalf("download wrote through a symlink to %v", got)
	}
}

func TestClear(t *testing.T) {
	hub := hubtest.New(t, hubtest.Options{})
	hub.AddRepo("immich-app/buffalo_l", faceRepo())
	top := t.TempDir()
	cache := filepath.Join(top, "cache")
	s := newStore(t, hub, func(o *StoreOptions) { o.CacheDir = cache })
	if _, err := s.Ensure(context.Background(), TaskFacialRecognition, TypeDetection, "buffalo_l"); err != nil {
		t.Fatal(err)
	}

	// Outside files that Clear must never touch.
	outside := filepath.Join(top, "outside")
	_ = os.MkdirAll(outside, 0o755)
	keep := filepath.Join(outside, "keep.txt")
	if err := os.WriteFile(keep, []byte("keep"), 0o644); err != nil {
		t.Fatal(err)
	}
	// A symlink inside the model folder pointing outside.
	model := filepath.Join(cache, "facial-recognition", "buffalo_l")
	if err := os.Symlink(outside, filepath.Join(model, "link")); err != nil {
		t.Fatal(err)
	}
	if err := s.Clear(TaskFacialRecognition, "buffalo_l"); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Lstat(model); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("model folder still there: %v", err)
	}
	// The model folder itself is a symlink to outside: only the link goes.
	clipDir := filepath.Join(cache, "clip", clipName)
	_ = os.MkdirAll(filepath.Dir(clipDir), 0o755)
	if err := os.Symlink(outside, clipDir); err != nil {
		t.Fatal(err)
	}
	if err := s.Clear(TaskCLIP, "ViT-B-32::openai"); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Lstat(clipDir); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("symlink still there: %v", err)
	}
	// A plain file at the path is unlinked.
	ocrFile := filepath.Join(cache, "ocr", "PP-OCRv5_mobile")
	_ = os.MkdirAll(filepath.Dir(ocrFile), 0o755)
	if err := os.WriteFile(ocrFile, []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := s.ClearType(TaskOCR, TypeDetection, "EN__PP-OCRv5_mobile"); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Lstat(ocrFile); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("plain file still there: %v", err)
	}
	if b, err := os.ReadFile(keep); err != nil || string(b) != "keep" {
		t.Fatalf("outside file damaged: %q, %v", b, err)
	}
	// Missing is fine; bad input is not.
	if err := s.Clear(TaskFacialRecognition, "buffalo_s"); err != nil {
		t.Fatalf("missing model: %v", err)
	}
	if err := s.Clear(Task("../.."), "x"); !errors.Is(err, ErrUnsupported) {
		t.Fatalf("bad task: %v", err)
	}
	// After Clear the model downloads again.
	before := hub.Requests(hubtest.CDNKey("immich-app/buffalo_l", "detection/model.onnx"))
	if _, err := s.Ensure(context.Background(), TaskFacialRecognition, TypeDetection, "buffalo_l"); err != nil {
		t.Fatal(err)
	}
	if hub.Requests(hubtest.CDNKey("immich-app/buffalo_l", "detection/model.onnx")) != before+1 {
		t.Fatal("cleared model was not downloaded again")
	}
}

func TestClearWhileDownloadingAndClose(t *testing.T) {
	const repo = "immich-app/antelopev2"
	hub := hubtest.New(t, hubtest.Options{})
	hub.AddRepo(repo, faceRepo())
	hub.Fail(hubtest.CDNKey(repo, "detection/model.onnx"), hubtest.Fault{Stall: time.Minute})
	s := newStore(t, hub, nil)
	done := make(chan error, 1)
	go func() {
		_, err := s.Ensure(context.Background(), TaskFacialRecognition, TypeDetection, "antelopev2")
		done <- err
	}()
	waitFor(t, func() bool { return hub.Requests(hubtest.CDNKey(repo, "detection/model.onnx")) > 0 })
	if err := s.Clear(TaskFacialRecognition, "antelopev2"); !errors.Is(err, ErrBusy) {
		t.Fatalf("Clear during download: err = %v, want ErrBusy", err)
	}
	start := time.Now()
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if el := time.Since(start); el > 5*time.Second {
		t.Fatalf("Close took %v", el)
	}
	if err := <-done; err == nil {
		t.Fatal("Ensure succeeded after Close canceled it")
	}
	if _, err := s.Ensure(context.Background(), TaskFacialRecognition, TypeDetection, "antelopev2"); !errors.Is(err, ErrClosed) {
		t.Fatalf("Ensure after Close: err = %v, want ErrClosed", err)
	}
}

func TestProgressLog(t *testing.T) {
	hub := hubtest.New(t, hubtest.Options{})
	hub.AddRepo("immich-app/"+clipName, clipRepo())
	var buf syncBuffer
	s, err := NewStore(StoreOptions{CacheDir: t.TempDir(), HFEndpoint: hub.URL(), ProgressInterval: time.Nanosecond},
		slog.New(slog.NewTextHandler(&buf, nil)))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if _, err := s.Ensure(context.Background(), TaskCLIP, TypeVisual, clipName); err != nil {
		t.Fatal(err)
	}
	out := buf.String()
	for _, want := range []string{`msg=downloading file=visual/model.onnx`, "percent=", "MBps=", `msg="downloaded model"`} {
		if !strings.Contains(out, want) {
			t.Errorf("log lacks %q:\n%s", want, out)
		}
	}
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}

func TestNewStoreOptions(t *testing.T) {
	bad := []StoreOptions{
		{},
		{CacheDir: "/c", HFEndpoint: "ftp://x"},
		{CacheDir: "/c", HFEndpoint: "not a url"},
		{CacheDir: "/c", OCRBaseURL: "file:///etc"},
		{CacheDir: "/c", Organization: "../evil"},
		{CacheDir: "/c", Organization: "a/b"},
		{CacheDir: "/c", Revision: "main\n"},
	}
	for _, o := range bad {
		if _, err := NewStore(o, nil); err == nil {
			t.Errorf("NewStore(%+v) accepted", o)
		}
	}
	s, err := NewStore(StoreOptions{CacheDir: "/c"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if s.endpoint != "https://huggingface.co" || s.org != "immich-app" || s.revision != "main" || s.ocrBase != DefaultOCRBaseURL || s.retries != 4 {
		t.Fatalf("defaults: %+v", s)
	}
	if p, err := s.Path(TaskOCR, TypeDetection, "KOREAN__PP-OCRv5_mobile"); err != nil || p != filepath.FromSlash("/c/ocr/PP-OCRv5_mobile/detection") {
		t.Fatalf("Path = %q, %v", p, err)
	}
}

// BenchmarkDownload measures a cold download of a 64 MiB LFS file through
// the fake hub's CDN redirect: HTTP on loopback, sha256, write, fsync,
// rename.
func BenchmarkDownload(b *testing.B) {
	data := bytes.Repeat([]byte("0123456789abcdef"), 4<<20) // 64 MiB
	files := faceRepo()
	files["detection/model.onnx"] = data
	for i := 0; b.Loop(); i++ {
		b.StopTimer()
		hub := hubtest.New(b, hubtest.Options{})
		hub.AddRepo("immich-app/buffalo_l", files)
		s, err := NewStore(StoreOptions{CacheDir: b.TempDir(), HFEndpoint: hub.URL()}, nil)
		if err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
		if _, err := s.Ensure(context.Background(), TaskFacialRecognition, TypeDetection, "buffalo_l"); err != nil {
			b.Fatal(err)
		}
		b.StopTimer()
		s.Close()
		b.StartTimer()
	}
	b.SetBytes(int64(len(data)))
}

// A download that fails or is canceled before any file arrived leaves no
// empty model folder behind (an empty folder looks like a model to people
// browsing the cache, and Immich's tools count it).
func TestFailedDownloadLeavesNoEmptyFolder(t *testing.T) {
	const faces = "immich-app/buffalo_l"
	hub := hubtest.New(t, hubtest.Options{})
	hub.AddRepo(faces, faceRepo())
	hub.Fail("api/models/"+faces+"/revision/main", hubtest.Fault{Times: 2, Delay: time.Minute})
	s := newStore(t, hub, nil)
	gone := func(rel string) {
		t.Helper()
		p := filepath.Join(s.cacheDir, filepath.FromSlash(rel))
		waitFor(t, func() bool {
			_, err := os.Lstat(p)
			return errors.Is(err, fs.ErrNotExist)
		})
	}

	// Not on the hub.
	if _, err := s.Ensure(context.Background(), TaskCLIP, TypeVisual, "ViT-B-16__openai"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("missing repo: err = %v, want ErrNotFound", err)
	}
	gone("clip/ViT-B-16__openai")
	// Not at the OCR source.
	if _, err := s.Ensure(context.Background(), TaskOCR, TypeRecognition, "TH__PP-OCRv5_mobile"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("missing OCR file: err = %v, want ErrNotFound", err)
	}
	gone("ocr/TH__PP-OCRv5_mobile")
	// The only caller gives up while the hub is slow: the download stops.
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	if _, err := s.Ensure(ctx, TaskFacialRecognition, TypeDetection, "buffalo_l"); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("canceled: err = %v, want DeadlineExceeded", err)
	}
	gone("facial-recognition/buffalo_l")
	// Close stops a download in progress.
	done := make(chan error, 1)
	go func() {
		_, err := s.Ensure(context.Background(), TaskFacialRecognition, TypeRecognition, "buffalo_l")
		done <- err
	}()
	waitFor(t, func() bool { return hub.Requests("api/models/"+faces+"/revision/main") == 2 })
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if err := <-done; err == nil {
		t.Fatal("Ensure succeeded after Close")
	}
	gone("facial-recognition/buffalo_l")
}
