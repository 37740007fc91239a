// Package hubtest is a fake Hugging Face hub for tests: an httptest server
// that speaks the parts of the hub's HTTP protocol that
// huggingface_hub.snapshot_download (and models.Store) use, serving files
// added from memory or from a folder, with fault injection and request
// counts.
//
// Protocol served (as huggingface.co does):
//
//	GET  /api/models/{org}/{name}[/revision/{rev}]   {"sha": commit, "siblings": [{"rfilename": ...}]}
//	GET  /api/models/{org}/{name}/tree/{rev}[/{path}]?recursive=true
//	     [{"type":"file","path":...,"size":...,"oid":gitBlobID[,"lfs":{"oid":sha256,"size":...,"pointerSize":134}]}, {"type":"directory",...}]
//	     paginated with Link: <...&cursor=N>; rel="next"
//	GET|HEAD /{org}/{name}/resolve/{rev}/{path}
//	     small files: 200, ETag "gitBlobID", X-Repo-Commit
//	     LFS files: 302 to a CDN on another host ("localhost" instead of
//	     "127.0.0.1", so clients drop Authorization), with X-Linked-Etag
//	     "sha256", X-Linked-Size, X-Repo-Commit
//	errors: 401 + X-Error-Code: RepoNotFound for an unknown repo or a
//	missing token, 404 + RevisionNotFound / EntryNotFound
//
// Bodies support "Range: bytes=N-" (206, or 416 past the end). Plain files
// (e.g. RapidOCR's models for an OCR base URL) are served at any other path
// with AddFile.
//
// Requests and faults are keyed by:
//
//	"{org}/{name}/{path}"          resolve of a repo file, any revision (FileKey)
//	"cdn/{org}/{name}/{path}"      the CDN download of an LFS file (CDNKey)
//	"api/models/{org}/{name}/revision/{rev}", "api/models/{org}/{name}/tree/{rev}"
//	"{url path without the leading slash}"  plain files
package hubtest

import (
	"context"
	"crypto/sha1" //nolint:gosec // git blob ids
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io/fs"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// Options configures a Server. The zero value is a hub like huggingface.co.
type Options struct {
	// TreePageSize is the number of entries per tree page; 0 means 1000.
	TreePageSize int
	// NoTreeAPI answers the tree API with a plain 404 (no X-Error-Code), like
	// a mirror that lacks it.
	NoTreeAPI bool
	// LFSThreshold: files of at least this many bytes, and every *.onnx, are
	// LFS files. 0 means 1024.
	LFSThreshold int
	// NoRedirect serves LFS files from resolve directly instead of
	// redirecting to the CDN.
	NoRedirect bool
	// Token, if set, must be sent as "Authorization: Bearer <Token>" to the
	// API and resolve endpoints; requests without it get 401 RepoNotFound.
	Token string
}

// Fault changes how matching requests are answered.
type Fault struct {
	// Times is how many requests the fault applies to; 0 means all.
	Times int
	// Status answers with this HTTP status and an error body instead of
	// the content (404 carries X-Error-Code: EntryNotFound).
	Status int
	// RetryAfter sets a Retry-After header (seconds) on a Status answer.
	RetryAfter int
	// Delay waits before answering (the request's context ends the wait).
	Delay time.Duration
	// Truncate sends the full Content-Length but only TruncateAt bytes of
	// the body, then drops the connection.
	Truncate   bool
	TruncateAt int
	// Stall sends StallAt bytes, then nothing for Stall, then the rest.
	Stall   time.Duration
	StallAt int
	// Corrupt flips one byte of the body: same size, wrong digest.
	Corrupt bool
	// IgnoreRange answers a Range request with the whole body (200).
	IgnoreRange bool
}

// Server is a running fake hub. Its methods are safe for concurrent use.
type Server struct {
	opts Options
	hub  *httptest.Server
	cdn  *httptest.Server
	// cdnBase is the CDN's URL with "localhost" as host.
	cdnBase string

	mu        sync.Mutex
	repos     map[string]*repoData // "org/name"
	plain     map[string][]byte    // url path without leading slash
	faults    map[string][]*Fault
	counts    map[string]int
	bytes     map[string]int64
	total     int
	authLeaks []string

	dmu     sync.Mutex
	digests map[*byte]digest
}

type repoData struct {
	refs    map[string]string            // revision name → commit
	commits map[string]map[string][]byte // commit → path → data
}

// New starts a hub and its CDN; both stop when the test ends.
func New(t testing.TB, opts Options) *Server {
	t.Helper()
	if opts.TreePageSize <= 0 {
		opts.TreePageSize = 1000
	}
	if opts.LFSThreshold <= 0 {
		opts.LFSThreshold = 1024
	}
	s := &Server{
		opts:    opts,
		repos:   map[string]*repoData{},
		plain:   map[string][]byte{},
		faults:  map[string][]*Fault{},
		counts:  map[string]int{},
		bytes:   map[string]int64{},
		digests: map[*byte]digest{},
	}
	s.hub = httptest.NewServer(http.HandlerFunc(s.serveHub))
	s.cdn = httptest.NewServer(http.HandlerFunc(s.serveCDN))
	t.Cleanup(func() {
		s.hub.Close()
		s.cdn.Close()
	})
	u, _ := url.Parse(s.cdn.URL)
	if _, port, err := net.SplitHostPort(u.Host); err == nil {
		if addrs, err := net.DefaultResolver.LookupHost(context.Background(), "localhost"); err == nil && slices.Contains(addrs, "127.0.0.1") {
			u.Host = net.JoinHostPort("localhost", port)
		}
	}
	s.cdnBase = u.String()
	return s
}

// URL is the hub's base URL (for HF_ENDPOINT or an OCR base URL).
func (s *Server) URL() string { return s.hub.URL }

// Client returns an HTTP client that can reach the hub and its CDN.
func (s *Server) Client() *http.Client { return s.hub.Client() }

// FileKey is the request/fault key of a repo file's resolve requests.
func FileKey(repo, file string) string { return repo + "/" + file }

// CDNKey is the request/fault key of an LFS file's CDN downloads.
func CDNKey(repo, file string) string { return "cdn/" + repo + "/" + file }

// ContentKey is the key of the request that carries a repo file's bytes:
// CDNKey for an LFS file that is redirected, FileKey otherwise. Body faults
// (Truncate, Stall, Corrupt, IgnoreRange) belong there.
func (s *Server) ContentKey(repo, file string, data []byte) string {
	if s.isLFS(file, data) && !s.opts.NoRedirect {
		return CDNKey(repo, file)
	}
	return FileKey(repo, file)
}

// AddRepo sets the "main" revision of repo ("org/name") to files and
// returns its commit id.
func (s *Server) AddRepo(repo string, files map[string][]byte) string {
	return s.AddRevision(repo, "main", files)
}

// AddRevision sets a revision (branch or tag) of repo to files and returns
// the commit id, which also works as a revision.
func (s *Server) AddRevision(repo, revision string, files map[string][]byte) string {
	commit := commitID(files)
	s.mu.Lock()
	defer s.mu.Unlock()
	r := s.repos[repo]
	if r == nil {
		r = &repoData{refs: map[string]string{}, commits: map[string]map[string][]byte{}}
		s.repos[repo] = r
	}
	cp := make(map[string][]byte, len(files))
	for k, v := range files {
		cp[k] = slices.Clone(v)
	}
	r.commits[commit] = cp
	r.refs[revision] = commit
	return commit
}

// AddRepoDir adds the files under dir (recursively) as a revision of repo.
func (s *Server) AddRepoDir(repo, revision, dir string) (string, error) {
	files := map[string][]byte{}
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		rel, err := filepath.Rel(dir, p)
		if err != nil {
			return err
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		files[filepath.ToSlash(rel)] = b
		return nil
	})
	if err != nil {
		return "", err
	}
	return s.AddRevision(repo, revision, files), nil
}

// AddFile serves data at URL path "/"+urlPath (for sources that are plain
// file servers, such as RapidOCR's).
func (s *Server) AddFile(urlPath string, data []byte) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.plain[strings.TrimPrefix(urlPath, "/")] = slices.Clone(data)
}

// Fail queues faults for requests with key; they apply in order.
func (s *Server) Fail(key string, faults ...Fault) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, f := range faults {
		s.faults[key] = append(s.faults[key], &f)
	}
}

// Requests is the number of requests received with key.
func (s *Server) Requests(key string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.counts[key]
}

// Total is the number of requests received by the hub and the CDN.
func (s *Server) Total() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.total
}

// AuthLeaks lists CDN requests that carried an Authorization header (a
// client must not forward the hub token to another host).
func (s *Server) AuthLeaks() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.authLeaks)
}

// hit counts a request and takes the fault that applies to it, if any.
func (s *Server) hit(key string) *Fault {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.counts[key]++
	s.total++
	q := s.faults[key]
	if len(q) == 0 {
		return nil
	}
	f := q[0]
	if f.Times == 0 {
		return f
	}
	f.Times--
	if f.Times == 0 {
		q = q[1:]
	}
	s.faults[key] = q
	return f
}

// segments splits the escaped path into unescaped segments, so "%2F" in a
// revision stays inside its segment.
func segments(r *http.Request) []string {
	raw := strings.Split(strings.TrimPrefix(r.URL.EscapedPath(), "/"), "/")
	out := make([]string, len(raw))
	for i, seg := range raw {
		u, err := url.PathUnescape(seg)
		if err != nil {
			u = seg
		}
		out[i] = u
	}
	return out
}

func (s *Server) serveHub(w http.ResponseWriter, r *http.Request) {
	seg := segments(r)
	switch {
	case len(seg) >= 4 && seg[0] == "api" && seg[1] == "models":
		s.serveAPI(w, r, seg[2]+"/"+seg[3], seg[4:])
	case len(seg) >= 5 && seg[2] == "resolve":
		s.serveResolve(w, r, seg[0]+"/"+seg[1], seg[3], strings.Join(seg[4:], "/"))
	default:
		key := strings.TrimPrefix(r.URL.Path, "/")
		f := s.hit(key)
		s.mu.Lock()
		data, ok := s.plain[key]
		s.mu.Unlock()
		if !wait(r, f) {
			return
		}
		switch {
		case f != nil && f.Status != 0:
			hubError(w, f, f.Status, errorCode(f.Status), "injected")
		case !ok:
			hubError(w, nil, http.StatusNotFound, "EntryNotFound", "no such file")
		default:
			s.serveBody(key, w, r, data, f)
		}
	}
}

// authorized checks the token; on failure it answers like the hub does for
// a private repo.
func (s *Server) authorized(w http.ResponseWriter, r *http.Request) bool {
	if s.opts.Token == "" || r.Header.Get("Authorization") == "Bearer "+s.opts.Token {
		return true
	}
	hubError(w, nil, http.StatusUnauthorized, "RepoNotFound", "Repository not found")
	return false
}

// lookup resolves repo and revision to a commit and its files.
// lookupOrError is lookup that answers the hub's error for an unknown
// repository (401 RepoNotFound) or revision (404) itself.
func (s *Server) lookupOrError(w http.ResponseWriter, repoID, rev string) (string, map[string][]byte, bool) {
	commit, files, code := s.lookup(repoID, rev)
	switch code {
	case "RepoNotFound":
		hubError(w, nil, http.StatusUnauthorized, code, "Repository not found")
		return "", nil, false
	case "RevisionNotFound":
		hubError(w, nil, http.StatusNotFound, code, "Invalid rev id: "+rev)
		return "", nil, false
	}
	return commit, files, true
}

func (s *Server) lookup(repoID, rev string) (string, map[string][]byte, string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	r := s.repos[repoID]
	if r == nil {
		return "", nil, "RepoNotFound"
	}
	commit, ok := r.refs[rev]
	if !ok {
		commit = rev
	}
	files, ok := r.commits[commit]
	if !ok {
		return "", nil, "RevisionNotFound"
	}
	return commit, files, ""
}

func (s *Server) serveAPI(w http.ResponseWriter, r *http.Request, repoID string, rest []string) {
	rev := "main"
	kind := "revision"
	var sub string
	switch {
	case len(rest) == 0:
	case len(rest) == 2 && rest[0] == "revision":
		rev = rest[1]
	case len(rest) >= 2 && rest[0] == "tree":
		kind, rev, sub = "tree", rest[1], strings.Join(rest[2:], "/")
	default:
		hubError(w, nil, http.StatusNotFound, "", "Not Found")
		return
	}
	f := s.hit("api/models/" + repoID + "/" + kind + "/" + rev)
	if !wait(r, f) {
		return
	}
	if f != nil && f.Status != 0 {
		hubError(w, f, f.Status, "", "injected")
		return
	}
	if kind == "tree" && s.opts.NoTreeAPI {
		hubError(w, nil, http.StatusNotFound, "", "Not Found")
		return
	}
	if !s.authorized(w, r) {
		return
	}
	commit, files, ok := s.lookupOrError(w, repoID, rev)
	if !ok {
		return
	}
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	if kind == "revision" {
		type sibling struct {
			RFilename string `json:"rfilename"`
		}
		info := struct {
			ID       string    `json:"id"`
			ModelID  string    `json:"modelId"`
			SHA      string    `json:"sha"`
			Private  bool      `json:"private"`
			Siblings []sibling `json:"siblings"`
		}{ID: repoID, ModelID: repoID, SHA: commit}
		for _, p := range sortedKeys(files) {
			info.Siblings = append(info.Siblings, sibling{p})
		}
		_ = json.NewEncoder(w).Encode(info)
		return
	}
	s.serveTree(w, r, commit, files, sub)
}

type treeEntry struct {
	Type string    `json:"type"`
	OID  string    `json:"oid"`
	Size int       `json:"size"`
	Path string    `json:"path"`
	LFS  *lfsEntry `json:"lfs,omitempty"`
}

type lfsEntry struct {
	OID         string `json:"oid"`
	Size        int    `json:"size"`
	PointerSize int    `json:"pointerSize"`
}

func (s *Server) serveTree(w http.ResponseWriter, r *http.Request, commit string, files map[string][]byte, sub string) {
	recursive := r.URL.Query().Get("recursive") == "true" || r.URL.Query().Get("recursive") == "True"
	var entries []treeEntry
	dirs := map[string]bool{}
	for _, p := range sortedKeys(files) {
		if sub != "" && !strings.HasPrefix(p, sub+"/") {
			continue
		}
		rel := strings.TrimPrefix(p, sub+"/")
		if sub == "" {
			rel = p
		}
		parts := strings.Split(rel, "/")
		for i := 1; i < len(parts); i++ {
			d := path.Join(sub, strings.Join(parts[:i], "/"))
			if !dirs[d] && (recursive || i == 1) {
				dirs[d] = true
				entries = append(entries, treeEntry{Type: "directory", OID: gitOID([]byte(d)), Path: d})
			}
		}
		if !recursive && len(parts) > 1 {
			continue
		}
		data := files[p]
		e := treeEntry{Type: "file", OID: s.oid(data), Size: len(data), Path: p}
		if s.isLFS(p, data) {
			e.LFS = &lfsEntry{OID: s.sha(data), Size: len(data), PointerSize: 134}
		}
		entries = append(entries, e)
	}
	cursor, _ := strconv.Atoi(r.URL.Query().Get("cursor"))
	cursor = min(max(cursor, 0), len(entries))
	end := min(cursor+s.opts.TreePageSize, len(entries))
	if end < len(entries) {
		q := r.URL.Query()
		q.Set("cursor", strconv.Itoa(end))
		next := s.hub.URL + r.URL.EscapedPath() + "?" + q.Encode()
		w.Header().Set("Link", "<"+next+`>; rel="next"`)
	}
	page := entries[cursor:end]
	if page == nil {
		page = []treeEntry{}
	}
	_ = json.NewEncoder(w).Encode(page)
}

func (s *Server) serveResolve(w http.ResponseWriter, r *http.Request, repoID, rev, file string) {
	f := s.hit(FileKey(repoID, file))
	if !wait(r, f) {
		return
	}
	if f != nil && f.Status != 0 {
		hubError(w, f, f.Status, errorCode(f.Status), "injected")
		return
	}
	if !s.authorized(w, r) {
		return
	}
	commit, files, ok := s.lookupOrError(w, repoID, rev)
	if !ok {
		return
	}
	data, ok := files[file]
	if !ok {
		w.Header().Set("X-Repo-Commit", commit)
		hubError(w, nil, http.StatusNotFound, "EntryNotFound", "Entry not found")
		return
	}
	h := w.Header()
	h.Set("X-Repo-Commit", commit)
	if s.isLFS(file, data) {
		sum := s.sha(data)
		h.Set("X-Linked-Etag", `"`+sum+`"`)
		h.Set("X-Linked-Size", strconv.Itoa(len(data)))
		if !s.opts.NoRedirect {
			h.Set("ETag", `"`+s.oid(data)+`"`)
			h.Set("Location", s.cdnBase+"/"+escapePath(CDNKey(repoID, file))+"?sha256="+sum)
			w.WriteHeader(http.StatusFound)
			return
		}
		h.Set("ETag", `"`+sum+`"`)
	} else {
		h.Set("ETag", `"`+s.oid(data)+`"`)
	}
	s.serveBody(FileKey(repoID, file), w, r, data, f)
}

func (s *Server) serveCDN(w http.ResponseWriter, r *http.Request) {
	key := strings.Join(segments(r), "/")
	f := s.hit(key)
	if r.Header.Get("Authorization") != "" {
		s.mu.Lock()
		s.authLeaks = append(s.authLeaks, key)
		s.mu.Unlock()
	}
	if !wait(r, f) {
		return
	}
	if f != nil && f.Status != 0 {
		hubError(w, f, f.Status, "", "injected")
		return
	}
	// key = cdn/{org}/{name}/{path}; serve what the sha256 names.
	parts := strings.SplitN(strings.TrimPrefix(key, "cdn/"), "/", 3)
	want := r.URL.Query().Get("sha256")
	if len(parts) == 3 {
		s.mu.Lock()
		var data []byte
		found := false
		if rp := s.repos[parts[0]+"/"+parts[1]]; rp != nil {
			for _, files := range rp.commits {
				if d, ok := files[parts[2]]; ok && s.sha(d) == want {
					data, found = d, true
					break
				}
			}
		}
		s.mu.Unlock()
		if found {
			s.serveBody(key, w, r, data, f)
			return
		}
	}
	http.Error(w, "NoSuchKey", http.StatusNotFound)
}

// wait applies a fault's delay; false if the client went away.
func wait(r *http.Request, f *Fault) bool {
	if f == nil || f.Delay <= 0 {
		return true
	}
	t := time.NewTimer(f.Delay)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-r.Context().Done():
		return false
	}
}

func errorCode(status int) string {
	if status == http.StatusNotFound {
		return "EntryNotFound"
	}
	return ""
}

// hubError answers like the hub: X-Error-Code, X-Error-Message and a JSON
// {"error": ...} body.
func hubError(w http.ResponseWriter, f *Fault, status int, code, msg string) {
	h := w.Header()
	if code != "" {
		h.Set("X-Error-Code", code)
	}
	h.Set("X-Error-Message", msg)
	if f != nil && f.RetryAfter > 0 {
		h.Set("Retry-After", strconv.Itoa(f.RetryAfter))
	}
	h.Set("Content-Type", "application/json; charset=utf-8")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(map[string]string{"error": msg})
}

// serveBody writes data with Range support and the fault's body effects.
func (s *Server) serveBody(key string, w http.ResponseWriter, r *http.Request, data []byte, f *Fault) {
	if f == nil {
		f = &Fault{}
	}
	if f.Corrupt && len(data) > 0 {
		data = slices.Clone(data)
		data[len(data)/2] ^= 0xff
	}
	h := w.Header()
	h.Set("Accept-Ranges", "bytes")
	h.Set("Content-Type", "application/octet-stream")
	status := http.StatusOK
	body := data
	if start, ok := parseRange(r.Header.Get("Range")); ok && !f.IgnoreRange {
		if start >= len(data) {
			h.Set("Content-Range", fmt.Sprintf("bytes */%d", len(data)))
			w.WriteHeader(http.StatusRequestedRangeNotSatisfiable)
			return
		}
		status = http.StatusPartialContent
		h.Set("Content-Range", fmt.Sprintf("bytes %d-%d/%d", start, len(data)-1, len(data)))
		body = data[start:]
	}
	h.Set("Content-Length", strconv.Itoa(len(body)))
	w.WriteHeader(status)
	if r.Method == http.MethodHead {
		return
	}
	rc := http.NewResponseController(w)
	switch {
	case f.Truncate:
		n, _ := w.Write(body[:min(max(f.TruncateAt, 0), len(body))])
		s.served(key, n)
		_ = rc.Flush()
		// Drop the connection: the client sees an unexpected EOF.
		panic(http.ErrAbortHandler)
	case f.Stall > 0:
		at := min(max(f.StallAt, 0), len(body))
		n, _ := w.Write(body[:at])
		s.served(key, n)
		_ = rc.Flush()
		t := time.NewTimer(f.Stall)
		defer t.Stop()
		select {
		case <-t.C:
		case <-r.Context().Done():
			return
		}
		n, _ = w.Write(body[at:])
		s.served(key, n)
	default:
		n, _ := w.Write(body)
		s.served(key, n)
	}
}

func (s *Server) served(key string, n int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.bytes[key] += int64(n)
}

// BytesServed is the number of body bytes written for requests with key
// (a resumed download is served only its missing tail).
func (s *Server) BytesServed(key string) int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.bytes[key]
}

// parseRange accepts "bytes=N-" (what download clients send to resume).
func parseRange(v string) (int, bool) {
	rest, ok := strings.CutPrefix(v, "bytes=")
	if !ok {
		return 0, false
	}
	a, b, ok := strings.Cut(rest, "-")
	if !ok || b != "" {
		return 0, false
	}
	n, err := strconv.Atoi(a)
	return n, err == nil && n >= 0
}

// digest caches the digests of served data (which never changes once
// added), keyed by its first byte's address.
type digest struct{ sha, oid string }

func (s *Server) digestOf(data []byte) digest {
	if len(data) == 0 {
		return digest{sha256Hex(data), gitOID(data)}
	}
	s.dmu.Lock()
	defer s.dmu.Unlock()
	if d, ok := s.digests[&data[0]]; ok {
		return d
	}
	d := digest{sha256Hex(data), gitOID(data)}
	s.digests[&data[0]] = d
	return d
}

func (s *Server) sha(data []byte) string { return s.digestOf(data).sha }
func (s *Server) oid(data []byte) string { return s.digestOf(data).oid }

func (s *Server) isLFS(file string, data []byte) bool {
	return len(data) >= s.opts.LFSThreshold || strings.HasSuffix(file, ".onnx")
}

// GitOID is git's blob id of data (what the hub lists as "oid" and sends as
// the ETag of non-LFS files).
func GitOID(data []byte) string { return gitOID(data) }

func gitOID(data []byte) string {
	h := sha1.New() //nolint:gosec // git's object id
	fmt.Fprintf(h, "blob %d\x00", len(data))
	h.Write(data)
	return hex.EncodeToString(h.Sum(nil))
}

// SHA256 is the hex sha256 of data (an LFS file's oid).
func SHA256(data []byte) string { return sha256Hex(data) }

func sha256Hex(data []byte) string {
	s := sha256.Sum256(data)
	return hex.EncodeToString(s[:])
}

func commitID(files map[string][]byte) string {
	h := sha1.New() //nolint:gosec // a made-up commit id
	for _, p := range sortedKeys(files) {
		fmt.Fprintf(h, "%s\x00%s\x00", p, gitOID(files[p]))
	}
	return hex.EncodeToString(h.Sum(nil))
}

func sortedKeys(m map[string][]byte) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}

func escapePath(p string) string {
	segs := strings.Split(p, "/")
	for i, s := range segs {
		segs[i] = url.PathEscape(s)
	}
	return strings.Join(segs, "/")
}
