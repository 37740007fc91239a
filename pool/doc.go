// Package pool runs Immich's /predict requests: it keeps loaded models in a
// reference-counted LRU cache with an idle TTL ([Cache]), admits requests
// through a bounded worker pool that refuses instead of blocking
// ([Workers]), and executes a request's entries with Immich's semantics
// (models without dependencies first, then those that consume their
// output) on one decoded image.
package pool
