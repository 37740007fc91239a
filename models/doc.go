// Package models knows every model Immich's machine-learning service accepts
// and keeps them on disk in Immich's own cache layout, downloading what is
// missing.
//
// The catalogue ([Lookup], [All], [CLIPDim]) holds the 58 CLIP names (54
// OpenCLIP, 4 M-CLIP), the 4 InsightFace packs and the 10 PP-OCRv5 names,
// with their task, the types Immich accepts for them, and their embedding
// size. [CleanName] is Immich's clean_name plus strict validation, so a
// cleaned name is always a single safe path component.
//
// The [Store] maps a (task, type, name) to the folder a loader reads and
// fetches missing files: CLIP and face models from Hugging Face repos
// <organization>/<name> with the hub's own HTTP protocol (repo revision,
// recursive tree listing with sizes and LFS sha256, resolve/<commit>/<path>),
// PP-OCRv5 models from RapidOCR's ModelScope repository with pinned sha256
// (see ocrsource.go). Every file is written to "<dest>.partial", checked
// (size, sha256 or git blob id when known), fsynced and renamed into place,
// so a crash never leaves a complete-looking half file; a later attempt
// resumes the partial file with a Range request. Downloads are single-flight
// per model folder and retried with exponential backoff and jitter on
// transient failures.
//
// Layout (identical to Immich's, so an existing model-cache volume works):
//
//	<cache>/clip/<name>/config.json, visual/..., textual/...
//	<cache>/facial-recognition/<name>/{detection,recognition}/model.onnx
//	<cache>/ocr/<name without LANG__ prefix>/detection/model.onnx
//	<cache>/ocr/<name>/recognition/model.onnx
package models
