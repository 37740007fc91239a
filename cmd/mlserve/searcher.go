package main

import (
	"context"
	"fmt"
	"log/slog"

	"github.com/mlserve/mlserve/api"
	"github.com/mlserve/mlserve/config"
	"github.com/mlserve/mlserve/inference/imaging"
	"github.com/mlserve/mlserve/models"
	"github.com/mlserve/mlserve/pool"
	"github.com/mlserve/mlserve/search"
)

// searcher answers /search: CLIP embeddings from the service's shared
// cache and workers, nearest neighbours from pgvector (our schema or
// Immich's smart_search).
type searcher struct {
	svc    *pool.Service
	ix     search.Index
	model  string
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
	ix, model, err := openSearchIndex(ctx, cfg, dbFlags{
		model:        cfg.SearchModel,
		immich:       cfg.SearchImmich,
		schema:       schema,
		immichSchema: "public",
	}, logger)
	if err != nil {
		return nil, fmt.Errorf("search database: %w", err)
	}
	mode := "mlserve schema"
	if cfg.SearchImmich {
		mode = "Immich smart_search"
	}
	logger.Info("smart search enabled", "model", model, "tables", mode)
	return &searcher{svc: svc, ix: ix, model: model, decode: decodeOptions(cfg)}, nil
}

// openSearchIndex opens the index the flags pick and settles its CLIP
// model (the flag's, or the index's default), checked against the index.
func openSearchIndex(ctx context.Context, cfg *config.Config, f dbFlags, logger *slog.Logger) (search.Index, string, error) {
	open, _, err := openIndex(f, cfg, false, logger)
	if err != nil {
		return nil, "", err
	}
	ix, err := open(ctx)
	if err != nil {
		return nil, "", err
	}
	model := f.model
	if model == "" {
		if model, err = ix.DefaultModel(ctx); err != nil {
			ix.Close()
			return nil, "", err
		}
	}
	dim, ok := models.CLIPDim(model)
	if !ok {
		ix.Close()
		return nil, "", fmt.Errorf("unknown CLIP model %q", model)
	}
	if _, err := ix.EnsureModel(ctx, model, dim); err != nil {
		ix.Close()
		return nil, "", err
	}
	return ix, model, nil
}

func (s *searcher) Close() { s.ix.Close() }

// SearchText implements api.Searcher.
func (s *searcher) SearchText(ctx context.Context, q string, limit int) ([]api.SearchHit, error) {
	emb, err := s.svc.EmbedText(ctx, s.model, q, "")
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
	embs, err := s.svc.EmbedImages(ctx, s.model, []*imaging.Image{img})
	if err != nil {
		return nil, err
	}
	return s.nearest(ctx, embs[0], limit)
}

func (s *searcher) nearest(ctx context.Context, q []float32, limit int) ([]api.SearchHit, error) {
	hits, err := s.ix.SearchCLIP(ctx, s.model, q, limit)
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
