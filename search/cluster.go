package search

import (
	"context"
	"fmt"
	"strconv"
	"time"

	"github.com/jackc/pgx/v5"
)

// Immich's defaults for grouping faces into people
// (machineLearning.facialRecognition).
const (
	// DefaultMinFaces is how many faces, the face itself included, must lie
	// within the distance for a face to be a core face.
	DefaultMinFaces = 3
	// DefaultMaxDistance is the cosine distance within which two faces are
	// neighbours.
	DefaultMaxDistance = 0.5
)

// DefaultClusterBatch is how many faces ClusterFaces decides per
// transaction.
const DefaultClusterBatch = 64

// ClusterOptions tune ClusterFaces; zero values take Immich's defaults.
type ClusterOptions struct {
	// MinFaces (≥ 1) is the number of faces within MaxDistance, the face
	// itself included, that makes a face a core face; DefaultMinFaces when
	// 0. Immich accepts ≥ 1.
	MinFaces int
	// MaxDistance is the cosine distance within which faces are
	// neighbours, in (0, 2]; DefaultMaxDistance when 0. Immich accepts
	// 0.1..2.
	MaxDistance float64
	// BatchSize is how many faces are decided per transaction (each holds
	// the people lock; on PGlite it also holds the whole database);
	// DefaultClusterBatch when 0.
	BatchSize int
}

// ClusterResult tells what a ClusterFaces run did.
type ClusterResult struct {
	// Faces is the number of faces without a person that were looked at.
	Faces int `json:"faces"`
	// Assigned faces got a person (new or existing); Created of them
	// founded a new person.
	Assigned int `json:"assigned"`
	Created  int `json:"created"`
	// Unassigned faces are left without a person: too few neighbours, or
	// non-core with no person near. A later run looks at them again.
	Unassigned int `json:"unassigned"`
	// Deferred non-core faces were decided after the core ones.
	Deferred int `json:"deferred"`
	// Removed people had no faces left (their photos changed or were
	// removed) and were deleted, as Immich's person clean-up does.
	Removed int           `json:"removed"`
	Took    time.Duration `json:"took"`
}

// ClusterFaces groups the faces that have no person yet into people, the
// way Immich's facial recognition job does (person.service.ts,
// handleRecognizeFaces), face by face in id order:
//
//   - its neighbours are the MinFaces faces nearest to it (itself
//     included) within MaxDistance, by cosine distance over the faces' HNSW
//     index; a face with no neighbour but itself stays unassigned (when
//     MinFaces > 1);
//   - it is a core face when it has MinFaces neighbours. A non-core face is
//     deferred: decided once more after all the others, when more of its
//     neighbours may have a person;
//   - it joins the person of its nearest neighbour that has one, else of
//     the nearest face within MaxDistance that has one (among its 40
//     nearest: the candidate list pgvector gives Immich's filtered search);
//   - a core face that found no person founds a new one, with itself as
//     the cover; a non-core face that found none stays unassigned.
//
// Faces that already have a person are never moved, so people and their
// names survive later runs: a run after indexing new photos only places
// the new faces (and retries the ones left unassigned). Faces added while
// it runs are left to the next run. Each batch of faces is decided in one
// transaction under an advisory lock, so concurrent runs (and MergePeople)
// never see each other half done; a cancelled run keeps the batches it
// finished. Index writers wait for a batch to finish before they replace
// an asset's faces, and a batch waits for them.
//
// Before clustering it builds the faces' HNSW index if it is missing, and
// deletes people that have no faces left.
func (s *Store) ClusterFaces(ctx context.Context, opts ClusterOptions) (ClusterResult, error) {
	start := time.Now()
	var res ClusterResult
	if opts.MinFaces == 0 {
		opts.MinFaces = DefaultMinFaces
	}
	if opts.MaxDistance == 0 {
		opts.MaxDistance = DefaultMaxDistance
	}
	if opts.BatchSize == 0 {
		opts.BatchSize = DefaultClusterBatch
	}
	if opts.MinFaces < 1 || opts.MinFaces > 100 || !(opts.MaxDistance > 0 && opts.MaxDistance <= 2) || opts.BatchSize < 1 || opts.BatchSize > 10000 {
		return res, fmt.Errorf("%w: cluster options %+v: want MinFaces 1..100, MaxDistance in (0, 2], BatchSize 1..10000", ErrInvalid, opts)
	}
	removed, maxID, err := s.prepareClustering(ctx)
	if err != nil {
		return res, err
	}
	res.Removed = removed

	var deferred []int64
	c := clusterer{s: s, opts: opts, res: &res}
	for last := int64(0); last < maxID; {
		rows, err := s.pool.Query(ctx, s.expand(`
SELECT f.id FROM {{s}}.faces f
WHERE f.id > $1 AND f.id <= $2 AND NOT EXISTS (SELECT 1 FROM {{s}}.face_person fp WHERE fp.face_id = f.id)
ORDER BY f.id LIMIT $3`), last, maxID, opts.BatchSize)
		if err != nil {
			return c.done(start), fmt.Errorf("cluster faces: %w", err)
		}
		ids, err := pgx.CollectRows(rows, pgx.RowTo[int64])
		if err != nil {
			return c.done(start), fmt.Errorf("cluster faces: %w", err)
		}
		if len(ids) == 0 {
			break
		}
		last = ids[len(ids)-1]
		res.Faces += len(ids)
		d, err := c.batch(ctx, ids, false)
		if err != nil {
			return c.done(start), err
		}
		deferred = append(deferred, d...)
	}
	res.Deferred = len(deferred)
	for i := 0; i < len(deferred); i += opts.BatchSize {
		if _, err := c.batch(ctx, deferred[i:min(i+opts.BatchSize, len(deferred))], true); err != nil {
			return c.done(start), err
		}
	}
	res = c.done(start)
	s.logger.Info("clustered faces", "faces", res.Faces, "assigned", res.Assigned, "new_people", res.Created,
		"unassigned", res.Unassigned, "removed_people", res.Removed, "took", res.Took)
	return res, nil
}

// prepareClustering builds the faces' index if missing, deletes people
// without faces, points covers that lost their face at the best face left,
// and returns how many people it deleted and the newest face's id.
func (s *Store) prepareClustering(ctx context.Context) (removed int, maxID int64, err error) {
	tx, err := s.pool.Begin(ctx)
	if err != nil {
		return 0, 0, fmt.Errorf("cluster faces: %w", err)
	}
	defer tx.Rollback(context.WithoutCancel(ctx)) //nolint:errcheck // no-op after commit
	if _, err := tx.Exec(ctx, "SELECT pg_advisory_xact_lock($1)", s.lockKey()); err != nil {
		return 0, 0, fmt.Errorf("cluster faces: lock: %w", err)
	}
	if _, err := tx.Exec(ctx, "SELECT pg_advisory_xact_lock($1)", s.peopleLockKey()); err != nil {
		return 0, 0, fmt.Errorf("cluster faces: lock: %w", err)
	}
	if err := s.ensureHNSW(ctx, tx, "faces"); err != nil {
		return 0, 0, fmt.Errorf("cluster faces: %w", err)
	}
	tag, err := tx.Exec(ctx, s.expand(`
DELETE FROM {{s}}.people p WHERE NOT EXISTS (SELECT 1 FROM {{s}}.face_person fp WHERE fp.person_id = p.id)`))
	if err != nil {
		return 0, 0, fmt.Errorf("cluster faces: remove empty people: %w", err)
	}
	if _, err := tx.Exec(ctx, s.expand(`
UPDATE {{s}}.people p SET cover_face_id = (
	SELECT f.id FROM {{s}}.face_person fp JOIN {{s}}.faces f ON f.id = fp.face_id
	WHERE fp.person_id = p.id ORDER BY f.score DESC, f.id LIMIT 1)
WHERE p.cover_face_id IS NULL
   OR NOT EXISTS (SELECT 1 FROM {{s}}.face_person fp WHERE fp.face_id = p.cover_face_id AND fp.person_id = p.id)`)); err != nil {
		return 0, 0, fmt.Errorf("cluster faces: covers: %w", err)
	}
	if err := tx.QueryRow(ctx, s.expand("SELECT coalesce(max(id), 0) FROM {{s}}.faces")).Scan(&maxID); err != nil {
		return 0, 0, fmt.Errorf("cluster faces: %w", err)
	}
	if err := tx.Commit(ctx); err != nil {
		return 0, 0, fmt.Errorf("cluster faces: commit: %w", err)
	}
	return int(tag.RowsAffected()), maxID, nil
}

type clusterer struct {
	s    *Store
	opts ClusterOptions
	res  *ClusterResult
}

func (c *clusterer) done(start time.Time) ClusterResult {
	c.res.Took = time.Since(start)
	return *c.res
}

// neighbourSQL returns the candidate neighbours of the faces $1: for each
// face (that still exists) and its person if it has one, its $2 nearest
// faces by the HNSW index (itself included) that lie within cosine
// distance $3, nearest first, each with its person if it has one. $2 is
// pgvector's default ef_search: Immich's kNN asks for minFaces of them,
// and its search for the nearest face with a person filters pgvector's
// candidate list of that size.
const neighbourSQL = `
SELECT q.id, qp.person_id, n.id, n.distance, np.person_id
FROM {{s}}.faces q
LEFT JOIN {{s}}.face_person qp ON qp.face_id = q.id
CROSS JOIN LATERAL (
	SELECT f.id, f.embedding <=> q.embedding AS distance
	FROM {{s}}.faces f
	ORDER BY f.embedding <=> q.embedding
	LIMIT $2
) n
LEFT JOIN {{s}}.face_person np ON np.face_id = n.id
WHERE q.id = ANY($1::bigint[]) AND n.distance <= $3
ORDER BY q.id, n.distance, n.id`

// candidates is how many nearest faces the neighbour search considers.
// More cost: on PGlite, 100 candidates take several times as long as 40.
func (c *clusterer) candidates() int { return max(40, c.opts.MinFaces) }

// neighbour is a face near another, and its person (0: none).
type neighbour struct {
	id, person int64
}

// faceNeighbours is a face's person (0: none) and its neighbours within
// MaxDistance, nearest first.
type faceNeighbours struct {
	person     int64
	neighbours []neighbour
}

// neighbours fetches the candidate lists of ids; faces deleted meanwhile
// are absent.
func (c *clusterer) neighbours(ctx context.Context, tx pgx.Tx, ids []int64) (map[int64]*faceNeighbours, error) {
	rows, err := tx.Query(ctx, c.s.expand(neighbourSQL), ids, c.candidates(), c.opts.MaxDistance)
	if err != nil {
		return nil, fmt.Errorf("cluster faces: neighbours: %w", err)
	}
	defer rows.Close()
	out := make(map[int64]*faceNeighbours, len(ids))
	for rows.Next() {
		var (
			id, nid  int64
			qp, np   *int64
			distance float64
		)
		if err := rows.Scan(&id, &qp, &nid, &distance, &np); err != nil {
			return nil, fmt.Errorf("cluster faces: neighbours: %w", err)
		}
		fn := out[id]
		if fn == nil {
			fn = &faceNeighbours{}
			if qp != nil {
				fn.person = *qp
			}
			out[id] = fn
		}
		n := neighbour{id: nid}
		if np != nil {
			n.person = *np
		}
		fn.neighbours = append(fn.neighbours, n)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("cluster faces: neighbours: %w", err)
	}
	return out, nil
}

// batch decides faces ids in one transaction and returns the non-core
// ones it deferred (never when final). The neighbours of all of them are
// fetched with one statement; the faces are then decided one by one in id
// order, each seeing the people the ones before it got (new people get
// temporary negative ids until they are written, with the assignments, at
// the end).
func (c *clusterer) batch(ctx context.Context, ids []int64, final bool) ([]int64, error) {
	s := c.s
	tx, err := s.pool.Begin(ctx)
	if err != nil {
		return nil, fmt.Errorf("cluster faces: %w", err)
	}
	defer tx.Rollback(context.WithoutCancel(ctx)) //nolint:errcheck // no-op after commit
	// Held alone: no face of the batch can be deleted (Write holds it
	// shared to replace faces) until the assignments are written.
	if _, err := tx.Exec(ctx, "SELECT pg_advisory_xact_lock($1)", s.peopleLockKey()); err != nil {
		return nil, fmt.Errorf("cluster faces: lock: %w", err)
	}
	// The HNSW scan must return every candidate the query asks for. And it
	// is the scan to use, however few the faces: the planner would rather
	// compare a few hundred faces with every face in the batch, but reading
	// each embedding back from TOAST makes that several times slower than
	// the index (16 against 3 ms a face over 400 faces on PGlite).
	if _, err := tx.Exec(ctx, "SET LOCAL hnsw.ef_search = "+strconv.Itoa(c.candidates())+"; SET LOCAL enable_seqscan = off"); err != nil {
		return nil, fmt.Errorf("cluster faces: %w", err)
	}
	near, err := c.neighbours(ctx, tx, ids)
	if err != nil {
		return nil, err
	}
	var (
		deferred []int64
		res      ClusterResult
		pending  = map[int64]int64{} // face → person decided in this batch
		covers   []int64             // new person −(i+1) is founded by covers[i]
	)
	personOf := func(n neighbour) int64 {
		if p, ok := pending[n.id]; ok {
			return p
		}
		return n.person
	}
	for _, id := range ids {
		fn := near[id]
		if fn == nil || fn.person != 0 {
			continue // deleted by a rewrite, or assigned by another run
		}
		matches := min(len(fn.neighbours), c.opts.MinFaces)
		if c.opts.MinFaces > 1 && matches <= 1 {
			res.Unassigned++
			continue
		}
		core := matches >= c.opts.MinFaces
		if !core && !final {
			deferred = append(deferred, id)
			continue
		}
		var person int64
		for _, n := range fn.neighbours {
			if p := personOf(n); p != 0 {
				person = p
				break
			}
		}
		switch {
		case person != 0:
			pending[id] = person
		case core:
			covers = append(covers, id)
			pending[id] = -int64(len(covers))
		default:
			res.Unassigned++
		}
	}
	if len(pending) > 0 {
		created, assigned, err := c.write(ctx, tx, pending, covers)
		if err != nil {
			return nil, err
		}
		res.Created, res.Assigned = created, assigned
	}
	if err := tx.Commit(ctx); err != nil {
		return nil, fmt.Errorf("cluster faces: commit: %w", err)
	}
	c.res.Assigned += res.Assigned
	c.res.Created += res.Created
	c.res.Unassigned += res.Unassigned
	return deferred, nil
}

// write creates the batch's new people (founded by covers) and writes its
// assignments.
func (c *clusterer) write(ctx context.Context, tx pgx.Tx, pending map[int64]int64, covers []int64) (created, assigned int, err error) {
	s := c.s
	real := make(map[int64]int64, len(covers)) // temporary id → id
	if len(covers) > 0 {
		rows, err := tx.Query(ctx, s.expand(`
INSERT INTO {{s}}.people (cover_face_id) SELECT u.id FROM unnest($1::bigint[]) AS u(id)
RETURNING id, cover_face_id`), covers)
		if err != nil {
			return 0, 0, fmt.Errorf("cluster faces: new people: %w", err)
		}
		byCover := make(map[int64]int64, len(covers))
		for rows.Next() {
			var id, cover int64
			if err := rows.Scan(&id, &cover); err != nil {
				rows.Close()
				return 0, 0, fmt.Errorf("cluster faces: new people: %w", err)
			}
			byCover[cover] = id
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return 0, 0, fmt.Errorf("cluster faces: new people: %w", err)
		}
		for i, f := range covers {
			real[-int64(i+1)] = byCover[f]
		}
		created = len(byCover)
	}
	faces := make([]int64, 0, len(pending))
	people := make([]int64, 0, len(pending))
	for f, p := range pending {
		if p < 0 {
			p = real[p]
		}
		faces = append(faces, f)
		people = append(people, p)
	}
	tag, err := tx.Exec(ctx, s.expand(`
INSERT INTO {{s}}.face_person (face_id, person_id)
SELECT u.face_id, u.person_id FROM unnest($1::bigint[], $2::bigint[]) AS u(face_id, person_id)
ON CONFLICT (face_id) DO NOTHING`), faces, people)
	if err != nil {
		return 0, 0, fmt.Errorf("cluster faces: assign: %w", err)
	}
	return created, int(tag.RowsAffected()), nil
}
