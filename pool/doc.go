// Package pool runs Immich's /predict requests: it keeps loaded models in a
// reference-counted LRU cache with an idle TTL ([Cache]), executes a
// request's entries with Immich's semantics (models without dependencies
// first, then those that consume their output) on one decoded image, and
// schedules the work on the machine with an engine of three stages:
//
//	request → CPU workers (decode, preprocess) → model queue → batch on an
//	          inference slot → CPU workers (post-process) → typed result
//
// The stages:
//
//   - CPU workers ([Workers]: MACHINE_LEARNING_REQUEST_THREADS slots, one
//     per core by default) decode images and make model inputs. A new
//     request waits in a bounded queue (MLSERVE_MAX_QUEUE) or is refused
//     with [ErrQueueFull]; a request gives its slot up while its model
//     runs, so the next image is decoded while the previous one is in
//     inference, and takes one again, ahead of new requests, for any
//     post-processing. Bulk work (indexing) waits behind requests.
//   - Each loaded model that can batch (CLIP images and texts, face crops,
//     OCR text lines) has a queue and runners that coalesce the queued
//     inputs of all requests into one run, up to a maximum batch
//     (MLSERVE_BATCH_MAX) and, if set, a maximum wait (MLSERVE_BATCH_WAIT_MS).
//     The default wait is none, "continuous batching": a batch starts as
//     soon as the device is free and takes whatever queued while it was
//     busy, so a lone request never waits and a loaded server runs large
//     batches. A queue is bounded and refuses with ErrQueueFull. A request
//     that leaves (its context ends) before its batch is formed is never
//     run; a running batch is stopped only when every request in it has
//     left. Models with a fixed batch run that many rows at a time
//     (padded); detectors run one image at a time.
//   - Inference slots bound the runs in progress per device: on the CPU,
//     runs × intra-op threads never exceed the cores (two sessions
//     running at once on the same cores slow each other), so with the
//     default intra-op threads (every core, up to 8) one run has the whole
//     machine. Each accelerator has slots of its own.
//
// Results are identical to unbatched runs where the graph computes each
// row on its own with batch-independent kernels (see the tests for the
// exact statement); face recognition runs at most MaxBatchFace faces at
// a time, within a request and across requests, so memory stays bounded.
//
// Images are decoded once per request, at full size ([PreprocessExact],
// the default: every model input is Immich's bit for bit), or with
// [PreprocessFast] (MLSERVE_PREPROCESS=fast) JPEGs for requests whose every
// model only needs a smaller image (CLIP) are decoded smaller in the DCT
// domain; the difference is measured by TestPreprocessFidelity.
//
// Every response says where its time went ([Timings]): queue, load,
// decode, preprocess, batch wait, inference, post-processing.
package pool
