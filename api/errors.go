package api

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strings"

	"github.com/gofiber/fiber/v2"

	"github.com/mlserve/mlserve/inference"
	"github.com/mlserve/mlserve/inference/imaging"
	"github.com/mlserve/mlserve/models"
	"github.com/mlserve/mlserve/pool"
)

// statusOf maps the service's errors to HTTP status codes. Client mistakes
// are 4xx (Immich answers 500 for unknown model names; a 5xx makes the
// Immich server mark a healthy machine-learning URL unhealthy, so we do
// not); overload is 503 so the server fails over to its next URL.
func statusOf(err error) (int, string) {
	switch {
	case errors.Is(err, pool.ErrQueueFull):
		return fiber.StatusServiceUnavailable, err.Error()
	case errors.Is(err, ErrSearchUnavailable):
		return fiber.StatusServiceUnavailable, err.Error()
	case errors.Is(err, pool.ErrClosed):
		return fiber.StatusServiceUnavailable, "shutting down"
	case errors.Is(err, errBudget):
		return fiber.StatusServiceUnavailable, errBudget.Error()
	case errors.Is(err, ErrOwnerRequired):
		return fiber.StatusBadRequest, ErrOwnerRequired.Error()
	case errors.Is(err, pool.ErrNoInput):
		return fiber.StatusBadRequest, "Either image or text must be provided"
	case errors.Is(err, imaging.ErrEmpty):
		return fiber.StatusBadRequest, "Image has zero width or height"
	case errors.Is(err, imaging.ErrDecode):
		return fiber.StatusBadRequest, "Invalid image: " + err.Error()
	case errors.Is(err, pool.ErrMissingDependency):
		return fiber.StatusBadRequest, trimSentinel(err, pool.ErrMissingDependency)
	case errors.Is(err, pool.ErrWrongInput):
		return fiber.StatusBadRequest, err.Error()
	case errors.Is(err, pool.ErrBadEntries):
		return fiber.StatusUnprocessableEntity, err.Error()
	case errors.Is(err, models.ErrInvalidName), errors.Is(err, models.ErrUnknownModel), errors.Is(err, models.ErrUnsupported):
		return fiber.StatusBadRequest, err.Error()
	case errors.Is(err, context.DeadlineExceeded):
		return fiber.StatusGatewayTimeout, "request took longer than MACHINE_LEARNING_WORKER_TIMEOUT"
	case errors.Is(err, context.Canceled):
		// The server's drain ran out of time (a client that hung up
		// hears nothing).
		return fiber.StatusServiceUnavailable, "shutting down"
	}
	if msg, oom, ok := deviceFailure(err); ok {
		// A device out of memory is overload: 503, so that Immich
		// moves to its next machine-learning URL (the device is usable
		// again once models are unloaded or requests end). Another
		// device failure is the server's: 500.
		if oom {
			return fiber.StatusServiceUnavailable, msg
		}
		return fiber.StatusInternalServerError, msg
	}
	switch {
	case errors.Is(err, pool.ErrLoadFailed):
		// Immich's words, "Failed to load model '<name>'", without the
		// cause: it names the cache folder or the hub's URL, which are
		// the logs' business.
		return fiber.StatusInternalServerError, loadFailedMessage(err)
	}
	return fiber.StatusInternalServerError, "Internal Server Error"
}

// deviceFailure describes a model's failure on its device from the typed
// errors the pool and inference return: the device and its memory
// figures, the model's name where the error has it; never the model's
// path nor ONNX Runtime's own message, which stay in the log. oom tells
// an out-of-memory failure; ok is false when err is none of these.
func deviceFailure(err error) (msg string, oom, ok bool) {
	var merr *pool.DeviceMemoryError
	if errors.As(err, &merr) {
		return memoryMessage(merr), true, true
	}
	var derr *inference.DeviceError
	if !errors.As(err, &derr) {
		return "", false, false
	}
	what := "running the model"
	if derr.Op == "load" {
		what = "loading the model"
	}
	if errors.Is(err, pool.ErrLoadFailed) {
		if m := loadFailedMessage(err); m != "Failed to load model" {
			what = "loading model" + strings.TrimPrefix(m, "Failed to load model")
		}
	}
	dev := derr.Device
	if dev == "" {
		dev = "the device"
	}
	if errors.Is(derr, inference.ErrOutOfMemory) {
		var nums []string
		if derr.Requested > 0 {
			nums = append(nums, "it asked for "+inference.FormatBytes(derr.Requested))
		}
		if derr.Total > 0 {
			nums = append(nums, inference.FormatBytes(derr.Free)+" free of "+inference.FormatBytes(derr.Total))
		}
		msg = dev + " out of memory " + what
		if len(nums) > 0 {
			msg += ": " + strings.Join(nums, ", ")
		}
		return msg, true, true
	}
	provider := derr.Provider
	if provider == "" {
		provider = "execution provider"
	}
	return dev + " failed " + what + " (" + provider + " error; see the server's log)", false, true
}

// memoryMessage is "CUDA:0 out of memory: model 'X' needs ~1.2 GiB,
// 300.0 MiB free of 24.0 GiB" and its variants for a run and a budget.
func memoryMessage(e *pool.DeviceMemoryError) string {
	var b strings.Builder
	dev := e.Device
	if dev == "" {
		dev = "the device"
	}
	b.WriteString(dev + " out of memory: ")
	subject := "model '" + e.Key.Name + "'"
	if e.Op == "run" {
		subject = "a run of model '" + e.Key.Name + "'"
	}
	b.WriteString(subject)
	var nums []string
	if e.Need > 0 {
		b.WriteString(" needs ~" + inference.FormatBytes(e.Need))
	} else {
		b.WriteString(" does not fit")
	}
	if e.Budget > 0 {
		nums = append(nums, "the budget of "+inference.FormatBytes(e.Budget)+" per device leaves "+inference.FormatBytes(e.BudgetLeft))
	}
	if e.Total > 0 {
		nums = append(nums, inference.FormatBytes(e.Free)+" free of "+inference.FormatBytes(e.Total))
	}
	if len(nums) > 0 {
		b.WriteString(", " + strings.Join(nums, ", "))
	}
	return b.String()
}

// loadFailedMessage is "Failed to load model '<name>'" from an error that
// wraps pool.ErrLoadFailed as "failed to load model '<name>': cause".
func loadFailedMessage(err error) string {
	msg := err.Error()
	i := strings.Index(msg, pool.ErrLoadFailed.Error()+" '")
	if i < 0 {
		return "Failed to load model"
	}
	rest := msg[i+len(pool.ErrLoadFailed.Error())+2:]
	name, _, ok := strings.Cut(rest, "'")
	if !ok || strings.ContainsAny(name, "/\\") {
		return "Failed to load model"
	}
	return "Failed to load model '" + name + "'"
}

// trimSentinel drops the "sentinel: " prefix where Immich's message is
// the detail itself.
func trimSentinel(err, sentinel error) string {
	msg := err.Error()
	prefix := sentinel.Error() + ": "
	if len(msg) > len(prefix) && msg[:len(prefix)] == prefix {
		return msg[len(prefix):]
	}
	return msg
}

func (s *Server) predictError(c *fiber.Ctx, err error) error {
	code, msg := statusOf(err)
	if code == fiber.StatusServiceUnavailable {
		c.Set(fiber.HeaderRetryAfter, retryAfter)
	}
	switch {
	case overloaded(err):
		s.shed.note(msg)
	case code >= 500:
		s.logger.Error("predict failed", "status", code, "err", err)
	default:
		s.logger.Debug("predict refused", "status", code, "err", err)
	}
	return c.Status(code).JSON(detail{msg})
}

// overloaded tells the refusals that are the service shedding load, by
// design and many a second, from failures worth a log line each.
func overloaded(err error) bool {
	return errors.Is(err, pool.ErrQueueFull) || errors.Is(err, errBudget) || errors.Is(err, pool.ErrClosed)
}

func sortedKeys(m map[string]string) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// formError answers an error of reading a request's form: 413 for a body
// or a field over its cap, 503 and Retry-After when the in-flight byte
// budget is spent, 408 for a body that stopped arriving, FastAPI's 422 for
// a body that is not a form; the context's errors as statusOf says.
func (s *Server) formError(c *fiber.Ctx, err error) error {
	switch {
	case errors.Is(err, errBodyTooLarge):
		return fiber.ErrRequestEntityTooLarge
	case errors.Is(err, errFieldTooLarge):
		return fiber.NewError(fiber.StatusRequestEntityTooLarge, trimSentinel(err, errFieldTooLarge))
	case errors.Is(err, errTooManyParts):
		return fiber.NewError(fiber.StatusRequestEntityTooLarge, fmt.Sprintf("too many form parts (at most %d)", maxParts))
	case errors.Is(err, errReadTimeout):
		return fiber.NewError(fiber.StatusRequestTimeout, errReadTimeout.Error())
	case errors.Is(err, errNotForm):
		c.Set(fiber.HeaderContentType, fiber.MIMEApplicationJSON)
		return c.Status(fiber.StatusUnprocessableEntity).SendString(missingEntries)
	}
	return s.predictError(c, err)
}
