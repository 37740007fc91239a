package models

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"time"

	"golang.org/x/sync/errgroup"
)

// StoreOptions configures a Store. Zero values mean Immich's defaults.
type StoreOptions struct {
	// CacheDir is the model cache root (MACHINE_LEARNING_CACHE_FOLDER). Required.
	CacheDir string
	// HFEndpoint is the hub or a mirror (HF_ENDPOINT); default https://huggingface.co.
	HFEndpoint string
	// Organization owns the repos <Organization>/<name>
	// (MACHINE_LEARNING_MODEL_ORGANIZATION); default "immich-app".
	Organization string
	// Revision is the branch, tag or commit to download
	// (MACHINE_LEARNING_MODEL_REVISION); default "main".
	Revision string
	// Offline forbids all network access (HF_HUB_OFFLINE): a model that is
	// not in the cache gives ErrOffline.
	Offline bool
	// HFToken, if set, is sent as a bearer token to the hub (never to the
	// OCR source, nor to the hub's CDN after a redirect).
	HFToken string
	// OCRBaseURL is where PP-OCRv5 files are fetched from; default
	// DefaultOCRBaseURL. A mirror must keep RapidOCR's relative paths.
	OCRBaseURL string
	// HTTPClient is used for every request; default a client with connect
	// and response-header timeouts and no overall timeout (models are big;
	// StallTimeout catches dead transfers).
	HTTPClient *http.Client
	// Retries is how many times a failed request is retried after the
	// first attempt: 0 means 4, a negative value means none.
	Retries int
	// MinBackoff and MaxBackoff bound the jittered exponential wait
	// between attempts; defaults 1 s and 30 s.
	MinBackoff, MaxBackoff time.Duration
	// StallTimeout aborts (and retries) an attempt that receives no data
	// for this long; default 60 s.
	StallTimeout time.Duration
	// ProgressInterval is the least time between two progress log lines
	// of one file; default 5 s.
	ProgressInterval time.Duration
	// Parallel is how many files of one model download at once; default 4.
	Parallel int
	// UserAgent is sent with every request; default "mlserve".
	UserAgent string
	// Observer, if set, hears about downloads as they happen (progress
	// bars, metrics).
	Observer DownloadObserver
}

// DownloadObserver is told about downloads as they happen. Its methods
// are called from the download goroutines, several at once; they must be
// quick. model is the model folder's key, "<task>/<folder>" (e.g.
// "clip/ViT-B-32__openai").
type DownloadObserver interface {
	// DownloadStarted: the model's missing files are known: files of
	// them, bytes in all (-1 when the hub does not tell every size).
	DownloadStarted(model string, files int, bytes int64)
	// DownloadProgress: a file's data arrived, or its download restarted.
	DownloadProgress(p FileProgress)
	// DownloadFinished: the model's download ended (err nil: every file
	// is in place and verified).
	DownloadFinished(model string, err error)
}

// FileProgress is the state of one file's download.
type FileProgress struct {
	Model, File string
	// Have is the number of bytes of the file on disk now, resumed ones
	// included (it drops to 0 when a download restarts).
	Have int64
	// Size is the file's size, -1 when not known yet.
	Size int64
	// Received is the number of bytes received from the network since
	// the file's previous event.
	Received int64
}

type nopObserver struct{}

func (nopObserver) DownloadStarted(string, int, int64) {}
func (nopObserver) DownloadProgress(FileProgress)      {}
func (nopObserver) DownloadFinished(string, error)     {}

// Store finds models in the cache folder and downloads what is missing. It is
// safe for concurrent use. Close it to stop downloads in progress.
type Store struct {
	cacheDir         string
	endpoint         string
	org, revision    string
	token            string
	ocrBase          string
	offline          bool
	client           *http.Client
	retries          int
	minBackoff       time.Duration
	maxBackoff       time.Duration
	stallTimeout     time.Duration
	progressInterval time.Duration
	parallel         int
	userAgent        string
	observer         DownloadObserver
	log              *slog.Logger
	// ocrFiles is RapidOCR's table; tests swap in digests of generated files.
	ocrFiles map[string]OCRFile

	// manifestMu serialises the updates of manifests (two OCR types
	// share a folder and download at once).
	manifestMu sync.Mutex

	// mu guards flights and closed. Only Clear holds it during I/O, so that
	// no download of the folder it removes can start meanwhile.
	mu      sync.Mutex
	flights map[string]*flight
	// writing counts the download goroutines per model folder, abandoned
	// ones included (they leave flights before they end).
	writing map[string]int
	closed  bool
	// ctx is the parent of every download; Close cancels it.
	ctx    context.Context //nolint:containedctx // the Store's lifetime: downloads run on goroutines no caller owns, and Close cancels them all
	cancel context.CancelFunc
	wg     sync.WaitGroup // download goroutines
}

// flight is one download shared by every Ensure that needs it. The
// download runs on its own goroutine (owned by the Store) with a context
// that no caller owns: a caller that gives up only stops waiting, and the
// download is canceled when the last waiter leaves.
type flight struct {
	folder  string // <task>/<folder>, for Clear
	done    chan struct{}
	err     error // set before done is closed
	waiters int   // guarded by Store.mu
	cancel  context.CancelFunc
}

var reOrg = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,95}$`)

// NewStore checks the options and returns a Store. It creates nothing on
// disk until a download needs it.
func NewStore(opts StoreOptions, logger *slog.Logger) (*Store, error) {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	if opts.CacheDir == "" {
		return nil, errors.New("models: StoreOptions.CacheDir is empty")
	}
	s := &Store{
		cacheDir:         filepath.Clean(opts.CacheDir),
		endpoint:         strings.TrimRight(cmpOr(opts.HFEndpoint, "https://huggingface.co"), "/"),
		org:              cmpOr(opts.Organization, "immich-app"),
		revision:         cmpOr(opts.Revision, "main"),
		token:            opts.HFToken,
		ocrBase:          strings.TrimRight(cmpOr(opts.OCRBaseURL, DefaultOCRBaseURL), "/"),
		offline:          opts.Offline,
		retries:          opts.Retries,
		minBackoff:       cmpOr(opts.MinBackoff, time.Second),
		maxBackoff:       cmpOr(opts.MaxBackoff, 30*time.Second),
		stallTimeout:     cmpOr(opts.StallTimeout, 60*time.Second),
		progressInterval: cmpOr(opts.ProgressInterval, 5*time.Second),
		parallel:         cmpOr(opts.Parallel, 4),
		userAgent:        cmpOr(opts.UserAgent, "mlserve"),
		observer:         opts.Observer,
		log:              logger,
		flights:          map[string]*flight{},
		writing:          map[string]int{},
		ocrFiles:         ocrFiles,
	}
	if s.observer == nil {
		s.observer = nopObserver{}
	}
	switch {
	case s.retries == 0:
		s.retries = 4
	case s.retries < 0:
		s.retries = 0
	}
	s.parallel = max(s.parallel, 1)
	if s.maxBackoff < s.minBackoff {
		s.maxBackoff = s.minBackoff
	}
	for _, u := range []struct{ name, v string }{{"HFEndpoint", s.endpoint}, {"OCRBaseURL", s.ocrBase}} {
		p, err := url.Parse(u.v)
		if err != nil || (p.Scheme != "http" && p.Scheme != "https") || p.Host == "" {
			return nil, fmt.Errorf("models: StoreOptions.%s %q is not an http(s) URL", u.name, u.v)
		}
	}
	if !reOrg.MatchString(s.org) || strings.Contains(s.org, "..") {
		return nil, fmt.Errorf("models: StoreOptions.Organization %q is not a valid hub namespace", s.org)
	}
	for _, r := range s.revision {
		if r < 0x20 || r == 0x7f {
			return nil, fmt.Errorf("models: StoreOptions.Revision %q has control characters", s.revision)
		}
	}

	base := opts.HTTPClient
	if base == nil {
		tr := http.DefaultTransport.(*http.Transport).Clone()
		tr.ResponseHeaderTimeout = 60 * time.Second
		base = &http.Client{Transport: tr}
	}
	// A copy, so recording redirect headers does not change the caller's client.
	c := *base
	c.CheckRedirect = checkRedirect(base.CheckRedirect)
	s.client = &c
	s.ctx, s.cancel = context.WithCancel(context.Background())
	return s, nil
}

func cmpOr[T comparable](v, def T) T {
	var zero T
	if v == zero {
		return def
	}
	return v
}

// Close cancels downloads in progress and waits for them to stop. Ensure
// calls after Close fail with ErrClosed.
func (s *Store) Close() error {
	s.mu.Lock()
	s.closed = true
	s.mu.Unlock()
	s.cancel()
	s.wg.Wait()
	return nil
}

// Path returns the folder a loader reads for the model, without touching
// the disk (see [Dir]).
func (s *Store) Path(task Task, typ Type, name string) (string, error) {
	info, err := Lookup(task, typ, name)
	if err != nil {
		return "", err
	}
	return Dir(s.cacheDir, info, typ)
}

// Cached reports whether every file a loader of the model needs is present.
func (s *Store) Cached(task Task, typ Type, name string) (bool, error) {
	info, err := Lookup(task, typ, name)
	if err != nil {
		return false, err
	}
	dir, err := Dir(s.cacheDir, info, typ)
	if err != nil {
		return false, err
	}
	return present(dir, info.Files(typ)), nil
}

// present reports whether every file exists as a regular file (following
// symlinks, as Immich's Path.is_file does).
func present(dir string, files []string) bool {
	for _, f := range files {
		st, err := os.Stat(filepath.Join(dir, filepath.FromSlash(f)))
		if err != nil || !st.Mode().IsRegular() {
			return false
		}
	}
	return true
}

// Ensure returns the folder a loader reads for (task, typ, name), after
// downloading whatever of it is missing: <cache>/clip/<name> for CLIP,
// <cache>/facial-recognition/<name>/<type> for faces, and the OCR type
// folders for OCR (see [Dir]).
//
// When the files are present it does no network I/O. Otherwise one download
// per model folder runs however many callers wait for it: CLIP and face
// models fetch their whole hub repo (minus ARM NN/RKNN files), as Immich's
// snapshot_download does; OCR fetches the one PP-OCRv5 file. ctx bounds only
// this caller's wait; the download stops when no caller waits any more.
//
// Errors wrap ErrInvalidName, ErrUnknownModel, ErrUnsupported, ErrOffline,
// ErrNotFound, ErrChecksum, ErrDownload or ErrClosed, or are ctx's error.
func (s *Store) Ensure(ctx context.Context, task Task, typ Type, name string) (string, error) {
	info, err := Lookup(task, typ, name)
	if err != nil {
		return "", err
	}
	dir, err := Dir(s.cacheDir, info, typ)
	if err != nil {
		return "", err
	}
	files := info.Files(typ)
	if present(dir, files) {
		return dir, nil
	}
	if s.offline {
		return "", fmt.Errorf("%w: %s/%s %q (looked in %s)", ErrOffline, task, typ, info.Name, dir)
	}

	if err := s.fetch(ctx, info, typ); err != nil {
		if ctx.Err() == nil && present(dir, files) {
			// What this loader needs arrived and verified; another
			// file of the repo failed. Immich would fail here too, but
			// there is no reason to.
			s.log.Warn("model download incomplete, but this type's files are present", "task", task,
				"type", typ, "model", info.Name, "err", err)
			return dir, nil
		}
		return "", err
	}
	if !present(dir, files) {
		// The repo exists but lacks what the loader needs.
		return "", fmt.Errorf("%w: %s/%s %q: the downloaded model lacks %s", ErrNotFound, task, typ, info.Name, strings.Join(files, ", "))
	}
	return dir, nil
}

// fetch downloads (info, typ)'s folder, joining the download in progress
// if there is one, and waits for it or for ctx.
func (s *Store) fetch(ctx context.Context, info Info, typ Type) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	key := folderKey(info, typ)
	if info.Task == TaskOCR {
		key += "#" + string(typ) // detection and recognition are separate files
	}
	f, err := s.join(ctx, key, info, typ)
	if err != nil {
		return err
	}
	select {
	case <-f.done:
		s.leave(f)
		return f.err
	case <-ctx.Done():
		s.leave(f)
		return ctx.Err()
	}
}

// join returns the running flight for key, or starts one.
func (s *Store) join(ctx context.Context, key string, info Info, typ Type) (*flight, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil, ErrClosed
	}
	if f := s.flights[key]; f != nil {
		f.waiters++
		return f, nil
	}
	// The download keeps the first caller's values (loggers, traces) but
	// not its cancellation; Close cancels it through s.ctx.
	dctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	stop := context.AfterFunc(s.ctx, cancel)
	f := &flight{folder: folderKey(info, typ), done: make(chan struct{}), waiters: 1, cancel: cancel}
	s.flights[key] = f
	s.writing[f.folder]++
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		defer stop()
		defer cancel()
		err := s.download(dctx, info, typ)
		s.mu.Lock()
		if s.flights[key] == f {
			delete(s.flights, key)
		}
		f.err = err
		s.writing[f.folder]--
		if s.writing[f.folder] == 0 {
			delete(s.writing, f.folder)
			if err != nil {
				// Under mu: no download of this folder can start meanwhile.
				s.removeEmptyFolders(f.folder)
			}
		}
		s.mu.Unlock()
		close(f.done)
	}()
	return f, nil
}

// leave drops one waiter; the last one to leave a running flight cancels it
// and forgets it, so a later caller starts afresh instead of joining a
// canceled download.
func (s *Store) leave(f *flight) {
	s.mu.Lock()
	defer s.mu.Unlock()
	f.waiters--
	if f.waiters > 0 {
		return
	}
	select {
	case <-f.done:
		return
	default:
	}
	f.cancel()
	for k, g := range s.flights {
		if g == f {
			delete(s.flights, k)
		}
	}
}

// removeEmptyFolders removes the model folder <cache>/<key> of a failed
// download if nothing arrived in it: the folder and the empty folders below
// it go, a folder with any file in it (a partial download kept for resuming
// included) stays. Symlinks are neither followed nor removed. Called with
// mu held and no download of the folder running.
func (s *Store) removeEmptyFolders(key string) {
	p := filepath.Join(s.cacheDir, filepath.FromSlash(key))
	if st, err := os.Lstat(p); err != nil || !st.IsDir() {
		return
	}
	var prune func(dir string) bool
	prune = func(dir string) bool {
		entries, err := os.ReadDir(dir)
		if err != nil {
			return false
		}
		empty := true
		for _, e := range entries {
			if !e.IsDir() || !prune(filepath.Join(dir, e.Name())) {
				empty = false
			}
		}
		return empty && os.Remove(dir) == nil
	}
	if prune(p) {
		s.log.Debug("removed the empty folder of a failed download", "path", p)
	}
}

// download fetches what (info, typ) needs into its model folder.
func (s *Store) download(ctx context.Context, info Info, typ Type) error {
	folder := filepath.Join(s.cacheDir, string(info.Task), info.Folder(typ))
	if err := os.MkdirAll(folder, 0o755); err != nil {
		return fmt.Errorf("%w: %w", ErrDownload, err)
	}
	// Every write below goes through root, so no path from the network
	// (nor a symlink planted inside the folder) can reach outside it.
	root, err := os.OpenRoot(folder)
	if err != nil {
		return fmt.Errorf("%w: %w", ErrDownload, err)
	}
	defer root.Close()

	start := time.Now()
	var n int
	var bytes int64
	if info.Task == TaskOCR {
		n, bytes, err = s.downloadOCR(ctx, root, info, typ)
	} else {
		n, bytes, err = s.downloadRepo(ctx, root, info)
	}
	s.observer.DownloadFinished(folderKey(info, typ), err)
	if err != nil {
		if ctx.Err() != nil {
			return fmt.Errorf("download %s: %w", info.Name, ctx.Err())
		}
		if errors.Is(err, ErrNotFound) || errors.Is(err, ErrChecksum) || errors.Is(err, ErrDownload) {
			return fmt.Errorf("download %s: %w", info.Name, err)
		}
		return fmt.Errorf("%w: %s: %w", ErrDownload, info.Name, err)
	}
	secs := time.Since(start).Seconds()
	s.log.Info("downloaded model", "task", info.Task, "type", typ, "model", info.Name, "files", n,
		"bytes", bytes, "seconds", fmt.Sprintf("%.1f", secs), "MBps", fmt.Sprintf("%.2f", float64(bytes)/max(secs, 1e-3)/1e6))
	return nil
}

// downloadRepo fetches the model's hub repo (its whole snapshot minus
// ignored files) into root, skipping files already present with the right
// size.
func (s *Store) downloadRepo(ctx context.Context, root *os.Root, info Info) (int, int64, error) {
	repo := s.org + "/" + info.Name
	s.log.Info("downloading model", "task", info.Task, "model", info.Name, "repo", repo, "revision", s.revision, "endpoint", s.endpoint)
	commit, files, err := s.repoSnapshot(ctx, repo)
	if err != nil {
		return 0, 0, err
	}
	model := folderKey(info, TypeVisual) // CLIP and face repos: one folder for every type
	var todo []*remoteFile
	var kept []hubFile // listed files: the manifest's entries
	var total int64
	for _, f := range files {
		if ignoredRepoFile(f.Path) || f.Path == ManifestFile {
			continue
		}
		if !validRepoPath(f.Path) {
			s.log.Warn("skipping a repo file with an unsafe path", "repo", repo, "path", f.Path)
			continue
		}
		kept = append(kept, f)
		if st, err := root.Stat(f.Path); err == nil && st.Mode().IsRegular() && (f.Size < 0 || st.Size() == f.Size) {
			continue // already here, e.g. from an earlier partial run
		}
		todo = append(todo, &remoteFile{
			URL:  s.repoURL("", repo, "/resolve/"+url.PathEscape(commit)+"/"+escapePath(f.Path)),
			Dest: f.Path, Size: f.Size, SHA256: f.SHA256, GitOID: f.GitOID, Hub: true, Model: model,
		})
		if total >= 0 && f.Size >= 0 {
			total += f.Size
		} else {
			total = -1
		}
	}
	s.log.Debug("repo snapshot", "repo", repo, "commit", commit, "files", len(files), "to_fetch", len(todo), "bytes", total)
	s.observer.DownloadStarted(model, len(todo), total)

	// One file failing does not stop the others: whatever verifies is kept
	// (a type whose files all arrived is usable), and a later attempt
	// fetches only what is missing.
	var g errgroup.Group
	g.SetLimit(s.parallel)
	for _, f := range todo {
		g.Go(func() error { return s.fetchFile(ctx, root, f) })
	}
	if err := g.Wait(); err != nil {
		return 0, 0, err
	}
	if err := s.recordRepo(root, repo, commit, kept, todo); err != nil {
		return 0, 0, err
	}
	var got int64
	for _, f := range todo {
		got += max(f.Size, 0)
	}
	return len(todo), got, nil
}

// downloadOCR fetches the PP-OCRv5 file of (info, typ) into
// <type>/model.onnx under root.
func (s *Store) downloadOCR(ctx context.Context, root *os.Root, info Info, typ Type) (int, int64, error) {
	src, err := ocrSource(s.ocrFiles, info, typ)
	if err != nil {
		return 0, 0, err
	}
	u := s.ocrBase + "/" + escapePath(src.Path)
	s.log.Info("downloading model", "task", info.Task, "type", typ, "model", info.Name, "key", src.Key, "url", u)
	f := &remoteFile{URL: u, Dest: string(typ) + "/" + ModelFile, Size: -1, SHA256: src.SHA256, Model: folderKey(info, typ)}
	s.observer.DownloadStarted(f.Model, 1, -1)
	if err := s.fetchFile(ctx, root, f); err != nil {
		return 0, 0, err
	}
	st, err := root.Stat(f.Dest)
	if err != nil {
		return 0, 0, err
	}
	if err := s.recordOCR(root, s.ocrBase, ManifestEntry{Path: f.Dest, Size: st.Size(), SHA256: src.SHA256}); err != nil {
		return 0, 0, err
	}
	return 1, st.Size(), nil
}

// Clear removes a model's whole folder <cache>/<task>/<name>, as Immich's
// clear_cache does after a failed load, so the next Ensure downloads it
// again. It never deletes anything outside that folder: the name is one
// validated path component, a symlink at that path is unlinked (not
// followed), and the removal of a real folder does not follow the symlinks
// inside it. A plain file at the path is unlinked. A missing folder is not
// an error. The name must be in the catalogue under task (every OCR
// detection folder name is itself a catalogue name). It fails with ErrBusy
// while the model is being downloaded.
func (s *Store) Clear(task Task, name string) error {
	if _, ok := ValidTask(string(task)); !ok {
		return fmt.Errorf("%w: unknown task %q", ErrUnsupported, task)
	}
	info, err := Find(name)
	if err != nil {
		return err
	}
	if info.Task != task {
		return fmt.Errorf("%w: %s model %q under %s", ErrUnsupported, info.Task, info.Name, task)
	}
	return s.clearFolder(string(task) + "/" + info.Name)
}

// ClearType clears the folder that holds (task, typ, name): the same as
// Clear except for OCR detection, whose folder drops the "LANG__" prefix.
func (s *Store) ClearType(task Task, typ Type, name string) error {
	info, err := Lookup(task, typ, name)
	if err != nil {
		return err
	}
	return s.clearFolder(folderKey(info, typ))
}

func (s *Store) clearFolder(key string) error {
	s.mu.Lock()
	defer s.mu.Unlock() // held so no download starts while we remove
	for _, f := range s.flights {
		if f.folder == key {
			return fmt.Errorf("%w: %s", ErrBusy, key)
		}
	}
	p := filepath.Join(s.cacheDir, filepath.FromSlash(key))
	st, err := os.Lstat(p)
	if errors.Is(err, fs.ErrNotExist) {
		s.log.Warn("clearing a model that is not in the cache", "path", p)
		return nil
	}
	if err != nil {
		return err
	}
	if !st.IsDir() {
		// A symlink (to anywhere) or a plain file: unlink it, never follow.
		s.log.Warn("removing a non-directory at a model's cache path", "path", p, "mode", st.Mode().String())
		return os.Remove(p)
	}
	// os.RemoveAll works with openat/unlinkat and does not follow symlinks
	// below p.
	if err := os.RemoveAll(p); err != nil {
		return err
	}
	s.log.Info("cleared model cache folder", "path", p)
	return nil
}
