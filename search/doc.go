// Package search stores image embeddings in PostgreSQL with pgvector and
// answers nearest-neighbour queries over them.
//
// It has two modes:
//
//   - Our own schema ([Store]): assets found by `mlserve index PATH…` (path,
//     content hash, size, times), one CLIP table per model with a
//     vector(dim) column and an HNSW cosine index, faces (box, score,
//     landmarks, vector(512)) and OCR text. The schema is created by
//     versioned migrations applied at [Open]; they run under a transaction
//     advisory lock, so several processes may start at once.
//     People ([Store.ClusterFaces], [Store.ListPeople]) group the faces
//     as Immich's facial recognition does; [Store.SearchOCR] finds
//     recognised text by substring and trigram similarity, as Immich's
//     OCR search does.
//   - Immich mode ([Immich]): an Immich server's database. It lists the
//     assets that lack a CLIP embedding, maps their preview paths to a
//     mounted library ([PathMap]) and upserts smart_search exactly as the
//     server does. It never alters Immich's schema and never touches faces or
//     OCR tables, which the server's own jobs own.
//
// Every statement names its tables with their schema, so nothing depends on
// session state such as search_path (PGlite multiplexes client connections
// onto one backend, where session state would leak between them). Writes are
// batched as multi-row INSERT … SELECT FROM unnest(…) upserts, never COPY, so
// PGlite works as well as a real PostgreSQL.
//
// Query order is always `embedding <=> $query` (cosine distance), then the
// asset id, as Immich's search does.
package search
