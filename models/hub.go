package models

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"path"
	"regexp"
	"strings"
)

// This file is the Hugging Face hub client, done the way
// huggingface_hub.snapshot_download (1.x) talks to the hub:
//
//  1. GET {endpoint}/api/models/{repo}/revision/{revision} resolves the
//     revision to a commit ("sha") and lists "siblings";
//  2. GET {endpoint}/api/models/{repo}/tree/{commit}?recursive=true lists every
//     file with its size, git blob id ("oid") and, for LFS files, the sha256
//     ("lfs.oid"), paginated with a Link: <...>; rel="next" header;
//  3. GET {endpoint}/{repo}/resolve/{commit}/{path} per file. The hub answers
//     small files itself (ETag = git blob id) and redirects LFS files to a CDN
//     with X-Linked-Etag (sha256), X-Linked-Size and X-Repo-Commit on the
//     redirect.
//
// Mirrors (HF_ENDPOINT) that lack the tree API fall back to the siblings
// list, with sizes and digests taken from the resolve headers.

// hubFile is one file of a repo snapshot.
type hubFile struct {
	Path   string
	Size   int64  // -1: unknown
	SHA256 string // LFS files: lower-case hex
	GitOID string // git blob id (sha1 hex) of non-LFS files
}

// maxAPIBody bounds the JSON the hub may send for one API page.
const maxAPIBody = 16 << 20

// maxTreePages bounds pagination, so a misbehaving server cannot loop us.
const maxTreePages = 1000

var (
	reHex40 = regexp.MustCompile(`^[0-9a-f]{40}$`)
	reHex64 = regexp.MustCompile(`^[0-9a-f]{64}$`)
	reNext  = regexp.MustCompile(`<([^>]*)>\s*;\s*rel="?next"?`)
)

// repoURL builds {endpoint}/{prefix}{repo}/{suffix} with every path segment
// of repo escaped.
func (s *Store) repoURL(prefix, repo, suffix string) string {
	return s.endpoint + "/" + prefix + escapePath(repo) + suffix
}

// escapePath escapes each "/"-separated segment of p.
func escapePath(p string) string {
	segs := strings.Split(p, "/")
	for i, seg := range segs {
		segs[i] = url.PathEscape(seg)
	}
	return strings.Join(segs, "/")
}

// repoSnapshot resolves the configured revision of repo and lists its files.
func (s *Store) repoSnapshot(ctx context.Context, repo string) (commit string, files []hubFile, err error) {
	var rev struct {
		SHA      string `json:"sha"`
		Siblings []struct {
			RFilename string `json:"rfilename"`
		} `json:"siblings"`
	}
	revURL := s.repoURL("api/models/", repo, "/revision/"+url.PathEscape(s.revision))
	if err := s.retry(ctx, revURL, func(ctx context.Context) error {
		_, err := s.getJSON(ctx, revURL, &rev)
		return err
	}); err != nil {
		return "", nil, fmt.Errorf("repo %s revision %s: %w", repo, s.revision, err)
	}
	commit = rev.SHA
	if commit == "" {
		// A mirror that does not resolve revisions: use the revision as is.
		commit = s.revision
	}

	files, err = s.repoTree(ctx, repo, commit)
	if err == nil {
		return commit, files, nil
	}
	var se *statusError
	if !errors.As(err, &se) || se.Code != http.StatusNotFound || se.ErrorCode != "" {
		return "", nil, fmt.Errorf("repo %s tree at %s: %w", repo, commit, err)
	}
	// The endpoint has no tree API (a 404 without the hub's X-Error-Code):
	// take the names from the revision's siblings.
	s.log.Debug("hub has no tree API; using the revision's file list", "repo", repo)
	files = files[:0]
	for _, sib := range rev.Siblings {
		files = append(files, hubFile{Path: sib.RFilename, Size: -1})
	}
	return commit, files, nil
}

// repoTree lists every file of repo at commit, following pagination.
func (s *Store) repoTree(ctx context.Context, repo, commit string) ([]hubFile, error) {
	type entry struct {
		Type string `json:"type"`
		Path string `json:"path"`
		Size int64  `json:"size"`
		OID  string `json:"oid"`
		LFS  *struct {
			OID  string `json:"oid"`
			Size int64  `json:"size"`
		} `json:"lfs"`
	}
	next := s.repoURL("api/models/", repo, "/tree/"+url.PathEscape(commit)+"?recursive=true")
	var files []hubFile
	for page := 0; next != ""; page++ {
		if page >= maxTreePages {
			return nil, fmt.Errorf("tree listing has more than %d pages", maxTreePages)
		}
		var entries []entry
		var hdr http.Header
		cur := next
		if err := s.retry(ctx, cur, func(ctx context.Context) error {
			var err error
			hdr, err = s.getJSON(ctx, cur, &entries)
			return err
		}); err != nil {
			return nil, err
		}
		for _, e := range entries {
			if e.Type != "file" {
				continue
			}
			f := hubFile{Path: e.Path, Size: e.Size}
			if e.LFS != nil {
				f.SHA256 = strings.ToLower(e.LFS.OID)
				if e.LFS.Size > 0 {
					f.Size = e.LFS.Size
				}
			} else if reHex40.MatchString(e.OID) {
				f.GitOID = e.OID
			}
			if !reHex64.MatchString(f.SHA256) {
				f.SHA256 = ""
			}
			files = append(files, f)
		}
		next = ""
		if m := reNext.FindStringSubmatch(hdr.Get("Link")); m != nil {
			u, err := url.Parse(cur)
			if err != nil {
				return nil, err
			}
			ref, err := u.Parse(m[1])
			if err != nil {
				return nil, fmt.Errorf("bad Link header %q: %w", hdr.Get("Link"), err)
			}
			next = ref.String()
		}
	}
	return files, nil
}

// getJSON GETs an API URL with the hub's headers and decodes the body.
func (s *Store) getJSON(ctx context.Context, u string, v any) (http.Header, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return nil, err
	}
	s.hubHeaders(req)
	req.Header.Set("Accept", "application/json")
	resp, err := s.client.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, newStatusError(resp)
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxAPIBody+1))
	if err != nil {
		return nil, err
	}
	if len(body) > maxAPIBody {
		return nil, fmt.Errorf("%s: response over %d bytes", u, maxAPIBody)
	}
	if err := json.Unmarshal(body, v); err != nil {
		return nil, fmt.Errorf("%s: %w", u, err)
	}
	return resp.Header, nil
}

// hubHeaders sets what huggingface_hub's build_hf_headers sets that
// matters: the user agent and, with a token, the bearer authorization. Go's
// client drops Authorization when a redirect leaves the host, as the hub's
// CDN redirects do.
func (s *Store) hubHeaders(req *http.Request) {
	req.Header.Set("User-Agent", s.userAgent)
	if s.token != "" {
		req.Header.Set("Authorization", "Bearer "+s.token)
	}
}

// ignoredRepoFile reports whether a repo file is skipped. Immich passes
// ignore_patterns ["*.armnn", "*.rknn"] for ONNX (fnmatch, where "*" also
// matches "/"); we also skip ARM NN's compiled cache and git metadata, which
// no loader reads.
func ignoredRepoFile(p string) bool {
	for _, suf := range []string{".armnn", ".rknn", ".anncache"} {
		if strings.HasSuffix(p, suf) {
			return true
		}
	}
	base := path.Base(p)
	return base == ".gitattributes" || base == ".gitignore" || strings.HasPrefix(p, ".cache/")
}

// validRepoPath reports whether a path from the hub is a safe relative path
// to write below a model folder: clean, relative, no "..", no backslashes or
// control bytes, no hidden ".partial" clash.
func validRepoPath(p string) bool {
	if p == "" || len(p) > 1024 || strings.HasPrefix(p, "/") || strings.HasSuffix(p, ".partial") {
		return false
	}
	for i := 0; i < len(p); i++ {
		if c := p[i]; c < 0x20 || c == 0x7f || c == '\\' || c == ':' {
			return false
		}
	}
	for _, seg := range strings.Split(p, "/") {
		if seg == "" || seg == "." || seg == ".." {
			return false
		}
	}
	return path.Clean(p) == p
}
