package search

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/pgvector/pgvector-go"
)

// Asset is one indexed file.
type Asset struct {
	// Path is the file's absolute path; it identifies the asset.
	Path string
	// Hash is the SHA-256 of the bytes that were embedded.
	Hash []byte
	// Size is the file's size in bytes.
	Size int64
	// ModTime is the file's modification time when it was read (zero:
	// unknown).
	ModTime time.Time
}

// Face is one detected face of an asset.
type Face struct {
	ImageWidth, ImageHeight int
	X1, Y1, X2, Y2          float32
	Score                   float32
	// Landmarks are five (x, y) points, flattened; may be nil.
	Landmarks []float32
	// Embedding has 512 dimensions.
	Embedding []float32
}

// OCRBox is one recognised line of text.
type OCRBox struct {
	// Box holds the four corners x1,y1..x4,y4, normalised to 0..1.
	Box       [8]float32
	BoxScore  float32
	Text      string
	TextScore float32
}

// Result is everything computed for one asset. A nil field means that task
// did not run (its stored rows stay as they are); an empty non-nil Faces or
// OCR means it ran and found nothing (stored rows are replaced by nothing).
type Result struct {
	Asset
	// ImmichAsset is the Immich asset the result belongs to (an Immich
	// index keys its rows by it); empty for our own schema.
	ImmichAsset string
	// CLIP is the image embedding of Write's model.
	CLIP []float32
	// Faces and FaceModel replace the asset's faces when Faces is non-nil.
	Faces     []Face
	FaceModel string
	// OCR and OCRModel replace the asset's OCR rows when OCR is non-nil.
	OCR      []OCRBox
	OCRModel string
}

// Write stores a batch of results in one transaction: the assets are
// upserted by path, then each task's rows, and which analyses ran on the
// asset's content (asset_tasks); a recorded failure of a written path is
// cleared. Writing the same batch twice leaves the same rows as writing
// it once (at-least-once delivery relies on this). If a path appears more
// than once, the last result wins.
//
// All encoding happens before the transaction starts, so it stays short
// (on PGlite an open transaction blocks every other connection).
func (s *Store) Write(ctx context.Context, clipModel string, rs []Result) error {
	if len(rs) == 0 {
		return nil
	}
	rs = lastByPath(rs)
	var t clipTable
	hasCLIP := false
	for _, r := range rs {
		if r.CLIP != nil {
			hasCLIP = true
		}
		if r.Path == "" {
			return fmt.Errorf("%w: result without a path", ErrInvalid)
		}
		if r.ImmichAsset != "" {
			return fmt.Errorf("%w: %s is an Immich asset; this index is our own schema", ErrInvalid, r.ImmichAsset)
		}
	}
	if hasCLIP {
		var err error
		if t, err = s.model(ctx, clipModel); err != nil {
			return err
		}
	}

	n := len(rs)
	paths := make([]string, n)
	hashes := make([][]byte, n)
	sizes := make([]int64, n)
	mtimes := make([]*time.Time, n)
	for i, r := range rs {
		paths[i], hashes[i], sizes[i] = r.Path, r.Hash, r.Size
		if hashes[i] == nil {
			hashes[i] = []byte{}
		}
		if !r.ModTime.IsZero() {
			mt := r.ModTime
			mtimes[i] = &mt
		}
	}
	var clipPaths []string
	var clipHashes [][]byte
	var clipVecs []pgvector.Vector
	for i, r := range rs {
		if r.CLIP == nil {
			continue
		}
		if len(r.CLIP) != t.dim {
			return fmt.Errorf("%w: %s: embedding of %s has %d dimensions, the table holds %d", ErrDimensionMismatch, r.Path, clipModel, len(r.CLIP), t.dim)
		}
		clipPaths = append(clipPaths, r.Path)
		clipHashes = append(clipHashes, hashes[i])
		clipVecs = append(clipVecs, pgvector.NewVector(r.CLIP))
	}
	faces := faceColumns(rs)
	ocr := ocrColumns(rs)
	if err := faces.check(); err != nil {
		return err
	}

	tx, err := s.pool.Begin(ctx)
	if err != nil {
		return fmt.Errorf("write: %w", err)
	}
	defer tx.Rollback(context.WithoutCancel(ctx)) //nolint:errcheck // no-op after commit

	if _, err := tx.Exec(ctx, s.expand(`
INSERT INTO {{s}}.assets (path, content_hash, size, modified_at, indexed_at)
SELECT u.path, u.hash, u.size, u.mtime, now()
FROM unnest($1::text[], $2::bytea[], $3::bigint[], $4::timestamptz[]) AS u(path, hash, size, mtime)
ON CONFLICT (path) DO UPDATE SET
	content_hash = excluded.content_hash,
	size = excluded.size,
	modified_at = excluded.modified_at,
	indexed_at = excluded.indexed_at`), paths, hashes, sizes, mtimes); err != nil {
		return fmt.Errorf("write assets: %w", err)
	}
	if len(clipVecs) > 0 {
		sql := fmt.Sprintf(`
INSERT INTO %s (asset_id, content_hash, embedding, updated_at)
SELECT a.id, u.hash, u.embedding, now()
FROM unnest($1::text[], $2::bytea[], $3::vector[]) AS u(path, hash, embedding)
JOIN %s a ON a.path = u.path
ON CONFLICT (asset_id) DO UPDATE SET
	content_hash = excluded.content_hash,
	embedding = excluded.embedding,
	updated_at = excluded.updated_at`, s.table(t.table), s.table("assets"))
		if _, err := tx.Exec(ctx, sql, clipPaths, clipHashes, vectorArray(s.pool, clipVecs)); err != nil {
			return fmt.Errorf("write clip embeddings: %w", err)
		}
	}
	if err := s.writeFaces(ctx, tx, faces); err != nil {
		return err
	}
	if err := s.writeOCR(ctx, tx, ocr); err != nil {
		return err
	}
	if err := s.writeTasks(ctx, tx, rs); err != nil {
		return err
	}
	if _, err := tx.Exec(ctx, s.expand("DELETE FROM {{s}}.index_failures WHERE path = ANY($1::text[])"), paths); err != nil {
		return fmt.Errorf("clear failures: %w", err)
	}
	if err := tx.Commit(ctx); err != nil {
		return fmt.Errorf("write: commit: %w", err)
	}
	return nil
}

// lastByPath keeps the last result of each path, in first-seen order (an
// upsert may not touch one row twice in a statement).
func lastByPath(rs []Result) []Result {
	pos := make(map[string]int, len(rs))
	out := make([]Result, 0, len(rs))
	for _, r := range rs {
		if i, ok := pos[r.Path]; ok {
			out[i] = r
			continue
		}
		pos[r.Path] = len(out)
		out = append(out, r)
	}
	return out
}

type faceCols struct {
	replace               []string // paths whose faces are replaced
	paths, models         []string
	widths, heights       []int32
	x1, y1, x2, y2, score []float32
	landmarks             []*string // real[] literals; nil is NULL
	embeddings            []pgvector.Vector
	badLength             int
	badPath               string
}

func faceColumns(rs []Result) faceCols {
	var c faceCols
	for _, r := range rs {
		if r.Faces == nil {
			continue
		}
		c.replace = append(c.replace, r.Path)
		for _, f := range r.Faces {
			if len(f.Embedding) != 512 && c.badPath == "" {
				c.badPath, c.badLength = r.Path, len(f.Embedding)
			}
			c.paths = append(c.paths, r.Path)
			c.models = append(c.models, r.FaceModel)
			c.widths = append(c.widths, int32(f.ImageWidth))
			c.heights = append(c.heights, int32(f.ImageHeight))
			c.x1, c.y1, c.x2, c.y2 = append(c.x1, f.X1), append(c.y1, f.Y1), append(c.x2, f.X2), append(c.y2, f.Y2)
			c.score = append(c.score, f.Score)
			var lm *string
			if f.Landmarks != nil {
				a := realArray(f.Landmarks)
				lm = &a
			}
			c.landmarks = append(c.landmarks, lm)
			c.embeddings = append(c.embeddings, pgvector.NewVector(f.Embedding))
		}
	}
	return c
}

func (c faceCols) check() error {
	if c.badPath != "" {
		return fmt.Errorf("%w: %s: face embedding has %d dimensions, faces hold 512", ErrDimensionMismatch, c.badPath, c.badLength)
	}
	return nil
}

// realArray formats a float32 slice as a PostgreSQL array literal, so a
// jagged set of arrays can travel as text[] through unnest (a
// two-dimensional real[][] must be rectangular).
func realArray(v []float32) string {
	b := []byte{'{'}
	for i, x := range v {
		if i > 0 {
			b = append(b, ',')
		}
		b = fmt.Appendf(b, "%g", x)
	}
	return string(append(b, '}'))
}

// writeFaces replaces the faces of the assets in c.replace. A new face
// keeps the person of the old face it overlaps most when their boxes'
// intersection over union exceeds 0.5 (the old box scaled by the ratio of
// the image heights): Immich's rule for matching a fresh detection to a
// stored face. So re-indexing a changed or forced file keeps its people.
//
// It holds the people lock shared: clustering and merging (which hold it
// alone) never see faces vanish under them, and a person is never deleted
// between reading an old face's person and giving it to the new face.
func (s *Store) writeFaces(ctx context.Context, tx pgx.Tx, c faceCols) error {
	if len(c.replace) == 0 {
		return nil
	}
	if _, err := tx.Exec(ctx, "SELECT pg_advisory_xact_lock_shared($1)", s.peopleLockKey()); err != nil {
		return fmt.Errorf("write faces: lock: %w", err)
	}
	_, err := tx.Exec(ctx, s.expand(`
WITH old AS (
	DELETE FROM {{s}}.faces f USING {{s}}.assets a
	WHERE f.asset_id = a.id AND a.path = ANY($1::text[])
	RETURNING f.asset_id, f.image_height, f.x1, f.y1, f.x2, f.y2,
		(SELECT fp.person_id FROM {{s}}.face_person fp WHERE fp.face_id = f.id) AS person_id
), ins AS (
	INSERT INTO {{s}}.faces (asset_id, model, image_width, image_height, x1, y1, x2, y2, score, landmarks, embedding)
	SELECT a.id, u.model, u.w, u.h, u.x1, u.y1, u.x2, u.y2, u.score, u.lm::real[], u.embedding
	FROM unnest($2::text[], $3::text[], $4::int[], $5::int[], $6::real[], $7::real[], $8::real[], $9::real[],
		$10::real[], $11::text[], $12::vector[])
		AS u(path, model, w, h, x1, y1, x2, y2, score, lm, embedding)
	JOIN {{s}}.assets a ON a.path = u.path
	RETURNING id, asset_id, image_height, x1, y1, x2, y2
)
INSERT INTO {{s}}.face_person (face_id, person_id)
SELECT i.id, m.person_id
FROM ins i CROSS JOIN LATERAL (
	SELECT o.person_id, o.inter / (o.sum - o.inter) AS iou
	FROM (
		SELECT old.person_id,
			greatest(0, least(i.x2, old.x2 * k.k) - greatest(i.x1, old.x1 * k.k)) *
			greatest(0, least(i.y2, old.y2 * k.k) - greatest(i.y1, old.y1 * k.k)) AS inter,
			(i.x2 - i.x1) * (i.y2 - i.y1) + (old.x2 - old.x1) * (old.y2 - old.y1) * k.k * k.k AS sum
		FROM old CROSS JOIN LATERAL (SELECT i.image_height::real / nullif(old.image_height, 0) AS k) k
		WHERE old.asset_id = i.asset_id AND old.person_id IS NOT NULL
	) o
	WHERE o.inter > 0.5 * (o.sum - o.inter)
	ORDER BY iou DESC
	LIMIT 1
) m`),
		c.replace, c.paths, c.models, c.widths, c.heights, c.x1, c.y1, c.x2, c.y2, c.score, c.landmarks, vectorArray(s.pool, c.embeddings))
	if err != nil {
		return fmt.Errorf("write faces: %w", err)
	}
	return nil
}

type ocrCols struct {
	replace                 []string
	paths, models, texts    []string
	idx                     []int32
	boxes                   []string
	boxScores, textScores   []float32
	textPaths, joinedModels []string
	joined                  []string
}

func ocrColumns(rs []Result) ocrCols {
	var c ocrCols
	for _, r := range rs {
		if r.OCR == nil {
			continue
		}
		c.replace = append(c.replace, r.Path)
		lines := make([]string, len(r.OCR))
		for i, b := range r.OCR {
			c.paths = append(c.paths, r.Path)
			c.models = append(c.models, r.OCRModel)
			c.idx = append(c.idx, int32(i))
			c.boxes = append(c.boxes, realArray(b.Box[:]))
			c.boxScores = append(c.boxScores, b.BoxScore)
			c.texts = append(c.texts, b.Text)
			c.textScores = append(c.textScores, b.TextScore)
			lines[i] = b.Text
		}
		// The searchable text is Immich's: the lines' tokens joined by
		// single spaces, CJK runs as overlapping bigrams.
		c.textPaths = append(c.textPaths, r.Path)
		c.joinedModels = append(c.joinedModels, r.OCRModel)
		c.joined = append(c.joined, strings.Join(tokenizeForSearch(strings.Join(lines, " ")), " "))
	}
	return c
}

func (s *Store) writeOCR(ctx context.Context, tx pgx.Tx, c ocrCols) error {
	if len(c.replace) == 0 {
		return nil
	}
	if _, err := tx.Exec(ctx, s.expand(`
DELETE FROM {{s}}.ocr_boxes o USING {{s}}.assets a
WHERE o.asset_id = a.id AND a.path = ANY($1::text[])`), c.replace); err != nil {
		return fmt.Errorf("replace ocr: %w", err)
	}
	if len(c.paths) > 0 {
		if _, err := tx.Exec(ctx, s.expand(`
INSERT INTO {{s}}.ocr_boxes (asset_id, idx, model, box, box_score, text, text_score)
SELECT a.id, u.idx, u.model, u.box::real[], u.box_score, u.text, u.text_score
FROM unnest($1::text[], $2::int[], $3::text[], $4::text[], $5::real[], $6::text[], $7::real[])
	AS u(path, idx, model, box, box_score, text, text_score)
JOIN {{s}}.assets a ON a.path = u.path`),
			c.paths, c.idx, c.models, c.boxes, c.boxScores, c.texts, c.textScores); err != nil {
			return fmt.Errorf("write ocr boxes: %w", err)
		}
	}
	if _, err := tx.Exec(ctx, s.expand(`
INSERT INTO {{s}}.ocr_text (asset_id, model, text)
SELECT a.id, u.model, u.text
FROM unnest($1::text[], $2::text[], $3::text[]) AS u(path, model, text)
JOIN {{s}}.assets a ON a.path = u.path
ON CONFLICT (asset_id) DO UPDATE SET model = excluded.model, text = excluded.text`),
		c.textPaths, c.joinedModels, c.joined); err != nil {
		return fmt.Errorf("write ocr text: %w", err)
	}
	return nil
}

// Analysis tasks recorded in asset_tasks.
const (
	taskFaces = "faces"
	taskOCR   = "ocr"
)

// writeTasks records, for each result whose faces or OCR ran, that the
// task ran with its model on the asset's content.
func (s *Store) writeTasks(ctx context.Context, tx pgx.Tx, rs []Result) error {
	var paths, tasks, models []string
	for _, r := range rs {
		if r.Faces != nil {
			paths, tasks, models = append(paths, r.Path), append(tasks, taskFaces), append(models, r.FaceModel)
		}
		if r.OCR != nil {
			paths, tasks, models = append(paths, r.Path), append(tasks, taskOCR), append(models, r.OCRModel)
		}
	}
	if len(paths) == 0 {
		return nil
	}
	if _, err := tx.Exec(ctx, s.expand(`
INSERT INTO {{s}}.asset_tasks (asset_id, task, model, content_hash, done_at)
SELECT a.id, u.task, u.model, a.content_hash, now()
FROM unnest($1::text[], $2::text[], $3::text[]) AS u(path, task, model)
JOIN {{s}}.assets a ON a.path = u.path
ON CONFLICT (asset_id, task) DO UPDATE SET
	model = excluded.model, content_hash = excluded.content_hash, done_at = excluded.done_at`), paths, tasks, models); err != nil {
		return fmt.Errorf("write analyses: %w", err)
	}
	return nil
}

// Indexed is what the store knows about a path, for skipping unchanged
// files.
type Indexed struct {
	ID      int64
	Size    int64
	ModTime time.Time
	// Hash is the content hash the model's embedding was computed from.
	Hash []byte
	// Current is true when that hash is also the asset's latest known
	// content (another model may have re-read a changed file since).
	Current bool
}

// Lookup returns, for the paths that have an embedding of model, what was
// recorded when it was computed. Paths without one are absent.
func (s *Store) Lookup(ctx context.Context, model string, paths []string) (map[string]Indexed, error) {
	out := make(map[string]Indexed, len(paths))
	if len(paths) == 0 {
		return out, nil
	}
	t, err := s.model(ctx, model)
	if err != nil {
		return nil, err
	}
	rows, err := s.pool.Query(ctx, fmt.Sprintf(`
SELECT a.path, a.id, a.size, a.modified_at, e.content_hash, e.content_hash = a.content_hash
FROM %s a JOIN %s e ON e.asset_id = a.id
WHERE a.path = ANY($1::text[])`, s.table("assets"), s.table(t.table)), paths)
	if err != nil {
		return nil, fmt.Errorf("lookup: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var (
			path string
			ix   Indexed
			mt   *time.Time
		)
		if err := rows.Scan(&path, &ix.ID, &ix.Size, &mt, &ix.Hash, &ix.Current); err != nil {
			return nil, fmt.Errorf("lookup: %w", err)
		}
		if mt != nil {
			ix.ModTime = *mt
		}
		out[path] = ix
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("lookup: %w", err)
	}
	return out, nil
}

// Count returns the number of assets and of embeddings of model.
func (s *Store) Count(ctx context.Context, model string) (assets, embeddings int64, err error) {
	t, err := s.model(ctx, model)
	if err != nil {
		return 0, 0, err
	}
	err = s.pool.QueryRow(ctx, fmt.Sprintf("SELECT (SELECT count(*) FROM %s), (SELECT count(*) FROM %s)",
		s.table("assets"), s.table(t.table))).Scan(&assets, &embeddings)
	if err != nil {
		return 0, 0, fmt.Errorf("count: %w", err)
	}
	return assets, embeddings, nil
}
