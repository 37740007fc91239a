package jobs

import (
	"context"
	"fmt"

	"github.com/mlserve/mlserve/search"
)

// StoreSink writes results into our own schema (search.Store): the CLIP
// embeddings of Model, and faces and OCR text under FaceModel and
// OCRModel when the worker ran them.
type StoreSink struct {
	Store               *search.Store
	Model               string
	FaceModel, OCRModel string
}

var _ Sink = StoreSink{}

// Write implements Sink.
func (s StoreSink) Write(ctx context.Context, rs []Result) error {
	out := make([]search.Result, len(rs))
	for i, r := range rs {
		if r.Item.AssetID != "" {
			return fmt.Errorf("%w: %s is an Immich asset; this worker writes our own schema", ErrPermanent, r.Item.AssetID)
		}
		out[i] = search.Result{
			Asset: search.Asset{Path: r.Item.Path, Hash: r.Hash, Size: r.Size, ModTime: r.Item.ModifiedAt()},
			CLIP:  r.Embedding,
			Faces: r.Faces, FaceModel: s.FaceModel,
			OCR: r.OCR, OCRModel: s.OCRModel,
		}
	}
	return s.Store.Write(ctx, s.Model, out)
}

// ImmichSink upserts results into an Immich database's smart_search.
type ImmichSink struct {
	Immich *search.Immich
}

var _ Sink = ImmichSink{}

// Write implements Sink.
func (s ImmichSink) Write(ctx context.Context, rs []Result) error {
	es := make([]search.Embedding, len(rs))
	for i, r := range rs {
		if r.Item.AssetID == "" {
			return fmt.Errorf("%w: %s has no Immich asset id; this worker writes an Immich database", ErrPermanent, r.Item.Path)
		}
		if r.Faces != nil || r.OCR != nil {
			// Immich's own face and OCR jobs own those tables.
			return fmt.Errorf("%w: faces and OCR are never written to an Immich database", ErrPermanent)
		}
		es[i] = search.Embedding{AssetID: r.Item.AssetID, Embedding: r.Embedding}
	}
	_, err := s.Immich.UpsertCLIP(ctx, es)
	return err
}
