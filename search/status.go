package search

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
)

// StatusQuery names what Status reports on.
type StatusQuery struct {
	// Model is the CLIP model (registered with EnsureModel).
	Model string
	// FaceModel and OCRModel, when set, ask whether faces and OCR ran
	// with these models.
	FaceModel, OCRModel string
}

// FileStatus is what the store knows about one path.
type FileStatus struct {
	// Indexed is true when the path is an asset; Size, ModTime and Hash
	// are then its content as last read (ModTime zero when unknown).
	Indexed bool
	Size    int64
	ModTime time.Time
	Hash    []byte
	// CLIP, Faces and OCR tell whether the embedding of the query's
	// model, its faces and its OCR were computed from that content.
	CLIP, Faces, OCR bool
	// Failure is the path's recorded failure, or nil.
	Failure *Failure
}

// Failure is a file that could not be indexed (it does not decode, or
// the model refuses it). Later runs skip it until its size or
// modification time changes.
type Failure struct {
	Path    string
	Size    int64
	ModTime time.Time // zero when unknown
	Error   string
	At      time.Time // when it was recorded (set by the store)
}

// Status returns, for the paths the store knows (as an asset or as a
// recorded failure), what it knows about them; other paths are absent.
func (s *Store) Status(ctx context.Context, q StatusQuery, paths []string) (map[string]FileStatus, error) {
	out := make(map[string]FileStatus, len(paths))
	if len(paths) == 0 {
		return out, nil
	}
	t, err := s.model(ctx, q.Model)
	if err != nil {
		return nil, err
	}
	rows, err := s.pool.Query(ctx, s.expand(fmt.Sprintf(`
SELECT u.path, a.id IS NOT NULL, coalesce(a.size, 0), a.modified_at, coalesce(a.content_hash, ''::bytea),
	coalesce(e.content_hash = a.content_hash, false),
	EXISTS (SELECT 1 FROM {{s}}.asset_tasks t
		WHERE t.asset_id = a.id AND t.task = 'faces' AND t.model = $2 AND t.content_hash = a.content_hash),
	EXISTS (SELECT 1 FROM {{s}}.asset_tasks t
		WHERE t.asset_id = a.id AND t.task = 'ocr' AND t.model = $3 AND t.content_hash = a.content_hash),
	f.path IS NOT NULL, coalesce(f.size, 0), f.modified_at, coalesce(f.error, ''), f.failed_at
FROM unnest($1::text[]) AS u(path)
LEFT JOIN {{s}}.assets a ON a.path = u.path
LEFT JOIN %s e ON e.asset_id = a.id
LEFT JOIN {{s}}.index_failures f ON f.path = u.path
WHERE a.id IS NOT NULL OR f.path IS NOT NULL`, s.table(t.table))), paths, q.FaceModel, q.OCRModel)
	if err != nil {
		return nil, fmt.Errorf("status: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var (
			path           string
			st             FileStatus
			mt, fmt_, fat  *time.Time
			failed         bool
			fsize          int64
			ferr           string
			faces, ocrDone bool
		)
		if err := rows.Scan(&path, &st.Indexed, &st.Size, &mt, &st.Hash, &st.CLIP, &faces, &ocrDone,
			&failed, &fsize, &fmt_, &ferr, &fat); err != nil {
			return nil, fmt.Errorf("status: %w", err)
		}
		st.Faces = faces && q.FaceModel != ""
		st.OCR = ocrDone && q.OCRModel != ""
		if mt != nil {
			st.ModTime = *mt
		}
		if failed {
			f := &Failure{Path: path, Size: fsize, Error: ferr}
			if fmt_ != nil {
				f.ModTime = *fmt_
			}
			if fat != nil {
				f.At = *fat
			}
			st.Failure = f
		}
		out[path] = st
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("status: %w", err)
	}
	return out, nil
}

// RecordFailures records files that could not be indexed, in one
// transaction. An asset already stored under such a path is removed: its
// rows describe content the file no longer has. A later Write of the path
// clears its failure.
func (s *Store) RecordFailures(ctx context.Context, fs []Failure) error {
	if len(fs) == 0 {
		return nil
	}
	pos := make(map[string]int, len(fs))
	var paths, errs []string
	var sizes []int64
	var mtimes []*time.Time
	for _, f := range fs {
		if f.Path == "" {
			return fmt.Errorf("%w: failure without a path", ErrInvalid)
		}
		var mt *time.Time
		if !f.ModTime.IsZero() {
			m := f.ModTime
			mt = &m
		}
		if i, ok := pos[f.Path]; ok {
			sizes[i], mtimes[i], errs[i] = f.Size, mt, f.Error
			continue
		}
		pos[f.Path] = len(paths)
		paths, sizes, mtimes, errs = append(paths, f.Path), append(sizes, f.Size), append(mtimes, mt), append(errs, f.Error)
	}
	tx, err := s.pool.Begin(ctx)
	if err != nil {
		return fmt.Errorf("record failures: %w", err)
	}
	defer tx.Rollback(context.WithoutCancel(ctx)) //nolint:errcheck // no-op after commit
	if _, err := tx.Exec(ctx, s.expand(`
INSERT INTO {{s}}.index_failures (path, size, modified_at, error, failed_at)
SELECT u.path, u.size, u.mtime, u.error, now()
FROM unnest($1::text[], $2::bigint[], $3::timestamptz[], $4::text[]) AS u(path, size, mtime, error)
ON CONFLICT (path) DO UPDATE SET
	size = excluded.size, modified_at = excluded.modified_at, error = excluded.error, failed_at = excluded.failed_at`),
		paths, sizes, mtimes, errs); err != nil {
		return fmt.Errorf("record failures: %w", err)
	}
	if err := s.deleteAssets(ctx, tx, "path = ANY($1::text[])", paths); err != nil {
		return fmt.Errorf("record failures: %w", err)
	}
	if err := tx.Commit(ctx); err != nil {
		return fmt.Errorf("record failures: commit: %w", err)
	}
	return nil
}

// deleteAssets deletes the assets matching where (with $1 = arg); their
// embeddings, faces, face assignments and OCR rows go with them. It holds
// the people lock shared, as writeFaces does, so that clustering never
// sees faces vanish under it.
func (s *Store) deleteAssets(ctx context.Context, tx pgx.Tx, where string, arg any) error {
	if _, err := tx.Exec(ctx, "SELECT pg_advisory_xact_lock_shared($1)", s.peopleLockKey()); err != nil {
		return fmt.Errorf("lock: %w", err)
	}
	if _, err := tx.Exec(ctx, s.expand("DELETE FROM {{s}}.assets WHERE "+where), arg); err != nil {
		return fmt.Errorf("delete assets: %w", err)
	}
	return nil
}

// pruneChunk is how many gone assets one statement deletes.
const pruneChunk = 1000

// Prune removes the assets stored under root (a folder, or one file, as
// an absolute path) whose file is gone, as gone(path) says, and the
// recorded failures of gone files there. Their embeddings, faces and OCR
// rows go with them. People left without faces are removed by the next
// ClusterFaces. It returns how many assets it removed.
//
// The paths are read in one query and checked while it streams, then
// deleted in chunks, each in its own short transaction.
func (s *Store) Prune(ctx context.Context, root string, gone func(path string) bool) (int, error) {
	if root == "" || !strings.HasPrefix(root, "/") {
		return 0, fmt.Errorf("%w: prune root %q: want an absolute path", ErrInvalid, root)
	}
	dir := strings.TrimSuffix(root, "/") + "/"
	var ids []int64
	var failed []string
	rows, err := s.pool.Query(ctx, s.expand(`
SELECT id, path, false FROM {{s}}.assets WHERE path = $1 OR starts_with(path, $2)
UNION ALL
SELECT 0, path, true FROM {{s}}.index_failures WHERE path = $1 OR starts_with(path, $2)`), root, dir)
	if err != nil {
		return 0, fmt.Errorf("prune: %w", err)
	}
	for rows.Next() {
		var (
			id      int64
			path    string
			failure bool
		)
		if err := rows.Scan(&id, &path, &failure); err != nil {
			rows.Close()
			return 0, fmt.Errorf("prune: %w", err)
		}
		if !gone(path) {
			continue
		}
		if failure {
			failed = append(failed, path)
		} else {
			ids = append(ids, id)
		}
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return 0, fmt.Errorf("prune: %w", err)
	}
	removed := 0
	for len(ids) > 0 {
		n := min(pruneChunk, len(ids))
		chunk := ids[:n]
		ids = ids[n:]
		err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
			return s.deleteAssets(ctx, tx, "id = ANY($1::bigint[])", chunk)
		})
		if err != nil {
			return removed, fmt.Errorf("prune: %w", err)
		}
		removed += n
	}
	if len(failed) > 0 {
		if _, err := s.pool.Exec(ctx, s.expand("DELETE FROM {{s}}.index_failures WHERE path = ANY($1::text[])"), failed); err != nil {
			return removed, fmt.Errorf("prune failures: %w", err)
		}
	}
	if removed > 0 {
		s.logger.Info("removed assets whose files are gone", "root", root, "assets", removed)
	}
	return removed, nil
}
