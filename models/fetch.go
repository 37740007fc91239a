package models

import (
	"context"
	"crypto/sha1" //nolint:gosec // git blob ids are sha1; used to check integrity, not for security
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"path"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// remoteFile is one file to download into a model folder.
type remoteFile struct {
	URL    string
	Dest   string // slash path relative to the model folder root
	Size   int64  // -1: unknown
	SHA256 string // lower-case hex, "" if unknown
	GitOID string // git blob id, "" if unknown (needs Size)
	Hub    bool   // a hub URL: send the token, read X-Linked-* headers
	// Model is the model folder's key ("clip/ViT-B-32__openai"), for the
	// download observer.
	Model string
	// Computed is the sha256 of the data written, set once the file is
	// in place.
	Computed string
}

// Transient failures, retried with backoff.
var (
	errTruncated = errors.New("body ended before the expected size")
	errStalled   = errors.New("no data received within the stall timeout")
	errRestart   = errors.New("resumed data did not verify; restarting from zero")
)

// statusError is an HTTP answer other than success.
type statusError struct {
	URL        string
	Code       int
	ErrorCode  string // the hub's X-Error-Code (RepoNotFound, EntryNotFound, ...)
	Message    string // the hub's X-Error-Message, or the start of the body
	RetryAfter time.Duration
}

func newStatusError(resp *http.Response) *statusError {
	e := &statusError{
		URL:       resp.Request.URL.Redacted(),
		Code:      resp.StatusCode,
		ErrorCode: resp.Header.Get("X-Error-Code"),
		Message:   resp.Header.Get("X-Error-Message"),
	}
	if e.Message == "" {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 256))
		e.Message = strings.TrimSpace(strings.ToValidUTF8(string(b), "?"))
	}
	if secs, err := strconv.Atoi(resp.Header.Get("Retry-After")); err == nil && secs > 0 {
		e.RetryAfter = time.Duration(secs) * time.Second
	}
	return e
}

func (e *statusError) Error() string {
	msg := fmt.Sprintf("%s: HTTP %d", e.URL, e.Code)
	if e.ErrorCode != "" {
		msg += " " + e.ErrorCode
	}
	if e.Message != "" {
		msg += ": " + e.Message
	}
	return msg
}

// Is makes a 404, and the hub's 401 "RepoNotFound" (what it answers for a
// repo that does not exist when no token is sent), match ErrNotFound.
func (e *statusError) Is(target error) bool {
	if target != ErrNotFound {
		return false
	}
	return e.Code == http.StatusNotFound ||
		(e.Code == http.StatusUnauthorized || e.Code == http.StatusForbidden) && e.ErrorCode == "RepoNotFound"
}

func (e *statusError) transient() bool {
	return e.Code == http.StatusRequestTimeout || e.Code == http.StatusTooManyRequests || e.Code >= 500
}

// retryable reports whether err is worth another attempt: network errors,
// truncation, stalls, 408/429/5xx. Never a canceled caller, a full disk, a
// 4xx or a checksum mismatch.
func retryable(ctx context.Context, err error) bool {
	if ctx.Err() != nil || errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) && !errors.Is(err, errStalled) {
		return false
	}
	if errors.Is(err, syscall.ENOSPC) || errors.Is(err, syscall.EDQUOT) || errors.Is(err, syscall.EROFS) ||
		errors.Is(err, ErrChecksum) {
		return false
	}
	var se *statusError
	if errors.As(err, &se) {
		return se.transient()
	}
	if errors.Is(err, errTruncated) || errors.Is(err, errStalled) || errors.Is(err, errRestart) ||
		errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, syscall.ECONNRESET) {
		return true
	}
	var ne net.Error
	return errors.As(err, &ne)
}

// retry runs fn until it succeeds, fails for good, or the retries are used
// up, sleeping with exponential backoff and full jitter in between.
func (s *Store) retry(ctx context.Context, what string, fn func(context.Context) error) error {
	for attempt := 0; ; attempt++ {
		err := fn(ctx)
		if err == nil {
			return nil
		}
		if attempt >= s.retries || !retryable(ctx, err) {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			return err
		}
		wait := s.backoff(attempt)
		var se *statusError
		if errors.As(err, &se) && se.RetryAfter > wait {
			wait = min(se.RetryAfter, s.maxBackoff)
		}
		s.log.Warn("download attempt failed, retrying", "url", what, "attempt", attempt+1,
			"of", s.retries+1, "wait", wait, "err", err)
		t := time.NewTimer(wait)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return ctx.Err()
		}
	}
}

// backoff is min(max, min·2^attempt), jittered into [d/2, d).
func (s *Store) backoff(attempt int) time.Duration {
	d := s.minBackoff << min(attempt, 30)
	if d > s.maxBackoff || d <= 0 {
		d = s.maxBackoff
	}
	half := d / 2
	if half <= 0 {
		return d
	}
	return half + rand.N(half) //nolint:gosec // G404: retry jitter needs spread, not unpredictability
}

// fetchFile downloads f into root, with retries. The data goes to
// "<dest>.partial", is checked, fsynced and renamed; an interrupted attempt
// leaves only the .partial file, which the next attempt resumes.
func (s *Store) fetchFile(ctx context.Context, root *os.Root, f *remoteFile) error {
	return s.retry(ctx, f.URL, func(ctx context.Context) error { return s.fetchAttempt(ctx, root, f) })
}

// fetchAttempt is one try. It may learn f's size and sha256 from headers.
func (s *Store) fetchAttempt(ctx context.Context, root *os.Root, f *remoteFile) (err error) {
	if dir := path.Dir(f.Dest); dir != "." {
		if err := root.MkdirAll(dir, 0o755); err != nil {
			return err
		}
	}
	partial := f.Dest + ".partial"
	file, err := root.OpenFile(partial, os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return err
	}
	defer func() {
		if file != nil {
			file.Close()
		}
	}()

	// Resume only when the result can be checked; otherwise start over.
	have := int64(0)
	if st, err := file.Stat(); err == nil && (f.SHA256 != "" || f.GitOID != "") {
		have = st.Size()
	}
	if f.Size >= 0 && have > f.Size {
		have = 0
	}
	if err := file.Truncate(have); err != nil {
		return err
	}
	resumed := have > 0
	sum := newDigests(f)
	if have > 0 {
		if _, err := io.Copy(sum, io.NewSectionReader(file, 0, have)); err != nil {
			return err
		}
	}

	if f.Size < 0 || have < f.Size {
		if err := s.stream(ctx, file, f, sum, &have); err != nil {
			switch {
			case errors.Is(err, ErrChecksum):
				file.Close()
				file = nil
				_ = root.Remove(partial)
			case errors.Is(err, errRestart):
				_ = file.Truncate(0)
			case have == 0:
				// Nothing worth resuming (a 404, a refused connection).
				file.Close()
				file = nil
				_ = root.Remove(partial)
			}
			return err
		}
	}

	if f.Size >= 0 && have != f.Size {
		return fmt.Errorf("%w: got %d of %d bytes", errTruncated, have, f.Size)
	}
	if bad := sum.mismatch(f); bad != "" {
		file.Close()
		file = nil
		_ = root.Remove(partial)
		if resumed {
			// The old partial data may be what is wrong: one more try from zero.
			return fmt.Errorf("%w: %s", errRestart, bad)
		}
		return fmt.Errorf("%w: %s: %s", ErrChecksum, f.Dest, bad)
	}
	f.Computed = hex.EncodeToString(sum.sha.Sum(nil))
	if err := file.Sync(); err != nil {
		return err
	}
	if err := file.Close(); err != nil {
		file = nil
		return err
	}
	file = nil
	if err := root.Rename(partial, f.Dest); err != nil {
		return err
	}
	return syncDir(root, path.Dir(f.Dest))
}

// stream issues the GET (a Range request when resuming) and appends the body
// to file, updating have and the digests.
func (s *Store) stream(ctx context.Context, file *os.File, f *remoteFile, sum *digests, have *int64) error {
	actx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	stall := time.AfterFunc(s.stallTimeout, func() { cancel(errStalled) })
	defer stall.Stop()
	// Report a stall as a stall, not as the canceled context it causes.
	stalled := func(err error) error {
		if ctx.Err() == nil && errors.Is(context.Cause(actx), errStalled) {
			return fmt.Errorf("%s: %w", f.URL, errStalled)
		}
		return err
	}

	req, err := http.NewRequestWithContext(withRedirectLog(actx), http.MethodGet, f.URL, nil)
	if err != nil {
		return err
	}
	if f.Hub {
		s.hubHeaders(req)
	} else {
		req.Header.Set("User-Agent", s.userAgent)
	}
	// The real size, never a compressed one.
	req.Header.Set("Accept-Encoding", "identity")
	if *have > 0 {
		req.Header.Set("Range", fmt.Sprintf("bytes=%d-", *have))
	}
	resp, err := s.client.Do(req)
	if err != nil {
		return stalled(err)
	}
	defer resp.Body.Close()

	switch resp.StatusCode {
	case http.StatusOK:
		if *have > 0 { // the server ignored Range: start over
			if err := file.Truncate(0); err != nil {
				return err
			}
			*have = 0
			sum.reset(f)
		}
	case http.StatusPartialContent:
		start, _, ok := parseContentRange(resp.Header.Get("Content-Range"))
		if !ok || start != *have {
			return fmt.Errorf("%w: Content-Range %q for a request from %d", errRestart, resp.Header.Get("Content-Range"), *have)
		}
	case http.StatusRequestedRangeNotSatisfiable:
		return fmt.Errorf("%w: HTTP 416 for a request from %d", errRestart, *have)
	default:
		return newStatusError(resp)
	}
	if f.Hub {
		// Resuming needs a digest known from the start, so a digest
		// learned here always comes with have == 0 (and digests hashes
		// sha256 from the first byte anyway).
		s.learnFromHeaders(f, redirectHeaders(req.Context()), resp, *have)
	}
	if f.Size < 0 && resp.StatusCode == http.StatusOK && resp.ContentLength >= 0 && resp.Header.Get("Content-Encoding") == "" {
		f.Size = resp.ContentLength
	}
	if _, err := file.Seek(*have, io.SeekStart); err != nil {
		return err
	}

	prog := s.newProgress(f, *have)
	s.observer.DownloadProgress(FileProgress{Model: f.Model, File: f.Dest, Have: *have, Size: f.Size})
	buf := make([]byte, 256<<10)
	for {
		n, rerr := resp.Body.Read(buf)
		if n > 0 {
			stall.Reset(s.stallTimeout)
			if f.Size >= 0 && *have+int64(n) > f.Size {
				return fmt.Errorf("%w: %s: more than the expected %d bytes", ErrChecksum, f.Dest, f.Size)
			}
			if _, err := file.Write(buf[:n]); err != nil {
				return err
			}
			_, _ = sum.Write(buf[:n]) // digests.Write never fails
			*have += int64(n)
			s.observer.DownloadProgress(FileProgress{Model: f.Model, File: f.Dest, Have: *have, Size: f.Size, Received: int64(n)})
			prog.update(*have)
		}
		if rerr == io.EOF {
			prog.done(*have)
			return nil
		}
		if rerr != nil {
			return stalled(rerr)
		}
	}
}

// learnFromHeaders fills in what the tree listing did not give: the size from
// X-Linked-Size (on the hub's redirect) and the sha256 from X-Linked-Etag or
// a 64-hex ETag. Values the listing gave win.
func (s *Store) learnFromHeaders(f *remoteFile, redirect http.Header, resp *http.Response, have int64) {
	get := func(k string) string {
		if v := redirect.Get(k); v != "" {
			return v
		}
		return resp.Header.Get(k)
	}
	if f.Size < 0 {
		if n, err := strconv.ParseInt(get("X-Linked-Size"), 10, 64); err == nil && n >= 0 {
			f.Size = n
		} else if _, _, total, ok := parseContentRangeTotal(resp.Header.Get("Content-Range")); ok && have > 0 {
			f.Size = total
		}
	}
	if f.SHA256 == "" && f.GitOID == "" {
		etag := get("X-Linked-Etag")
		if etag == "" {
			etag = get("ETag")
		}
		etag = strings.ToLower(strings.Trim(strings.TrimPrefix(etag, "W/"), `"`))
		if reHex64.MatchString(etag) {
			f.SHA256 = etag
		}
	}
	if c := get("X-Repo-Commit"); c != "" {
		s.log.Debug("resolve", "file", f.Dest, "commit", c)
	}
}

// parseContentRange parses "bytes start-end/total".
func parseContentRange(v string) (start, end int64, ok bool) {
	start, end, _, ok = parseContentRangeTotal(v)
	return start, end, ok
}

func parseContentRangeTotal(v string) (start, end, total int64, ok bool) {
	rest, found := strings.CutPrefix(v, "bytes ")
	if !found {
		return 0, 0, 0, false
	}
	rng, tot, found := strings.Cut(rest, "/")
	if !found {
		return 0, 0, 0, false
	}
	a, b, found := strings.Cut(rng, "-")
	if !found {
		return 0, 0, 0, false
	}
	var err1, err2 error
	start, err1 = strconv.ParseInt(a, 10, 64)
	end, err2 = strconv.ParseInt(b, 10, 64)
	if err1 != nil || err2 != nil || start < 0 || end < start {
		return 0, 0, 0, false
	}
	total = -1
	if tot != "*" {
		if t, err := strconv.ParseInt(tot, 10, 64); err == nil {
			total = t
		}
	}
	return start, end, total, true
}

// syncDir fsyncs a directory inside root so a rename in it is durable.
func syncDir(root *os.Root, dir string) error {
	d, err := root.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	if err := d.Sync(); err != nil && !errors.Is(err, syscall.EINVAL) {
		return err
	}
	return nil
}

// digests hashes the data written so far: always with sha256 (recorded in
// the model's manifest), and with the git blob id when f has one to check.
type digests struct {
	sha hash.Hash
	git hash.Hash
}

func newDigests(f *remoteFile) *digests {
	d := &digests{}
	d.reset(f)
	return d
}

func (d *digests) reset(f *remoteFile) {
	d.git = nil
	d.sha = sha256.New()
	if f.GitOID != "" && f.Size >= 0 {
		d.git = sha1.New() //nolint:gosec // git's object id
		fmt.Fprintf(d.git, "blob %d\x00", f.Size)
	}
}

func (d *digests) Write(p []byte) (int, error) {
	d.sha.Write(p)
	if d.git != nil {
		d.git.Write(p)
	}
	return len(p), nil
}

// mismatch describes the first digest that does not match, or "".
func (d *digests) mismatch(f *remoteFile) string {
	if f.SHA256 != "" {
		if got := hex.EncodeToString(d.sha.Sum(nil)); got != f.SHA256 {
			return "sha256 " + got + ", want " + f.SHA256
		}
	}
	if d.git != nil {
		if got := hex.EncodeToString(d.git.Sum(nil)); got != f.GitOID {
			return "git blob id " + got + ", want " + f.GitOID
		}
	}
	return ""
}

// progress logs a long download at most once per interval.
type progress struct {
	s          *Store
	f          *remoteFile
	start      time.Time
	startBytes int64
	last       time.Time
}

func (s *Store) newProgress(f *remoteFile, have int64) *progress {
	now := time.Now()
	return &progress{s: s, f: f, start: now, startBytes: have, last: now}
}

func (p *progress) update(have int64) {
	now := time.Now()
	if now.Sub(p.last) < p.s.progressInterval {
		return
	}
	p.last = now
	args := []any{"file", p.f.Dest, "bytes", have, "MBps", p.rate(have, now)}
	if p.f.Size > 0 {
		args = append(args, "total", p.f.Size, "percent", fmt.Sprintf("%.1f", 100*float64(have)/float64(p.f.Size)))
	}
	p.s.log.Info("downloading", args...)
}

func (p *progress) done(have int64) {
	p.s.log.Debug("downloaded file", "file", p.f.Dest, "bytes", have, "MBps", p.rate(have, time.Now()))
}

func (p *progress) rate(have int64, now time.Time) string {
	secs := now.Sub(p.start).Seconds()
	if secs <= 0 {
		return "-"
	}
	return fmt.Sprintf("%.2f", float64(have-p.startBytes)/secs/1e6)
}

// redirectLog records the headers of redirect responses, so the hub's
// X-Linked-Etag/X-Linked-Size/X-Repo-Commit on a CDN redirect are not lost
// when the client follows it.
type redirectLog struct{ first http.Header }

type redirectLogKey struct{}

func withRedirectLog(ctx context.Context) context.Context {
	return context.WithValue(ctx, redirectLogKey{}, &redirectLog{})
}

func redirectHeaders(ctx context.Context) http.Header {
	if l, _ := ctx.Value(redirectLogKey{}).(*redirectLog); l != nil && l.first != nil {
		return l.first
	}
	return http.Header{}
}

// checkRedirect wraps a client's redirect policy to record the first
// redirect response's headers.
func checkRedirect(next func(*http.Request, []*http.Request) error) func(*http.Request, []*http.Request) error {
	return func(req *http.Request, via []*http.Request) error {
		if l, _ := req.Context().Value(redirectLogKey{}).(*redirectLog); l != nil && l.first == nil && req.Response != nil {
			l.first = req.Response.Header.Clone() //nolint:gosec // G119: it only records the first redirect's headers; net/http still drops Authorization when a redirect leaves the host (TestMirrorOrganizationRevisionToken checks the CDN never sees the token)
		}
		if next != nil {
			return next(req, via)
		}
		if len(via) >= 10 {
			return errors.New("stopped after 10 redirects")
		}
		return nil
	}
}
