package search

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
)

// Index is where CLIP image embeddings of one library are written and
// searched: our own schema ([Store]) or an Immich database's smart_search
// ([Immich]). Both implement it, so that indexing and search are written
// once for both.
type Index interface {
	// DefaultModel is the CLIP model to use when none is given: the one
	// Immich is configured with, or DefaultImmichModel for our own schema
	// (Immich's default, so that both agree unless told otherwise).
	DefaultModel(ctx context.Context) (string, error)
	// EnsureModel makes the index ready for embeddings of model with dim
	// dimensions. Our schema creates the model's table on first use;
	// Immich's is checked, never changed: its smart_search must have that
	// dimension and Immich must be configured with that model. A mismatch
	// is ErrDimensionMismatch (or ErrModelChanged for Immich).
	EnsureModel(ctx context.Context, model string, dim int) (Model, error)
	// Write stores a batch of results of model in one transaction,
	// idempotently. Our schema keys results by path and stores faces and
	// OCR; Immich keys them by Result.ImmichAsset and stores only CLIP
	// embeddings (its own jobs own faces and OCR).
	Write(ctx context.Context, model string, rs []Result) error
	// SearchCLIP returns the limit assets nearest to query, nearest first.
	SearchCLIP(ctx context.Context, model string, query []float32, limit int) ([]Hit, error)
	// Close releases the connections the index opened.
	Close()
}

var (
	_ Index = (*Store)(nil)
	_ Index = (*Immich)(nil)
)

// IndexOptions say which index OpenIndex opens.
type IndexOptions struct {
	// URL is the PostgreSQL connection URL.
	URL string
	// Immich opens an Immich database (ImmichSchema, "public" when empty)
	// instead of our own schema (Schema, DefaultSchema when empty).
	Immich       bool
	Schema       string
	ImmichSchema string
	// Paths maps Immich's stored paths to this host (Immich mode).
	Paths PathMap
	// DeferIndexes creates our tables without their HNSW indexes (see
	// Options.DeferIndexes).
	DeferIndexes bool
	// MaxConns caps the connections (DefaultMaxConns when zero).
	MaxConns int32
}

// ErrNoDatabase: no database URL was given.
var ErrNoDatabase = errors.New("no database URL")

// OpenIndex connects to the index opts describe. Our own schema is
// migrated on open (tables are created); Immich's is only read.
func OpenIndex(ctx context.Context, opts IndexOptions, logger *slog.Logger) (Index, error) {
	if opts.URL == "" {
		return nil, ErrNoDatabase
	}
	if opts.Immich {
		return OpenImmich(ctx, ImmichOptions{URL: opts.URL, Schema: opts.ImmichSchema, Paths: opts.Paths, MaxConns: opts.MaxConns}, logger)
	}
	return Open(ctx, Options{URL: opts.URL, Schema: opts.Schema, DeferIndexes: opts.DeferIndexes, MaxConns: opts.MaxConns}, logger)
}

// DefaultModel implements Index: our schema holds any model; without one
// named, Immich's default.
func (s *Store) DefaultModel(context.Context) (string, error) { return DefaultImmichModel, nil }

// DefaultModel implements Index: the model Immich is configured with.
func (im *Immich) DefaultModel(ctx context.Context) (string, error) { return im.ConfiguredModel(ctx) }

// EnsureModel implements Index: smart_search must hold embeddings of dim
// dimensions and Immich must be configured with model (its search embeds
// queries with that model; embeddings of another would not match).
func (im *Immich) EnsureModel(ctx context.Context, model string, dim int) (Model, error) {
	configured, err := im.ConfiguredModel(ctx)
	if err != nil {
		return Model{}, err
	}
	if model != configured {
		return Model{}, fmt.Errorf("%w: Immich is configured for CLIP model %s; embeddings of %s would not match its search (change the model in Immich first)",
			ErrModelChanged, configured, model)
	}
	if err := im.CheckModel(model, dim); err != nil {
		return Model{}, err
	}
	return Model{Name: model, Dim: dim, Table: "smart_search"}, nil
}

// Write implements Index: the CLIP embeddings of the results, by their
// ImmichAsset, upserted as UpsertCLIP does. Faces and OCR are refused
// (ErrInvalid): Immich's own jobs own those tables.
func (im *Immich) Write(ctx context.Context, model string, rs []Result) error {
	if im.model != "" && model != im.model {
		return fmt.Errorf("%w: embeddings of %s for an Immich configured with %s", ErrModelChanged, model, im.model)
	}
	es := make([]Embedding, 0, len(rs))
	for _, r := range rs {
		if r.ImmichAsset == "" {
			return fmt.Errorf("%w: %s has no Immich asset id; this index is an Immich database", ErrInvalid, r.Path)
		}
		if r.Faces != nil || r.OCR != nil {
			return fmt.Errorf("%w: faces and OCR are never written to an Immich database", ErrInvalid)
		}
		if r.CLIP == nil {
			continue
		}
		es = append(es, Embedding{AssetID: r.ImmichAsset, Embedding: r.CLIP})
	}
	_, err := im.UpsertCLIP(ctx, es)
	return err
}

// SearchCLIP implements Index: Search, for the model Immich is
// configured with.
func (im *Immich) SearchCLIP(ctx context.Context, model string, query []float32, limit int) ([]Hit, error) {
	if im.model != "" && model != im.model {
		return nil, fmt.Errorf("%w: a query of %s for an Immich configured with %s", ErrModelChanged, model, im.model)
	}
	return im.Search(ctx, query, limit)
}
