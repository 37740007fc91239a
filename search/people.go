package search

import (
	"context"
	"fmt"
	"hash/fnv"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/jackc/pgx/v5"
	"github.com/pgvector/pgvector-go"
)

// MaxNameLength bounds a person's name, in characters.
const MaxNameLength = 100

// FaceRef is one stored face: where it is and in which file. It is what a
// thumbnail needs to crop a face.
type FaceRef struct {
	FaceID  int64  `json:"faceId"`
	AssetID int64  `json:"assetId"`
	Path    string `json:"path"`
	// ImageWidth and ImageHeight are the size of the image the face was
	// found in: the file as decoded for indexing (EXIF orientation not
	// applied). Box is in its pixels; scale it if the image is decoded at
	// another size.
	ImageWidth  int `json:"imageWidth"`
	ImageHeight int `json:"imageHeight"`
	// Box is x1, y1, x2, y2.
	Box   [4]float32 `json:"box"`
	Score float32    `json:"score"`
}

// Person is a group of faces made by ClusterFaces, named or not.
type Person struct {
	ID int64 `json:"id"`
	// Name is "" until someone names the person.
	Name string `json:"name"`
	// FaceCount and AssetCount are counted when read.
	FaceCount  int `json:"faceCount"`
	AssetCount int `json:"assetCount"`
	// Cover is the face that shows the person: the face that founded it
	// (or, merged, the first person's), else its best-scoring face; nil
	// when the person has no faces left.
	Cover     *FaceRef  `json:"cover,omitempty"`
	CreatedAt time.Time `json:"createdAt"`
}

// PeopleOptions select and page ListPeople's result.
type PeopleOptions struct {
	// MinFaces hides unnamed people with fewer faces; named people are
	// listed when they have any face. 0 lists everyone with a face. Immich
	// lists with its clustering's minFaces.
	MinFaces int
	// Limit is 1..MaxLimit; 0 means MaxLimit.
	Limit  int
	Offset int
}

// PersonAsset is one asset in which a person appears.
type PersonAsset struct {
	AssetID int64  `json:"assetId"`
	Path    string `json:"path"`
	// ModifiedAt is the file's modification time when indexed (zero when
	// unknown).
	ModifiedAt time.Time `json:"modifiedAt"`
	// Face is the person's face in it (the best-scoring one, if several).
	Face FaceRef `json:"face"`
}

// peopleLockKey serialises the steps that assign faces to people and those
// that delete people (ClusterFaces, MergePeople) across processes.
func (s *Store) peopleLockKey() int64 {
	h := fnv.New64a()
	h.Write([]byte("mlserve/people:" + s.schema))
	return int64(h.Sum64())
}

// personColumns selects a Person from people p (with the counts and the
// cover face cf, its asset ca); see scanPerson.
const personColumns = `p.id, p.name, p.created_at, c.faces, c.assets,
	cf.id, cf.asset_id, ca.path, cf.image_width, cf.image_height, cf.x1, cf.y1, cf.x2, cf.y2, cf.score`

// personJoins completes personColumns. The cover is the recorded face while
// it still belongs to the person, else the best-scoring face (the second
// branch runs only when the first finds nothing).
const personJoins = `
CROSS JOIN LATERAL (SELECT count(*) AS faces, count(DISTINCT f.asset_id) AS assets
	FROM {{s}}.face_person fp JOIN {{s}}.faces f ON f.id = fp.face_id WHERE fp.person_id = p.id) c
LEFT JOIN LATERAL (
	(SELECT f.id, f.asset_id, f.image_width, f.image_height, f.x1, f.y1, f.x2, f.y2, f.score
		FROM {{s}}.face_person fp JOIN {{s}}.faces f ON f.id = fp.face_id
		WHERE fp.face_id = p.cover_face_id AND fp.person_id = p.id)
	UNION ALL
	(SELECT f.id, f.asset_id, f.image_width, f.image_height, f.x1, f.y1, f.x2, f.y2, f.score
		FROM {{s}}.face_person fp JOIN {{s}}.faces f ON f.id = fp.face_id
		WHERE fp.person_id = p.id ORDER BY f.score DESC, f.id LIMIT 1)
	LIMIT 1
) cf ON true
LEFT JOIN {{s}}.assets ca ON ca.id = cf.asset_id`

func scanPerson(r pgx.Row) (Person, error) {
	var (
		p                  Person
		faceID, assetID    *int64
		path               *string
		w, h               *int
		x1, y1, x2, y2, sc *float32
	)
	if err := r.Scan(&p.ID, &p.Name, &p.CreatedAt, &p.FaceCount, &p.AssetCount,
		&faceID, &assetID, &path, &w, &h, &x1, &y1, &x2, &y2, &sc); err != nil {
		return p, err
	}
	if faceID != nil && path != nil {
		p.Cover = &FaceRef{FaceID: *faceID, AssetID: *assetID, Path: *path, ImageWidth: *w, ImageHeight: *h,
			Box: [4]float32{*x1, *y1, *x2, *y2}, Score: *sc}
	}
	return p, nil
}

// ListPeople lists people as Immich orders them: named first, then by
// number of faces (most first), name, id.
func (s *Store) ListPeople(ctx context.Context, opts PeopleOptions) ([]Person, error) {
	limit := opts.Limit
	if limit == 0 {
		limit = MaxLimit
	}
	if limit < 0 || limit > MaxLimit || opts.Offset < 0 || opts.MinFaces < 0 {
		return nil, fmt.Errorf("%w: people limit %d, offset %d, min faces %d", ErrInvalid, opts.Limit, opts.Offset, opts.MinFaces)
	}
	rows, err := s.pool.Query(ctx, s.expand(`
SELECT `+personColumns+`
FROM {{s}}.people p`+personJoins+`
WHERE c.faces > 0 AND (c.faces >= $1 OR p.name <> '')
ORDER BY p.name = '', c.faces DESC, p.name, p.id
LIMIT $2 OFFSET $3`), max(opts.MinFaces, 1), limit, opts.Offset)
	if err != nil {
		return nil, fmt.Errorf("list people: %w", err)
	}
	people, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (Person, error) { return scanPerson(r) })
	if err != nil {
		return nil, fmt.Errorf("list people: %w", err)
	}
	return people, nil
}

// Person returns one person; ErrNotFound when there is none with id.
func (s *Store) Person(ctx context.Context, id int64) (Person, error) {
	p, err := scanPerson(s.pool.QueryRow(ctx, s.expand(`
SELECT `+personColumns+`
FROM {{s}}.people p`+personJoins+`
WHERE p.id = $1`), id))
	if isNoRows(err) {
		return Person{}, fmt.Errorf("%w: person %d", ErrNotFound, id)
	}
	if err != nil {
		return Person{}, fmt.Errorf("person %d: %w", id, err)
	}
	return p, nil
}

// checkName trims a name and refuses what cannot be one.
func checkName(name string) (string, error) {
	name = strings.TrimSpace(name)
	if !utf8.ValidString(name) || utf8.RuneCountInString(name) > MaxNameLength {
		return "", fmt.Errorf("%w: name: want valid UTF-8 of at most %d characters", ErrInvalid, MaxNameLength)
	}
	if strings.IndexFunc(name, unicode.IsControl) >= 0 {
		return "", fmt.Errorf("%w: name contains control characters", ErrInvalid)
	}
	return name, nil
}

// RenamePerson sets a person's name ("" clears it; spaces around it are
// trimmed) and returns the person.
func (s *Store) RenamePerson(ctx context.Context, id int64, name string) (Person, error) {
	name, err := checkName(name)
	if err != nil {
		return Person{}, err
	}
	tag, err := s.pool.Exec(ctx, s.expand("UPDATE {{s}}.people SET name = $2, updated_at = now() WHERE id = $1"), id, name)
	if err != nil {
		return Person{}, fmt.Errorf("rename person %d: %w", id, err)
	}
	if tag.RowsAffected() == 0 {
		return Person{}, fmt.Errorf("%w: person %d", ErrNotFound, id)
	}
	return s.Person(ctx, id)
}

// MergePeople moves the faces of the people from into the person into and
// deletes them, as Immich's merge does: into keeps its name and cover, and
// takes the first name among from if it has none. Every id must exist
// (ErrNotFound) and none of from may be into (ErrInvalid).
func (s *Store) MergePeople(ctx context.Context, into int64, from ...int64) (Person, error) {
	if len(from) == 0 {
		return Person{}, fmt.Errorf("%w: merge: no people to merge into %d", ErrInvalid, into)
	}
	if len(from) > MaxLimit {
		return Person{}, fmt.Errorf("%w: merge: %d people at once, at most %d", ErrInvalid, len(from), MaxLimit)
	}
	for _, id := range from {
		if id == into {
			return Person{}, fmt.Errorf("%w: merge: person %d into itself", ErrInvalid, into)
		}
	}
	tx, err := s.pool.Begin(ctx)
	if err != nil {
		return Person{}, fmt.Errorf("merge people: %w", err)
	}
	defer tx.Rollback(context.WithoutCancel(ctx)) //nolint:errcheck // no-op after commit
	if _, err := tx.Exec(ctx, "SELECT pg_advisory_xact_lock($1)", s.peopleLockKey()); err != nil {
		return Person{}, fmt.Errorf("merge people: lock: %w", err)
	}
	ids := append([]int64{into}, from...)
	rows, err := tx.Query(ctx, s.expand("SELECT id, name FROM {{s}}.people WHERE id = ANY($1::bigint[]) ORDER BY id FOR UPDATE"), ids)
	if err != nil {
		return Person{}, fmt.Errorf("merge people: %w", err)
	}
	names := map[int64]string{}
	for rows.Next() {
		var id int64
		var name string
		if err := rows.Scan(&id, &name); err != nil {
			rows.Close()
			return Person{}, fmt.Errorf("merge people: %w", err)
		}
		names[id] = name
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return Person{}, fmt.Errorf("merge people: %w", err)
	}
	for _, id := range ids {
		if _, ok := names[id]; !ok {
			return Person{}, fmt.Errorf("%w: person %d", ErrNotFound, id)
		}
	}
	name := names[into]
	for _, id := range from {
		if name == "" {
			name = names[id]
		}
	}
	if _, err := tx.Exec(ctx, s.expand("UPDATE {{s}}.face_person SET person_id = $1 WHERE person_id = ANY($2::bigint[])"), into, from); err != nil {
		return Person{}, fmt.Errorf("merge people: %w", err)
	}
	if _, err := tx.Exec(ctx, s.expand("UPDATE {{s}}.people SET name = $2, updated_at = now() WHERE id = $1"), into, name); err != nil {
		return Person{}, fmt.Errorf("merge people: %w", err)
	}
	if _, err := tx.Exec(ctx, s.expand("DELETE FROM {{s}}.people WHERE id = ANY($1::bigint[])"), from); err != nil {
		return Person{}, fmt.Errorf("merge people: %w", err)
	}
	if err := tx.Commit(ctx); err != nil {
		return Person{}, fmt.Errorf("merge people: commit: %w", err)
	}
	s.logger.Info("merged people", "into", into, "from", from)
	return s.Person(ctx, into)
}

// PersonAssets lists the assets in which person id appears, most recently
// modified first; ErrNotFound when there is no such person.
func (s *Store) PersonAssets(ctx context.Context, id int64, limit, offset int) ([]PersonAsset, error) {
	if limit <= 0 || limit > MaxLimit || offset < 0 {
		return nil, fmt.Errorf("%w: limit %d, offset %d: want 1..%d and ≥ 0", ErrInvalid, limit, offset, MaxLimit)
	}
	rows, err := s.pool.Query(ctx, s.expand(`
SELECT a.id, a.path, a.modified_at, f.id, f.image_width, f.image_height, f.x1, f.y1, f.x2, f.y2, f.score
FROM (
	SELECT DISTINCT ON (f.asset_id) f.id, f.asset_id, f.image_width, f.image_height, f.x1, f.y1, f.x2, f.y2, f.score
	FROM {{s}}.face_person fp JOIN {{s}}.faces f ON f.id = fp.face_id
	WHERE fp.person_id = $1
	ORDER BY f.asset_id, f.score DESC, f.id
) f
JOIN {{s}}.assets a ON a.id = f.asset_id
ORDER BY a.modified_at DESC NULLS LAST, a.id DESC
LIMIT $2 OFFSET $3`), id, limit, offset)
	if err != nil {
		return nil, fmt.Errorf("person assets: %w", err)
	}
	out, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (PersonAsset, error) {
		var (
			pa PersonAsset
			mt *time.Time
			f  = &pa.Face
		)
		err := r.Scan(&pa.AssetID, &pa.Path, &mt, &f.FaceID, &f.ImageWidth, &f.ImageHeight,
			&f.Box[0], &f.Box[1], &f.Box[2], &f.Box[3], &f.Score)
		if mt != nil {
			pa.ModifiedAt = *mt
		}
		f.AssetID, f.Path = pa.AssetID, pa.Path
		return pa, err
	})
	if err != nil {
		return nil, fmt.Errorf("person assets: %w", err)
	}
	if len(out) == 0 {
		if err := s.checkPerson(ctx, s.pool, id); err != nil {
			return nil, err
		}
	}
	return out, nil
}

// checkPerson returns ErrNotFound when there is no person id.
func (s *Store) checkPerson(ctx context.Context, q querier, id int64) error {
	var ok bool
	if err := q.QueryRow(ctx, s.expand("SELECT EXISTS (SELECT 1 FROM {{s}}.people WHERE id = $1)"), id).Scan(&ok); err != nil {
		return fmt.Errorf("person %d: %w", id, err)
	}
	if !ok {
		return fmt.Errorf("%w: person %d", ErrNotFound, id)
	}
	return nil
}

// Filter narrows a CLIP search.
type Filter struct {
	// PersonID keeps the assets in which this person appears (0: all).
	PersonID int64
}

// SearchCLIPFiltered is SearchCLIP over the assets that pass f. A person's
// assets are a small part of the index, which an HNSW scan followed by a
// filter would mostly miss, so they are searched exactly: every embedding
// of theirs is compared with query. ErrNotFound when the person does not
// exist.
func (s *Store) SearchCLIPFiltered(ctx context.Context, model string, query []float32, f Filter, limit int) ([]Hit, error) {
	if f.PersonID == 0 {
		return s.SearchCLIP(ctx, model, query, limit)
	}
	if err := checkQuery(query, limit); err != nil {
		return nil, err
	}
	t, err := s.model(ctx, model)
	if err != nil {
		return nil, err
	}
	if len(query) != t.dim {
		return nil, fmt.Errorf("%w: query has %d dimensions, %s has %d", ErrDimensionMismatch, len(query), model, t.dim)
	}
	if err := s.checkPerson(ctx, s.pool, f.PersonID); err != nil {
		return nil, err
	}
	// MATERIALIZED keeps the planner from ordering through the HNSW index.
	sql := fmt.Sprintf(`
WITH c AS MATERIALIZED (
	SELECT a.id, a.path, e.embedding <=> $1 AS distance
	FROM %s e JOIN %s a ON a.id = e.asset_id
	WHERE e.asset_id IN (SELECT f.asset_id FROM %s fp JOIN %s f ON f.id = fp.face_id WHERE fp.person_id = $3)
)
SELECT c.id::text, c.path, c.distance FROM c
ORDER BY c.distance, c.id
LIMIT $2`, s.table(t.table), s.table("assets"), s.table("face_person"), s.table("faces"))
	return knn(ctx, s.pool, limit, sql, pgvector.NewVector(query), limit, f.PersonID)
}
