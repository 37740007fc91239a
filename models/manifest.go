package models

import (
	"crypto/sha1" //nolint:gosec // git blob ids are sha1; used to check integrity, not for security
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"sort"
	"time"
)

// ManifestFile is the record of a model folder's files that a download
// writes at the folder's top (<cache>/clip/<name>/.mlserve-manifest.json):
// every file with its size and digest as the hub listed them, so that
// [Store.Verify] can check the folder later. Immich ignores it.
const ManifestFile = ".mlserve-manifest.json"

// maxManifest bounds the manifest read back (a repo lists a few dozen
// files).
const maxManifest = 4 << 20

// Manifest is the content of ManifestFile.
type Manifest struct {
	// Source is where the files came from: the hub repo's URL, or the
	// OCR source's.
	Source string `json:"source"`
	// Revision and Commit are the hub revision asked for and the commit it
	// resolved to (empty for OCR files).
	Revision string `json:"revision,omitempty"`
	Commit   string `json:"commit,omitempty"`
	// Time is when the manifest was last written.
	Time  time.Time       `json:"time"`
	Files []ManifestEntry `json:"files"`
}

// ManifestEntry is one file of a model folder.
type ManifestEntry struct {
	// Path is relative to the model folder, with slashes.
	Path string `json:"path"`
	Size int64  `json:"size"`
	// SHA256 is the file's sha256 as the hub (or RapidOCR's pinned table)
	// gives it; for a file whose source gave no digest, the one computed
	// while it downloaded (Computed).
	SHA256 string `json:"sha256,omitempty"`
	// GitOID is the git blob id the hub listed for a small (non-LFS) file.
	GitOID   string `json:"gitOid,omitempty"`
	Computed bool   `json:"computed,omitempty"`
}

// recordRepo writes the manifest of a repo download: listed are the files
// the hub listed (minus those skipped), fetched those this download wrote
// (with what it learned of them).
func (s *Store) recordRepo(root *os.Root, repo, commit string, listed []hubFile, fetched []*remoteFile) error {
	got := map[string]*remoteFile{}
	for _, f := range fetched {
		got[f.Dest] = f
	}
	m := Manifest{Source: s.endpoint + "/" + repo, Revision: s.revision, Commit: commit}
	for _, h := range listed {
		e := ManifestEntry{Path: h.Path, Size: h.Size, SHA256: h.SHA256, GitOID: h.GitOID}
		if f := got[h.Path]; f != nil {
			e.Size = f.Size
			if e.SHA256 == "" {
				e.SHA256 = f.SHA256 // learned from the resolve headers
			}
			if e.SHA256 == "" && e.GitOID == "" {
				e.SHA256, e.Computed = f.Computed, true
			}
		} else if e.Size < 0 || e.SHA256 == "" && e.GitOID == "" {
			// Kept from an earlier run, and the hub (a mirror without the
			// tree API) said nothing: what is on disk.
			sum, size, err := hashFile(root, h.Path)
			if err != nil {
				return err
			}
			e.Size = size
			if e.SHA256 == "" && e.GitOID == "" {
				e.SHA256, e.Computed = sum, true
			}
		}
		m.Files = append(m.Files, e)
	}
	s.manifestMu.Lock()
	defer s.manifestMu.Unlock()
	return writeManifest(root, m)
}

// recordOCR adds an OCR file to its folder's manifest.
func (s *Store) recordOCR(root *os.Root, source string, e ManifestEntry) error {
	s.manifestMu.Lock()
	defer s.manifestMu.Unlock()
	m, err := readManifest(root)
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		s.log.Warn("rewriting an unreadable model manifest", "err", err)
	}
	m.Source = source
	kept := m.Files[:0]
	for _, f := range m.Files {
		if f.Path != e.Path {
			kept = append(kept, f)
		}
	}
	m.Files = append(kept, e)
	return writeManifest(root, m)
}

// writeManifest replaces the manifest atomically.
func writeManifest(root *os.Root, m Manifest) error {
	m.Time = time.Now().UTC().Truncate(time.Second)
	sort.Slice(m.Files, func(i, j int) bool { return m.Files[i].Path < m.Files[j].Path })
	b, err := json.MarshalIndent(m, "", "  ")
	if err != nil {
		return err
	}
	tmp := ManifestFile + ".partial"
	f, err := root.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o644)
	if err != nil {
		return fmt.Errorf("write manifest: %w", err)
	}
	_, err = f.Write(append(b, '\n'))
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = root.Rename(tmp, ManifestFile)
	}
	if err != nil {
		_ = root.Remove(tmp)
		return fmt.Errorf("write manifest: %w", err)
	}
	return syncDir(root, ".")
}

// readManifest reads root's manifest (fs.ErrNotExist when there is none).
func readManifest(root *os.Root) (Manifest, error) {
	var m Manifest
	f, err := root.Open(ManifestFile)
	if err != nil {
		return m, err
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, maxManifest+1))
	if err != nil {
		return m, err
	}
	if len(b) > maxManifest {
		return m, fmt.Errorf("%s: larger than %d bytes", ManifestFile, maxManifest)
	}
	if err := json.Unmarshal(b, &m); err != nil {
		return Manifest{}, fmt.Errorf("%s: %w", ManifestFile, err)
	}
	for _, e := range m.Files {
		if !validRepoPath(e.Path) {
			return Manifest{}, fmt.Errorf("%s: unsafe path %q", ManifestFile, e.Path)
		}
	}
	return m, nil
}

// hashFile returns the sha256 and size of a file under root.
func hashFile(root *os.Root, name string) (string, int64, error) {
	f, err := root.Open(name)
	if err != nil {
		return "", 0, err
	}
	defer f.Close()
	h := sha256.New()
	n, err := io.Copy(h, f)
	if err != nil {
		return "", 0, err
	}
	return hex.EncodeToString(h.Sum(nil)), n, nil
}

// gitBlobID returns the git blob id of a file of size bytes under root.
func gitBlobID(root *os.Root, name string, size int64) (string, error) {
	f, err := root.Open(name)
	if err != nil {
		return "", err
	}
	defer f.Close()
	h := sha1.New() //nolint:gosec // git's object id
	fmt.Fprintf(h, "blob %d\x00", size)
	if _, err := io.Copy(h, f); err != nil {
		return "", err
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}
