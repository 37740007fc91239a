package main

import (
	"context"
	"fmt"
	"log/slog"

	"github.com/mlserve/mlserve/api"
	"github.com/mlserve/mlserve/config"
	"github.com/mlserve/mlserve/inference/imaging"
	"github.com/mlserve/mlserve/pool"
	"github.com/mlserve/mlserve/search"
)

// searcher answers /search: CLIP embeddings from the service's shared
// cache and workers, nearest neighbours from pgvector (our schema or
// Immich's smart_search).
type searcher struct {
	svc    *pool.Service
	db     *database
	decode imaging.DecodeOptions
}

var _ api.Searcher = (*searcher)(nil)

// openSearcher connects to MLSERVE_DATABASE_URL for /search. Without a URL
// it returns nil: the endpoints answer 503.
func openSearcher(ctx context.Context, cfg *config.Config, svc *pool.Service, logger *slog.Logger) (*searcher, error) {
	if cfg.DatabaseURL == "" {
		return nil, nil
	}
	schema := cfg.SearchSchema
	if schema == "" {
		schema = search.DefaultSchema
	}
	db, err := openDatabase(ctx, dbFlags{
		model:        cfg.SearchModel,
		immich:       cfg.SearchImmich,
		schema:       schema,
		immichSchema: "public",
	}, cfg, false, logger)
	if err != nil {
		return nil, fmt.Errorf("search database: %w", err)
	}
	mode := "mlserve schema"
	if db.immich != nil {
		mode = "Immich smart_search"
	}
	logger.Info("smart search enabled", "model", db.model, "tables", mode)
	return &searcher{svc: svc, db: db, decode: decodeOptions(cfg)}, nil
}

func (s *searcher) Close() { s.db.Close() }

// SearchText implements api.Searcher.
func (s *searcher) SearchText(ctx context.Context, q string, limit int) ([]api.SearchHit, error) {
	emb, err := s.svc.EmbedText(ctx, s.db.model, q, "")
	if err != nil {
		return nil, err
	}
	return s.nearest(ctx, emb, limit)
}

// SearchImage implements api.Searcher.
func (s *searcher) SearchImage(ctx context.Context, data []byte, limit int) ([]api.SearchHit, error) {
	img, err := imaging.DecodeWith(data, s.decode)
	if err != nil {
		return nil, err
	}
	embs, err := s.svc.EmbedImages(ctx, s.db.model, []*imaging.Image{img})
	if err != nil {
		return nil, err
	}
	return s.nearest(ctx, embs[0], limit)
}

func (s *searcher) nearest(ctx context.Context, q []float32, limit int) ([]api.SearchHit, error) {
	var hits []search.Hit
	var err error
	if s.db.immich != nil {
		hits, err = s.db.immich.Search(ctx, q, limit)
	} else {
		hits, err = s.db.store.SearchCLIP(ctx, s.db.model, q, limit)
	}
	if err != nil {
		if search.IsTransient(err) {
			return nil, fmt.Errorf("%w: %w", api.ErrSearchUnavailable, err)
		}
		return nil, err
	}
	out := make([]api.SearchHit, len(hits))
	for i, h := range hits {
		out[i] = api.SearchHit{AssetID: h.AssetID, Path: h.Path, Distance: h.Distance}
	}
	return out, nil
}
