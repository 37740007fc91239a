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
//     the nearest face within MaxDistance that has one;
//   - a core face that found no person founds a new one, with itself as
//     the cover; a non-core face that found none stays unassigned.
//
// Faces that already have a person are never moved, so people and their
// names survive later runs: a run after indexing new photos only places
// the new faces (and retries the ones left unassigned). Faces added while
// it runs are left to the next run. Each batch of faces is decided in one
// transaction under an advisory lock, so concurrent runs (and MergePeople)
// never see each other half done; a cancelled run keeps the batches it
// finished.
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
SELECT id FROM {{s}}.faces WHERE person_id IS NULL AND id > $1 AND id <= $2 ORDER BY id LIMIT $3`), last, maxID, opts.BatchSize)
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
// and returns how many people it deleted and the newest unassigned face.
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
DELETE FROM {{s}}.people p WHERE NOT EXISTS (SELECT 1 FROM {{s}}.faces f WHERE f.person_id = p.id)`))
	if err != nil {
		return 0, 0, fmt.Errorf("cluster faces: remove empty people: %w", err)
	}
	if _, err := tx.Exec(ctx, s.expand(`
UPDATE {{s}}.people p SET cover_face_id = (
	SELECT f.id FROM {{s}}.faces f WHERE f.person_id = p.id ORDER BY f.score DESC, f.id LIMIT 1)
WHERE p.cover_face_id IS NULL
   OR NOT EXISTS (SELECT 1 FROM {{s}}.faces f WHERE f.id = p.cover_face_id AND f.person_id = p.id)`)); err != nil {
		return 0, 0, fmt.Errorf("cluster faces: covers: %w", err)
	}
	if err := tx.QueryRow(ctx, s.expand("SELECT coalesce(max(id), 0) FROM {{s}}.faces WHERE person_id IS NULL")).Scan(&maxID); err != nil {
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

// neighbourSQL returns, for face $1, its $2 nearest faces (itself
// included; kind 0) and its nearest face that has a person (kind 1),
// those within distance $3, nearest first; then the face's own person
// (kind 2; no row when the face was deleted meanwhile).
const neighbourSQL = `
SELECT n.kind, n.person_id, n.distance FROM (
	(SELECT 2 AS kind, person_id, 0::float8 AS distance FROM {{s}}.faces WHERE id = $1)
	UNION ALL
	(SELECT 0, f.person_id, f.embedding <=> (SELECT embedding FROM {{s}}.faces WHERE id = $1)
	 FROM {{s}}.faces f
	 ORDER BY f.embedding <=> (SELECT embedding FROM {{s}}.faces WHERE id = $1)
	 LIMIT $2)
	UNION ALL
	(SELECT 1, f.person_id, f.embedding <=> (SELECT embedding FROM {{s}}.faces WHERE id = $1)
	 FROM {{s}}.faces f
	 WHERE f.person_id IS NOT NULL
	 ORDER BY f.embedding <=> (SELECT embedding FROM {{s}}.faces WHERE id = $1)
	 LIMIT 1)
) n
WHERE n.distance <= $3
ORDER BY n.kind, n.distance`

// batch decides faces ids in one transaction and returns the non-core
// ones it deferred (never when final).
func (c *clusterer) batch(ctx context.Context, ids []int64, final bool) ([]int64, error) {
	s := c.s
	tx, err := s.pool.Begin(ctx)
	if err != nil {
		return nil, fmt.Errorf("cluster faces: %w", err)
	}
	defer tx.Rollback(context.WithoutCancel(ctx)) //nolint:errcheck // no-op after commit
	if _, err := tx.Exec(ctx, "SELECT pg_advisory_xact_lock($1)", s.peopleLockKey()); err != nil {
		return nil, fmt.Errorf("cluster faces: lock: %w", err)
	}
	// A wider candidate list than pgvector's default 40, for the filtered
	// search of the nearest face with a person.
	if _, err := tx.Exec(ctx, "SET LOCAL hnsw.ef_search = "+strconv.Itoa(max(100, c.opts.MinFaces))); err != nil {
		return nil, fmt.Errorf("cluster faces: %w", err)
	}
	var deferred []int64
	var res ClusterResult
	neighbours, assign, create := s.expand(neighbourSQL), s.expand(`
UPDATE {{s}}.faces SET person_id = $2 WHERE id = $1 AND person_id IS NULL`), s.expand(`
WITH p AS (
	INSERT INTO {{s}}.people (cover_face_id)
	SELECT id FROM {{s}}.faces WHERE id = $1 AND person_id IS NULL
	RETURNING id, cover_face_id
)
UPDATE {{s}}.faces f SET person_id = p.id FROM p WHERE f.id = p.cover_face_id`)
	for _, id := range ids {
		rows, err := tx.Query(ctx, neighbours, id, c.opts.MinFaces, c.opts.MaxDistance)
		if err != nil {
			return nil, fmt.Errorf("cluster faces: neighbours of face %d: %w", id, err)
		}
		var (
			matches  int
			personID int64 // of the nearest neighbour that has one
			nearest  int64 // of the nearest face with a person (kind 1)
			exists   bool
			taken    bool // the face got a person meanwhile
		)
		for rows.Next() {
			var kind int
			var pid *int64
			var d float64
			if err := rows.Scan(&kind, &pid, &d); err != nil {
				rows.Close()
				return nil, fmt.Errorf("cluster faces: %w", err)
			}
			switch kind {
			case 0:
				matches++
				if pid != nil && personID == 0 {
					personID = *pid
				}
			case 1:
				nearest = *pid
			case 2:
				exists, taken = true, pid != nil
			}
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return nil, fmt.Errorf("cluster faces: neighbours of face %d: %w", id, err)
		}
		if !exists || taken {
			continue // deleted by a rewrite, or assigned by another run
		}
		if c.opts.MinFaces > 1 && matches <= 1 {
			res.Unassigned++
			continue
		}
		core := matches >= c.opts.MinFaces
		if !core && !final {
			deferred = append(deferred, id)
			continue
		}
		if personID == 0 {
			personID = nearest
		}
		switch {
		case personID != 0:
			tag, err := tx.Exec(ctx, assign, id, personID)
			if err != nil {
				return nil, fmt.Errorf("cluster faces: assign face %d: %w", id, err)
			}
			res.Assigned += int(tag.RowsAffected())
		case core:
			tag, err := tx.Exec(ctx, create, id)
			if err != nil {
				return nil, fmt.Errorf("cluster faces: new person for face %d: %w", id, err)
			}
			res.Assigned += int(tag.RowsAffected())
			res.Created += int(tag.RowsAffected())
		default:
			res.Unassigned++
		}
	}
	if err := tx.Commit(ctx); err != nil {
		return nil, fmt.Errorf("cluster faces: commit: %w", err)
	}
	c.res.Assigned += res.Assigned
	c.res.Created += res.Created
	c.res.Unassigned += res.Unassigned
	return deferred, nil
}
