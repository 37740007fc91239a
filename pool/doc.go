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
//     batches. On the CPU a batch also gathers (MLSERVE_BATCH_GATHER_MS):
//     it waits for the inputs that requests are decoding and resizing for
//     the same model, since the cores that would run it are the ones
//     preparing them, and for a twentieth of its last run for the requests
//     it just answered to send again. Concurrent requests then run as one
//     batch instead of falling into smaller ones that share the cores with
//     their preprocessing. A queue is bounded and refuses with
//     ErrQueueFull. A request that leaves (its context ends) before its
//     batch is formed is never run; a running batch is stopped only when
//     every request in it has left. Models with a fixed batch run that
//     many rows at a time (padded); detectors run one image at a time.
//   - Inference slots bound the runs in progress per device: on the CPU,
//     runs × intra-op threads never exceed the cores (two sessions
//     running at once on the same cores slow each other), so with the
//     default intra-op threads (every core, up to 8) one run has the whole
//     machine. With fewer intra-op threads than cores, several runs of
//     one model fit at once, and a runner takes only its share of the
//     queue when other runners of the model are free, so that they split
//     the work instead of one running it all (on more than 8 cores this
//     is the default). Each GPU ("CUDA:0", "CUDA:1") has slots of its
//     own (RunsOptions.Accelerator, 2 by default), so runs on one GPU
//     never wait for another's; a runner there takes the queue whole.
//   - A CPU batch of at least one CLIP image per intra-op thread runs as
//     one single-threaded run per thread at once (when the parts come out
//     about even: every even batch on two cores), on a twin session
//     that shares the model's weights (inference.SessionOptions.SplitBatch;
//     MLSERVE_SPLIT_BATCH=false turns it off), while a lone image still
//     runs on every thread. The same cores give more images a second that
//     way (threads of one run wait for each other at every operator), at
//     the cost of the twin's activations, not of a second copy of the
//     weights. The slot the batch holds stands for those threads, so the
//     rule above holds.
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
//
// # Devices
//
// When the runtime has several devices (MACHINE_LEARNING_DEVICE_IDS=0,1
// with CUDA), or one that reports its memory, the service places each
// model on one and budgets memory per device ([DeviceOptions]). On the
// CPU none of this applies: the cache keeps models by count, as before.
//
//   - Placement. A model loads on the device with the most room: its free
//     memory, less a headroom kept for runs (a tenth of the device by
//     default) and the loads in progress, within DeviceOptions.Budget if
//     set; ties go to the device with fewer models, then to the first
//     configured. Not round-robin: models differ in size by a factor of
//     ten to a hundred (a ViT-H image tower, a face detector), so
//     counting them balances nothing that matters, while the free memory
//     also sees what other processes on the card hold. Devices that do
//     not report their memory (OpenVINO GPUs) take models by count.
//   - Estimate. A model needs what its sessions took at its last load
//     (inference.Session.DeviceMemory, measured on the device), or before
//     its first load its ONNX files' size × LoadFactor (1.5).
//   - Budget. When no device has room, idle models are unloaded where that
//     costs least: extra replicas of idle models first, then whole models,
//     least recently used first, whatever their device. A model in use is
//     never unloaded, nor a preloaded one. MLSERVE_MAX_LOADED_MODELS still
//     caps the count. When even unloading every idle model would not make
//     room by the estimate, the load is tried on the device with the most
//     free memory (the estimate may be high); when no device's budget can
//     take the model, the load fails with [ErrOverBudget]. A model whose
//     weights alone exceed a device's whole memory (or the budget) is
//     never tried there, so that asking for it unloads nothing.
//   - Out of memory. A load or a run that fails with
//     inference.ErrOutOfMemory unloads every idle model on its device
//     and is tried once more. When that fails too, or the device failed
//     for another reason (inference.ErrDevice), the model moves to the CPU
//     if the runtime allows it (MLSERVE_ALLOW_CPU_FALLBACK), says so in
//     [Loaded].Fallback and [DeviceObserver].ModelFellBack, and stays
//     there until it is unloaded; otherwise the request fails with the
//     device's *inference.DeviceError (device, memory free of total, the
//     allocation that failed), what the models left there hold, and that
//     the fallback is off. Out of memory, and a model no device's memory
//     or budget can take, come as a [DeviceMemoryError] wrapping it: the
//     device, what the model needs, the device's memory and the budget,
//     typed, for the API's 503. Each [Response] says where every entry
//     ran ([Where]: the replica's provider and device, and whether it is
//     a fallback), and [Service.Devices] the devices' state and their
//     out-of-memory and fallback counts. Such a failed load is remembered for at most
//     5 s, and only until a model becomes idle. An out-of-memory error
//     leaves nothing behind on the device: a failed load takes nothing,
//     and the next run of a session whose run failed shrinks its arena.
//   - Memory that comes back. Unloading a model (idle TTL, room for
//     another, the count cap, shutdown) closes its sessions, and their
//     device memory goes back to the device.
//   - Replicas. A model whose queue stays backed up for ReplicaAfter (2 s)
//     gets one more session on another device that has room for it
//     without unloading anything: one load at a time, at most one per
//     device, none for 30 s after an attempt found no room. Backed up
//     means a full batch waits beyond those running, or, for models run
//     per request (detectors), more than twice as many requests as their
//     devices run at once. A batching model's replicas all take batches
//     from its one queue, so its requests spread over the devices as they
//     free up; a detector's request takes the replica with the fewest
//     requests per run slot. A replica goes with its model, or alone when
//     its device needs room and the model is idle.
//
// The tests exercise all of this on inference.FakeDevice, a simulated GPU
// (real CPU sessions, simulated memory and out-of-memory errors): no GPU
// is needed, or used, to run them.
package pool
