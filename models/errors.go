package models

import "errors"

// Sentinel errors. Callers test them with errors.Is; the api package maps
// them to HTTP statuses.
var (
	// ErrInvalidName: a model name that is empty, too long, has odd bytes,
	// path elements, or characters outside [A-Za-z0-9_+-] after cleaning.
	ErrInvalidName = errors.New("models: invalid model name")
	// ErrUnknownModel: a well-formed name that Immich does not know.
	ErrUnknownModel = errors.New("models: unknown model")
	// ErrUnsupported: a task/type combination Immich rejects for the model
	// (e.g. textual on a face pack), or an unknown task or type.
	ErrUnsupported = errors.New("models: unsupported task or type for model")
	// ErrNotFound: the hub or the OCR source has no such repo, revision or
	// file (404, or 401 with the hub's RepoNotFound code).
	ErrNotFound = errors.New("models: not found on the hub")
	// ErrOffline: the model is not in the cache and downloads are disabled
	// (HF_HUB_OFFLINE).
	ErrOffline = errors.New("models: model not in cache and offline mode is on")
	// ErrChecksum: downloaded data does not match the expected sha256, git
	// blob id, or size (too long). The partial file is removed.
	ErrChecksum = errors.New("models: checksum mismatch")
	// ErrDownload wraps every other download failure (network errors and
	// 5xx after retries, 401/403, disk full) with its cause.
	ErrDownload = errors.New("models: download failed")
	// ErrBusy: Clear was called while the model is being downloaded.
	ErrBusy = errors.New("models: model is being downloaded")
	// ErrClosed: the store was closed.
	ErrClosed = errors.New("models: store closed")
)
