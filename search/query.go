package search

import (
	"context"
	"fmt"
	"strconv"

	"github.com/jackc/pgx/v5"
	"github.com/pgvector/pgvector-go"
)

// MaxLimit caps one search's results (Immich's page size maximum).
const MaxLimit = 1000

// Hit is one search result.
type Hit struct {
	// AssetID is our asset id (decimal) or Immich's asset UUID.
	AssetID string `json:"assetId"`
	// Path is the file's path (our schema) or the original file's path as
	// Immich stored it (Immich mode).
	Path string `json:"path,omitempty"`
	// Distance is the cosine distance to the query: 0 is identical, 2 is
	// opposite.
	Distance float64 `json:"distance"`
}

// TextEmbedder turns a search text into a CLIP embedding (the textual
// model of the same CLIP model as the stored images).
type TextEmbedder interface {
	EmbedText(ctx context.Context, text string) ([]float32, error)
}

func checkQuery(q []float32, limit int) error {
	if len(q) == 0 {
		return fmt.Errorf("%w: empty query embedding", ErrInvalid)
	}
	if limit <= 0 || limit > MaxLimit {
		return fmt.Errorf("%w: limit %d: want 1..%d", ErrInvalid, limit, MaxLimit)
	}
	return nil
}

// knn runs one nearest-neighbour query in a short transaction that widens
// the HNSW candidate list to the limit: pgvector's default ef_search (40)
// would otherwise cap the results at 40 rows.
func knn(ctx context.Context, pool interface {
	Begin(context.Context) (pgx.Tx, error)
}, limit int, sql string, args ...any) ([]Hit, error) {
	tx, err := pool.Begin(ctx)
	if err != nil {
		return nil, fmt.Errorf("search: %w", err)
	}
	defer tx.Rollback(context.WithoutCancel(ctx)) //nolint:errcheck // read-only
	ef := max(40, limit)
	if _, err := tx.Exec(ctx, "SET LOCAL hnsw.ef_search = "+strconv.Itoa(ef)); err != nil {
		return nil, fmt.Errorf("search: %w", err)
	}
	rows, err := tx.Query(ctx, sql, args...)
	if err != nil {
		return nil, fmt.Errorf("search: %w", err)
	}
	hits, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (Hit, error) {
		var h Hit
		err := r.Scan(&h.AssetID, &h.Path, &h.Distance)
		return h, err
	})
	if err != nil {
		return nil, fmt.Errorf("search: %w", err)
	}
	return hits, tx.Commit(ctx)
}

// SearchCLIP returns the limit assets whose embedding of model is nearest
// to query, nearest first; ties are broken by asset id, as Immich does.
func (s *Store) SearchCLIP(ctx context.Context, model string, query []float32, limit int) ([]Hit, error) {
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
	sql := fmt.Sprintf(`
SELECT a.id::text, a.path, e.embedding <=> $1 AS distance
FROM %s e JOIN %s a ON a.id = e.asset_id
ORDER BY e.embedding <=> $1, a.id
LIMIT $2`, s.table(t.table), s.table("assets"))
	return knn(ctx, s.pool, limit, sql, pgvector.NewVector(query), limit)
}

// SearchText embeds text with emb and searches model's embeddings.
func (s *Store) SearchText(ctx context.Context, emb TextEmbedder, model, text string, limit int) ([]Hit, error) {
	q, err := emb.EmbedText(ctx, text)
	if err != nil {
		return nil, fmt.Errorf("embed search text: %w", err)
	}
	return s.SearchCLIP(ctx, model, q, limit)
}

// Embedding returns the stored embedding of path for model (search by an
// indexed image, like Immich's queryAssetId).
func (s *Store) Embedding(ctx context.Context, model, path string) ([]float32, error) {
	t, err := s.model(ctx, model)
	if err != nil {
		return nil, err
	}
	var v pgvector.Vector
	err = s.pool.QueryRow(ctx, fmt.Sprintf(`SELECT e.embedding FROM %s e JOIN %s a ON a.id = e.asset_id WHERE a.path = $1`,
		s.table(t.table), s.table("assets")), path).Scan(&v)
	if err != nil {
		if isNoRows(err) {
			return nil, fmt.Errorf("%w: %s has no %s embedding", ErrInvalid, path, model)
		}
		return nil, fmt.Errorf("embedding of %s: %w", path, err)
	}
	return v.Slice(), nil
}

// SearchFaces returns the limit faces nearest to a 512-d face embedding.
func (s *Store) SearchFaces(ctx context.Context, query []float32, limit int) ([]Hit, error) {
	if err := checkQuery(query, limit); err != nil {
		return nil, err
	}
	if len(query) != 512 {
		return nil, fmt.Errorf("%w: face query has %d dimensions, want 512", ErrDimensionMismatch, len(query))
	}
	sql := s.expand(`
SELECT a.id::text, a.path, f.embedding <=> $1 AS distance
FROM {{s}}.faces f JOIN {{s}}.assets a ON a.id = f.asset_id
ORDER BY f.embedding <=> $1, f.id
LIMIT $2`)
	return knn(ctx, s.pool, limit, sql, pgvector.NewVector(query), limit)
}
