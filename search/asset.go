package search

import (
	"context"
	"fmt"
	"time"
)

// StoredAsset is an indexed file as the store knows it.
type StoredAsset struct {
	ID   int64  `json:"id"`
	Path string `json:"path"`
	Size int64  `json:"size"`
	// ModifiedAt is the file's modification time when indexed (zero when
	// unknown).
	ModifiedAt time.Time `json:"modifiedAt"`
	IndexedAt  time.Time `json:"indexedAt"`
}

// Asset returns the indexed asset id (ErrNotFound when there is none): what
// a thumbnail handler needs to find a file by the id a search returned,
// never by a path from a request.
func (s *Store) Asset(ctx context.Context, id int64) (StoredAsset, error) {
	var (
		a  StoredAsset
		mt *time.Time
	)
	err := s.pool.QueryRow(ctx, s.expand("SELECT id, path, size, modified_at, indexed_at FROM {{s}}.assets WHERE id = $1"), id).
		Scan(&a.ID, &a.Path, &a.Size, &mt, &a.IndexedAt)
	if isNoRows(err) {
		return StoredAsset{}, fmt.Errorf("%w: asset %d", ErrNotFound, id)
	}
	if err != nil {
		return StoredAsset{}, fmt.Errorf("asset %d: %w", id, err)
	}
	if mt != nil {
		a.ModifiedAt = *mt
	}
	return a, nil
}

// Face returns the stored face id with its file (ErrNotFound when there is
// none): what a face-crop handler needs, found by the id that a person's
// cover or a person's asset carries.
func (s *Store) Face(ctx context.Context, id int64) (FaceRef, error) {
	var f FaceRef
	err := s.pool.QueryRow(ctx, s.expand(`
SELECT f.id, f.asset_id, a.path, f.image_width, f.image_height, f.x1, f.y1, f.x2, f.y2, f.score
FROM {{s}}.faces f JOIN {{s}}.assets a ON a.id = f.asset_id
WHERE f.id = $1`), id).
		Scan(&f.FaceID, &f.AssetID, &f.Path, &f.ImageWidth, &f.ImageHeight, &f.Box[0], &f.Box[1], &f.Box[2], &f.Box[3], &f.Score)
	if isNoRows(err) {
		return FaceRef{}, fmt.Errorf("%w: face %d", ErrNotFound, id)
	}
	if err != nil {
		return FaceRef{}, fmt.Errorf("face %d: %w", id, err)
	}
	return f, nil
}
