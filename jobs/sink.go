package jobs

import (
	"context"
	"fmt"

	"github.com/mlserve/mlserve/search"
)

// IndexSink writes results into a search.Index: our own schema (CLIP
// embeddings of Model, faces and OCR under the models that computed them)
// or an Immich database (CLIP embeddings only, keyed by the items' asset
// ids).
type IndexSink struct {
	Index search.Index
	Model string
}

var (
	_ Sink            = IndexSink{}
	_ FailureRecorder = IndexSink{}
)

// Write implements Sink.
func (s IndexSink) Write(ctx context.Context, rs []Result) error {
	out := make([]search.Result, len(rs))
	for i, r := range rs {
		out[i] = search.Result{
			Asset:       search.Asset{Path: r.Item.Path, Hash: r.Hash, Size: r.Size, ModTime: r.Item.ModifiedAt()},
			ImmichAsset: r.Item.AssetID,
			CLIP:        r.Embedding,
			Faces:       r.Faces, FaceModel: r.FaceModel,
			OCR: r.OCR, OCRModel: r.OCRModel,
		}
	}
	if err := s.Index.Write(ctx, s.Model, out); err != nil {
		if r := rs[0]; len(rs) == 1 && r.Item.AssetID != "" {
			return fmt.Errorf("asset %s: %w", r.Item.AssetID, err)
		}
		return err
	}
	return nil
}

// RecordFailures implements FailureRecorder when the index records
// failures (our own schema); otherwise failures are not remembered.
func (s IndexSink) RecordFailures(ctx context.Context, fs []search.Failure) error {
	if fr, ok := s.Index.(FailureRecorder); ok {
		return fr.RecordFailures(ctx, fs)
	}
	return nil
}
